"""Message passing as one sparse matrix product per layer, for training.

PyG's ``GCNConv``, ``SAGEConv`` (mean) and ``GINConv`` given an
``edge_index`` gather both ends of every edge into an ``[E, F]`` tensor,
multiply and scatter it back, and ``GCNConv`` recomputes its normalisation
in every layer and every call. The same functions are, per layer, a product
with a fixed sparse matrix: ``D^-1/2 (A + I) D^-1/2`` (GCN), ``D^-1 A``
(mean) or ``A`` (sum). :func:`aggregation_matrix` builds that matrix once
per graph in CSR form (rows are destination nodes) and keeps it while the
``edge_index`` it came from lives; :func:`fast_layer` computes a layer with
it, at the narrower of the layer's input and output widths (aggregation
commutes with the linear map). ``benchmarks/kernels.py`` measures both
ways on a graph the size of synthetic PPI's training graphs.

Only :func:`gnncompress.models.build.run_model` takes this path, and only
for plain layers with nothing attached to their edges (no explain masks,
which TAM's attribution maps use, no edge weights, no caching); a model's
own ``forward`` (what is exported and benchmarked) is PyG's. Outputs agree
with PyG's to float rounding (a test checks values and gradients).
"""
from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from gnncompress.models import sparse_input

# Matrices kept at once: a run touches one or two graphs (training and,
# for inductive data, the evaluation graph), so a few are enough.
_KEEP = 4
_CACHE: OrderedDict[tuple, tuple[weakref.ref, int, Tensor]] = OrderedDict()


def _kind(conv: nn.Module) -> str | None:
    """Which matrix ``conv`` multiplies by, or None when it must run as
    PyG's own layer."""
    if getattr(conv, '_explain', None) or \
            getattr(conv, '_edge_mask', None) is not None:
        return None
    if getattr(conv, 'flow', 'source_to_target') != 'source_to_target':
        return None
    if type(conv) is GCNConv:
        if conv.normalize and conv.add_self_loops and not conv.cached \
                and conv.aggr == 'add':
            return 'gcn-improved' if conv.improved else 'gcn'
        return None
    if type(conv) is SAGEConv:
        if conv.aggr == 'mean' and not conv.project and not conv.normalize:
            return 'mean'
        return None
    if type(conv) is GINConv and conv.aggr == 'add':
        return 'sum'
    return None


def plan(convs: nn.ModuleList, x: Tensor, edge_index: Tensor) -> list | None:
    """One matrix kind per layer when every layer can take the sparse
    product, else None (the whole model runs as PyG's)."""
    if torch.compiler.is_compiling() or type(edge_index) is not Tensor \
            or edge_index.dim() != 2 or x.is_sparse or x.dim() != 2:
        return None
    kinds = [_kind(conv) for conv in convs]
    return None if any(k is None for k in kinds) else kinds


def aggregation_matrix(edge_index: Tensor, num_nodes: int, kind: str,
                       dtype: torch.dtype) -> Tensor:
    """The ``[N, N]`` CSR matrix of ``kind`` for the graph, from the cache
    while ``edge_index`` is alive and unchanged."""
    key = (id(edge_index), num_nodes, kind, dtype, edge_index.device)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is edge_index and \
            hit[1] == edge_index._version:
        _CACHE.move_to_end(key)
        return hit[2]
    matrix = _build(edge_index, num_nodes, kind, dtype)
    _CACHE[key] = (weakref.ref(edge_index), edge_index._version, matrix)
    _CACHE.move_to_end(key)
    while len(_CACHE) > _KEEP:
        _CACHE.popitem(last=False)
    return matrix


def _build(edge_index: Tensor, num_nodes: int, kind: str,
           dtype: torch.dtype) -> Tensor:
    if kind.startswith('gcn'):
        index, weight = gcn_norm(edge_index, None, num_nodes,
                                 improved=kind == 'gcn-improved',
                                 add_self_loops=True, dtype=dtype)
    else:
        index = edge_index
        weight = torch.ones(index.size(1), dtype=dtype,
                            device=index.device)
        if kind == 'mean':
            count = torch.zeros(num_nodes, dtype=dtype, device=index.device)
            count.index_add_(0, index[1], weight)
            weight = weight / count[index[1]]
    # Row i gathers from the sources of the edges into i; duplicates add.
    matrix = torch.sparse_coo_tensor(index.flip(0), weight,
                                     (num_nodes, num_nodes),
                                     check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return matrix.to_sparse_csr()


def _aggregate_linear(matrix: Tensor, x: Tensor, weight: Tensor,
                      bias: Tensor | None) -> Tensor:
    """``matrix @ x @ weight.T + bias``, multiplied in the cheaper order
    (sparse input features: transform first, models/sparse_input.py)."""
    if weight.size(0) < weight.size(1) or sparse_input.is_registered(x):
        out = torch.sparse.mm(matrix, sparse_input.linear(x, weight))
    else:
        out = torch.sparse.mm(matrix, x) @ weight.t()
    return out if bias is None else out + bias


def fast_layer(conv: nn.Module, kind: str, x: Tensor, edge_index: Tensor,
               rows: int | None = None,
               num_nodes: int | None = None) -> Tensor:
    """``conv(x, edge_index)`` through the cached sparse matrix. ``rows``:
    only the output of the first ``rows`` nodes, whose in-neighbours are
    among the rows of ``x`` (a trimmed layer of a sampled subgraph of
    ``num_nodes`` nodes, gnncompress.minibatch.trimmed_output; the matrix,
    normalisation included, is still that of the whole subgraph)."""
    matrix = aggregation_matrix(edge_index, num_nodes or x.size(0), kind,
                                x.dtype)
    x_self = x
    if rows is not None:
        matrix = _top_rows(matrix, rows, x.size(0))
        x_self = x[:rows]
    if type(conv) is GCNConv:
        return _aggregate_linear(matrix, x, conv.lin.weight, conv.bias)
    if type(conv) is SAGEConv:
        out = _aggregate_linear(matrix, x, conv.lin_l.weight,
                                conv.lin_l.bias)
        return out + conv.lin_r(x_self) if conv.root_weight else out
    # GIN: nn((1 + eps) x + A x)
    return conv.nn((1 + conv.eps) * x_self + torch.sparse.mm(matrix, x))


def _top_rows(matrix: Tensor, rows: int, cols: int) -> Tensor:
    """The first ``rows`` rows of a CSR matrix whose entries there lie in
    the first ``cols`` columns, without copying."""
    crow = matrix.crow_indices()[:rows + 1]
    nnz = int(crow[-1])
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, matrix.col_indices()[:nnz],
                                       matrix.values()[:nnz], (rows, cols))
