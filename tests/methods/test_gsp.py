"""GSP: the mean squared difference of the kernel matrices, checked against
plain Python on 4 nodes, and the node sampling on larger graphs."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import literal_graph, literal_output

from gnncompress.core.graph import Graph
from gnncompress.methods.gsp import GSP
from gnncompress.models import ModelOutput

H_T = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
H_S = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, -1.0]]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _unit(a: list[float]) -> list[float]:
    norm = math.sqrt(_dot(a, a))
    return [x / norm for x in a]


# (GSP options, plain-Python kernel k(h_i, h_j)).
KERNELS = {
    'cosine': ({'kernel': 'cosine'},
               lambda a, b: _dot(_unit(a), _unit(b))),
    'linear': ({'kernel': 'linear'}, _dot),
    'poly': ({'kernel': 'poly', 'coef': 0.0, 'degree': 2},
             lambda a, b: _dot(a, b) ** 2),
    'poly-c1-d3': ({'kernel': 'poly', 'coef': 1.0, 'degree': 3},
                   lambda a, b: (_dot(a, b) + 1.0) ** 3),
    'poly-normalized': ({'kernel': 'poly', 'normalize': True},
                        lambda a, b: _dot(_unit(a), _unit(b)) ** 2),
    'rbf': ({'kernel': 'rbf', 'sigma': 1.0},
            lambda a, b: math.exp(-_sq_dist(a, b) / 2.0)),
    'rbf-sigma2': ({'kernel': 'rbf', 'sigma': 2.0},
                   lambda a, b: math.exp(-_sq_dist(a, b) / 8.0)),
    'l2': ({'kernel': 'l2'}, lambda a, b: -_sq_dist(a, b)),
}


def _expected_gsp(h_t, h_s, kernel) -> float:
    """(1/n^2) * sum over all ordered pairs (i, j), diagonal included."""
    n = len(h_t)
    total = 0.0
    for i in range(n):
        for j in range(n):
            total += (kernel(h_s[i], h_s[j]) - kernel(h_t[i], h_t[j])) ** 2
    return total / n ** 2


def _graph(num_nodes: int) -> Graph:
    # GSP never looks at the edges: global structure, not local.
    return literal_graph(num_nodes, torch.tensor([[0], [1]]), 'gsp')


def _out(h, requires_grad: bool = False) -> ModelOutput:
    return literal_output(h, requires_grad)


def test_linear_pinned_value():
    # Linear kernel matrices (rows i, columns j):
    #   teacher [[1,0,1,2],[0,1,1,0],[1,1,2,2],[2,0,2,4]]
    #   student [[1,0,.5,-1],[0,1,.5,1],[.5,.5,.5,0],[-1,1,0,2]]
    # differences s - t:
    #   [[0,0,-.5,-3],[0,0,-.5,1],[-.5,-.5,-1.5,-2],[-3,1,-2,-2]]
    # squares: row 0: 9.25, row 1: 1.25, row 2: 6.75, row 3: 18
    # loss = 35.25 / 16 = 2.203125
    loss = GSP(kernel='linear').loss([_out(H_T)], _out(H_S), _graph(4))

    assert loss.dim() == 0
    assert float(loss) == pytest.approx(2.203125, rel=1e-12)


def test_cosine_pinned_value():
    # Unit rows: teacher (1,0), (0,1), (1,1)/r2, (1,0);
    #            student (0,1), (1,0), (1,1)/r2, (1,-1)/r2.
    # With c = 1/r2, off-diagonal cosines for (i,j) = 01 02 03 12 13 23:
    #   teacher 0, c,  1, c, 0, c
    #   student 0, c, -c, c, c, 0
    # differences 0, 0, -(1+c), 0, c, -c: squares sum to
    #   (1 + c)^2 + 2 c^2 = 2.9142136 + 1 = 3.9142136, twice (both
    #   orders); the diagonal is 1 - 1 = 0. Mean over 16 pairs: 0.4892767.
    c = 1 / math.sqrt(2)
    expected = 2 * ((1 + c) ** 2 + 2 * c ** 2) / 16

    loss = GSP(kernel='cosine').loss([_out(H_T)], _out(H_S), _graph(4))

    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(loss) == pytest.approx(0.4892767, abs=1e-7)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_matches_hand_computation(kernel):
    options, k = KERNELS[kernel]

    loss = GSP(**options).loss([_out(H_T)], _out(H_S), _graph(4))

    assert float(loss) == pytest.approx(_expected_gsp(H_T, H_S, k),
                                        rel=1e-9, abs=1e-12)


def test_default_is_uncentred_cosine():
    method = GSP()

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    expected = _expected_gsp(H_T, H_S, KERNELS['cosine'][1])
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    assert (method.kernel, method.center, method.max_samples) == \
        ('cosine', False, 2048)
    assert method.default_weight == 0.1


def _centred(h: list[list[float]]) -> list[list[float]]:
    n = len(h)
    mean = [sum(row[c] for row in h) / n for c in range(len(h[0]))]
    return [[v - m for v, m in zip(row, mean)] for row in h]


@pytest.mark.parametrize('kernel', ['cosine', 'linear', 'poly', 'rbf'])
def test_center_subtracts_each_models_own_mean(kernel):
    options, k = KERNELS[kernel]

    loss = GSP(**options, center=True).loss([_out(H_T)], _out(H_S),
                                            _graph(4))

    expected = _expected_gsp(_centred(H_T), _centred(H_S), k)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_center_changes_cosine_but_not_distances():
    # Distances ignore a shift; cosines do not.
    for kernel, changes in (('cosine', True), ('rbf', False)):
        plain = GSP(kernel=kernel).loss([_out(H_T)], _out(H_S), _graph(4))
        centred = GSP(kernel=kernel, center=True).loss(
            [_out(H_T)], _out(H_S), _graph(4))
        if changes:
            assert float(centred) != pytest.approx(float(plain), rel=1e-3)
        else:
            assert float(centred) == pytest.approx(float(plain), rel=1e-9)


def test_center_uses_the_sample_mean():
    gen = torch.Generator().manual_seed(0)
    h_t = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    h_s = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    method = GSP(center=True, max_samples=6)

    torch.manual_seed(2)
    loss = method.loss([ModelOutput(torch.zeros(30, 2), [h_t])],
                       ModelOutput(torch.zeros(30, 2), [h_s]), _graph(30))

    torch.manual_seed(2)
    index = torch.randperm(30)[:6]
    expected = _expected_gsp(_centred(h_t[index].tolist()),
                             _centred(h_s[index].tolist()),
                             KERNELS['cosine'][1])
    assert float(loss) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_zero_when_features_match(kernel):
    options, _ = KERNELS[kernel]

    loss = GSP(**options).loss([_out(H_T)], _out(H_T), _graph(4))

    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_cosine_ignores_per_node_scale_linear_does_not():
    scaled = [[3.0 * v for v in row] for row in H_T]
    scaled[1] = [0.5 * v for v in H_T[1]]

    cosine = GSP(kernel='cosine').loss([_out(H_T)], _out(scaled), _graph(4))
    linear = GSP(kernel='linear').loss([_out(H_T)], _out(scaled), _graph(4))

    assert float(cosine) == pytest.approx(0.0, abs=1e-12)
    assert float(linear) > 1.0


def test_teacher_and_student_widths_may_differ():
    h_t = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0],
           [2.0, 0.0, 0.5]]

    loss = GSP().loss([_out(h_t)], _out(H_S), _graph(4))

    expected = _expected_gsp(h_t, H_S, KERNELS['cosine'][1])
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_selected_layers():
    teacher = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.tensor(H_T, dtype=torch.float64),
                                   torch.ones(4, 2, dtype=torch.float64)])
    student = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.ones(4, 2, dtype=torch.float64),
                                   torch.tensor(H_S, dtype=torch.float64)])
    method = GSP(kernel='linear', teacher_layers=[0], student_layers=[1])

    loss = method.loss([teacher], student, _graph(4))

    expected = _expected_gsp(H_T, H_S, KERNELS['linear'][1])
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_two_layer_pairs_average():
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.5, 0.0]]
    teacher = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.tensor(H_T, dtype=torch.float64),
                                   torch.tensor(h_t2, dtype=torch.float64)])
    method = GSP(kernel='linear', teacher_layers=[0, 1], student_layers=[0])

    loss = method.loss([teacher], _out(H_S), _graph(4))

    k = KERNELS['linear'][1]
    expected = (_expected_gsp(H_T, H_S, k) + _expected_gsp(h_t2, H_S, k)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_two_teachers_average():
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.5, 0.0]]
    k = KERNELS['cosine'][1]

    loss = GSP().loss([_out(H_T), _out(h_t2)], _out(H_S), _graph(4))

    expected = (_expected_gsp(H_T, H_S, k) + _expected_gsp(h_t2, H_S, k)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_missing_layer_index_raises():
    with pytest.raises(ValueError, match='teacher has 1 hidden layers'):
        GSP(teacher_layers=[3]).loss([_out(H_T)], _out(H_S), _graph(4))


def test_student_without_hidden_layer_raises():
    student = ModelOutput(logits=torch.zeros(4, 2))

    with pytest.raises(ValueError, match='student has no hidden layer'):
        GSP().loss([_out(H_T)], student, _graph(4))


@pytest.mark.parametrize('kernel', ['cosine', 'linear', 'rbf', 'l2'])
def test_gradient_reaches_student_not_teacher(kernel):
    options, k = KERNELS[kernel]
    teacher = _out(H_T, requires_grad=True)
    student = _out(H_S, requires_grad=True)

    GSP(**options).loss([teacher], student, _graph(4)).backward()

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
            numeric = (_expected_gsp(H_T, up, k)
                       - _expected_gsp(H_T, down, k)) / (2 * eps)
            assert float(grad[n, c]) == pytest.approx(numeric, abs=1e-6)


def test_zero_vector_row_gives_finite_gradient():
    # A dead (all-zero) node must not turn the cosine kernel into NaN.
    h_s = [row[:] for row in H_S]
    h_s[2] = [0.0, 0.0]
    student = _out(h_s, requires_grad=True)

    loss = GSP().loss([_out(H_T)], student, _graph(4))
    loss.backward()

    assert torch.isfinite(loss)
    assert torch.isfinite(student.hiddens[0].grad).all()


def test_float32_matches_float64():
    gen = torch.Generator().manual_seed(0)
    # Offset rows: the expanded ||a||^2 + ||b||^2 - 2 a.b cancels heavily.
    h_t = torch.randn(50, 16, generator=gen) * 0.3 + 5
    h_s = torch.randn(50, 4, generator=gen) * 0.3 + 5
    for kernel in ('cosine', 'rbf', 'l2'):
        method = GSP(kernel=kernel)
        loss32 = method.loss(
            [ModelOutput(torch.zeros(50, 2), [h_t])],
            ModelOutput(torch.zeros(50, 2), [h_s]), _graph(50))
        loss64 = method.loss(
            [ModelOutput(torch.zeros(50, 2), [h_t.double()])],
            ModelOutput(torch.zeros(50, 2), [h_s.double()]), _graph(50))

        assert float(loss32) == pytest.approx(float(loss64), rel=1e-4)


def _random_outputs(num_nodes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h_t = torch.randn(num_nodes, 3, generator=gen, dtype=torch.float64)
    h_s = torch.randn(num_nodes, 2, generator=gen, dtype=torch.float64,
                      requires_grad=True)
    return (ModelOutput(torch.zeros(num_nodes, 2), [h_t]),
            ModelOutput(torch.zeros(num_nodes, 2), [h_s]))


def test_sample_uses_global_rng_and_only_sampled_pairs():
    teacher, student = _random_outputs(30)
    method = GSP(kernel='linear', max_samples=7)

    torch.manual_seed(5)
    loss = method.loss([teacher], student, _graph(30))

    torch.manual_seed(5)
    index = torch.randperm(30)[:7].tolist()
    h_t, h_s = teacher.hiddens[0].tolist(), student.hiddens[0].tolist()
    expected = _expected_gsp([h_t[i] for i in index],
                             [h_s[i] for i in index], _dot)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_sampling_is_repeatable_and_varies_between_steps():
    teacher, student = _random_outputs(30)
    method = GSP(max_samples=7)

    torch.manual_seed(1)
    first = [float(method.loss([teacher], student, _graph(30)))
             for _ in range(2)]
    torch.manual_seed(1)
    again = float(method.loss([teacher], student, _graph(30)))

    assert first[0] == again
    assert first[0] != first[1]


def test_never_builds_more_than_the_sample(monkeypatch):
    # The bound that keeps Physics (34,493 nodes) at n x n, not N x N.
    teacher, student = _random_outputs(40)
    method = GSP(kernel='rbf', max_samples=8)
    rows = []
    original = GSP.kernel_matrix

    def spy(self, h):
        rows.append(h.size(0))
        return original(self, h)

    monkeypatch.setattr(GSP, 'kernel_matrix', spy)
    method.prepare([teacher], student, _graph(40))
    method.loss([teacher], student, _graph(40)).backward()

    assert rows == [8, 8]  # student and teacher, nothing cached


def test_all_nodes_used_without_rng_when_graph_is_small():
    teacher, student = _random_outputs(6)
    method = GSP(kernel='linear', max_samples=6)

    state = torch.get_rng_state()
    loss = method.loss([teacher], student, _graph(6))

    assert torch.equal(torch.get_rng_state(), state)
    expected = _expected_gsp(teacher.hiddens[0].tolist(),
                             student.hiddens[0].tolist(), _dot)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_prepare_caches_teacher_kernel_of_small_graph():
    teacher = _out(H_T)
    method = GSP(kernel='rbf')

    method.prepare([teacher], _out(H_S), _graph(4))
    loss = method.loss([teacher], _out(H_S), _graph(4))

    assert len(method._cached) == 1
    assert method._cached[0][1].shape == (4, 4)
    assert float(loss) == pytest.approx(
        _expected_gsp(H_T, H_S, KERNELS['rbf'][1]), rel=1e-9)
    # prepare again rebuilds, it does not append.
    method.prepare([teacher], _out(H_S), _graph(4))
    assert len(method._cached) == 1


def test_prepare_cache_is_not_used_for_other_teacher_features():
    method = GSP(kernel='linear')
    method.prepare([_out(H_T)], _out(H_S), _graph(4))
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.5, 0.0]]

    loss = method.loss([_out(h_t2)], _out(H_S), _graph(4))

    assert float(loss) == pytest.approx(
        _expected_gsp(h_t2, H_S, _dot), rel=1e-9)


@pytest.mark.parametrize('options, match', [
    ({'kernel': 'cos'}, 'kernel'),
    ({'kernel': 'RBF'}, 'kernel'),
    ({'sigma': 0.0}, 'sigma'),
    ({'sigma': -1.0}, 'sigma'),
    ({'degree': 0}, 'degree'),
    ({'degree': 1.5}, 'degree'),
    ({'max_samples': 0}, 'max_samples'),
    ({'max_samples': 2.5}, 'max_samples'),
    ({'teacher_layers': [0, 1], 'student_layers': [0, 1, 2]}, 'differ'),
])
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        GSP(**options)


def test_bad_option_message_shows_value():
    with pytest.raises(ValueError, match=r"'max_samples'.*\(got -3\)"):
        GSP(max_samples=-3)


@pytest.mark.parametrize('options', [{'kernel': 'cosine'},
                                     {'kernel': 'linear', 'center': True}])
def test_factored_kernels_match_the_kernel_matrices(options):
    # cosine and linear never build [n, n]; the value and the gradient are
    # those of the explicit kernel matrices on the same sample.
    teacher, student = _random_outputs(40)
    method = GSP(max_samples=16, **options)
    torch.manual_seed(3)
    loss = method.loss([teacher], student, _graph(40))
    (grad,) = torch.autograd.grad(loss, student.hiddens[0])

    torch.manual_seed(3)
    index = method.sample(40, torch.device('cpu'))
    k_s = method.kernel_matrix(student.hiddens[0][index])
    k_t = method.kernel_matrix(teacher.hiddens[0][index])
    expected = ((k_s - k_t) ** 2).mean()
    (expected_grad,) = torch.autograd.grad(expected, student.hiddens[0])

    assert float(loss) == pytest.approx(float(expected), rel=1e-9)
    assert torch.allclose(grad, expected_grad, rtol=1e-7, atol=1e-12)
