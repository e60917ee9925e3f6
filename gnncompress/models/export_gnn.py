"""The export-time form of PyG's GCN, GraphSAGE and GIN.

Exported as they are, PyG's layers gather an ``[E, F_in]`` message per
edge and scatter it back with ``ScatterElements`` on an ``[E, F]`` index:
serial in onnxruntime and 3-6x slower than eager PyTorch on large graphs,
and on wide bag-of-words features (Coauthor CS: 6,805) gigabytes per
buffer. :class:`ExportGNN` computes the same function as
``BasicGNN.forward`` with two changes:

* the neighbourhood sum is :func:`~gnncompress.models.segment.neighbour_sum`
  (a segment sum over destination-sorted edges, correct under any number
  of onnxruntime threads, docs/export.md);
* aggregation commutes with a layer's linear map, so the edge-sized work
  runs at the narrower of the layer's input and output widths. For GCN the
  normalisation folds into per-node scales:

.. math::
    h_i' = d_i^{-1/2} \\Big( \\sum_{j \\to i,\\, j \\ne i} d_j^{-1/2} h_j
    + d_i^{-1/2} h_i \\Big) + b, \\qquad d_i = 1 + |\\{j \\to i,\\ j \\ne i\\}|

  (self-loops already in ``edge_index`` are dropped and one added per node,
  as ``add_remaining_self_loops`` does for unit weights); SAGE's mean is
  the sum times ``1 / max(1, in-degree)``, its 'gcn' aggregator
  (models/sage_gcn.py) the same self-looped sum as GCN's times
  ``1 / d_i``; GIN's first linear map moves in
  front of its sum.

Nothing in it is sized by edges times input features, and the same holds
for the reference forward the parity check compares it with
(``gnncompress.models.run_model``, models/propagation.py).

The input features may also come as a CSR matrix (:class:`CsrFeatures`,
the sparse-feature export of docs/export.md) when the first layer narrows:
its linear maps then sum the weight columns of each row's non-zeros
(:func:`~gnncompress.models.segment.csr_linear`) instead of multiplying a
mostly-zero dense matrix.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, SAGEConv
from torch_geometric.nn.models import GCN, GIN, MLP, GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN

from gnncompress.models.sage_gcn import GcnGraphSAGE, GcnSAGEConv
from gnncompress.models.segment import (
    Segments,
    csr_linear,
    neighbour_sum,
    segments,
)


def _supported(conv: nn.Module) -> bool:
    if getattr(conv, 'flow', 'source_to_target') != 'source_to_target' or \
            getattr(conv, '_explain', None):
        return False
    if type(conv) is GCNConv:
        return conv.normalize and conv.add_self_loops and \
            not conv.improved and not conv.cached and conv.aggr == 'add' \
            and conv.lin.bias is None
    if type(conv) is SAGEConv:
        return conv.aggr in ('mean', 'sum', 'add') and not conv.project \
            and not conv.normalize
    if type(conv) is GcnSAGEConv:
        return not conv.project and not conv.normalize
    return type(conv) is GINConv and conv.aggr == 'add'


@dataclass
class CsrFeatures:
    """Node features ``[N, F]`` as a CSR matrix: row ``i``'s non-zeros are
    ``values[indptr[i]:indptr[i + 1]]`` at columns ``indices[...]``
    (scipy's ``indptr``, ``indices``, ``data``)."""
    indptr: Tensor   # [N + 1]
    indices: Tensor  # [nnz]
    values: Tensor   # [nnz]


def _product(x: Tensor | CsrFeatures, weight: Tensor) -> Tensor:
    """``x @ weight.T`` for dense or CSR features."""
    if isinstance(x, CsrFeatures):
        return csr_linear(x.indptr, x.indices, x.values, weight)
    return x @ weight.t()


class _GinFirst(nn.Module):
    """A GIN layer's MLP split at its first linear map, so the sum runs
    at that map's output width when it is narrower."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.first = mlp.lins[0]
        # A shallow copy that shares every parameter but owns its module
        # table, so the model itself keeps its first map.
        self.rest = copy.copy(mlp)
        self.rest._modules = dict(mlp._modules)
        self.rest.lins = nn.ModuleList([nn.Identity(), *mlp.lins[1:]])


class ExportGNN(nn.Module):
    """``BasicGNN.forward`` of a PyG GCN, GraphSAGE or GIN (any norm,
    activation or jumping knowledge) for export; built by
    :func:`export_gnn`. Same inputs ``(x, edge_index)`` and outputs."""

    def __init__(self, model: BasicGNN) -> None:
        super().__init__()
        self.model = model
        self.gin_first = nn.ModuleList([
            _GinFirst(conv.nn) if type(conv) is GINConv and
            isinstance(conv.nn, MLP) and
            conv.nn.lins[0].weight.size(0) < conv.nn.lins[0].weight.size(1)
            else nn.Identity() for conv in model.convs])

    def takes_csr(self) -> bool:
        """Whether the first layer reads its input only through linear
        maps that narrow it, so that :class:`CsrFeatures` can be given
        (never densified)."""
        conv = self.model.convs[0]
        if type(conv) is GCNConv:
            return _narrows(conv.lin.weight)
        if type(conv) in (SAGEConv, GcnSAGEConv):
            return _narrows(conv.lin_l.weight)
        return isinstance(self.gin_first[0], _GinFirst)

    def forward(self, x: Tensor | CsrFeatures, edge_index: Tensor) -> Tensor:
        model = self.model
        if isinstance(x, CsrFeatures):
            seg = segments(edge_index, x.indptr.size(0) - 1, x.values.dtype)
        else:
            seg = segments(edge_index, x.size(0), x.dtype)
        gcn: tuple[Tensor, Tensor] | None = None
        xs: list[Tensor] = []
        for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
            if type(conv) is GCNConv:
                gcn = gcn or _gcn_scales(edge_index, seg)
                x = _gcn(conv, x, seg, *gcn)
            elif type(conv) is GcnSAGEConv:
                gcn = gcn or _gcn_scales(edge_index, seg)
                x = _sage_gcn(conv, x, seg, *gcn)
            elif type(conv) is SAGEConv:
                x = _sage(conv, x, seg)
            else:
                x = _gin(conv, self.gin_first[i], x, seg)
            if i < model.num_layers - 1 or model.jk_mode is not None:
                if model.act is not None and model.act_first:
                    x = model.act(x)
                x = norm(x, None, None) if model.supports_norm_batch \
                    else norm(x)
                if model.act is not None and not model.act_first:
                    x = model.act(x)
                if hasattr(model, 'jk'):
                    xs.append(x)
        x = model.jk(xs) if hasattr(model, 'jk') else x
        return model.lin(x) if hasattr(model, 'lin') else x


def _narrows(weight: Tensor) -> bool:
    return weight.size(0) < weight.size(1)


def _linear_sum(x: Tensor | CsrFeatures, weight: Tensor, seg: Segments,
                scale: Tensor | None = None,
                keep: Tensor | None = None) -> Tensor:
    """``(sum_{j -> i} s_j x_j + k_i s_i x_i) @ weight.T`` (``s``: ``scale``,
    ``k``: ``keep``, each 1 when not given) multiplied in the order that
    keeps the edge-sized work at the narrower width (CSR features only
    reach here for a narrowing ``weight``: :meth:`ExportGNN.takes_csr`)."""
    narrow_out = _narrows(weight)
    h = _product(x, weight) if narrow_out else x
    h = h if scale is None else h * scale
    out = neighbour_sum(h, seg)
    out = out if keep is None else out + h * keep
    return out if narrow_out else out @ weight.t()


def _gcn_scales(edge_index: Tensor,
                seg: Segments) -> tuple[Tensor, Tensor]:
    """``d^-1/2`` and the weight of each node's own row (1 less the
    self-loops ``edge_index`` already has, which the sum counts), [N, 1]."""
    degree = seg.in_degree
    loop = (edge_index[0] == edge_index[1]).to(degree.dtype)  # [E]
    loops = degree.new_zeros(degree.size(0)) \
        .scatter_add(0, seg.dst, loop)  # [N]
    scale = (seg.in_degree - loops + 1.0).rsqrt()[:, None]
    return scale, (1.0 - loops)[:, None]


def _gcn(conv: GCNConv, x: Tensor | CsrFeatures, seg: Segments, scale: Tensor,
         keep: Tensor) -> Tensor:
    out = _linear_sum(x, conv.lin.weight, seg, scale, keep) * scale
    return out if conv.bias is None else out + conv.bias


def _sage(conv: SAGEConv, x: Tensor | CsrFeatures, seg: Segments) -> Tensor:
    out = _linear_sum(x, conv.lin_l.weight, seg)
    if conv.aggr == 'mean':
        out = out / seg.in_degree.clamp(min=1.0)[:, None]
    if conv.lin_l.bias is not None:
        out = out + conv.lin_l.bias
    if not conv.root_weight:
        return out
    root = _product(x, conv.lin_r.weight)
    return out + root if conv.lin_r.bias is None else \
        out + root + conv.lin_r.bias


def _sage_gcn(conv: GcnSAGEConv, x: Tensor | CsrFeatures, seg: Segments,
              scale: Tensor, keep: Tensor) -> Tensor:
    """The 'gcn' aggregator: the sum over the node and its neighbours
    (``keep`` as in GCN) divided by their count, ``scale ** -2``."""
    out = _linear_sum(x, conv.lin_l.weight, seg, keep=keep) * scale.square()
    return out if conv.lin_l.bias is None else out + conv.lin_l.bias


def _gin(conv: GINConv, first: nn.Module, x: Tensor | CsrFeatures,
         seg: Segments) -> Tensor:
    if isinstance(first, _GinFirst):
        weight = first.first.weight
        z = (1 + conv.eps) * _product(x, weight) + \
            _linear_sum(x, weight, seg)
        if first.first.bias is not None:
            z = z + first.first.bias
        return first.rest(z)
    return conv.nn((1 + conv.eps) * x + neighbour_sum(x, seg))


def export_gnn(model: nn.Module) -> ExportGNN | None:
    """:class:`ExportGNN` for a PyG GCN, GraphSAGE or GIN whose every
    layer it supports (no edge weights, explain masks, caching, ``max``
    aggregation); else ``None`` (export the model as it is)."""
    if type(model) not in (GCN, GraphSAGE, GcnGraphSAGE, GIN) or not all(
            _supported(conv) for conv in model.convs):
        return None
    return ExportGNN(model)

