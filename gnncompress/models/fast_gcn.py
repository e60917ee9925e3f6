"""An export-time formulation of PyG's GCN that onnxruntime runs fast.

PyG's ``GCNConv`` computes, per layer, ``deg`` by a scatter over the edges
with added self-loops, a weight ``deg_j^-1/2 deg_i^-1/2`` per edge, the
weighted message ``[E, F]`` and a scatter-add of it. Exported as is, that is
``ScatterElements`` on ``[E, F]`` index tensors plus an ``[E, F]`` multiply:
on an arxiv-sized graph, 3x slower than eager PyTorch (../EXPORT.md).

:class:`FastGCN` computes the same function with the normalisation folded
into per-node scales:

.. math::
    h_i' = d_i^{-1/2} \\Big( \\sum_{j \\to i,\\, j \\ne i} d_j^{-1/2} h_j
    + d_i^{-1/2} h_i \\Big) + b, \\qquad d_i = 1 + |\\{j \\to i,\\ j \\ne i\\}|

so the only edge-sized work is one row gather (``Gather``) and one row
scatter-add (``ScatterND``, reduction add) per layer; degrees are scatters of
scalars. Self-loops already in ``edge_index`` are dropped and one added per
node, as ``add_remaining_self_loops`` does for unit weights. ``ScatterND``
races on duplicate indices with more than one intra-op thread, so
``onnx_session`` runs such a graph on one thread (EXPORT.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.models import GCN


class FastGCN(nn.Module):
    """The function of a plain PyG :class:`GCN` (ReLU between layers, no
    norm, no jumping knowledge), for export; built by :func:`fast_gcn`."""

    def __init__(self, model: GCN) -> None:
        super().__init__()
        self.convs = model.convs

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        num_nodes = x.size(0)
        loop = (src == dst).to(x.dtype)  # [E]
        zeros = x.new_zeros(num_nodes)
        in_degree = zeros.index_add(0, dst, torch.ones_like(loop))  # [N]
        loops = zeros.index_add(0, dst, loop)  # [N]
        scale = (in_degree - loops + 1.0).rsqrt()[:, None]  # [N, 1]
        keep = (1.0 - loops)[:, None]  # [N, 1]
        h = x
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            weight = conv.lin.weight.t()  # [in, out]
            # Aggregation commutes with the linear map, so the edge-sized
            # work runs at the narrower of the two widths.
            narrow_out = weight.size(1) <= weight.size(0)
            if narrow_out:
                h = h @ weight
            h = h * scale
            # Every edge j -> i adds h_j; the self-loops of edge_index are
            # taken back out through `keep` and one loop per node kept.
            h = (h * keep).index_add(0, dst, h.index_select(0, src))
            h = h * scale
            if not narrow_out:
                h = h @ weight
            h = h + conv.bias
            if i < last:
                h = h.relu()
        return h


def fast_gcn(model: nn.Module) -> FastGCN | None:
    """:class:`FastGCN` for ``model`` when it is a plain PyG GCN (what the
    tool builds for ``--student gcn``), else ``None`` (export the model as it
    is)."""
    if type(model) is not GCN or model.jk_mode is not None:
        return None
    if model.norms is not None and any(
            not isinstance(n, nn.Identity) for n in model.norms):
        return None
    if not isinstance(model.act, nn.ReLU) or model.act_first:
        return None
    for conv in model.convs:
        if not isinstance(conv, GCNConv) or conv.improved or \
                not conv.add_self_loops or not conv.normalize or \
                conv.cached or conv.bias is None or conv.lin.bias is not None:
            return None
    return FastGCN(model)
