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
no edge weights, no caching); a model's own ``forward`` (what is exported
and benchmarked) is PyG's. Outputs agree with PyG's to float rounding (a
test checks values and gradients).

TAM's attribution map (the gradient of a score with respect to a unit
weight on every edge's message) does not need per-edge messages either:
:class:`EdgeProbe` adds a zero to every layer's aggregation and derives
the map from the gradient at that zero (see its docstring), so a student
trained with TAM keeps the sparse products.
"""
from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.models.basic_gnn import BasicGNN

from gnncompress.models import sparse_input
from gnncompress.models.edge_ops import _KEEP, _EdgeDot, edge_pattern
from gnncompress.models.spmm import spmm

_CACHE: OrderedDict[tuple, tuple[weakref.ref, int, Tensor]] = OrderedDict()


# The probe of the forward pass being run, if any (EdgeProbe.running).
_PROBE: EdgeProbe | None = None


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


def _aggregate(matrix: Tensor, v: Tensor, probe: _Layer | None) -> Tensor:
    out = _product(matrix, v)
    return out if probe is None else probe.record(v, out)


def _product(matrix: Tensor, v: Tensor) -> Tensor:
    """``matrix @ v``; with a gradient for ``v`` only (aggregation
    matrices are constants)."""
    if torch.is_grad_enabled() and v.requires_grad:
        return _Aggregate.apply(matrix, v)
    return spmm(matrix, v)


class _Aggregate(torch.autograd.Function):
    """``matrix @ v`` for a constant aggregation matrix, whose backward
    multiplies by the matrix's transpose kept beside it: torch's own
    backward transposes and re-sorts the CSR matrix in every step, about
    as long as the product itself on Coauthor Physics."""

    @staticmethod
    def forward(ctx, matrix: Tensor, v: Tensor  # type: ignore[override]
                ) -> Tensor:
        ctx.matrix = matrix
        return spmm(matrix, v)

    @staticmethod
    def backward(ctx, grad: Tensor  # type: ignore[override]
                 ) -> tuple[None, Tensor]:
        # Differentiable again (TAM's maps are gradients it differentiates).
        return None, _product(_transposed(ctx.matrix), grad)


def _transposed(matrix: Tensor) -> Tensor:
    """The CSR transpose of an aggregation matrix, built on its first
    backward and kept on the matrix while it lives (matrices never
    change); the transpose points back to the matrix, weakly, for second
    derivatives."""
    known = getattr(matrix, '_gnncompress_transpose', None)
    transposed = known() if isinstance(known, weakref.ref) else known
    if transposed is None:
        with warnings.catch_warnings():  # "CSR support is in beta state"
            warnings.simplefilter('ignore', UserWarning)
            transposed = matrix.t().to_sparse_csr()
        matrix._gnncompress_transpose = transposed
        transposed._gnncompress_transpose = weakref.ref(matrix)
    return transposed


def _aggregate_linear(matrix: Tensor, x: Tensor, weight: Tensor,
                      bias: Tensor | None, probe: _Layer | None) -> Tensor:
    """``matrix @ x @ weight.T + bias``, multiplied in the cheaper order
    (sparse input features: transform first, models/sparse_input.py)."""
    if weight.size(0) < weight.size(1) or sparse_input.is_registered(x):
        out = _aggregate(matrix, sparse_input.linear(x, weight), probe)
    else:
        out = _aggregate(matrix, x, probe) @ weight.t()
    return out if bias is None else out + bias


def fast_layer(conv: nn.Module, kind: str, x: Tensor, edge_index: Tensor,
               rows: int | None = None,
               num_nodes: int | None = None) -> Tensor:
    """``conv(x, edge_index)`` through the cached sparse matrix. ``rows``:
    only the output of the first ``rows`` nodes, whose in-neighbours are
    among the rows of ``x`` (a trimmed layer of a sampled subgraph of
    ``num_nodes`` nodes, training.regimes.sampled.trimmed_output; the
    matrix, normalisation included, is still that of the whole
    subgraph)."""
    matrix = aggregation_matrix(edge_index, num_nodes or x.size(0), kind,
                                x.dtype)
    probe = _PROBE.layer(edge_index, kind) \
        if _PROBE is not None and _PROBE.edge_index is edge_index else None
    x_self = x
    if rows is not None:
        if probe is not None:
            raise ValueError('an edge probe needs every row of a layer')
        matrix = _top_rows(matrix, rows, x.size(0))
        x_self = x[:rows]
    if type(conv) is GCNConv:
        return _aggregate_linear(matrix, x, conv.lin.weight, conv.bias,
                                 probe)
    if type(conv) is SAGEConv:
        out = _aggregate_linear(matrix, x, conv.lin_l.weight,
                                conv.lin_l.bias, probe)
        return out + conv.lin_r(x_self) if conv.root_weight else out
    # GIN: nn((1 + eps) x + A x)
    return conv.nn((1 + conv.eps) * x_self + _aggregate(matrix, x, probe))


def edge_coefficients(edge_index: Tensor, num_nodes: int, kind: str,
                      dtype: torch.dtype) -> Tensor:
    """``c_e`` of every edge ``j -> i`` of ``edge_index`` (self-loops
    excluded): its entry in the matrix of ``kind`` before duplicates add
    up, i.e. ``(d_j d_i)^-1/2`` for GCN (``d``: in-degree plus the self-loop
    GCN adds, 2 for ``improved``), ``1 / in-degree(i)`` for mean, 1 for
    sum."""
    src, dst = edge_index[0], edge_index[1]
    ones = torch.ones(src.numel(), dtype=dtype, device=src.device)
    degree = torch.zeros(num_nodes, dtype=dtype,
                         device=src.device).index_add_(0, dst, ones)
    if kind.startswith('gcn'):
        scale = (degree + (2.0 if kind == 'gcn-improved' else 1.0)).rsqrt()
        return scale[src] * scale[dst]
    if kind == 'mean':
        return 1.0 / degree[dst]
    return ones


class _Layer:
    """What :class:`EdgeProbe` keeps of one layer: the rows ``v`` that the
    layer aggregates, the zero added to the aggregate, and ``c_e``."""

    def __init__(self, coefficients: Tensor) -> None:
        self.coefficients = coefficients
        self.v: Tensor | None = None
        self.zero: Tensor | None = None

    def record(self, v: Tensor, aggregate: Tensor) -> Tensor:
        self.v = v
        self.zero = aggregate.new_zeros(aggregate.shape, requires_grad=True)
        return aggregate + self.zero


class EdgeProbe:
    r"""A unit weight :math:`w_e` on the message of every edge, without
    per-edge messages in the forward pass.

    With the weights, layer :math:`l` aggregates
    :math:`a^l_i = \sum_{e = j 	o i} c_e w_e v^l_j` (:math:`v^l` the rows
    it aggregates, :math:`c_e` the edge's coefficient,
    :func:`edge_coefficients`), so at :math:`w = 1`

    .. math::
        rac{\partial S}{\partial w_e} = \sum_l c_e \,
        \Big\langle rac{\partial S}{\partial a^l_i},\, v^l_j \Big
angle

    :math:`\partial S / \partial a^l` is the gradient at a zero added to
    each aggregate (:meth:`running` records them), so the map costs one
    backward through the sparse products and one row-wise product per
    edge, and with ``create_graph`` it is differentiable in the model's
    parameters like the map through PyG's explain masks, which it equals
    to float rounding (a test checks values and gradients). The same
    weight multiplies an edge in every layer; the self-loops GCN adds keep
    a constant 1.

    Only for models whose every layer takes the sparse product
    (:func:`supports`) on graphs without self-loops.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        self.edge_index, self.num_nodes = edge_index, num_nodes
        self.layers: list[_Layer] = []
        self._coefficients: dict[tuple, Tensor] = {}

    @staticmethod
    def supports(model: nn.Module, x: Tensor, edge_index: Tensor) -> bool:
        """Whether ``model`` (a PyG GCN, GraphSAGE or GIN whose every
        layer takes the sparse product) can run probed on this graph."""
        return isinstance(model, BasicGNN) and \
            plan(model.convs, x, edge_index) is not None and \
            not bool((edge_index[0] == edge_index[1]).any())

    def layer(self, edge_index: Tensor, kind: str) -> _Layer:
        key = (kind, torch.get_default_dtype())
        if key not in self._coefficients:
            self._coefficients[key] = edge_coefficients(
                edge_index, self.num_nodes, kind, key[1])
        self.layers.append(_Layer(self._coefficients[key]))
        return self.layers[-1]

    def running(self) -> _Running:
        """Context of the forward pass to probe: its layers on this
        probe's ``edge_index`` record themselves."""
        return _Running(self)

    def attribution(self, score: Tensor, create_graph: bool) -> Tensor:
        """``d score / d w``, one value per edge of ``edge_index``."""
        layers = [layer for layer in self.layers if layer.zero is not None]
        grads = torch.autograd.grad(score, [la.zero for la in layers],
                                    create_graph=create_graph,
                                    retain_graph=True, allow_unused=True)
        pattern = edge_pattern(self.edge_index, self.num_nodes)
        total = score.new_zeros(self.edge_index.size(1))
        for layer, grad in zip(layers, grads):
            if grad is None:   # the layer does not reach the score
                continue
            assert layer.v is not None
            total = total + layer.coefficients.to(grad.dtype) * \
                _EdgeDot.apply(grad, layer.v, pattern)
        return total


class _Running:
    def __init__(self, probe: EdgeProbe) -> None:
        self.probe = probe

    def __enter__(self) -> EdgeProbe:
        global _PROBE
        if _PROBE is not None:
            raise RuntimeError('edge probes do not nest')
        _PROBE = self.probe
        return self.probe

    def __exit__(self, *exc: object) -> None:
        global _PROBE
        _PROBE = None


def _top_rows(matrix: Tensor, rows: int, cols: int) -> Tensor:
    """The first ``rows`` rows of a CSR matrix whose entries there lie in
    the first ``cols`` columns, without copying."""
    crow = matrix.crow_indices()[:rows + 1]
    nnz = int(crow[-1])
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, matrix.col_indices()[:nnz],
                                       matrix.values()[:nnz], (rows, cols))
