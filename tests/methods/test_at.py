"""AT: per-node attention maps and their squared error, checked against
plain Python on 3 and 4 nodes."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import literal_graph

from gnncompress.core.graph import Graph
from gnncompress.methods.at import AT
from gnncompress.models import ModelOutput

H_T = [[1.0, 0.0, 2.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]  # d_t = 3
H_S = [[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]]                 # d_s = 2


def _graph(num_nodes: int = 3) -> Graph:
    # AT never looks at the edges; a valid graph keeps the call realistic.
    return literal_graph(num_nodes, torch.tensor([[0, 1], [1, 0]]), 'at')


def _out(*hiddens, requires_grad: bool = False) -> ModelOutput:
    tensors = [torch.tensor(h, dtype=torch.float64,
                            requires_grad=requires_grad) for h in hiddens]
    return ModelOutput(logits=torch.zeros(len(hiddens[0]), 2,
                                          dtype=torch.float64),
                       hiddens=tensors)


def _attention(h) -> list[float]:
    a = [sum(v * v for v in row) for row in h]
    norm = math.sqrt(sum(v * v for v in a))
    return [v / norm for v in a]


def _expected_at(h_s, h_t) -> float:
    a_s, a_t = _attention(h_s), _attention(h_t)
    return sum((s - t) ** 2 for s, t in zip(a_s, a_t)) / len(a_s)


def test_pinned_value():
    # Teacher: a = (5, 4, 3), ||a|| = sqrt(50) -> (0.707107, 0.565685,
    #   0.424264). Student: a = (2, 1, 4), ||a|| = sqrt(21) -> (0.436436,
    #   0.218218, 0.872872).
    # Squared differences: 0.073263 + 0.120733 + 0.201249 = 0.395245;
    # mean over 3 nodes -> 0.131748.
    loss = AT().loss([_out(H_T)], _out(H_S), _graph())

    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.131748, abs=1e-6)
    assert loss.item() == pytest.approx(_expected_at(H_S, H_T), rel=1e-12)


def test_attention_map_matches_hand_computation():
    a = AT.attention_map(torch.tensor(H_T, dtype=torch.float64))

    assert a.tolist() == pytest.approx(_attention(H_T), rel=1e-12)
    assert a.tolist() == pytest.approx(
        [5 / math.sqrt(50), 4 / math.sqrt(50), 3 / math.sqrt(50)])


def test_four_nodes_with_negative_features():
    h_t = [[-1.0, 2.0], [0.5, 0.5], [3.0, -1.0], [0.0, -0.2]]
    h_s = [[0.1, -0.2, 0.3, 1.0], [2.0, 0.0, 0.0, -1.0],
           [0.0, 0.0, 0.5, 0.5], [-1.0, 1.0, -1.0, 1.0]]

    loss = AT().loss([_out(h_t)], _out(h_s), _graph(4))

    assert loss.item() == pytest.approx(_expected_at(h_s, h_t), rel=1e-12)


@pytest.mark.parametrize('student', [
    H_T,
    [[3.0 * v for v in row] for row in H_T],          # global scale
    [[-row[2], row[0], -row[1]] for row in H_T],      # channels permuted
    [[0.0, math.sqrt(5.0)], [2.0, 0.0], [math.sqrt(3.0), 0.0]],  # same norms
])
def test_zero_when_the_maps_agree(student):
    loss = AT().loss([_out(H_T)], _out(student), _graph())

    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_per_node_scale_is_not_ignored():
    # Unlike a global scale, scaling one node changes the map.
    student = [H_T[0], [2.0 * v for v in H_T[1]], H_T[2]]

    loss = AT().loss([_out(H_T)], _out(student), _graph())

    assert loss.item() > 1e-3
    assert loss.item() == pytest.approx(_expected_at(student, H_T))


def test_defaults():
    method = AT()

    assert method.pairs == [(-1, -1)]
    assert AT.default_weight == 1000.0
    assert list(method.parameters()) == []


def test_gradient_reaches_student_not_teacher():
    teacher = _out(H_T, requires_grad=True)
    student = _out(H_S, requires_grad=True)

    AT().loss([teacher], student, _graph()).backward()

    assert teacher.hiddens[0].grad is None
    grad = student.hiddens[0].grad
    eps = 1e-6
    for n in range(3):
        for c in range(2):
            up = [row[:] for row in H_S]
            down = [row[:] for row in H_S]
            up[n][c] += eps
            down[n][c] -= eps
            numeric = (_expected_at(up, H_T)
                       - _expected_at(down, H_T)) / (2 * eps)
            assert float(grad[n, c]) == pytest.approx(numeric, abs=1e-8)


def test_selected_layers_and_pairs_average():
    h_t1 = [[2.0], [0.0], [1.0]]
    h_s1 = [[1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.5, 0.5]]
    teacher = _out(H_T, h_t1)
    student = _out(H_S, h_s1)

    one = AT(teacher_layers=[1], student_layers=[0]).loss(
        [teacher], student, _graph())
    two = AT(teacher_layers=[0, 1], student_layers=[1, 0]).loss(
        [teacher], student, _graph())

    assert one.item() == pytest.approx(_expected_at(H_S, h_t1), rel=1e-12)
    expected = (_expected_at(h_s1, H_T) + _expected_at(H_S, h_t1)) / 2
    assert two.item() == pytest.approx(expected, rel=1e-12)


def test_two_teachers_average():
    h_t2 = [[0.0, 1.0], [3.0, 0.0], [1.0, -1.0]]

    loss = AT().loss([_out(H_T), _out(h_t2)], _out(H_S), _graph())

    expected = (_expected_at(H_S, H_T) + _expected_at(H_S, h_t2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_prepare_cache_gives_same_loss_and_is_not_used_for_other_teachers():
    teacher = _out(H_T)
    method = AT()
    method.prepare([teacher], _out(H_S), _graph())

    assert method._cached and method._cached[0][0] is teacher.hiddens[0]
    cached = method.loss([teacher], _out(H_S), _graph())
    h_t2 = [[0.0, 1.0], [3.0, 0.0], [1.0, -1.0]]
    other = method.loss([_out(h_t2)], _out(H_S), _graph())

    assert cached.item() == pytest.approx(_expected_at(H_S, H_T), rel=1e-12)
    assert other.item() == pytest.approx(_expected_at(H_S, h_t2), rel=1e-12)


def test_prepare_again_replaces_the_cache():
    method = AT()
    method.prepare([_out(H_T)], _out(H_S), _graph())
    teacher = _out(H_S)
    method.prepare([teacher], _out(H_S), _graph())

    assert len(method._cached) == 1
    assert method._cached[0][0] is teacher.hiddens[0]


def test_all_zero_student_layer_is_finite():
    # A dead layer has the zero map; the loss is then mean(a_t^2) = 1/N.
    student = _out([[0.0, 0.0]] * 3, requires_grad=True)

    loss = AT().loss([_out(H_T)], student, _graph())
    loss.backward()

    assert loss.item() == pytest.approx(1 / 3, rel=1e-12)
    assert torch.isfinite(student.hiddens[0].grad).all()


def test_float32_large_features_are_stable():
    h_t = torch.tensor(H_T) * 1e4  # squared norms up to 5e8
    student = ModelOutput(logits=torch.zeros(3, 2),
                          hiddens=[(torch.tensor(H_S) * 1e4)
                                   .requires_grad_()])

    loss = AT().loss([ModelOutput(torch.zeros(3, 2), [h_t])], student,
                     _graph())
    loss.backward()

    assert loss.item() == pytest.approx(_expected_at(H_S, H_T), rel=1e-5)
    assert torch.isfinite(student.hiddens[0].grad).all()


@pytest.mark.parametrize('options, match', [
    ({'student_layers': []}, 'must not be empty'),
    ({'teacher_layers': [0, 1], 'student_layers': [0, 1, 2]},
     'differ in length'),
])
def test_bad_layer_lists_raise(options, match):
    with pytest.raises(ValueError, match=match):
        AT(**options)


def test_missing_layers_raise():
    with pytest.raises(ValueError, match='teacher has 1 hidden layers'):
        AT(teacher_layers=[1]).prepare([_out(H_T)], _out(H_S), _graph())
    with pytest.raises(ValueError, match='student has no hidden layer'):
        AT().loss([_out(H_T)], ModelOutput(logits=torch.zeros(3, 2)),
                  _graph())
