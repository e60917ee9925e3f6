"""FitNet: the hint regression, checked against plain Python on 3 nodes, and
the trainable map's life cycle (sized in prepare, optimised, rebuilt)."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import literal_graph

from gnncompress.core.graph import Graph
from gnncompress.methods.fitnet import FitNet
from gnncompress.models import ArchSpec, ModelOutput, build_model
from gnncompress.training.train import fit, forward_frozen

H_S = [[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]]               # d_s = 2
H_T = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 2.0, 1.0]]  # d_t = 3
# A map d_s -> d_t set by hand: row k gives teacher channel k.
W = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]
B = [0.0, 0.5, -1.0]


def _graph(num_nodes: int = 3) -> Graph:
    # FitNet never looks at the edges; a valid graph keeps the call
    # realistic.
    return literal_graph(num_nodes, torch.tensor([[0, 1], [1, 0]]), 'fitnet')


def _out(*hiddens, requires_grad: bool = False) -> ModelOutput:
    tensors = [torch.tensor(h, dtype=torch.float64,
                            requires_grad=requires_grad) for h in hiddens]
    return ModelOutput(logits=torch.zeros(len(hiddens[0]), 2,
                                          dtype=torch.float64),
                       hiddens=tensors)


def _set_map(proj: torch.nn.Linear, w, b) -> None:
    with torch.no_grad():
        proj.weight.copy_(torch.tensor(w, dtype=proj.weight.dtype))
        proj.bias.copy_(torch.tensor(b, dtype=proj.bias.dtype))


def _apply(w, b, h):
    return [[sum(wk[c] * row[c] for c in range(len(row))) + bk
             for wk, bk in zip(w, b)] for row in h]


def _unit(row):
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def _expected_fitnet(h_s, h_t, w, b, normalize=False) -> float:
    """Mean over nodes and teacher channels of (W h_s + b - h_t)^2."""
    guided = _apply(w, b, h_s)
    if normalize:
        guided = [_unit(r) for r in guided]
        h_t = [_unit(r) for r in h_t]
    errors = [(g - t) ** 2 for gr, tr in zip(guided, h_t)
              for g, t in zip(gr, tr)]
    return sum(errors) / len(errors)


def _prepared(method: FitNet, teachers, student) -> FitNet:
    method.prepare(teachers, student, _graph())
    return method


def test_pinned_value():
    # W h_s + b per node: (1, 2.5, -2), (0, -0.5, 0), (3, 1.5, 1)
    # minus h_t:          (0, 2.5, -4), (-0.5, 0.5, 0), (1, -0.5, 0)
    # squares sum: 22.25 + 0.5 + 1.25 = 24; mean over 9 -> 2.666667
    teacher, student = _out(H_T), _out(H_S)
    method = _prepared(FitNet(), [teacher], student)
    _set_map(method.projections[0], W, B)

    loss = method.loss([teacher], student, _graph())

    assert loss.dim() == 0
    assert loss.item() == pytest.approx(24 / 9, rel=1e-12)
    assert loss.item() == pytest.approx(_expected_fitnet(H_S, H_T, W, B))


def test_normalized_matches_hand_computation():
    teacher, student = _out(H_T), _out(H_S)
    method = _prepared(FitNet(normalize=True), [teacher], student)
    _set_map(method.projections[0], W, [0.0, 0.5, 1.0])

    loss = method.loss([teacher], student, _graph())

    expected = _expected_fitnet(H_S, H_T, W, [0.0, 0.5, 1.0], normalize=True)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(
        _expected_fitnet(H_S, H_T, W, [0.0, 0.5, 1.0]), rel=1e-3)


def test_normalized_ignores_per_node_scale():
    # The map scaled differently per node changes the raw error but not the
    # normalised one: only directions count.
    teacher = _out(H_T)
    scaled = [[2.0 * v for v in H_T[0]], H_T[1], [0.1 * v for v in H_T[2]]]
    student = _out(scaled)
    method = _prepared(FitNet(normalize=True), [teacher], student)
    _set_map(method.projections[0], torch.eye(3).tolist(), [0.0] * 3)

    assert method.loss([teacher], student, _graph()).item() == \
        pytest.approx(0.0, abs=1e-12)


def test_zero_when_the_map_reproduces_the_teacher():
    teacher, student = _out(H_T), _out(H_S)
    method = _prepared(FitNet(), [teacher], student)
    target = _apply(W, B, H_S)
    _set_map(method.projections[0], W, B)

    loss = method.loss([_out(target)], student, _graph())

    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_defaults():
    method = FitNet()

    assert method.normalize is False
    assert method.pairs == [(-1, -1)]
    assert FitNet.default_weight == 10.0 and method.default_weight == 10.0
    # The normalised variant carries the weight of Joshi et al.'s code.
    assert FitNet(normalize=True).default_weight == 1000.0
    assert FitNet.default_weight == 10.0


def test_map_is_sized_in_prepare_and_is_a_parameter():
    teacher, student = _out(H_T), _out(H_S)
    method = FitNet()
    assert list(method.parameters()) == []

    method.prepare([teacher], student, _graph())

    (proj,) = method.projections
    assert (proj.in_features, proj.out_features) == (2, 3)
    assert proj.weight.dtype == torch.float64
    params = {id(p) for p in method.parameters()}
    assert {id(proj.weight), id(proj.bias)} <= params


def test_gradient_reaches_student_and_map_not_teacher():
    teacher = _out(H_T, requires_grad=True)
    student = _out(H_S, requires_grad=True)
    method = _prepared(FitNet(), [teacher], student)
    _set_map(method.projections[0], W, B)

    method.loss([teacher], student, _graph()).backward()

    assert teacher.hiddens[0].grad is None
    # d/dh_s of mean (W h_s + b - h_t)^2 = 2/(N d_t) W^T r, per node.
    residual = [[g - t for g, t in zip(gr, tr)]
                for gr, tr in zip(_apply(W, B, H_S), H_T)]
    for n in range(3):
        for c in range(2):
            expected = 2 / 9 * sum(W[k][c] * residual[n][k] for k in range(3))
            assert float(student.hiddens[0].grad[n, c]) == \
                pytest.approx(expected, rel=1e-12, abs=1e-15)
    proj = method.projections[0]
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert proj.bias.grad is not None and proj.bias.grad.abs().sum() > 0


def test_loss_without_prepare_prepares():
    teacher, student = _out(H_T), _out(H_S, requires_grad=True)
    method = FitNet()

    loss = method.loss([teacher], student, _graph())
    loss.backward()

    assert method.projections is not None
    assert method.projections[0].in_features == 2
    assert torch.isfinite(loss)
    assert method.projections[0].weight.grad is not None


def test_prepare_again_rebuilds_for_new_widths():
    method = FitNet()
    method.prepare([_out(H_T)], _out(H_S), _graph())
    first = method.projections[0]

    wide_s = [row + [1.0, 2.0] for row in H_S]          # d_s = 4
    wide_t = [row + row for row in H_T]                 # d_t = 6
    method.prepare([_out(wide_t)], _out(wide_s), _graph())

    (proj,) = method.projections
    assert proj is not first
    assert (proj.in_features, proj.out_features) == (4, 6)
    assert len(list(method.parameters())) == 2
    loss = method.loss([_out(wide_t)], _out(wide_s), _graph())
    assert torch.isfinite(loss)


def test_one_map_per_teacher_and_pair_and_the_mean_over_them():
    # Two teacher layers of widths 3 and 1, two student layers of width 2
    # and 1, two teachers: four maps, each sized from its own pair.
    h_t1 = [[1.0], [0.0], [-2.0]]
    h_s1 = [[0.5], [1.0], [0.0]]
    teachers = [_out(H_T, h_t1), _out([[2 * v for v in r] for r in H_T],
                                      [[3.0], [1.0], [0.0]])]
    student = _out(H_S, h_s1)
    method = _prepared(FitNet(teacher_layers=[0, 1], student_layers=[0, 1]),
                       teachers, student)

    sizes = [(p.in_features, p.out_features) for p in method.projections]
    assert sizes == [(2, 3), (1, 1), (2, 3), (1, 1)]
    maps = [(W, B), ([[2.0]], [0.5]), ([[1.0, 1.0], [0.0, 2.0],
                                        [1.0, 0.0]], [0.0, 0.0, 1.0]),
            ([[-1.0]], [0.0])]
    for proj, (w, b) in zip(method.projections, maps):
        _set_map(proj, w, b)

    loss = method.loss(teachers, student, _graph())

    h_s = [H_S, h_s1]
    expected = 0.0
    for t, teacher in enumerate(teachers):
        for pair in range(2):
            w, b = maps[2 * t + pair]
            h_t = teacher.hiddens[pair].tolist()
            expected += _expected_fitnet(h_s[pair], h_t, w, b)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-12)


def test_single_student_layer_pairs_with_every_teacher_layer():
    teacher = _out(H_T, [[1.0], [0.0], [-2.0]])
    method = _prepared(FitNet(teacher_layers=[0, 1], student_layers=[-1]),
                       [teacher], _out(H_S))

    sizes = [(p.in_features, p.out_features) for p in method.projections]
    assert sizes == [(2, 3), (2, 1)]


def test_prepare_cache_gives_same_loss_and_is_not_used_for_other_teachers():
    teacher, student = _out(H_T), _out(H_S)
    method = _prepared(FitNet(normalize=True), [teacher], student)
    _set_map(method.projections[0], W, B)

    assert method._cached and method._cached[0][0] is teacher.hiddens[0]
    cached = method.loss([teacher], student, _graph())
    fresh = method.loss([_out(H_T)], student, _graph())
    other_t = [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]]
    other = method.loss([_out(other_t)], student, _graph())

    assert cached.item() == pytest.approx(fresh.item(), rel=1e-12)
    assert other.item() == pytest.approx(
        _expected_fitnet(H_S, other_t, W, B, normalize=True), rel=1e-12)


def test_zero_teacher_row_stays_finite_when_normalized():
    # F.normalize keeps an all-zero row at zero instead of dividing by 0.
    h_t = [H_T[0], [0.0, 0.0, 0.0], H_T[2]]
    student = _out(H_S, requires_grad=True)
    method = _prepared(FitNet(normalize=True), [_out(h_t)], student)

    loss = method.loss([_out(h_t)], student, _graph())
    loss.backward()

    assert torch.isfinite(loss)
    assert torch.isfinite(student.hiddens[0].grad).all()


class _RecordingFitNet(FitNet):
    """FitNet that keeps a copy of the map as prepare built it."""

    def prepare(self, teacher_outputs, student_output, graph) -> None:
        super().prepare(teacher_outputs, student_output, graph)
        self.initial = self.projections[0].weight.detach().clone()


def test_fit_optimises_the_map_with_the_student(tiny_graph):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('gcn', 5, 8, 2, 2))
    student = build_model(ArchSpec('gcn', 5, 4, 2, 2))
    teacher_out = forward_frozen(teacher, tiny_graph)
    method = _RecordingFitNet()

    fit(student, tiny_graph, method=method, teacher_outputs=[teacher_out],
        epochs=3, patience=None, progress=False)

    # prepare ran inside fit and sized the map 4 -> 8; Adam moved it.
    (proj,) = method.projections
    assert (proj.in_features, proj.out_features) == (4, 8)
    assert not torch.allclose(proj.weight, method.initial)


def test_prepared_for_other_teachers_raises():
    method = _prepared(FitNet(), [_out(H_T)], _out(H_S))

    with pytest.raises(ValueError, match='prepared for 1'):
        method.loss([_out(H_T), _out(H_T)], _out(H_S), _graph())
    with pytest.raises(ValueError, match='maps width 2 to 3'):
        method.loss([_out([r + r for r in H_T])], _out(H_S), _graph())


@pytest.mark.parametrize('value', ['yes', 1, None])
def test_normalize_must_be_bool(value):
    with pytest.raises(ValueError, match='normalize'):
        FitNet(normalize=value)


@pytest.mark.parametrize('options, match', [
    ({'teacher_layers': []}, 'must not be empty'),
    ({'teacher_layers': [0, 1], 'student_layers': [0, 1, 2]},
     'differ in length'),
])
def test_bad_layer_lists_raise(options, match):
    with pytest.raises(ValueError, match=match):
        FitNet(**options)


def test_missing_layers_raise():
    with pytest.raises(ValueError, match='teacher has 1 hidden layers'):
        FitNet(teacher_layers=[2]).prepare([_out(H_T)], _out(H_S), _graph())
    with pytest.raises(ValueError, match='student has no hidden layer'):
        FitNet().loss([_out(H_T)], ModelOutput(logits=torch.zeros(3, 2)),
                      _graph())
