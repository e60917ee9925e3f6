from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """What every model forward returns to the methods."""
    logits: Tensor                                       # [N, C]
    # Pre-activation output of every hidden message-passing layer (all but
    # the one that produces the logits; all of them when jk is set).
    hiddens: list[Tensor] = field(default_factory=list)  # [N, d_l] per layer
    # Dynamic-graph models (DGCNN): the kNN graph each hidden layer
    # aggregated over, as edge_index over the same N points.
    edges: list[Tensor] = field(default_factory=list)    # [2, E_l] per layer

    def detach(self) -> ModelOutput:
        return ModelOutput(self.logits.detach(),
                           [h.detach() for h in self.hiddens], self.edges)
