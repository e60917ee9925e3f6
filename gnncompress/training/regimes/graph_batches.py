"""The graph-batch regime of graph classification: one step per batch of
training graphs cut from the union, teachers' whole-union outputs sliced
per batch, validation accuracy over graphs after each epoch."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core import Graph
from gnncompress.models import ModelOutput, run_model
from gnncompress.training.regimes.scoring import WholeScoring


@dataclass
class GraphBatch:
    """Some graphs of a union: the sub-Graph (its ``y`` and masks per
    graph, every graph marked for training), which graphs and which nodes
    of the union it holds."""
    graph: Graph
    graph_ids: Tensor   # [B] sorted
    node_mask: Tensor   # [N_union] bool

    def slice(self, out: ModelOutput) -> ModelOutput:
        """The rows of a whole-union output that belong to this batch."""
        return ModelOutput(out.logits[self.graph_ids],
                           [h[self.node_mask] for h in out.hiddens])


def iter_batches(graph: Graph, batch_size: int,
                 generator: torch.Generator) -> Iterator[GraphBatch]:
    """The training graphs of ``graph`` in shuffled batches of
    ``batch_size``, each cut from the union with vectorised masks."""
    assert graph.batch is not None
    device = graph.x.device
    ids = graph.train_mask.nonzero().view(-1).cpu()
    ids = ids[torch.randperm(ids.numel(), generator=generator)].to(device)
    num_graphs = graph.y.numel()
    for chunk in ids.split(batch_size):
        chunk = chunk.sort().values
        node_mask, edge_index, batch = select_graphs(
            graph.batch, graph.edge_index, chunk, num_graphs)
        ones = torch.ones(chunk.numel(), dtype=torch.bool, device=device)
        sub = Graph(name=graph.name, x=graph.x[node_mask],
                    edge_index=edge_index, y=graph.y[chunk],
                    train_mask=ones, val_mask=~ones, test_mask=~ones,
                    num_classes=graph.num_classes, split=graph.split,
                    batch=batch)
        yield GraphBatch(sub, chunk, node_mask)


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


def whole_output(model: nn.Module, graph: Graph) -> ModelOutput:
    """A model's output on every graph of the union at once."""
    return run_model(model, graph.x, graph.edge_index, graph.batch)


class GraphBatches(WholeScoring):
    """Graph classification in batches of ``batch_size`` training graphs,
    shuffled every epoch by a generator seeded with ``seed``."""

    def __init__(self, graph: Graph,
                 teacher_outputs: Sequence[ModelOutput] = (), *,
                 batch_size: int, seed: int = 0) -> None:
        self.graph, self.teacher_outputs = graph, teacher_outputs
        self.batch_size, self.device = batch_size, graph.x.device
        self.generator = torch.Generator().manual_seed(seed)

    def logits(self, student: nn.Module) -> Tensor:
        return whole_output(student, self.graph).logits

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        return (self.teacher_outputs, whole_output(student, self.graph),
                self.graph)

    def steps(self, epoch: int) -> Iterator[GraphBatch]:
        return iter_batches(self.graph, self.batch_size, self.generator)

    def forward(self, student: nn.Module, step: GraphBatch) -> ModelOutput:
        g = step.graph
        return run_model(student, g.x, g.edge_index, g.batch)

    def label_loss(self, out: ModelOutput,
                   step: GraphBatch) -> tuple[str, Tensor]:
        return 'ce', F.cross_entropy(out.logits, step.graph.y)

    def teachers(self, step: GraphBatch) -> list[ModelOutput]:
        return [step.slice(t) for t in self.teacher_outputs]

    def method_graph(self, step: GraphBatch) -> Graph:
        return step.graph

    def state_dict(self) -> dict[str, Any]:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state['generator'])
