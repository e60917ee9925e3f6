from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, StudentInputs
from gnncompress.models import ModelOutput


class Combined(DistillMethod):
    r"""Several methods at once, as the papers run them (e.g. ``kd+lsp``):

    .. math::
        \mathcal{L} = \sum_m w_m \mathcal{L}_m

    The student is the one the parts are made for, when those that name
    one agree (GLNN's MLP for ``glnn+rsd``). Not registered under a name of
    its own: ``gnncompress.api.build_method``
    builds it from a name with ``+``.

    Args:
        parts (list[DistillMethod]): The methods.
        weights (list[float]): One weight per method (the CLI default is each
            method's own ``default_weight``).
    """
    summary = 'sum of weighted methods, e.g. kd+lsp'

    def __init__(self, parts: Sequence[DistillMethod],
                 weights: Sequence[float]) -> None:
        super().__init__()
        if len(parts) < 2 or len(parts) != len(weights):
            raise ValueError('Combined needs at least two methods and one '
                             'weight per method')
        self.parts = nn.ModuleList(parts)
        self.weights = [float(w) for w in weights]
        self.name = '+'.join(p.name for p in parts)
        self.requires = frozenset().union(*(p.requires for p in parts))
        self.default_weight = 1.0
        self.default_label_weight = max(p.default_label_weight for p in parts)
        self.adds_inputs = any(p.adds_inputs for p in parts)
        self.reruns_student = any(p.reruns_student for p in parts)
        # The student a part is made for (GLNN's MLP in glnn+rsd, the MLP
        # that reads position features), when the parts that name one agree.
        preferred = {p.preferred_student for p in parts} - {None}
        self.preferred_student = preferred.pop() if len(preferred) == 1 \
            else None

    def student_inputs(self, graph: Graph, seed: int) -> Tensor | None:
        columns = [c for c in (p.student_inputs(graph, seed)
                               for p in self.parts) if c is not None]
        return torch.cat(columns, 1) if columns else None

    def see_inputs(self, inputs: StudentInputs) -> None:
        for part in self.parts:
            if part.reruns_student:
                part.see_inputs(inputs)

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        for part in self.parts:
            part.prepare(teacher_outputs, student_output, graph)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        total = student_output.logits.new_zeros(())
        for weight, part in zip(self.weights, self.parts):
            total = total + weight * part.loss(teacher_outputs,
                                               student_output, graph)
        return total
