"""Per-edge products and distances (what LSP and the edge-level methods read of
a layer) computed over a CSR pattern of the edges built once, with hand-
written backward passes: nothing is sized by edges x features."""
from __future__ import annotations

import functools
import warnings
import weakref
from collections import OrderedDict

import torch
from torch import Tensor

from gnncompress.models.spmm import spmm

# Matrices kept at once: a run touches one or two graphs (training and,
# for inductive data, the evaluation graph), so a few are enough.
_KEEP = 4


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
