from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from gnncompress.data import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.models import ModelOutput


@register_method('kd')
class KD(DistillMethod):
    r"""Soft-label distillation from the `"Distilling the Knowledge in a
    Neural Network" <https://arxiv.org/abs/1503.02531>`_ paper.

    .. math::
        \mathcal{L} = \tau^2 \, \mathrm{KL}(p_t^\tau \,\|\, p_s^\tau)

    averaged over all nodes (``batchmean``), with several teachers averaged.

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
