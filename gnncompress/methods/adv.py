from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnncompress.core.errors import GnnCompressError
from gnncompress.core.graph import Graph
from gnncompress.methods.base import (
    DistillMethod,
    StudentInputs,
    register_method,
)
from gnncompress.methods.kd import soft_label_bce, soft_label_kl
from gnncompress.models import ModelOutput

# NOSMOG's attack: 5 steps of eps / 4; its epsilon on Cora (CiteSeer: 0.045,
# PubMed 0.005, Computers 0.07, Photo 0.1).
EPSILON = 0.04
STEPS = 5


@register_method('adv')
class Adv(DistillMethod):
    r"""Adversarial feature augmentation, one of NOSMOG's additions to
    GLNN (``glnn+adv``), from Tian et al., ICLR 2023: `"Learning MLPs on
    Graphs: A Unified View of Effectiveness, Robustness, and Efficiency"
    <https://openreview.net/forum?id=Cs3r5KLdoj>`_.

    The student's input features :math:`X` get the perturbation
    :math:`\delta` within :math:`\|\delta\|_\infty \le \epsilon` that most
    increases its distance to the teacher's soft labels, found by projected
    gradient ascent (PGD) from a uniform random start, and the loss is that
    distance at the perturbed input:

    .. math::
        \delta_0 \sim U[-\epsilon, \epsilon], \quad
        \delta_{k+1} = \mathrm{clip}_{[-\epsilon, \epsilon]}\big(\delta_k
        + \alpha \, \mathrm{sign}\, \nabla_\delta
        \mathrm{KL}(p_t \,\|\, p_s(X + \delta_k))\big), \quad
        \mathcal{L} = \mathrm{KL}(p_t \,\|\, p_s(X + \delta_K))

    with NOSMOG's :math:`K = 5` steps of :math:`\alpha = \epsilon / 4`, the
    KL GLNN's (all nodes; temperature 1; on multi-label data KD's BCE
    against the teacher's sigmoid outputs). The gradient of the search
    reaches :math:`\delta` alone; only :math:`\mathcal{L}` trains the
    student, which runs in train mode throughout (dropout drawn anew in
    every forward, as in NOSMOG's code). Each step costs :math:`K + 1`
    extra forward passes of the student.

    NOSMOG adds this term to GLNN's with weight :obj:`0.1`, the default,
    and asks for no label loss of its own (label weight 0). NOSMOG
    perturbs every input feature, its position features included, and so
    does this method (whatever the student reads). It needs the
    regime to rerun the student on other features
    (:class:`~gnncompress.methods.StudentInputs`): full-graph and sampled
    node classification do.

    Args:
        epsilon (float, optional): Bound :math:`\epsilon` on each feature's
            change. (default: :obj:`0.04`, NOSMOG's on Cora; 0.045 on
            CiteSeer)
        steps (int, optional): Ascent steps :math:`K`. (default: :obj:`5`)
        step_size (float, optional): :math:`\alpha`. (default:
            :obj:`epsilon / 4`)
        random_start (bool, optional): Start from a uniform draw in the
            ball (NOSMOG), else from :math:`\delta_0 = 0`.
            (default: :obj:`True`)
    """
    default_weight = 0.1
    default_label_weight = 0.0
    reruns_student = True
    paper = 'Tian et al., ICLR 2023, openreview.net/forum?id=Cs3r5KLdoj'
    summary = 'NOSMOG: soft labels at features perturbed (PGD) within ' \
        'a small ball'

    def __init__(self, epsilon: float = EPSILON, steps: int = STEPS,
                 step_size: float | None = None,
                 random_start: bool = True) -> None:
        super().__init__()
        if not epsilon > 0:
            raise ValueError(f"'epsilon' must be positive (got {epsilon})")
        if isinstance(steps, bool) or not isinstance(steps, int) or \
                steps < 0:
            raise ValueError(f"'steps' must be a whole number, 0 or more "
                             f"(got {steps!r})")
        if step_size is not None and not step_size > 0:
            raise ValueError(
                f"'step_size' must be positive (got {step_size})")
        if not isinstance(random_start, bool):
            raise ValueError(f"'random_start' must be true or false "
                             f"(got {random_start!r})")
        self.epsilon, self.steps = float(epsilon), steps
        self.step_size = self.epsilon / 4 if step_size is None \
            else float(step_size)
        self.random_start = random_start
        self._inputs: StudentInputs | None = None

    def see_inputs(self, inputs: StudentInputs) -> None:
        self._inputs = inputs

    @staticmethod
    def _distance(teacher_outputs: Sequence[ModelOutput], out: ModelOutput,
                  graph: Graph) -> Tensor:
        if getattr(graph, 'multilabel', False):
            return soft_label_bce(teacher_outputs, out, 1.0)
        return soft_label_kl(teacher_outputs, out, 1.0)

    def perturbation(self, teacher_outputs: Sequence[ModelOutput],
                     inputs: StudentInputs, graph: Graph) -> Tensor:
        """:math:`\\delta_K`, detached."""
        x, eps = inputs.x.detach(), self.epsilon
        delta = (torch.rand_like(x) * 2 - 1) * eps if self.random_start \
            else torch.zeros_like(x)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            attack = self._distance(teacher_outputs,
                                    inputs.rerun(x + delta), graph)
            grad, = torch.autograd.grad(attack, delta)
            delta = (delta.detach() + self.step_size * grad.sign()).clamp(
                -eps, eps)
        return delta.detach()

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        inputs, self._inputs = self._inputs, None  # one step's inputs
        if inputs is None:
            raise GnnCompressError(
                "adv reruns the student on perturbed features: train it "
                "with distill on a node-classification graph")
        delta = self.perturbation(teacher_outputs, inputs, graph)
        return self._distance(teacher_outputs,
                              inputs.rerun(inputs.x.detach() + delta), graph)
