from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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

REDUCTIONS = ('sum', 'mean')
# Below this norm over nodes a layer's score counts as constant: it then
# correlates with nothing (its dissimilarity is 2), instead of dividing by 0.
_EPS = 1e-12


@register_method('abkd')
class ABKD(DistillMethod):
    r"""Attention-based distillation from the `"ABKD: Graph Neural Network
    Compression with Attention-Based Knowledge Distillation"
    <https://arxiv.org/abs/2310.15938>`_ paper (Ahluwalia et al., 2023).

    Every teacher layer :math:`T_1 \dots T_{L_t}` is matched with every
    student layer :math:`S_1 \dots S_{L_s}` (pre-activation outputs,
    :math:`[N, d]` each, widths free). An attention over the student layers
    says how much each pair counts: with :math:`\bar T_i`, :math:`\bar S_j`
    the means over nodes and :math:`Q_i`, :math:`K_j` per-layer linear maps
    to :math:`d_a`,

    .. math::
        A = \mathrm{softmax}_j \Big( \frac{(\bar T_i Q_i)
        (\bar S_j K_j)^\top}{\sqrt{d_a}} \Big) \in \mathbb{R}^{L_t \times L_s}

    A dissimilarity compares the layers node by node through separate
    per-layer maps :math:`W_i`, :math:`V_j` to :math:`d_a` and a shared
    :math:`P \in \mathbb{R}^{d_a \times d_a}`: per node :math:`n`, the mean
    over the :math:`d_a` columns of :math:`(T_i W_i - S_j V_j) P` is
    :math:`a_{i,n} - b_{j,n}`, with :math:`a_i = T_i W_i P \mathbf{1} / d_a`
    and :math:`b_j = S_j V_j P \mathbf{1} / d_a` one score per node, and

    .. math::
        D_{ij} = \frac{1}{N} \sum_{n=1}^N (\hat a_{i,n} - \hat b_{j,n})^2,
        \qquad
        \mathcal{L} = \sum_{i=1}^{L_t} \frac{1}{L_s} \sum_{j=1}^{L_s}
        A_{ij} D_{ij}

    averaged over several teachers. The paper sums the square over nodes;
    the mean keeps the weight independent of the graph's size.

    :math:`\hat a`, :math:`\hat b` guard against collapse and are our
    addition: each layer's score is standardised over nodes (zero mean, unit
    variance), so :math:`D_{ij} = 2 (1 - \rho_{ij})` with :math:`\rho_{ij}`
    the Pearson correlation of :math:`a_i` and :math:`b_j`, and a constant
    score (e.g. from zeroed maps) counts as uncorrelated
    (:math:`D_{ij} = 2`). With the paper's raw scores (:obj:`normalize=False`)
    the method's own maps drive :math:`D` to zero by shrinking :math:`W_i`,
    :math:`V_j` or :math:`P`, or by sending all features orthogonal to
    :math:`P \mathbf{1}`, and nothing is aligned. Normalising the projected
    features per node, the usual fix, does not stop the second route: the
    mean over :math:`d_a` only ever sees the one direction
    :math:`P \mathbf{1}`. Standardised, the maps alone cannot bring
    :math:`D_{ij}` below :math:`2 (1 - \rho^*)`, where :math:`\rho^*` is the
    first canonical correlation of the two layers: the student has to carry
    the teacher's signal.

    :math:`a` and :math:`b` are computed as :math:`T_i (W_i P \mathbf{1} /
    d_a)`, which is the same number without building any :math:`[N, d_a]`
    tensor, and layers of equal width are stacked and mapped in one batched
    product, so a 64-layer teacher costs :math:`O(L_t N d)` per step. The
    teacher's stacked layers and their means are computed once in
    :meth:`prepare`; the maps (one set per teacher) are created there, sized
    from the layers, trained with the student and never exported.

    The paper weighs the loss with :math:`\beta = 10`, but on its raw
    :math:`D`, whose scale follows the maps' (and collapses). The
    standardised :math:`D` is 2 for an uncorrelated pair, and at 10 the term
    swamps the cross-entropy: against training alone (seeds 0-2), a 30x
    smaller 2-layer GCN student of the bundled Cora GAT teacher lost 5.6
    points and a 4-layer GCN student of a 64-layer GCNII teacher on Cora 25
    points; at 1 they lost about 2, at 0.1 0.4 and 0.7 (seeds 0-5). The
    default weight, :obj:`0.01`, is our choice, on the validation split of
    the method suite (benchmarks/weight_sweep.py, GAT teacher, 30x smaller
    GCN student, Cora, CiteSeer and PubMed, 5 seeds): against the student
    trained alone, validation accuracy moves by -0.49 points at 0.1, +0.19
    at 0.01 and +0.05 at 0.001 (the deep setting was not swept).

    Args:
        dim (int, optional): Width :math:`d_a` of the attention and
            dissimilarity spaces. (default: :obj:`256`, the paper's)
        normalize (bool, optional): Standardise each layer's score over
            nodes before the difference (our guard against collapse, see
            above); :obj:`False` gives the paper's raw formula.
            (default: :obj:`True`)
        include_logits (bool, optional): Count the logits as the last layer
            of both models. They are the pre-activation output of the last
            message-passing layer, so "all layers" includes them, and a
            2-layer student would otherwise offer the attention a single
            layer to choose. Logits of one row per graph or cloud (a
            DGCNN's) are never counted: the score compares node by node.
            (default: :obj:`True`, our choice)
        teacher_reduction (str, optional): :obj:`'sum'` over teacher layers
            as in the paper, or :obj:`'mean'`, which keeps the loss of a deep
            teacher (e.g. a 64-layer GCNII) of the same size as that of a
            shallow one; :obj:`'sum'` multiplies it by :math:`L_t`.
            (default: :obj:`'sum'`)
        teacher_layers (list[int], optional): Teacher hidden layers to match
            (indices into the hidden layers). (default: :obj:`None`, all of
            them, as in the paper)
        student_layers (list[int], optional): Student hidden layers to
            match. (default: :obj:`None`, all of them)
    """
    requires = frozenset({'logits', 'hiddens'})
    default_weight = 0.01
    paper = 'Ahluwalia et al., 2023, arXiv:2310.15938'
    summary = ('Attention-weighted matching of all teacher layers with all '
               'student layers')

    def __init__(self, dim: int = 256, normalize: bool = True,
                 include_logits: bool = True,
                 teacher_reduction: str = 'sum',
                 teacher_layers: Sequence[int] | None = None,
                 student_layers: Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"'dim' must be a positive integer (got {dim!r})")
        for name, value in (('normalize', normalize),
                            ('include_logits', include_logits)):
            if not isinstance(value, bool):
                raise ValueError(f"'{name}' must be true or false "
                                 f"(got {value!r})")
        if teacher_reduction not in REDUCTIONS:
            raise ValueError(f"'teacher_reduction' must be 'sum' or 'mean' "
                             f"(got {teacher_reduction!r})")
        for name, layers in (('teacher_layers', teacher_layers),
                             ('student_layers', student_layers)):
            if layers is not None and len(layers) == 0:
                raise ValueError(f"'{name}' must not be empty (got "
                                 f"{list(layers)}); leave it out to match "
                                 f"all layers")
        self.dim = dim
        self.normalize = normalize
        self.include_logits = include_logits
        self.teacher_reduction = teacher_reduction
        self.teacher_layers = None if teacher_layers is None \
            else [int(i) for i in teacher_layers]
        self.student_layers = None if student_layers is None \
            else [int(i) for i in student_layers]
        # One set of maps per teacher; built in prepare.
        self.pairings: nn.ModuleList | None = None
        # Per teacher: its stacked layers and their node means, once.
        self._cached: list[_TeacherLayers] = []

    def layers(self, out: ModelOutput, who: str) -> list[Tensor]:
        """The layers of ``out`` that take part, in order ``[N, d_l]``."""
        indices = self.teacher_layers if who == 'teacher' \
            else self.student_layers
        if indices is None:
            layers = list(out.hiddens)
        else:
            layers = [hidden_layer(out, i, who) for i in indices]
        if self.include_logits and (not layers or out.logits.size(0)
                                    == layers[0].size(0)):
            # A graph-level or point-cloud model has one row of logits per
            # graph or cloud, not per node: they cannot be compared node
            # by node with the other layers, and are left out.
            layers.append(out.logits)
        if not layers:
            hidden_layer(out, 0, who)  # raises: the model has none
        return layers

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        s_layers = self.layers(student_output, 'student')
        ref = student_output.logits
        pairings, self._cached = [], []
        for out in teacher_outputs:
            t_layers = self.layers(out, 'teacher')
            pairing = _Pairing([h.size(-1) for h in t_layers],
                               [h.size(-1) for h in s_layers], self.dim,
                               ref.device, ref.dtype)
            pairings.append(pairing)
            self._cached.append(_stack_teacher(pairing.teacher, t_layers))
        self.pairings = nn.ModuleList(pairings)

    def _teacher(self, k: int, t_layers: list[Tensor]) -> _TeacherLayers:
        cached = self._cached[k] if k < len(self._cached) else None
        if cached is not None and len(cached.sources) == len(t_layers) and \
                all(a is b for a, b in zip(cached.sources, t_layers)):
            return cached
        return _stack_teacher(self.pairings[k].teacher, t_layers)

    def attention(self, k: int, teacher: _TeacherLayers,
                  s_stacks: list[Tensor]) -> Tensor:
        """``A`` of teacher ``k``, softmax over student layers
        ``[L_t, L_s]``."""
        pairing = self.pairings[k]
        query = pairing.teacher.pooled(teacher.means)  # [L_t, d_a]
        key = pairing.student.pooled([h.mean(1) for h in s_stacks])
        return torch.softmax(query @ key.t() / math.sqrt(self.dim), dim=1)

    def dissimilarity(self, k: int, teacher: _TeacherLayers,
                      s_stacks: list[Tensor]) -> Tensor:
        """``D`` of teacher ``k`` ``[L_t, L_s]``."""
        pairing = self.pairings[k]
        # mean_k((H W) P)[n, k] = H (W p)[n] with p = P.mean(1): never
        # build the [N, d_a] projections.
        direction = pairing.mixing.mean(1)  # [d_a]
        a = pairing.teacher.scores(teacher.stacks, direction)  # [L_t, N]
        b = pairing.student.scores(s_stacks, direction)  # [L_s, N]
        if self.normalize:
            a_hat = F.normalize(a - a.mean(1, keepdim=True), dim=1, eps=_EPS)
            b_hat = F.normalize(b - b.mean(1, keepdim=True), dim=1, eps=_EPS)
            # mean_n (a_n - b_n)^2 of standardised scores = 2 (1 - rho).
            return 2 - 2 * a_hat @ b_hat.t()
        num_nodes = a.size(1)
        sq = (a.pow(2).mean(1)[:, None] + b.pow(2).mean(1)[None, :]
              - 2 * a @ b.t() / num_nodes)
        return sq.clamp_min(0)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if self.pairings is None:
            self.prepare(teacher_outputs, student_output, graph)
        assert self.pairings is not None
        if len(self.pairings) != len(teacher_outputs):
            raise ValueError(
                f'ABKD was prepared for {len(self.pairings)} teacher(s) but '
                f'got {len(teacher_outputs)}: call prepare with these '
                f'teachers')
        s_layers = self.layers(student_output, 'student')
        total = student_output.logits.new_zeros(())
        for k, out in enumerate(teacher_outputs):
            pairing = self.pairings[k]
            t_layers = self.layers(out, 'teacher')
            pairing.teacher.check(t_layers, 'teacher')
            pairing.student.check(s_layers, 'student')
            teacher = self._teacher(k, t_layers)
            s_stacks = pairing.student.stack(s_layers)
            weighted = self.attention(k, teacher, s_stacks) * \
                self.dissimilarity(k, teacher, s_stacks)  # [L_t, L_s]
            per_layer = weighted.mean(1)  # [L_t]
            total = total + (per_layer.sum()
                             if self.teacher_reduction == 'sum'
                             else per_layer.mean())
        return total / len(teacher_outputs)


@dataclass
class _TeacherLayers:
    sources: list[Tensor]   # the layers as given, to recognise them
    stacks: list[Tensor]    # [L_g, N, d_g] per width group
    means: list[Tensor]     # [L_g, d_g] per width group


def _stack_teacher(maps: _LayerMaps,
                   layers: list[Tensor]) -> _TeacherLayers:
    with torch.no_grad():
        stacks = maps.stack([h.detach() for h in layers])
        return _TeacherLayers(list(layers), stacks,
                              [h.mean(1) for h in stacks])


class _LayerMaps(nn.Module):
    """The per-layer maps of one model's layers to ``dim``, one for the
    attention and one for the dissimilarity. Layers of equal width are
    stacked, so each width group is mapped in one batched product."""

    def __init__(self, widths: Sequence[int], dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.widths = list(widths)
        groups: dict[int, list[int]] = {}
        for position, width in enumerate(self.widths):
            groups.setdefault(width, []).append(position)
        self.groups = list(groups.items())  # (width, layer positions)
        order = [p for _, positions in self.groups for p in positions]
        self.register_buffer(
            'inverse', torch.argsort(torch.tensor(order, device=device)),
            persistent=False)

        def maps() -> nn.ParameterList:
            return nn.ParameterList(
                _linear_init(len(positions), width, dim, device, dtype)
                for width, positions in self.groups)

        self.attention = maps()      # Q_i / K_j: [L_g, d_g, d_a] per group
        self.dissimilarity = maps()  # W_i / V_j: [L_g, d_g, d_a] per group

    def check(self, layers: Sequence[Tensor], who: str) -> None:
        widths = [h.size(-1) for h in layers]
        if widths != self.widths:
            raise ValueError(
                f'ABKD was prepared for {who} layer widths {self.widths} but '
                f'got {widths}: call prepare with these models')

    def stack(self, layers: Sequence[Tensor]) -> list[Tensor]:
        return [torch.stack([layers[p] for p in positions])
                for _, positions in self.groups]  # [L_g, N, d_g] each

    def per_layer(self, which: str) -> list[Tensor]:
        """The maps as one ``[d_l, dim]`` matrix per layer, in order."""
        stacked = getattr(self, which)
        by_position = {p: stacked[g][r]
                       for g, (_, positions) in enumerate(self.groups)
                       for r, p in enumerate(positions)}
        return [by_position[p] for p in range(len(self.widths))]

    def pooled(self, means: Sequence[Tensor]) -> Tensor:
        """Each layer's node mean mapped to ``dim`` ``[L, dim]``."""
        parts = [torch.einsum('ld,lda->la', m, w)
                 for m, w in zip(means, self.attention)]
        return torch.cat(parts)[self.inverse]

    def scores(self, stacks: Sequence[Tensor], direction: Tensor) -> Tensor:
        """``H_l (W_l p)``, one score per layer and node ``[L, N]``."""
        parts = [torch.einsum('lnd,ld->ln', h, w @ direction)
                 for h, w in zip(stacks, self.dissimilarity)]
        return torch.cat(parts)[self.inverse]


class _Pairing(nn.Module):
    """The trainable parts for one teacher: both models' maps and ``P``."""

    def __init__(self, teacher_widths: Sequence[int],
                 student_widths: Sequence[int], dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.teacher = _LayerMaps(teacher_widths, dim, device, dtype)
        self.student = _LayerMaps(student_widths, dim, device, dtype)
        # P starts as the identity: the score is then the plain mean over
        # d_a of the projected features (our choice).
        self.mixing = nn.Parameter(torch.eye(dim, device=device, dtype=dtype))


def _linear_init(layers: int, width: int, dim: int, device: torch.device,
                 dtype: torch.dtype) -> nn.Parameter:
    # nn.Linear's default: uniform in +-1/sqrt(fan_in).
    bound = 1 / math.sqrt(width)
    weight = torch.empty(layers, width, dim, device=device, dtype=dtype)
    return nn.Parameter(weight.uniform_(-bound, bound))
