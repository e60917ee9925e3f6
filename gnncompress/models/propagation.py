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

import functools
import warnings
import weakref
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.models.basic_gnn import BasicGNN

from gnncompress.models import sparse_input
from gnncompress.models.spmm import spmm

# Matrices kept at once: a run touches one or two graphs (training and,
# for inductive data, the evaluation graph), so a few are enough.
_KEEP = 4
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


class EdgePattern:
    """The edges of an ``edge_index`` as two CSR patterns, rows the
    destinations and rows the sources (``order``: edge ids in each one's
    storage order), for :class:`_EdgeDot`."""

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        self.num_nodes = num_nodes
        self.by_dst = self._csr(edge_index[1], edge_index[0], num_nodes)
        self.by_src = self._csr(edge_index[0], edge_index[1], num_nodes)

    @staticmethod
    def _csr(rows: Tensor, cols: Tensor,
             num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
        order = torch.argsort(rows * num_nodes + cols)
        crow = rows.new_zeros(num_nodes + 1)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_nodes), 0)
        return crow, cols[order], order

    @functools.cached_property
    def reverse(self) -> Tensor | None:
        """Each edge's reverse (an edge id per edge) when every edge has
        one, as in an undirected graph; None otherwise. The two patterns
        then hold the same entries, the reverse of ``by_dst``'s edge at a
        position being ``by_src``'s edge at that position."""
        (d_crow, d_col, d_order), (s_crow, s_col, s_order) = \
            self.by_dst, self.by_src
        if not (torch.equal(d_crow, s_crow) and torch.equal(d_col, s_col)):
            return None
        reverse = torch.empty_like(d_order)
        reverse[d_order] = s_order
        return reverse

    @functools.cached_property
    def sampled(self) -> tuple[Tensor, Tensor, Tensor]:
        """``by_dst`` for a sampled product: ``crow, col`` and, per edge,
        the position of its value in the product's values."""
        crow, col, order = self.by_dst
        return crow, col, _inverse(order)

    @functools.cached_property
    def rows(self) -> Tensor:
        """The row (destination) of every position of ``by_dst``."""
        crow = self.by_dst[0]
        return torch.repeat_interleave(
            torch.arange(self.num_nodes, device=crow.device),
            crow[1:] - crow[:-1])

    @functools.cached_property
    def half(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """For an undirected pattern, :attr:`sampled` on the edges
        ``j -> i`` with ``j <= i`` only, every other edge reading its
        reverse's value: a symmetric per-edge product needs only these."""
        if self.reverse is None:
            return None
        crow, col, order = self.by_dst
        keep = col <= self.rows
        half_crow = crow.new_zeros(self.num_nodes + 1)
        half_crow[1:] = torch.cumsum(
            torch.bincount(self.rows[keep], minlength=self.num_nodes), 0)
        kept = order[keep]
        position = torch.empty_like(order)
        slots = torch.arange(kept.numel(), device=col.device)
        position[self.reverse[kept]] = slots
        position[kept] = slots  # self-loops: their own reverse
        return half_crow, col[keep], position

    @functools.cached_property
    def symmetric(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """For an undirected pattern, in ``by_dst`` positions rather than
        edge ids: the row of each :attr:`half` slot, the slot each position
        reads, and each position's reverse."""
        if self.half is None or self.reverse is None:
            return None
        order = self.by_dst[2]
        edge_position = self.sampled[2]
        return (self.rows[self.by_dst[1] <= self.rows],
                self.half[2].index_select(0, order),
                edge_position.index_select(
                    0, self.reverse.index_select(0, order)))

    @functools.cached_property
    def num_with_edges(self) -> int:
        """Nodes with at least one incoming edge."""
        crow = self.by_dst[0]
        return int((crow[1:] > crow[:-1]).sum())

    def matrix(self, side: str, values: Tensor,
               positions: bool = False) -> Tensor:
        """The ``[N, N]`` CSR matrix with ``values`` (edge order, or the
        pattern's storage order with ``positions``) on the pattern
        ``side`` ('dst' or 'src' rows)."""
        crow, col, order = self.by_dst if side == 'dst' else self.by_src
        if not positions:
            values = values.index_select(0, order)
        with warnings.catch_warnings():  # "CSR support is in beta state"
            warnings.simplefilter('ignore', UserWarning)
            return torch.sparse_csr_tensor(crow, col, values,
                                           (self.num_nodes, self.num_nodes))


_PATTERNS: OrderedDict[tuple, tuple[weakref.ref, int, EdgePattern]] = \
    OrderedDict()


def _inverse(permutation: Tensor) -> Tensor:
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(permutation.numel(),
                                        device=permutation.device)
    return inverse


def edge_pattern(edge_index: Tensor, num_nodes: int) -> EdgePattern:
    """:class:`EdgePattern` of ``edge_index``, kept while it lives."""
    key = (id(edge_index), num_nodes, edge_index.device)
    hit = _PATTERNS.get(key)
    if hit is not None and hit[0]() is edge_index and \
            hit[1] == edge_index._version:
        return hit[2]
    pattern = EdgePattern(edge_index, num_nodes)
    _PATTERNS[key] = (weakref.ref(edge_index), edge_index._version, pattern)
    while len(_PATTERNS) > _KEEP:
        _PATTERNS.popitem(last=False)
    return pattern


class _EdgeDot(torch.autograd.Function):
    """``out_e = <g_i, v_j>`` for every edge ``e = j -> i``, as a sampled
    dense product (SDDMM) on the edges' CSR pattern; its gradients are
    two sparse products. When ``g`` and ``v`` are one tensor ``h`` on an
    undirected graph (LSP's kernels) the product is symmetric: the forward
    computes half the edges and copies the rest from their reverses, the
    backward is one product ``(W + W^T) h``, ``W^T`` laid on ``W``'s own
    pattern. Per-edge ``[E, F]`` gathers and scatters cost
    10-30x more on a graph the size of Amazon Computers."""

    @staticmethod
    def forward(ctx, g: Tensor, v: Tensor,  # type: ignore[override]
                pattern: EdgePattern) -> Tensor:
        ctx.save_for_backward(g, v)
        ctx.pattern, ctx.same = pattern, g is v
        return _sampled_dot(g, v, pattern)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor  # type: ignore[override]
                 ) -> tuple[Tensor | None, Tensor | None, None]:
        g, v = ctx.saved_tensors
        pattern = ctx.pattern
        if ctx.same and all(ctx.needs_input_grad[:2]) and \
                pattern.reverse is not None:
            both = grad + grad.index_select(0, pattern.reverse)
            return spmm(pattern.matrix('dst', both), g), None, None
        grad_g = grad_v = None
        if ctx.needs_input_grad[0]:
            grad_g = spmm(pattern.matrix('dst', grad), v)
        if ctx.needs_input_grad[1]:
            grad_v = spmm(pattern.matrix('src', grad), g)
        return grad_g, grad_v, None


def _sampled_dot(g: Tensor, v: Tensor, pattern: EdgePattern) -> Tensor:
    """``<g_i, v_j>`` per edge (edge order): a sampled product on the
    pattern, on half the edges when ``g is v`` and the pattern is
    undirected."""
    half = pattern.half if g is v else None
    crow, col, position = pattern.sampled if half is None else half
    return sampled(crow, col, g, v).index_select(0, position)


def sampled(crow: Tensor, col: Tensor, g: Tensor, v: Tensor) -> Tensor:
    """``<g_i, v_j>`` for the entries ``(i, j)`` of a CSR pattern, in its
    storage order (a sampled dense-dense product)."""
    n = g.size(0)
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        shape = torch.sparse_csr_tensor(crow, col, g.new_zeros(col.numel()),
                                        (n, v.size(0)))
        return torch.sparse.sampled_addmm(shape, g, v.t(),
                                          beta=0.0).values()


class _EdgeDistance(torch.autograd.Function):
    """``||h_i - h_j||^2`` for every edge ``e = j -> i``, as
    ``|h_i|^2 + |h_j|^2 - 2 <h_i, h_j>`` (the products sampled as in
    :class:`_EdgeDot`), clamped at 0 against rounding. With ``D`` the
    gradient per edge, ``W`` the matrix of ``D`` on the edges and
    ``S = W + W^T``, the gradient is ``2 (diag(S 1) h - S h)``
    (:func:`distance_gradient`): one sparse product on an undirected graph
    and one ``[N]`` sum, where autograd
    through the norms and the gathers took a dozen passes over ``[N, F]``
    and ``[E]`` tensors (LSP and Alignahead's L2 and RBF kernels)."""

    @staticmethod
    def forward(ctx, h: Tensor, edge_index: Tensor,  # type: ignore[override]
                pattern: EdgePattern) -> Tensor:
        src, dst = edge_index
        sq = h.pow(2).sum(-1)
        raw = sq.index_select(0, dst) + sq.index_select(0, src) \
            - 2 * _sampled_dot(h, h, pattern)
        ctx.save_for_backward(h, edge_index, raw < 0)
        ctx.pattern = pattern
        return raw.clamp_min(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor  # type: ignore[override]
                 ) -> tuple[Tensor, None, None]:
        h, edge_index, clamped = ctx.saved_tensors
        pattern = ctx.pattern
        grad = grad.masked_fill(clamped, 0.0)
        if pattern.symmetric is not None:
            return distance_gradient(
                pattern, grad.index_select(0, pattern.by_dst[2]), h), \
                None, None
        src, dst = edge_index
        weighted = spmm(pattern.matrix('dst', grad), h) + \
            spmm(pattern.matrix('src', grad), h)
        degree = h.new_zeros(h.size(0)).index_add_(0, dst, grad) \
            .index_add_(0, src, grad)
        # 2 (h * degree - weighted), in place on the fresh product.
        grad_h = weighted.addcmul_(h, degree.unsqueeze(-1), value=-1)
        return grad_h.mul_(-2), None, None


def distance_gradient(pattern: EdgePattern, grad: Tensor,
                      h: Tensor) -> Tensor:
    """The gradient of ``sum_e grad_e ||h_i - h_j||^2`` over the edges
    ``e = j -> i`` of an undirected ``pattern``, ``grad`` given in the
    order of ``pattern.by_dst``: ``2 (diag(S 1) h - S h)`` with ``S`` the
    matrix of ``grad`` on the edges plus its transpose, which on an
    undirected pattern lies on the same positions (one sparse product)."""
    both = grad + grad.index_select(0, pattern.symmetric[2])
    weighted = spmm(pattern.matrix('dst', both, positions=True), h)
    degree = torch.segment_reduce(both, 'sum', offsets=pattern.by_dst[0])
    # 2 (h * degree - weighted), in place on the fresh product.
    grad_h = weighted.addcmul_(h, degree.unsqueeze(-1), value=-1)
    return grad_h.mul_(-2)


def edge_distance(h: Tensor, edge_index: Tensor) -> Tensor:
    """``||h_dst - h_src||^2`` per edge ``[E]`` of ``edge_index`` (sparse
    as :func:`edge_dot`)."""
    return _EdgeDistance.apply(h, edge_index,
                               edge_pattern(edge_index, h.size(0)))


def edge_dot(g: Tensor, v: Tensor, edge_index: Tensor) -> Tensor:
    """``g[dst] . v[src]`` per edge ``[E]`` of ``edge_index`` (an SDDMM on
    its cached CSR pattern; no ``[E, F]`` tensor, forward or backward)."""
    return _EdgeDot.apply(g, v, edge_pattern(edge_index, g.size(0)))


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
