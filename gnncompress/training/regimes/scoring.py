"""What the regimes that score a student on the whole dataset share."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy


def candidate_accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Accuracy on ``mask``, or NaN when any output overflows: such a
    student is no candidate, whatever its argmax scores, since it could not
    be exported (NaN never wins the selection)."""
    if not bool(torch.isfinite(logits).all()):
        return float('nan')
    return accuracy(logits, y, mask)


class WholeScoring:
    """Validation and test accuracy of the student's logits on the whole
    ``graph`` (its masks pick the rows); no random state of its own."""

    graph: Graph

    def logits(self, student: nn.Module) -> Tensor:
        """The eval-mode student's logits on the whole graph."""
        raise NotImplementedError

    def validate(self, student: nn.Module) -> float:
        with torch.no_grad():
            logits = self.logits(student)
        return candidate_accuracy(logits, self.graph.y, self.graph.val_mask)

    def test(self, student: nn.Module) -> float:
        with torch.no_grad():
            logits = self.logits(student)
        return accuracy(logits, self.graph.y, self.graph.test_mask)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
