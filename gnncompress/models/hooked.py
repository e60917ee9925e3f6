"""Any ``nn.Module`` teacher as a model the methods can read.

A user's own model returns logits only. :class:`HookedTeacher` runs it and
collects, with forward hooks, the output of each of its message-passing
layers in the order they run: every one but the last becomes a hidden
feature (``ModelOutput.hiddens``), which FitNet, AT, LSP, GSP, G-CRD and
ABKD read; KD and GLNN need the logits alone. The hooks take the layer's
output before whatever activation the user's forward applies after it,
as the built-in models' hiddens are.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from gnncompress.models.output import ModelOutput


class HookedTeacher(nn.Module):
    """``module`` called as ``module(x, edge_index)``; its logits and the
    outputs of its message-passing layers but the last."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.layers = [m for m in module.modules()
                       if isinstance(m, MessagePassing)]

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """The module's own logits (what is timed and exported)."""
        return self.module(x, edge_index)

    def forward_output(self, x: Tensor, edge_index: Tensor) -> ModelOutput:
        """The logits and the hidden layers' outputs (run_model)."""
        seen: list[Tensor] = []

        def keep(_m: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, tuple):  # GAT with attention weights
                output = output[0]
            seen.append(output)

        handles = [layer.register_forward_hook(keep) for layer in self.layers]
        try:
            logits = self.module(x, edge_index)
        finally:
            for h in handles:
                h.remove()
        return ModelOutput(logits, seen[:-1])
