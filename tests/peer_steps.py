"""Cotrain's peers one step at a time, as the training loop drives them:
the Peers regime, the peer objective and one Adam over every student."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.training.loop import adam
from gnncompress.training.objectives.peers import (
    peer_objective,
    prepare_peers,
)
from gnncompress.training.peer_regimes import peer_regime


class PeerSteps:
    """``step(k, part)``: student k's update on ``part`` (its loss);
    ``parts(epoch)``: the parts of an epoch."""

    def __init__(self, models: Sequence[nn.Module], graph: Graph,
                 methods: list[DistillMethod] | None, *, lr: float,
                 weight_decay: float, batch_size: int | None = None,
                 fanout: Sequence[int] | None = None,
                 seed: int = 0) -> None:
        self.students, self.methods = nn.ModuleList(models), methods
        self.regime, probe = peer_regime(
            self.students, graph, online=bool(methods),
            batch_size=batch_size, fanout=fanout, seed=seed)
        if methods:
            prepare_peers(self.regime, methods, probe())
        self.objective = peer_objective(self.regime, methods, 1.0, 1.0)
        self.optimizer = adam(self.students, nn.ModuleList(methods)
                              if methods else None, lr, weight_decay)

    @property
    def batch_size(self) -> int:
        return self.regime.parts.batch_size

    def parts(self, epoch: int = 1) -> Iterator[Any]:
        return iter(self.regime.parts.steps(epoch))

    def step(self, k: int, part: Any) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        (loss,) = self.objective(self.students, (part, k))
        loss.loss.backward()
        self.optimizer.step()
        return float(loss.loss.detach())
