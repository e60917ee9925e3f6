from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.models import ModelOutput


@register_method('kd')
class KD(DistillMethod):
    r"""Soft-label distillation from the `"Distilling the Knowledge in a
    Neural Network" <https://arxiv.org/abs/1503.02531>`_ paper.

    .. math::
        \mathcal{L} = \tau^2 \, \mathrm{KL}(p_t^\tau \,\|\, p_s^\tau)

    averaged over all nodes (``batchmean``), with several teachers averaged.
    On multi-label data (``y`` a 0/1 matrix) each label is its own binary
    problem and the KL becomes a BCE against the teacher's softened
    probabilities (METHODS.md):

    .. math::
        \mathcal{L} = \tau^2 \, \mathrm{BCE}(\sigma(z_s/\tau),
        \sigma(z_t/\tau))

    averaged over nodes and labels. The :math:`\tau^2` factor is our
    choice, kept from the single-label form for the same reason (the
    gradient shrinks as :math:`1/\tau^2`).

    Args:
        temperature (float, optional): Softening temperature :math:`\tau`.
            (default: :obj:`4.0`)
    """
    paper = 'Hinton et al., 2015, arXiv:1503.02531'
    summary = 'soft labels: KL to the teacher\'s softened predictions'

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(
                f"'temperature' must be positive (got {temperature})")
        self.temperature = temperature

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        tau = self.temperature
        if getattr(graph, 'multilabel', False):  # graph may be None
            return tau * tau * soft_label_bce(teacher_outputs,
                                              student_output, tau)
        return tau * tau * soft_label_kl(teacher_outputs, student_output, tau)


def soft_label_kl(teacher_outputs: Sequence[ModelOutput],
                  student_output: ModelOutput, tau: float) -> Tensor:
    """``KL(softmax(z_t / tau) || softmax(z_s / tau))``, mean over nodes,
    averaged over the teachers."""
    # Distill on all nodes, not just train_mask: the teacher's soft
    # labels exist everywhere, the hard labels do not.
    log_p_s = F.log_softmax(student_output.logits / tau, dim=-1)  # [N, C]
    total = log_p_s.new_zeros(())
    for out in teacher_outputs:
        log_p_t = F.log_softmax(out.logits / tau, dim=-1)  # [N, C]
        total = total + F.kl_div(log_p_s, log_p_t, reduction='batchmean',
                                 log_target=True)
    return total / len(teacher_outputs)


def soft_label_bce(teacher_outputs: Sequence[ModelOutput],
                   student_output: ModelOutput, tau: float) -> Tensor:
    """``BCEWithLogits(z_s / tau, sigmoid(z_t / tau))``, mean over nodes and
    labels, averaged over the teachers (multi-label soft labels)."""
    total = student_output.logits.new_zeros(())
    for out in teacher_outputs:
        total = total + F.binary_cross_entropy_with_logits(
            student_output.logits / tau, torch.sigmoid(out.logits / tau))
    return total / len(teacher_outputs)
