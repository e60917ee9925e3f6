from __future__ import annotations

import functools
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from gnncompress.core.graph import Graph
from gnncompress.methods.base import (
    DistillMethod,
    TeacherCache,
    hidden_layer,
    layer_pairs,
    register_method,
)
from gnncompress.models import ModelOutput


@register_method('at')
class AT(DistillMethod):
    r"""Attention transfer from the `"Paying More Attention to Attention:
    Improving the Performance of Convolutional Neural Networks via Attention
    Transfer" <https://arxiv.org/abs/1612.03928>`_ paper (Zagoruyko and
    Komodakis, ICLR 2017), with nodes in the place of spatial positions.

    Each model's hidden layer gives one attention value per node, the squared
    norm of its features, and the map is L2-normalised over the :math:`N`
    nodes of the graph:

    .. math::
        a_i = \sum_c h_{ic}^2, \qquad \hat a = a / \|a\|_2, \qquad
        \mathcal{L} = \frac{1}{N} \sum_{i=1}^N (\hat a_i^s - \hat a_i^t)^2

    A map has no channel axis, so teacher and student widths may differ and
    nothing is trained; the teacher's maps are computed once. (The authors'
    code averages over channels instead of summing; the normalisation
    cancels the difference.) On a batch of graphs or point clouds
    (``graph.batch`` set) each map is normalised within its own graph, as
    the paper normalises per image. Pairs of
    layers and several teachers are averaged.

    The default weight, :obj:`1000`, is the paper's :math:`\beta = 10^3`,
    which the authors' code applies to exactly this mean over positions
    (here nodes); it is also the default of the GNN benchmark code of `"On
    Representation Knowledge Distillation for Graph Neural Networks"
    <https://arxiv.org/abs/2111.04964>`_ (Joshi et al., 2022). As
    :math:`\hat a` is a unit vector over all nodes, the loss shrinks like
    :math:`1/N`: Cora (2,708 nodes) is near the 1,024 positions of the
    paper's largest CIFAR maps; on much larger graphs raise the weight
    (Joshi et al. use :math:`10^4` on ogbn-arxiv). On the bundled Cora GAT
    teacher no weight from 30 to :math:`10^4` beat the student trained
    alone.

    Args:
        teacher_layers (list[int], optional): Teacher hidden layers whose
            maps are transferred. (default: :obj:`[-1]`, the last)
        student_layers (list[int], optional): Student hidden layers matched
            with them, pair by pair; the losses of the pairs are averaged.
            (default: :obj:`[-1]`, the last)
    """
    requires = frozenset({'logits', 'hiddens'})
    default_weight = 1000.0
    paper = 'Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928'
    summary = 'attention maps: MSE between normalised per-node squared ' \
        'feature norms'

    def __init__(self, teacher_layers: Sequence[int] = (-1,),
                 student_layers: Sequence[int] = (-1,)) -> None:
        super().__init__()
        self.pairs = layer_pairs(teacher_layers, student_layers)
        # Teacher hidden tensor -> its normalised attention map, computed once.
        self._cached = TeacherCache()

    @staticmethod
    def attention_map(h: Tensor, batch: Tensor | None = None) -> Tensor:
        """``a / ||a||`` with ``a = sum_c h[:, c]^2``, one value per node
        ``[N]``, the norm taken within each graph of ``batch`` if given; an
        all-zero layer gives the zero map."""
        a = h.pow(2).sum(-1)
        if batch is None:
            return F.normalize(a, p=2, dim=0)
        norms = a.new_zeros(int(batch.max()) + 1).index_add(0, batch, a * a)
        return a / norms.sqrt().clamp_min(1e-12)[batch]

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        self._cached.clear()
        for out in teacher_outputs:
            for t_layer, _ in self.pairs:
                self._cached.remember(hidden_layer(out, t_layer, 'teacher'),
                                      self.attention_map)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        total = student_output.logits.new_zeros(())
        # Maps are normalised per graph (graph-level batches, or the graphs
        # of a several-graph node dataset).
        batch = graph.batch if graph.batch is not None else graph.node_graph
        per_graph = functools.partial(self.attention_map, batch=batch)
        for t_layer, s_layer in self.pairs:
            h_s = hidden_layer(student_output, s_layer, 'student')
            if batch is None or batch.numel() != h_s.size(0):
                per_graph = functools.partial(self.attention_map, batch=None)
            att_s = per_graph(h_s)  # [N]
            for out in teacher_outputs:
                att_t = self._cached.lookup(
                    hidden_layer(out, t_layer, 'teacher'), per_graph)  # [N]
                total = total + F.mse_loss(att_s, att_t)
        return total / (len(teacher_outputs) * len(self.pairs))
