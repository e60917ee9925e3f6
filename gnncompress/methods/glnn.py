from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.methods.kd import (
    soft_label_bce,
    soft_label_kl,
)
from gnncompress.models import ModelOutput


@register_method('glnn')
class GLNN(DistillMethod):
    r"""GNN-to-MLP distillation from the `"Graph-less Neural Networks:
    Teaching Old MLPs New Tricks via Distillation"
    <https://arxiv.org/abs/2110.08727>`_ paper (Zhang et al., ICLR 2022).

    The student is an MLP on node features alone, so it needs no graph at
    inference:

    .. math::
        \mathcal{L} = \lambda \, \mathrm{CE}(y, p_s)
        + (1 - \lambda) \, \mathrm{KL}(p_t \,\|\, p_s)

    with the KL on all nodes. :math:`\lambda` and :math:`1 - \lambda` become
    the run's default ``label_weight`` and ``weight``. On multi-label data
    the KL is KD's multi-label form, a BCE against the teacher's
    (softened) sigmoid outputs (:class:`~gnncompress.methods.kd.KD`).

    Args:
        lam (float, optional): :math:`\lambda`. (default: :obj:`0.0`, the
            default of PyG's GLNN example; the paper tunes it per dataset)
        temperature (float, optional): Softening temperature of both
            distributions. (default: :obj:`1.0`, the paper's plain KL)
    """
    paper = 'Zhang et al., ICLR 2022, arXiv:2110.08727'
    summary = 'GNN -> MLP: soft labels on all nodes; no graph at inference'
    preferred_student = 'mlp'

    def __init__(self, lam: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"'lam' must be in [0, 1] (got {lam})")
        if temperature <= 0:
            raise ValueError(
                f"'temperature' must be positive (got {temperature})")
        self.lam, self.temperature = lam, temperature
        self.default_weight = 1.0 - lam
        self.default_label_weight = lam

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if getattr(graph, 'multilabel', False):  # graph may be None
            return soft_label_bce(teacher_outputs, student_output,
                                  self.temperature)
        return soft_label_kl(teacher_outputs, student_output,
                             self.temperature)
