"""The augmented-clouds regime: point-cloud classification in batches of
clouds, each batch augmented afresh, the frozen teacher run on every batch
(its outputs over a whole dataset of augmented clouds cannot be cached).
In a process group (``--nproc``) every rank draws the same shuffled
batches, trains on its share of each, and augments its clouds with a
generator of its own."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.models import ModelOutput
from gnncompress.models.dgcnn import DGCNN
from gnncompress.training import ranks as process_ranks


@dataclass
class CloudBatch:
    """Some clouds' (augmented) points ``[B, n, 3]`` and their classes."""
    pos: Tensor
    y: Tensor


def batch_graph(graph: Graph, pos: Tensor, y: Tensor) -> Graph:
    """The Graph a method sees for one batch: its points, one ``batch``
    entry per point, every cloud marked for training."""
    b, n, c = pos.shape
    ones = torch.ones(b, dtype=torch.bool, device=pos.device)
    return Graph(name=graph.name, x=pos.reshape(-1, c),
                 edge_index=torch.zeros(2, 0, dtype=torch.long,
                                        device=pos.device),
                 y=y, train_mask=ones, val_mask=~ones, test_mask=~ones,
                 num_classes=graph.num_classes, split=graph.split,
                 batch=torch.arange(b, device=pos.device).repeat_interleave(
                     n))


def cloud_outputs(model: nn.Module, pos: Tensor, edges: bool) -> ModelOutput:
    """A DGCNN's output on clouds ``pos``; ``edges``: with the hidden
    features of its kNN edges (what structure methods compare)."""
    assert isinstance(model, DGCNN)
    return model.forward_output(pos, with_edges=edges)


class AugmentedClouds:
    """The training clouds of ``graph`` (points ``pos [clouds, n, 3]``) in
    shuffled batches of ``batch_size`` (a last batch of one cloud is
    skipped: batch norm needs two), each passed through ``augment(pos,
    generator)``; one generator seeded with ``seed`` draws both (in a
    process group the order alone; each rank augments its share of a
    batch with its own generator, and a batch that leaves a rank fewer
    than two clouds is skipped). The
    ``teacher`` runs on every augmented batch without gradients;
    ``score(student, mask)`` is the task's metric on the clouds of
    ``mask``."""

    def __init__(self, graph: Graph, pos: Tensor, *,
                 teacher: nn.Module | None, edges: bool, batch_size: int,
                 augment: Callable[[Tensor, torch.Generator], Tensor],
                 score: Callable[[nn.Module, Tensor], float],
                 seed: int = 0) -> None:
        self.graph, self.pos, self.teacher = graph, pos, teacher
        self.edges, self.batch_size = edges, batch_size
        self.augment, self.score = augment, score
        self.device = graph.x.device
        self.train_ids = graph.train_mask.nonzero().view(-1).cpu()
        self.generator = torch.Generator().manual_seed(seed)
        self.ranks = process_ranks.current()
        self.draws = self.ranks.draws(self.generator, seed)

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        assert self.teacher is not None
        self.teacher.eval()
        probe = self.pos[self.graph.train_mask.nonzero().view(-1)[:2]]
        return ([cloud_outputs(self.teacher, probe, self.edges)],
                cloud_outputs(student, probe, self.edges),
                batch_graph(self.graph, probe, self.graph.y[:2]))

    def steps(self, epoch: int) -> Iterator[CloudBatch]:
        ids = self.train_ids
        order = ids[torch.randperm(ids.numel(), generator=self.generator)]
        for chunk in order.split(self.batch_size):
            if self.ranks.share(chunk.numel()) < 2:  # batch norm needs two
                continue
            chunk = self.ranks.split(chunk).to(self.device)
            pos = self.augment(self.pos[chunk], self.draws)
            yield CloudBatch(pos, self.graph.y[chunk])

    def forward(self, student: nn.Module, step: CloudBatch) -> ModelOutput:
        return cloud_outputs(student, step.pos, self.edges)

    def label_loss(self, out: ModelOutput,
                   step: CloudBatch) -> tuple[str, Tensor]:
        return 'ce', F.cross_entropy(out.logits, step.y)

    def teachers(self, step: CloudBatch) -> list[ModelOutput]:
        assert self.teacher is not None
        with torch.no_grad():
            return [cloud_outputs(self.teacher, step.pos, self.edges)]

    def method_graph(self, step: CloudBatch) -> Graph:
        return batch_graph(self.graph, step.pos, step.y)

    def validate(self, student: nn.Module) -> float:
        return self.score(student, self.graph.val_mask)

    def test(self, student: nn.Module) -> float:
        return self.score(student, self.graph.test_mask)

    def state_dict(self) -> dict[str, Any]:
        state = {'generator': self.generator.get_state()}
        if self.draws is not self.generator:
            state['draws'] = self.draws.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state['generator'])
        if 'draws' in state:
            self.draws.set_state(state['draws'])
