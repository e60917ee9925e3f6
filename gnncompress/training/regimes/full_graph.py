"""The full-graph regime: node classification of one graph, one step per
epoch over the whole graph."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods import StudentInputs
from gnncompress.models import ModelOutput, run_model
from gnncompress.training.regimes.scoring import WholeScoring


class FullGraph(WholeScoring):
    """Every epoch is one step on the whole ``graph``: cross-entropy over
    its training nodes, the teachers' outputs as they are."""

    def __init__(self, graph: Graph,
                 teacher_outputs: Sequence[ModelOutput] = ()) -> None:
        self.graph, self.teacher_outputs = graph, teacher_outputs
        self.device = graph.x.device

    def logits(self, student: nn.Module) -> Tensor:
        return run_model(student, self.graph.x, self.graph.edge_index).logits

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        g = self.graph
        return (self.teacher_outputs, run_model(student, g.x, g.edge_index),
                g)

    def steps(self, epoch: int) -> tuple[Graph]:
        return (self.graph,)

    def forward(self, student: nn.Module, step: Graph) -> ModelOutput:
        return run_model(student, step.x, step.edge_index)

    def student_inputs(self, student: nn.Module, step: Graph
                       ) -> StudentInputs:
        return StudentInputs(step.x, lambda x: run_model(student, x,
                                                         step.edge_index))

    def label_loss(self, out: ModelOutput, step: Graph) -> tuple[str, Tensor]:
        mask = step.train_mask
        return 'ce', F.cross_entropy(out.logits[mask], step.y[mask])

    def teachers(self, step: Graph) -> Sequence[ModelOutput]:
        return self.teacher_outputs

    def method_graph(self, step: Graph) -> Graph:
        return step
