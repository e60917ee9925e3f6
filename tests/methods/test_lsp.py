"""LSP: local-structure distributions and their KL, checked against a plain
Python computation on a 4-node directed graph."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import literal_graph, literal_output

import gnncompress.methods.lsp as lsp_module
from gnncompress.core.graph import Graph
from gnncompress.methods.lsp import LSP
from gnncompress.models import ModelOutput, edge_ops

# Directed edges (source j -> destination i). Node 0 receives from 1, 2, 3;
# node 1 from 2 and 0; nodes 2 and 3 receive nothing, so N' = 2.
EDGES = [(1, 0), (2, 0), (3, 0), (2, 1), (0, 1)]
H_T = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
H_S = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, -1.0]]

# (LSP options, plain-Python kernel k(h_i, h_j)).
KERNELS = {
    'linear': ({'kernel': 'linear'}, lambda a, b: _dot(a, b)),
    'poly': ({'kernel': 'poly', 'coef': 0.0, 'degree': 2},
             lambda a, b: (_dot(a, b) + 0.0) ** 2),
    'rbf': ({'kernel': 'rbf', 'sigma': 1.0},
            lambda a, b: math.exp(-_sq_dist(a, b) / (2 * 1.0 ** 2))),
    'l2': ({'kernel': 'l2'}, lambda a, b: -_sq_dist(a, b)),
    'l2-paper': ({'kernel': 'l2', 'paper_l2_sign': True},
                 lambda a, b: _sq_dist(a, b)),
}


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _local_structures(h, edges, kernel) -> dict[int, list[float]]:
    """Per destination i: softmax over i's incoming edges of k(h_i, h_j)."""
    out = {}
    for i in sorted({d for _, d in edges}):
        scores = [kernel(h[i], h[j]) for j, d in edges if d == i]
        exps = [math.exp(s) for s in scores]
        out[i] = [e / sum(exps) for e in exps]
    return out


def _expected_lsp(h_t, h_s, edges, kernel, direction) -> float:
    """(1/N') * sum_i KL(p_i || q_i) over nodes with incoming edges."""
    ls_t = _local_structures(h_t, edges, kernel)
    ls_s = _local_structures(h_s, edges, kernel)
    total = 0.0
    for i in ls_t:
        p, q = (ls_s[i], ls_t[i]) if direction == 'st' else (ls_t[i], ls_s[i])
        total += sum(a * math.log(a / b) for a, b in zip(p, q))
    return total / len(ls_t)


def _graph(num_nodes: int, edges=EDGES) -> Graph:
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous()
    return literal_graph(num_nodes, edge_index, 'lsp')


def _out(h, requires_grad: bool = False) -> ModelOutput:
    return literal_output(h, requires_grad)


def test_linear_st_pinned_value():
    # Teacher, linear kernel:
    #   node 0 (h=(1,0)): k = 0, 1, 2 for j = 1, 2, 3
    #     LS_t = (1, e, e^2)/(1+e+e^2) = (0.090031, 0.244728, 0.665241)
    #   node 1 (h=(0,1)): k = 1, 0 for j = 2, 0
    #     LS_t = (e, 1)/(1+e) = (0.731059, 0.268941)
    # Student:
    #   node 0 (h=(0,1)): k = 0, 0.5, -1
    #     LS_s = (1, e^.5, e^-1)/(...) = (0.331499, 0.546549, 0.121952)
    #   node 1 (h=(1,0)): k = 0.5, 0
    #     LS_s = (e^.5, 1)/(1+e^.5) = (0.622459, 0.377541)
    # KL(s||t): node 0 = 0.432103 + 0.439140 - 0.206896 = 0.664346
    #           node 1 = -0.100102 + 0.128056         = 0.027955
    # loss = (0.664346 + 0.027955) / N' with N' = 2 -> 0.346150
    loss = LSP(kernel='linear').loss([_out(H_T)], _out(H_S), _graph(4))

    assert loss.dim() == 0
    assert float(loss) == pytest.approx(0.346150, abs=2e-6)


@pytest.mark.parametrize('direction', ['st', 'ts'])
@pytest.mark.parametrize('kernel', list(KERNELS))
def test_matches_hand_computation(kernel, direction):
    options, k = KERNELS[kernel]
    method = LSP(**options, direction=direction)

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    expected = _expected_lsp(H_T, H_S, EDGES, k, direction)
    assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_directions_differ(kernel):
    options, k = KERNELS[kernel]
    st = _expected_lsp(H_T, H_S, EDGES, k, 'st')
    ts = _expected_lsp(H_T, H_S, EDGES, k, 'ts')
    # Otherwise the two-direction test above could not tell them apart.
    assert st != pytest.approx(ts, rel=1e-3)


def test_default_is_rbf_st_sigma_one():
    method = LSP()

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    expected = _expected_lsp(H_T, H_S, EDGES, KERNELS['rbf'][1], 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    # Our default weight, chosen on the method suite's validation split;
    # the paper's lambda stays at hand for --weight.
    assert method.default_weight == 0.1
    assert LSP.paper_weight == 100.0


def test_rbf_sigma_scales_distances():
    method = LSP(kernel='rbf', sigma=2.0)

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    expected = _expected_lsp(
        H_T, H_S, EDGES, lambda a, b: math.exp(-_sq_dist(a, b) / 8.0), 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_poly_with_offset_and_degree_three():
    method = LSP(kernel='poly', coef=1.0, degree=3)

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    expected = _expected_lsp(H_T, H_S, EDGES,
                             lambda a, b: (_dot(a, b) + 1.0) ** 3, 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('direction', ['st', 'ts'])
def test_large_scores_are_stable_in_float32(direction):
    # Linear scores up to 10 * 10 * 2 = 200: exp(200) overflows float32, so
    # the softmax must shift by each node's maximum.
    h_t = [[10 * v for v in row] for row in H_T]
    h_s = [[10 * v for v in row] for row in H_S]
    teacher = ModelOutput(logits=torch.zeros(4, 2),
                          hiddens=[torch.tensor(h_t)])
    student = ModelOutput(logits=torch.zeros(4, 2),
                          hiddens=[torch.tensor(h_s, requires_grad=True)])

    loss = LSP(kernel='linear', direction=direction).loss(
        [teacher], student, _graph(4))
    loss.backward()

    expected = _expected_lsp(h_t, h_s, EDGES, KERNELS['linear'][1], direction)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert torch.isfinite(student.hiddens[0].grad).all()


def test_teacher_and_student_widths_may_differ():
    h_t = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0],
           [2.0, 0.0, 0.5]]

    loss = LSP(kernel='linear').loss([_out(h_t)], _out(H_S), _graph(4))

    expected = _expected_lsp(h_t, H_S, EDGES, KERNELS['linear'][1], 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_selected_layers():
    teacher = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.tensor(H_T, dtype=torch.float64),
                                   torch.zeros(4, 2, dtype=torch.float64)])
    student = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.zeros(4, 2, dtype=torch.float64),
                                   torch.tensor(H_S, dtype=torch.float64)])
    method = LSP(kernel='linear', teacher_layers=[0], student_layers=[1])

    loss = method.loss([teacher], student, _graph(4))

    expected = _expected_lsp(H_T, H_S, EDGES, KERNELS['linear'][1], 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_missing_layer_index_raises():
    method = LSP(teacher_layers=[3])
    with pytest.raises(ValueError, match='teacher has 1 hidden layers'):
        method.loss([_out(H_T)], _out(H_S), _graph(4))


def test_two_teachers_average():
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.0, 0.0]]
    k = KERNELS['linear'][1]

    loss = LSP(kernel='linear').loss([_out(H_T), _out(h_t2)], _out(H_S),
                                     _graph(4))

    expected = (_expected_lsp(H_T, H_S, EDGES, k, 'st')
                + _expected_lsp(h_t2, H_S, EDGES, k, 'st')) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('direction', ['st', 'ts'])
@pytest.mark.parametrize('kernel', list(KERNELS))
def test_zero_when_features_match(kernel, direction):
    options, _ = KERNELS[kernel]

    loss = LSP(**options, direction=direction).loss(
        [_out(H_T)], _out(H_T), _graph(4))

    assert float(loss) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_isolated_node_changes_nothing(kernel):
    options, _ = KERNELS[kernel]
    method = LSP(**options)
    before = method.loss([_out(H_T)], _out(H_S), _graph(4))

    # Node 4 has no edge at all; the mean stays over N' = 2 nodes.
    h_s = _out(H_S + [[3.0, -2.0]], requires_grad=True)
    after = method.loss([_out(H_T + [[-1.0, 4.0]])], h_s, _graph(5))
    after.backward()

    assert float(after.detach()) == pytest.approx(float(before), rel=1e-12)
    grad = h_s.hiddens[0].grad
    assert torch.isfinite(grad).all()
    assert grad[4].abs().max() == 0


def test_graph_without_edges_gives_zero_not_nan():
    # No node has local structure: N' = 0 is skipped, not divided by.
    h_s = _out(H_S, requires_grad=True)
    graph = _graph(4, edges=[(0, 1)])
    graph.edge_index = torch.zeros(2, 0, dtype=torch.long)

    loss = LSP().loss([_out(H_T)], h_s, graph)
    loss.backward()

    assert float(loss) == 0.0
    assert torch.isfinite(h_s.hiddens[0].grad).all()


def test_single_incoming_edge_gives_zero():
    # A softmax over one edge is 1 for teacher and student alike.
    loss = LSP(kernel='linear').loss([_out(H_T)], _out(H_S),
                                     _graph(4, edges=[(2, 0), (3, 1)]))

    assert float(loss) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_gradient_reaches_student_not_teacher(kernel):
    options, k = KERNELS[kernel]
    teacher = _out(H_T, requires_grad=True)
    student = _out(H_S, requires_grad=True)

    LSP(**options).loss([teacher], student, _graph(4)).backward()

    assert teacher.hiddens[0].grad is None
    grad = student.hiddens[0].grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # Against central differences of the plain-Python loss.
    eps = 1e-6
    for n in range(4):
        for c in range(2):
            up = [row[:] for row in H_S]
            down = [row[:] for row in H_S]
            up[n][c] += eps
            down[n][c] -= eps
            numeric = (_expected_lsp(H_T, up, EDGES, k, 'st')
                       - _expected_lsp(H_T, down, EDGES, k, 'st')) / (2 * eps)
            assert float(grad[n, c]) == pytest.approx(numeric, abs=1e-6)


@pytest.mark.parametrize('direction', ['st', 'ts'])
def test_prepare_cache_gives_same_loss(direction):
    teacher = _out(H_T)
    graph = _graph(4)
    plain = LSP(kernel='rbf', direction=direction)
    cached = LSP(kernel='rbf', direction=direction)

    cached.prepare([teacher], _out(H_S), graph)
    loss_cached = cached.loss([teacher], _out(H_S), graph)
    loss_plain = plain.loss([teacher], _out(H_S), graph)

    assert cached._cached
    assert float(loss_cached) == pytest.approx(float(loss_plain), rel=1e-12)
    assert float(loss_cached) == pytest.approx(
        _expected_lsp(H_T, H_S, EDGES, KERNELS['rbf'][1], direction),
        rel=1e-9)


def test_prepare_cache_is_not_used_for_other_teacher_features():
    graph = _graph(4)
    method = LSP(kernel='linear')
    method.prepare([_out(H_T)], _out(H_S), graph)
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.0, 0.0]]

    loss = method.loss([_out(h_t2)], _out(H_S), graph)

    expected = _expected_lsp(h_t2, H_S, EDGES, KERNELS['linear'][1], 'st')
    assert float(loss) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_chunked_equals_unchunked(kernel, monkeypatch):
    options, _ = KERNELS[kernel]
    graph = _graph(4)

    def run():
        teacher = _out(H_T, requires_grad=True)
        student = _out(H_S, requires_grad=True)
        loss = LSP(**options).loss([teacher], student, graph)
        loss.backward()
        return loss.detach(), student.hiddens[0].grad, teacher.hiddens[0].grad

    loss_full, grad_full, _ = run()
    # 3 elements at width 2 -> one edge per chunk: 5 chunks.
    monkeypatch.setattr(lsp_module, '_CHUNK_ELEMENTS', 3)
    loss_chunked, grad_chunked, teacher_grad = run()

    assert float(loss_chunked) == pytest.approx(float(loss_full), rel=1e-12)
    assert torch.allclose(grad_chunked, grad_full, rtol=1e-10, atol=1e-12)
    assert teacher_grad is None


def test_edge_scores_chunked_matches_kernel(monkeypatch):
    h = torch.tensor(H_S, dtype=torch.float64)
    src, dst = torch.tensor(EDGES).t()
    kernel = LSP(kernel='linear').kernel_fn()
    monkeypatch.setattr(lsp_module, '_CHUNK_ELEMENTS', 5)  # 2 edges a chunk

    scores = lsp_module.edge_scores(h, src, dst, kernel)

    expected = [_dot(H_S[i], H_S[j]) for j, i in EDGES]
    assert scores.tolist() == pytest.approx(expected)


@pytest.mark.parametrize('options, match', [
    ({'kernel': 'cosine'}, 'kernel'),
    ({'kernel': 'RBF'}, 'kernel'),
    ({'direction': 'tt'}, 'direction'),
    ({'direction': 'both'}, 'direction'),
    ({'sigma': 0.0}, 'sigma'),
])
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        LSP(**options)


def test_student_without_hidden_layer_raises():
    student = ModelOutput(logits=torch.zeros(4, 2))

    with pytest.raises(ValueError, match='student has no hidden layer'):
        LSP().loss([_out(H_T)], student, _graph(4))


def test_teacher_without_hidden_layer_raises():
    teacher = ModelOutput(logits=torch.zeros(4, 2))

    with pytest.raises(ValueError, match='teacher has no hidden layer'):
        LSP().loss([teacher], _out(H_S), _graph(4))
    with pytest.raises(ValueError, match='teacher has no hidden layer'):
        LSP().prepare([teacher], _out(H_S), _graph(4))


@pytest.mark.parametrize('undirected', [False, True],
                         ids=['directed', 'undirected'])
@pytest.mark.parametrize('kernel', sorted(KERNELS))
def test_sparse_edge_kernel_matches_gathering_both_ends(kernel, undirected):
    # The sparse path (sampled product forward, sparse products backward)
    # against the plain per-edge kernel, value and gradient, on a random
    # graph with duplicate edges, self-loops and an isolated node. On an
    # undirected graph it computes half the products and one backward
    # product; the edges are then shuffled so that reverses lie apart.
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(30, 5, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    edge_index = torch.randint(0, 29, (2, 120), generator=gen)
    edge_index = torch.cat([edge_index, edge_index[:, :10],
                            torch.tensor([[3, 4], [3, 4]])], dim=1)
    if undirected:
        edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        edge_index = edge_index[:, torch.randperm(edge_index.size(1),
                                                  generator=gen)]
    pattern = edge_ops.edge_pattern(edge_index, 30)
    assert (pattern.reverse is not None) == undirected
    method = LSP(**KERNELS[kernel][0])
    upstream = torch.randn(edge_index.size(1), generator=gen,
                           dtype=torch.float64)

    fast = method.edge_kernel(h, edge_index)
    (grad_fast,) = torch.autograd.grad(fast, h, upstream)
    plain = lsp_module.edge_scores(h, edge_index[0], edge_index[1],
                                   method.kernel_fn())
    (grad_plain,) = torch.autograd.grad(plain, h, upstream)

    assert torch.allclose(fast, plain, rtol=1e-9, atol=1e-9)
    assert torch.allclose(grad_fast, grad_plain, rtol=1e-9, atol=1e-9)
    assert grad_fast[29].abs().sum() == 0  # no edge touches node 29
    # Every kernel took the half-product path exactly when it could.
    assert (pattern.__dict__.get('half') is not None) == undirected


def test_edge_dot_of_two_tensors_on_an_undirected_graph():
    # g . v is not symmetric: with two tensors the full products are kept.
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(6, 3, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    v = torch.randn(6, 3, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    edge_index = torch.tensor([[0, 1, 1, 2, 4, 5], [1, 0, 2, 1, 5, 4]])
    dot = edge_ops.edge_dot(g, v, edge_index)
    plain = (g[edge_index[1]] * v[edge_index[0]]).sum(-1)
    assert torch.allclose(dot, plain)
    upstream = torch.arange(6, dtype=torch.float64)
    grads = torch.autograd.grad(dot, (g, v), upstream)
    expected = torch.autograd.grad(plain, (g, v), upstream)
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b)


def test_sparse_edge_dot_without_edges():
    h = torch.randn(4, 3, requires_grad=True)
    dot = lsp_module.edge_dot(h, torch.zeros(2, 0, dtype=torch.long))
    assert dot.shape == (0,)
    dot.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() == 0


@pytest.mark.parametrize('undirected', [False, True],
                         ids=['directed', 'undirected'])
def test_distances_rounded_below_zero_get_no_gradient(monkeypatch,
                                                       undirected):
    # The expanded distance |h_i|^2 + |h_j|^2 - 2 <h_i, h_j> is clamped at 0
    # against rounding, and clamped edges pass no gradient (as clamp_min).
    # Shifting every sampled product by +0.25 clamps the close pairs.
    real = edge_ops.sampled
    monkeypatch.setattr(edge_ops, 'sampled',
                        lambda *args: real(*args) + 0.25)
    gen = torch.Generator().manual_seed(3)
    h = (0.4 * torch.randn(12, 3, generator=gen, dtype=torch.float64)
         ).requires_grad_()
    edge_index = torch.randint(0, 12, (2, 40), generator=gen)
    if undirected:
        edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    src, dst = edge_index
    upstream = torch.randn(edge_index.size(1), generator=gen,
                           dtype=torch.float64)

    fast = lsp_module.edge_distance(h, edge_index)
    sq = h.pow(2).sum(-1)
    plain = (sq[dst] + sq[src] - 2 * ((h[dst] * h[src]).sum(-1) + 0.25)
             ).clamp_min(0)

    assert 0 < int((plain == 0).sum()) < plain.numel()
    assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.autograd.grad(fast, h, upstream)[0],
                          torch.autograd.grad(plain, h, upstream)[0],
                          rtol=1e-10, atol=1e-12)


def test_log_softmax_of_far_apart_scores_is_exact():
    # Scores 90 to 1000 below their segment's maximum: their exponentials
    # are floored (lsp.floored_exp) but the log-probabilities and the
    # gradient equal torch's log_softmax per segment.
    score = torch.tensor([0.0, -1000.0, -95.0, -3.0, 7.0, -120.0],
                         requires_grad=True)
    index = torch.tensor([0, 0, 0, 0, 2, 2])
    weight = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, 1.0])
    out = lsp_module.segment_log_softmax(score, index, 3)
    (grad,) = torch.autograd.grad((out * weight).sum(), score)
    expected = torch.cat([torch.log_softmax(score[:4], 0),
                          torch.log_softmax(score[4:], 0)])
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), score)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-30)
