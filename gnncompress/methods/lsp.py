from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from gnncompress.core.graph import Graph
from gnncompress.methods.base import (
    DistillMethod,
    TeacherCache,
    hidden_layer,
    layer_pairs,
    register_method,
)
from gnncompress.models import ModelOutput, edge_ops
from gnncompress.models.edge_ops import EdgePattern

KERNELS = ('rbf', 'linear', 'poly', 'l2')
DIRECTIONS = ('st', 'ts')
# Above this many gathered elements (edges x width) the per-edge kernel is
# computed in chunks, and recomputed in backward instead of stored.
_CHUNK_ELEMENTS = 1 << 24


@register_method('lsp')
class LSP(DistillMethod):
    r"""Local structure preserving distillation from the `"Distilling
    Knowledge from Graph Convolutional Networks"
    <https://arxiv.org/abs/2003.10477>`_ paper (Yang et al., CVPR 2020).

    For every node :math:`i` and incoming edge :math:`(j, i)`, in teacher and
    student separately (so their widths may differ):

    .. math::
        LS_{ij} = \frac{\exp k(h_i, h_j)}{\sum_{m \in \mathcal{N}(i)}
        \exp k(h_i, h_m)}, \qquad
        \mathcal{L} = \frac{1}{N'} \sum_i
        \mathrm{KL}(LS_i^s \,\|\, LS_i^t)

    :math:`N'` counts the nodes with at least one incoming edge; the others
    have no local structure and are skipped.

    Args:
        kernel (str, optional): :obj:`'rbf'`
            :math:`\exp(-\|h_i-h_j\|^2 / 2\sigma^2)`, :obj:`'linear'`
            :math:`h_i^\top h_j`, :obj:`'poly'` :math:`(h_i^\top h_j + c)^d`
            or :obj:`'l2'` :math:`-\|h_i-h_j\|^2`. (default: :obj:`'rbf'`,
            the paper's best)
        sigma (float, optional): RBF width :math:`\sigma`.
            (default: :obj:`1.0`)
        degree (int, optional): Polynomial degree :math:`d`.
            (default: :obj:`2`)
        coef (float, optional): Polynomial offset :math:`c`.
            (default: :obj:`0.0`)
        paper_l2_sign (bool, optional): Use :math:`+\|h_i-h_j\|^2` as the
            paper's Eq. 4 writes it, which gives far neighbours the largest
            weight; the default negates it so near neighbours weigh most.
            (default: :obj:`False`)
        direction (str, optional): :obj:`'st'` for
            :math:`\mathrm{KL}(LS^s \| LS^t)` as in the paper's Eq. 5, or
            :obj:`'ts'` for :math:`\mathrm{KL}(LS^t \| LS^s)` as in
            follow-up work. (default: :obj:`'st'`)
        teacher_layers (list[int], optional): Teacher hidden layers to
            match. (default: :obj:`[-1]`, the last)
        student_layers (list[int], optional): Student hidden layers matched
            with them, pair by pair; the losses of the pairs are averaged.
            (default: :obj:`[-1]`, the last)

    The paper weighs the loss with :math:`\lambda = 100`, with Adam at lr
    0.005 for 500 epochs on PPI; ``--weight 100`` (``paper_weight``) gives
    its setting. The default weight, :obj:`0.1`, is our choice, on the
    validation split of the method suite (benchmarks/weight_sweep.py, GAT
    teacher, 30x smaller GCN student, Cora, CiteSeer and PubMed, 5 seeds):
    against the student trained alone, validation accuracy moves by -8.35
    points at 100 (-12.50 over the suite's 7 datasets), -1.57 at 10, -0.07
    at 1 and +0.03 at 0.1. No weight made LSP better than training alone
    there; a small one keeps it from hurting.

    Dynamic graphs: when the models report the graph each hidden layer
    aggregated over (``ModelOutput.edges``, DGCNN's per-layer kNN graphs),
    the local structures of a matched pair are both computed on the union
    of the teacher's and the student's edges of those layers, as the
    paper's point-cloud experiment does; the teacher's side is then
    computed per batch (its graph depends on the input).
    """
    requires = frozenset({'logits', 'hiddens'})
    batch_hiddens = 'nodes'  # both ends of the edges into the seeds
    default_weight = 0.1
    paper_weight = 100.0
    paper = 'Yang et al., CVPR 2020, arXiv:2003.10477'
    summary = 'local structure: KL between neighbour-similarity ' \
        'distributions per node'

    def __init__(self, kernel: str = 'rbf', sigma: float = 1.0,
                 degree: int = 2, coef: float = 0.0,
                 paper_l2_sign: bool = False, direction: str = 'st',
                 teacher_layers: Sequence[int] = (-1,),
                 student_layers: Sequence[int] = (-1,)) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"'kernel' must be one of {', '.join(KERNELS)} "
                             f"(got '{kernel}')")
        if direction not in DIRECTIONS:
            raise ValueError(f"'direction' must be 'st' or 'ts' "
                             f"(got '{direction}')")
        if sigma <= 0:
            raise ValueError(f"'sigma' must be positive (got {sigma})")
        self.kernel, self.sigma, self.degree, self.coef = \
            kernel, sigma, degree, coef
        self.paper_l2_sign = paper_l2_sign
        self.direction = direction
        self.pairs = layer_pairs(teacher_layers, student_layers)
        # Teacher hidden tensor -> its log local structure, computed once.
        self._cached = TeacherCache()

    def kernel_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        def linear(h_i: Tensor, h_j: Tensor) -> Tensor:
            return (h_i * h_j).sum(-1)

        def poly(h_i: Tensor, h_j: Tensor) -> Tensor:
            return (linear(h_i, h_j) + self.coef) ** self.degree

        def sq_dist(h_i: Tensor, h_j: Tensor) -> Tensor:
            return (h_i - h_j).pow(2).sum(-1)

        def rbf(h_i: Tensor, h_j: Tensor) -> Tensor:
            return torch.exp(-sq_dist(h_i, h_j) / (2 * self.sigma ** 2))

        def l2(h_i: Tensor, h_j: Tensor) -> Tensor:
            d = sq_dist(h_i, h_j)
            return d if self.paper_l2_sign else -d

        return {'linear': linear, 'poly': poly, 'rbf': rbf, 'l2': l2}[
            self.kernel]

    def edge_kernel(self, h: Tensor, edge_index: Tensor) -> Tensor:
        """``k(h_dst, h_src)`` per edge ``[E]`` from sampled sparse
        products (:func:`edge_dot`, :func:`edge_distance`: no ``[E, d]``
        tensor, forward or backward)."""
        if self.kernel in ('linear', 'poly'):
            dot = edge_dot(h, edge_index)  # [E]
            return dot if self.kernel == 'linear' else \
                (dot + self.coef) ** self.degree
        return self.of_distance(edge_distance(h, edge_index))

    def of_distance(self, sq_dist: Tensor) -> Tensor:
        """The L2 or RBF kernel of squared distances."""
        if self.kernel == 'rbf':
            return floored_exp(-sq_dist / (2 * self.sigma ** 2))
        return sq_dist if self.paper_l2_sign else -sq_dist

    def distance_gradient(self, grad: Tensor, score: Tensor) -> Tensor:
        """The gradient with respect to the squared distances, given that
        with respect to the kernel ``score`` (:meth:`of_distance`'s)."""
        if self.kernel == 'rbf':
            return grad * score * (-0.5 / self.sigma ** 2)
        return grad if self.paper_l2_sign else -grad

    def local_structure(self, h: Tensor, edge_index: Tensor) -> Tensor:
        """``log LS`` per edge ``[E]``: log-softmax of the kernel over each
        destination node's incoming edges."""
        score = self.edge_kernel(h, edge_index)  # [E]
        return segment_log_softmax(score, edge_index[1], h.size(0))

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        self._cached.clear()
        if student_output.edges:
            return  # dynamic graphs: nothing depends on the teacher alone
        for out in teacher_outputs:
            for t_layer, _ in self.pairs:
                self._cached.remember(hidden_layer(out, t_layer, 'teacher'),
                                      self._structure_of(graph))

    def _structure_of(self, graph: Graph) -> Callable[[Tensor], Tensor]:
        return functools.partial(self.local_structure,
                                 edge_index=graph.edge_index)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if student_output.edges:
            return self._dynamic_loss(teacher_outputs, student_output)
        dst, num_nodes = graph.edge_index[1], student_output.logits.size(0)
        total = student_output.logits.new_zeros(())
        for t_layer, s_layer in self.pairs:
            h_s = hidden_layer(student_output, s_layer, 'student')
            log_ls_s = self.local_structure(h_s, graph.edge_index)
            for out in teacher_outputs:
                h_t = hidden_layer(out, t_layer, 'teacher')
                log_ls_t = self._cached.lookup(h_t, self._structure_of(graph))
                total = total + structure_kl(log_ls_s, log_ls_t, dst,
                                             num_nodes, self.direction)
        return total / (len(teacher_outputs) * len(self.pairs))

    def _dynamic_loss(self, teacher_outputs: Sequence[ModelOutput],
                      student_output: ModelOutput) -> Tensor:
        total = student_output.logits.new_zeros(())
        for t_layer, s_layer in self.pairs:
            h_s = hidden_layer(student_output, s_layer, 'student')
            s_edges = layer_edges(student_output, s_layer, 'student')
            for out in teacher_outputs:
                h_t = hidden_layer(out, t_layer, 'teacher')
                edge_index = union_edges(
                    s_edges, layer_edges(out, t_layer, 'teacher'),
                    h_s.size(0))
                log_ls_s = self.local_structure(h_s, edge_index)
                with torch.no_grad():
                    log_ls_t = self.local_structure(h_t, edge_index)
                total = total + structure_kl(log_ls_s, log_ls_t,
                                             edge_index[1], h_s.size(0),
                                             self.direction)
        return total / (len(teacher_outputs) * len(self.pairs))


def layer_edges(out: ModelOutput, index: int, who: str) -> Tensor:
    """The graph hidden layer ``index`` aggregated over (dynamic-graph
    models), with an error when the model does not report one."""
    if len(out.edges) != len(out.hiddens):
        raise ValueError(f'The {who} does not report the graph of each '
                         f'hidden layer: dynamic LSP needs a DGCNN teacher '
                         f'and student')
    return out.edges[index]


def union_edges(a: Tensor, b: Tensor, num_nodes: int) -> Tensor:
    """The union of two ``edge_index`` sets over the same nodes, each edge
    once, sorted by destination."""
    keys = torch.cat([a[1] * num_nodes + a[0], b[1] * num_nodes + b[0]])
    keys = torch.unique(keys)
    return torch.stack([keys % num_nodes, keys // num_nodes])


def edge_dot(h: Tensor, edge_index: Tensor) -> Tensor:
    """``h[dst] . h[src]`` per edge ``[E]``, through sparse products:
    faster than gathering both ends (benchmarks/kernels.py, on a
    Photo-sized graph) and with memory that grows with the
    edges, not edges x width."""
    if edge_index.size(1) == 0:
        return h.new_zeros(0) + 0.0 * h.sum()
    return edge_ops.edge_dot(h, h, edge_index)


def edge_distance(h: Tensor, edge_index: Tensor) -> Tensor:
    """``||h[dst] - h[src]||^2`` per edge ``[E]``, sparse as
    :func:`edge_dot`, with a gradient of one sparse product."""
    if edge_index.size(1) == 0:
        return h.new_zeros(0) + 0.0 * h.sum()
    return edge_ops.edge_distance(h, edge_index)


def edge_scores(h: Tensor, src: Tensor, dst: Tensor,
                kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``kernel(h[dst], h[src])`` per edge by gathering both ends (the
    plain reference for :meth:`LSP.edge_kernel`, and the path for kernels
    given as functions), chunked on large graphs so that
    no more than about 16M gathered elements live at once."""
    num_edges = src.numel()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, h.size(1)))
    if num_edges <= chunk:
        return kernel(h[dst], h[src])

    def part(h: Tensor, s: Tensor, d: Tensor) -> Tensor:
        return kernel(h[d], h[s])

    parts = []
    for start in range(0, num_edges, chunk):
        s, d = src[start:start + chunk], dst[start:start + chunk]
        if h.requires_grad:
            parts.append(checkpoint(part, h, s, d, use_reentrant=False))
        else:
            parts.append(part(h, s, d))
    return torch.cat(parts)


def floored_exp(x: Tensor) -> Tensor:
    """``exp(x)`` with ``x`` floored just above the log of the dtype's
    smallest normal number (at -86.3 in float32). Below it torch's
    vectorised exp leaves its fast path (over 10x slower per element on
    the CPUs we measured), and local structures are full of such
    arguments: a node's far neighbours under the L2 kernel. The floored
    terms are under 4e-38 (float32) and only ever add to sums whose
    largest term is 1 or weight finite logs, so no value changes beyond
    rounding."""
    return x.clamp_min(_LOG_TINY[x.dtype]).exp()


# With a margin: at the threshold itself exp is slow again.
_LOG_TINY = {dtype: math.log(torch.finfo(dtype).tiny) + 1.0
             for dtype in (torch.float16, torch.bfloat16, torch.float32,
                           torch.float64)}


def segment_log_softmax(score: Tensor, index: Tensor,
                        num_nodes: int) -> Tensor:
    """Log-softmax of ``score`` within groups of equal ``index``."""
    # The max is a constant shift for stability; no gradient flows through it.
    group_max = score.new_full((num_nodes,), float('-inf')).scatter_reduce(
        0, index, score.detach(), 'amax', include_self=True)
    # index_select: its backward is an index_add, twice as fast as that of
    # plain indexing on CPU.
    shifted = score - group_max.index_select(0, index)
    sums = score.new_zeros(num_nodes).index_add(0, index, floored_exp(shifted))
    return shifted - sums.log().index_select(0, index)


def structure_kl(log_ls_s: Tensor, log_ls_t: Tensor, dst: Tensor,
                 num_nodes: int, direction: str = 'st') -> Tensor:
    """Per-node KL between two local-structure distributions (summed over a
    node's incoming edges), averaged over the nodes that have edges."""
    if direction == 'st':
        per_edge = floored_exp(log_ls_s) * (log_ls_s - log_ls_t)
    else:
        per_edge = floored_exp(log_ls_t) * (log_ls_t - log_ls_s)
    has_edges = torch.zeros(num_nodes, dtype=torch.bool, device=dst.device)
    has_edges[dst] = True
    num_with_edges = int(has_edges.sum())
    if num_with_edges == 0:
        return per_edge.sum() * 0.0
    return per_edge.sum() / num_with_edges


# The symmetric path: an undirected graph and a distance kernel (LSP's L2
# and RBF), the structures in the pattern's by-destination order.

def symmetric_structure(lsp: LSP, h: Tensor, pattern: EdgePattern,
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """``log LS`` of ``h`` on an undirected ``pattern`` (see
    :attr:`EdgePattern.symmetric`) in the order of ``pattern.by_dst``,
    without autograd, with the kernel scores and the positions whose
    expanded squared distance rounded below 0 (clamped). The distances of
    half the edges are computed, the rest read from their reverses; the
    softmax runs over contiguous segments. Values equal
    :meth:`LSP.local_structure`'s permuted, to rounding."""
    crow = pattern.by_dst[0]
    half_crow, half_col, _ = pattern.half
    half_rows, slot, _ = pattern.symmetric
    with torch.no_grad():
        sq = h.pow(2).sum(-1)
        raw = (sq.index_select(0, half_rows) + sq.index_select(0, half_col)
               - 2 * edge_ops.sampled(half_crow, half_col, h, h)
               ).index_select(0, slot)
        score = lsp.of_distance(raw.clamp_min(0))
        top = torch.segment_reduce(score, 'max', offsets=crow)
        shifted = score - top.index_select(0, pattern.rows)
        sums = torch.segment_reduce(floored_exp(shifted), 'sum', offsets=crow)
        log_ls = shifted - sums.log().index_select(0, pattern.rows)
    return log_ls, score, raw < 0


def symmetric_applies(lsp: LSP, pattern: EdgePattern) -> bool:
    """Whether :class:`StructureKL` computes ``lsp``'s structures on
    ``pattern``: a distance kernel, an undirected pattern, some edges."""
    return lsp.kernel in ('l2', 'rbf') and pattern.symmetric is not None \
        and pattern.num_with_edges > 0


class StructureKL(torch.autograd.Function):
    r"""Sum over ``P`` fixed structures ``log_peers`` ``[P, E]`` (the
    symmetric path's order) of :func:`structure_kl` with direction 'ts',
    :math:`\frac{1}{N'} \sum_e p_e (\log p_e - \log q_e)`, ``q`` the
    local structure of ``h``, with its gradient in closed form: with
    respect to the kernel scores it is :math:`(q_e \sum_{e' \to i} p_{e'}
    - p_e) / N'` (``e`` into node ``i``), and from there one sparse
    product (``edge_ops.distance_gradient``). Autograd through the same
    steps takes some twenty passes over ``[E]`` tensors per layer."""

    @staticmethod
    def forward(ctx, h: Tensor, log_peers: Tensor,  # type: ignore[override]
                lsp: LSP, pattern: EdgePattern) -> Tensor:
        log_ls, score, clamped = symmetric_structure(lsp, h, pattern)
        p_peers = floored_exp(log_peers)
        p_sum = p_peers.sum(0)
        ctx.save_for_backward(h, log_ls, score, clamped, p_sum)
        ctx.lsp, ctx.pattern = lsp, pattern
        total = (p_peers * log_peers).sum() - (p_sum * log_ls).sum()
        return total / pattern.num_with_edges

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor  # type: ignore[override]
                 ) -> tuple[Tensor, None, None, None]:
        h, log_ls, score, clamped, p_sum = ctx.saved_tensors
        pattern: EdgePattern = ctx.pattern
        crow, rows = pattern.by_dst[0], pattern.rows
        mass = torch.segment_reduce(p_sum, 'sum', offsets=crow)
        g_score = (floored_exp(log_ls) * mass.index_select(0, rows) - p_sum) * \
            (grad / pattern.num_with_edges)
        g_dist = ctx.lsp.distance_gradient(g_score, score) \
            .masked_fill(clamped, 0.0)
        return edge_ops.distance_gradient(pattern, g_dist, h), \
            None, None, None
