from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods.base import (
    DistillMethod,
    TeacherCache,
    hidden_layer,
    layer_pairs,
    register_method,
)
from gnncompress.models import ModelOutput

# The weight of the per-node L2-normalised variant, from the public code of
# Joshi et al. (2022), which benchmarks FitNet on graphs.
NORMALIZED_WEIGHT = 1000.0


@register_method('fitnet')
class FitNet(DistillMethod):
    r"""Hint regression from the `"FitNets: Hints for Thin Deep Nets"
    <https://arxiv.org/abs/1412.6550>`_ paper (Romero et al., ICLR 2015).

    A trainable linear map :math:`W` (with bias :math:`b`) takes the
    student's hidden features (width :math:`d_s`) to the teacher's width
    :math:`d_t`, and the mean squared error to the teacher's features is the
    loss, over all :math:`N` nodes:

    .. math::
        \mathcal{L} = \frac{1}{N d_t} \sum_{i=1}^N
        \| \phi(W h_i^s + b) - \phi(h_i^t) \|^2

    with :math:`\phi` the identity, or :math:`\phi(v) = v / \|v\|_2` per node
    when :obj:`normalize` is set. Pairs of layers and several teachers are
    averaged. The map (one per teacher and layer pair) is created in
    :meth:`prepare`, trained with the student and never exported.

    The paper trains the hint alone in a first stage, so it sets no weight
    against the supervised loss. The default weight, :obj:`10`, is our
    choice: for the bundled Cora GAT teacher (last hidden layer 256 wide,
    far from zero-mean) the error starts near 0.6 and a 30x smaller GCN
    student brings it to about 0.02, so the hint term starts at about three
    times the cross-entropy; over 5 seeds weight 1 did as well and 100 did
    worse. With :obj:`normalize=True` the default weight is
    :obj:`1000`, the default of the code of `"On Representation Knowledge
    Distillation for Graph Neural Networks"
    <https://arxiv.org/abs/2111.04964>`_ (Joshi et al., 2022), whose GNN
    benchmark uses this variant.

    Args:
        normalize (bool, optional): L2-normalise the projected student and
            the teacher features per node before the squared error, the
            variant common in GNN work (Joshi et al.'s code); the paper
            regresses the raw features. (default: :obj:`False`)
        teacher_layers (list[int], optional): Teacher hidden layers that give
            the hints. (default: :obj:`[-1]`, the last)
        student_layers (list[int], optional): Student hidden layers guided by
            them, pair by pair; the losses of the pairs are averaged.
            (default: :obj:`[-1]`, the last; the paper guides a middle
            layer of a deeper student, here students are shallow)
    """
    requires = frozenset({'logits', 'hiddens'})
    default_weight = 10.0
    paper = 'Romero et al., ICLR 2015, arXiv:1412.6550'
    summary = 'hints: MSE from a linear map of student hidden features ' \
        'to the teacher\'s'

    def __init__(self, normalize: bool = False,
                 teacher_layers: Sequence[int] = (-1,),
                 student_layers: Sequence[int] = (-1,)) -> None:
        super().__init__()
        if not isinstance(normalize, bool):
            raise ValueError(f"'normalize' must be true or false "
                             f"(got {normalize!r})")
        self.normalize = normalize
        if normalize:
            # Errors between unit vectors are on another scale, so the
            # variant has its own weight; the engine reads the instance's.
            self.default_weight = NORMALIZED_WEIGHT
        self.pairs = layer_pairs(teacher_layers, student_layers)
        # One map per (teacher, pair), in that order; built in prepare.
        self.projections: nn.ModuleList | None = None
        # Teacher hidden tensor -> its regression target, computed once.
        self._cached = TeacherCache()

    def _target(self, h_t: Tensor) -> Tensor:
        return F.normalize(h_t, p=2, dim=-1) if self.normalize else h_t

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        projections = []
        self._cached.clear()
        for out in teacher_outputs:
            for t_layer, s_layer in self.pairs:
                h_t = hidden_layer(out, t_layer, 'teacher')
                h_s = hidden_layer(student_output, s_layer, 'student')
                projections.append(nn.Linear(
                    h_s.size(-1), h_t.size(-1), device=h_s.device,
                    dtype=h_s.dtype))
                self._cached.remember(h_t, self._target)
        self.projections = nn.ModuleList(projections)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if self.projections is None:
            self.prepare(teacher_outputs, student_output, graph)
        assert self.projections is not None
        expected = len(teacher_outputs) * len(self.pairs)
        if len(self.projections) != expected:
            raise ValueError(
                f'FitNet was prepared for {len(self.projections)} '
                f'(teacher, layer) pairs but got {expected}: call prepare '
                f'with these teachers')
        total = student_output.logits.new_zeros(())
        k = 0
        for out in teacher_outputs:
            for t_layer, s_layer in self.pairs:
                h_s = hidden_layer(student_output, s_layer, 'student')
                h_t = hidden_layer(out, t_layer, 'teacher')
                proj = self.projections[k]
                if (proj.in_features, proj.out_features) != \
                        (h_s.size(-1), h_t.size(-1)):
                    raise ValueError(
                        f'FitNet maps width {proj.in_features} to '
                        f'{proj.out_features} for pair {k} but got widths '
                        f'{h_s.size(-1)} (student) and {h_t.size(-1)} '
                        f'(teacher): call prepare with these models')
                guided = proj(h_s)  # [N, d_t]
                if self.normalize:
                    guided = F.normalize(guided, p=2, dim=-1)
                target = self._cached.lookup(h_t, self._target)
                total = total + F.mse_loss(guided, target)
                k += 1
        return total / expected
