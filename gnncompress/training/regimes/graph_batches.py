"""Regimes over batches of whole graphs cut from a union: graph
classification (:class:`GraphBatches`, one label per graph) and node
classification over several graphs (:class:`GraphParts`, the PPI setting).
One step per batch of training graphs; the teachers' whole-union outputs
are sliced per batch; validation over the whole union after each epoch.
In a process group (``--nproc``) every rank draws the same shuffled
batches and trains on its share of each (every ``world``-th graph of it,
:meth:`gnncompress.training.ranks.Solo.split`), so the global batch is
the one a single process takes."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.models import ModelOutput, run_model
from gnncompress.training import ranks as process_ranks
from gnncompress.training.regimes.scoring import WholeScoring

# Optimiser steps per epoch of node classification over several graphs when
# no batch size is given: PPI's 20 training graphs in batches of 2 (GAT's
# and GraphSAGE's setting) make 10.
STEPS_PER_EPOCH = 10


@dataclass
class GraphPart:
    """Some graphs of a union as their own Graph (every node marked for
    training) and which nodes of the union they are."""
    graph: Graph
    node_mask: Tensor   # [N_union] bool

    @property
    def rows(self) -> Tensor:
        """Which rows of the union's logits belong to these graphs."""
        return self.node_mask

    def slice(self, out: ModelOutput) -> ModelOutput:
        """The rows of a whole-union output that belong to these graphs."""
        return ModelOutput(out.logits[self.rows],
                           [h[self.node_mask] for h in out.hiddens])


@dataclass
class GraphBatch(GraphPart):
    """A :class:`GraphPart` of graph classification: its ``y`` and masks
    are per graph, and so are the union's logits."""
    graph_ids: Tensor   # [B] sorted

    @property
    def rows(self) -> Tensor:
        return self.graph_ids


def iter_batches(graph: Graph, batch_size: int,
                 generator: torch.Generator,
                 ranks: process_ranks.Solo | None = None
                 ) -> Iterator[GraphBatch]:
    """The training graphs of ``graph`` in shuffled batches of
    ``batch_size``, each cut from the union with vectorised masks; this
    rank's share of each batch in a process group (``ranks``)."""
    assert graph.batch is not None
    ranks = ranks or process_ranks.Solo()
    device = graph.x.device
    ids = graph.train_mask.nonzero().view(-1).cpu()
    ids = ids[torch.randperm(ids.numel(), generator=generator)].to(device)
    num_graphs = graph.y.numel()
    for chunk in ids.split(batch_size):
        chunk = ranks.split(chunk).sort().values
        node_mask, edge_index, batch = select_graphs(
            graph.batch, graph.edge_index, chunk, num_graphs)
        ones = torch.ones(chunk.numel(), dtype=torch.bool, device=device)
        sub = Graph(name=graph.name, x=graph.x[node_mask],
                    edge_index=edge_index, y=graph.y[chunk],
                    train_mask=ones, val_mask=~ones, test_mask=~ones,
                    num_classes=graph.num_classes, split=graph.split,
                    batch=batch)
        yield GraphBatch(sub, node_mask, chunk)


def select_graphs(membership: Tensor, edge_index: Tensor, graph_ids: Tensor,
                  num_graphs: int) -> tuple[Tensor, Tensor, Tensor]:
    """The graphs ``graph_ids`` of a union whose node ``i`` belongs to
    graph ``membership[i]``, with vectorised masks: which nodes they hold,
    their edges renumbered, and each kept node's graph renumbered
    ``0..len(graph_ids) - 1`` in the order of the ids."""
    device = membership.device
    chosen = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    chosen[graph_ids] = True
    node_mask = chosen[membership]
    new_node = node_mask.long().cumsum(0) - 1
    edges = edge_index[:, node_mask[edge_index[0]]]
    new_graph = torch.full((num_graphs,), -1, device=device)
    new_graph[graph_ids.sort().values] = torch.arange(graph_ids.numel(),
                                                      device=device)
    return node_mask, new_node[edges], new_graph[membership[node_mask]]


def cut(graph: Graph, graph_ids: Tensor) -> GraphPart:
    """The graphs ``graph_ids`` of a several-graph node dataset (the
    union's ``node_graph`` set), cut with vectorised masks."""
    assert graph.node_graph is not None
    node_mask, edge_index, node_graph = select_graphs(
        graph.node_graph, graph.edge_index, graph_ids,
        int(graph.node_graph.max()) + 1)
    ones = torch.ones(int(node_mask.sum()), dtype=torch.bool,
                      device=graph.x.device)
    sub = Graph(name=graph.name, x=graph.x[node_mask], edge_index=edge_index,
                y=graph.y[node_mask], train_mask=ones, val_mask=~ones,
                test_mask=~ones, num_classes=graph.num_classes,
                split=graph.split, node_graph=node_graph)
    return GraphPart(sub, node_mask)


def training_graphs(graph: Graph) -> Tensor:
    """The ids of the union's training graphs."""
    assert graph.node_graph is not None
    return graph.node_graph[graph.train_mask].unique()


def graphs_per_batch(train_ids: Tensor, batch_size: int | None) -> int:
    """``batch_size`` training graphs per step, by default enough for
    ``STEPS_PER_EPOCH`` steps an epoch."""
    if batch_size is not None:
        return batch_size
    return max(1, math.ceil(train_ids.numel() / STEPS_PER_EPOCH))


def graph_batches(graph: Graph, train_ids: Tensor, batch_size: int,
                  generator: torch.Generator,
                  ranks: process_ranks.Solo | None = None
                  ) -> Iterator[GraphPart]:
    """One epoch: the training graphs shuffled with ``generator`` and cut
    into batches of ``batch_size`` whole graphs (this rank's share of
    each in a process group)."""
    ranks = ranks or process_ranks.Solo()
    order = train_ids[torch.randperm(train_ids.numel(), generator=generator)
                      .to(train_ids.device)]
    for chunk in order.split(batch_size):
        yield cut(graph, ranks.split(chunk))


def whole_output(model: nn.Module, graph: Graph) -> ModelOutput:
    """A model's output on every graph of the union at once."""
    return run_model(model, graph.x, graph.edge_index, graph.batch)


class _BatchesOfGraphs(WholeScoring):
    """What both regimes over batches of whole graphs share: the teachers'
    whole-union outputs sliced per batch, and the generator (seeded with
    ``seed``, alike on every rank) that shuffles the training graphs every
    epoch."""

    def __init__(self, graph: Graph, teacher_outputs: Sequence[ModelOutput],
                 seed: int) -> None:
        self.graph, self.teacher_outputs = graph, teacher_outputs
        self.device = graph.x.device
        self.generator = torch.Generator().manual_seed(seed)
        self.ranks = process_ranks.current()

    def teachers(self, step: GraphPart) -> list[ModelOutput]:
        return [step.slice(t) for t in self.teacher_outputs]

    def method_graph(self, step: GraphPart) -> Graph:
        return step.graph

    def state_dict(self) -> dict[str, Any]:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state['generator'])


class GraphBatches(_BatchesOfGraphs):
    """Graph classification in batches of ``batch_size`` training graphs;
    cross-entropy over the batch's graphs."""

    def __init__(self, graph: Graph,
                 teacher_outputs: Sequence[ModelOutput] = (), *,
                 batch_size: int, seed: int = 0) -> None:
        super().__init__(graph, teacher_outputs, seed)
        self.batch_size = batch_size

    def logits(self, student: nn.Module) -> Tensor:
        return whole_output(student, self.graph).logits

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        return (self.teacher_outputs, whole_output(student, self.graph),
                self.graph)

    def steps(self, epoch: int) -> Iterator[GraphBatch]:
        return iter_batches(self.graph, self.batch_size, self.generator,
                            self.ranks)

    def forward(self, student: nn.Module, step: GraphBatch) -> ModelOutput:
        g = step.graph
        return run_model(student, g.x, g.edge_index, g.batch)

    def label_loss(self, out: ModelOutput,
                   step: GraphBatch) -> tuple[str, Tensor]:
        return 'ce', F.cross_entropy(out.logits, step.graph.y)


class GraphParts(_BatchesOfGraphs):
    """Node classification over several graphs: batches of ``batch_size``
    whole training graphs (default: enough for ``STEPS_PER_EPOCH`` steps);
    the label loss ``label_loss(logits, y)`` over a batch's nodes is called
    ``loss_name`` in messages. The method is prepared on the training
    graphs alone; validation and test graphs stay unseen until scored."""

    def __init__(self, graph: Graph,
                 teacher_outputs: Sequence[ModelOutput] = (), *,
                 label_loss: Callable[[Tensor, Tensor], Tensor],
                 loss_name: str, batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(graph, teacher_outputs, seed)
        self.train_ids = training_graphs(graph)
        self.batch_size = graphs_per_batch(self.train_ids, batch_size)
        self._label_loss, self._loss_name = label_loss, loss_name

    def logits(self, student: nn.Module) -> Tensor:
        return run_model(student, self.graph.x, self.graph.edge_index).logits

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        whole = cut(self.graph, self.train_ids)
        return ([whole.slice(t) for t in self.teacher_outputs],
                self.forward(student, whole), whole.graph)

    def steps(self, epoch: int) -> Iterator[GraphPart]:
        return graph_batches(self.graph, self.train_ids, self.batch_size,
                             self.generator, self.ranks)

    def forward(self, student: nn.Module, step: GraphPart) -> ModelOutput:
        return run_model(student, step.graph.x, step.graph.edge_index)

    def label_loss(self, out: ModelOutput,
                   step: GraphPart) -> tuple[str, Tensor]:
        return self._loss_name, self._label_loss(out.logits, step.graph.y)
