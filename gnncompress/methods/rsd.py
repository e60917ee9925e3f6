from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods.base import (
    DistillMethod,
    hidden_layer,
    register_method,
)
from gnncompress.models import ModelOutput

# NOSMOG's mini-batch of nodes (its code's batch_size), over which each
# similarity matrix is taken.
SAMPLE = 512
# How two nodes' features are compared: NOSMOG's plain inner product, or
# the cosine (the inner product of the rows scaled to unit length).
SIMILARITIES = ('dot', 'cosine')


@register_method('rsd')
class RSD(DistillMethod):
    r"""Representation similarity distillation from the `"Learning MLPs on
    Graphs: A Unified View of Effectiveness, Robustness, and Efficiency"
    <https://openreview.net/forum?id=Cs3r5KLdoj>`_ paper (NOSMOG, Tian et
    al., ICLR 2023), one of NOSMOG's additions to GLNN (``glnn+rsd``).

    The student's hidden features :math:`H^s` (the last hidden layer,
    before its activation) pass through a trainable map, and the node-by-node
    similarities (plain inner products) of the result should equal the
    teacher's over the same nodes:

    .. math::
        \tilde H^s = \mathrm{ReLU}(H^s W + b), \quad
        S^s = \tilde H^s_B (\tilde H^s_B)^\top, \quad
        S^t = H^t_B (H^t_B)^\top, \quad
        \mathcal{L} = \frac{\sum_B \| S^t - S^s \|_F^2}{\sum_B |B|^2}

    where the nodes of the step are split at random into blocks :math:`B`
    of at most :obj:`sample` nodes (NOSMOG: mini-batches of 512): every
    node takes part in each step, and memory grows with
    ``nodes x sample``, never ``nodes x nodes``. With one block the loss is
    the mean squared difference of the two :math:`|B| \times |B|` matrices,
    NOSMOG's. As in NOSMOG's code the teacher's features are used as they
    are (its own map for the teacher is unused there), and the map keeps
    the student's width (NOSMOG maps 128 to 128); NOSMOG also applies the
    student's dropout after the map, which a method does not know. Several
    teachers are averaged. The map is created in :meth:`prepare`, trained
    with the student and never exported.

    The default weight is NOSMOG's on Cora and CiteSeer, :obj:`0.1` (its
    configuration uses 0.9 on PubMed and far smaller ones on the Amazon
    graphs). The term asks for no label loss of its own (label weight 0):
    NOSMOG adds it to GLNN's, whose weights the sum keeps.

    With :obj:`similarity` ``'cosine'`` (our variant, not NOSMOG's) the
    rows of :math:`\tilde H^s_B` and :math:`H^t_B` are scaled to unit
    length first, so the similarities lie in [-1, 1] whatever the scale of
    the teacher's hidden features: with NOSMOG's plain products the
    term's size follows the squared norm of the teacher's features, which
    differs from teacher to teacher by orders of magnitude
    (docs/BENCHMARKS.md, "NOSMOG's additions to GLNN").

    Args:
        sample (int, optional): Nodes per similarity matrix.
            (default: :obj:`512`)
        similarity (str, optional): ``'dot'`` (NOSMOG's plain inner
            products) or ``'cosine'``. (default: :obj:`'dot'`)
        teacher_layer (int, optional): The teacher's hidden layer.
            (default: :obj:`-1`, the last)
        student_layer (int, optional): The student's hidden layer.
            (default: :obj:`-1`, the last)
    """
    requires = frozenset({'logits', 'hiddens'})
    default_weight = 0.1
    default_label_weight = 0.0
    paper = 'Tian et al., ICLR 2023, openreview.net/forum?id=Cs3r5KLdoj'
    summary = 'NOSMOG: node-by-node similarities of mapped student hidden ' \
        'features match the teacher\'s'

    def __init__(self, sample: int = SAMPLE, teacher_layer: int = -1,
                 student_layer: int = -1, similarity: str = 'dot') -> None:
        super().__init__()
        if isinstance(sample, bool) or not isinstance(sample, int) or \
                sample < 1:
            raise ValueError(f"'sample' must be a positive whole number "
                             f"(got {sample!r})")
        if similarity not in SIMILARITIES:
            raise ValueError(f"'similarity' must be one of "
                             f"{', '.join(SIMILARITIES)} (got "
                             f"{similarity!r})")
        self.sample, self.similarity = sample, similarity
        self.teacher_layer, self.student_layer = teacher_layer, student_layer
        self.projection: nn.Linear | None = None  # built in prepare

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        for out in teacher_outputs:
            hidden_layer(out, self.teacher_layer, 'teacher')
        h_s = hidden_layer(student_output, self.student_layer, 'student')
        width = h_s.size(-1)
        self.projection = nn.Linear(width, width, device=h_s.device,
                                    dtype=h_s.dtype)

    def blocks(self, n: int, device: torch.device) -> list[Tensor]:
        """The step's nodes in random blocks of at most ``sample`` (one
        block, in order and without drawing, when they fit)."""
        if n <= self.sample:
            return [torch.arange(n, device=device)]
        return list(torch.randperm(n, device=device).split(self.sample))

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if self.projection is None:
            self.prepare(teacher_outputs, student_output, graph)
        assert self.projection is not None
        h_s = hidden_layer(student_output, self.student_layer, 'student')
        if self.projection.in_features != h_s.size(-1):
            raise ValueError(
                f'RSD maps width {self.projection.in_features} but the '
                f'student layer is {h_s.size(-1)} wide: call prepare with '
                f'this student')
        mapped = F.relu(self.projection(h_s))
        if self.similarity == 'cosine':
            mapped = F.normalize(mapped, dim=1)
        blocks = self.blocks(h_s.size(0), h_s.device)
        total = mapped.new_zeros(())
        for out in teacher_outputs:
            h_t = hidden_layer(out, self.teacher_layer, 'teacher').detach()
            if self.similarity == 'cosine':
                h_t = F.normalize(h_t, dim=1)
            for block in blocks:
                z_s, z_t = mapped[block], h_t[block]
                total = total + (z_t @ z_t.T - z_s @ z_s.T).pow(2).sum()
        entries = sum(b.numel() ** 2 for b in blocks)
        return total / (max(1, entries) * len(teacher_outputs))
