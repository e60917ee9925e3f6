"""The regime of peers that learn from each other (``cotrain``: Alignahead,
mutual learning): several students of one architecture trained in turn on
the parts of another regime (the whole graph, batches of graphs, sampled
subgraphs).

A step is ``(part, k)``: student k's update on one part, while its peers
are fixed and only provide outputs (eval mode, no gradient). A peer's
output on a part is computed once and kept until that peer's own step, so
student k sees the peers before it already updated on the part and those
after it not yet. On the whole graph (``whole``) the outputs the
validation computes are those the next epoch's steps start from: each
student runs one extra forward per epoch, the one its validation needs
anyway.

The loop sees one student, the ``nn.ModuleList`` of the peers: validation
and test give one score per peer, and :class:`PeerSelection` keeps each
peer's best epoch."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput
from gnncompress.training.regimes.scoring import candidate_accuracy
from gnncompress.training.selection import PeerSelection

# The arguments of ``method.loss`` for one student on one part: its
# peers' outputs, its own, and the graph the method sees.
MethodInputs = tuple[Sequence[ModelOutput], ModelOutput, Graph]


class Parts(Protocol):
    """What :class:`Peers` needs of the regime whose steps it shares out:
    the parts of an epoch, a model's output on one, the eval-mode logits
    on the whole ``graph`` (validation, test) and its random state."""

    device: torch.device
    graph: Graph

    def steps(self, epoch: int) -> Iterator[Any] | Sequence[Any]: ...

    def forward(self, model: nn.Module, part: Any) -> ModelOutput: ...

    def logits(self, model: nn.Module) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Peers:
    """``students`` (an ``nn.ModuleList``) trained in turn on the parts of
    ``parts``. ``label_loss(out, part)`` is a student's supervised loss on
    a part, called ``term`` in the history and in messages;
    ``method_inputs(method, peers, out, part)`` the arguments of an online
    method's loss (default: the outputs as they are and
    ``parts.method_graph(part)``). ``whole``: every part is the whole
    graph, so a peer's validation output serves the next steps."""

    selection = PeerSelection

    def __init__(self, parts: Parts, students: nn.ModuleList, *,
                 label_loss: Callable[[ModelOutput, Any], Tensor],
                 term: str,
                 method_inputs: Callable[..., MethodInputs] | None = None,
                 whole: bool = False) -> None:
        self.parts, self.students = parts, students
        self.device = parts.device
        self.label_loss, self.term = label_loss, term
        self._inputs = method_inputs
        self.whole = whole
        self._cache: dict[int, ModelOutput] = {}
        self._part: Any = None

    def steps(self, epoch: int) -> Iterator[tuple[Any, int]]:
        for part in self.parts.steps(epoch):
            for k in range(len(self.students)):
                yield part, k

    @torch.no_grad()
    def output(self, k: int, part: Any) -> ModelOutput:
        """Student k's eval-mode output on ``part``, without gradient."""
        model = self.students[k].eval()
        return self.parts.forward(model, part)

    def peer_output(self, j: int, part: Any) -> ModelOutput:
        """Peer j's output on ``part``, kept until its own next step (the
        outputs on another part are forgotten)."""
        if part is not self._part:
            self._cache.clear()
            self._part = part
        if j not in self._cache:
            self._cache[j] = self.output(j, part)
        return self._cache[j]

    def forget(self, k: int) -> None:
        """Student k is about to move: its kept output goes stale."""
        self._cache.pop(k, None)

    def method_inputs(self, method: DistillMethod,
                      peers: Sequence[ModelOutput], out: ModelOutput,
                      part: Any) -> MethodInputs:
        if self._inputs is not None:
            return self._inputs(method, peers, out, part)
        return peers, out, self.parts.method_graph(part)  # type: ignore

    def _logits(self, k: int) -> Tensor:
        if self.whole:
            return self.peer_output(k, self.parts.graph).logits
        with torch.no_grad():
            return self.parts.logits(self.students[k].eval())

    def validate(self, students: nn.Module) -> list[float]:
        """Each peer's validation score (NaN: no candidate)."""
        g = self.parts.graph
        return [candidate_accuracy(self._logits(k), g.y, g.val_mask)
                for k in range(len(self.students))]

    def test(self, students: nn.Module) -> list[float]:
        """Each peer's test score, on its weights as they are now (the
        outputs kept from training are dropped)."""
        g = self.parts.graph
        self._cache.clear()
        scores = [accuracy(self._logits(k), g.y, g.test_mask)
                  for k in range(len(self.students))]
        self._cache.clear()
        return scores

    def state_dict(self) -> dict[str, Any]:
        return self.parts.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.parts.load_state_dict(state)
