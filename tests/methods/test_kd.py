"""KD: the soft-label loss on cases small enough to work out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from gnncompress.core.graph import Graph
from gnncompress.methods.kd import KD
from gnncompress.models import ModelOutput


def _graph(num_nodes: int) -> Graph:
    # KD never looks at the graph; a valid one keeps the call realistic.
    mask = torch.ones(num_nodes, dtype=torch.bool)
    return Graph(name='kd', x=torch.zeros(num_nodes, 1),
                 edge_index=torch.zeros(2, 0, dtype=torch.long),
                 y=torch.zeros(num_nodes, dtype=torch.long), train_mask=mask,
                 val_mask=mask, test_mask=mask, num_classes=3)


def _out(rows: list[list[float]], **kwargs) -> ModelOutput:
    return ModelOutput(logits=torch.tensor(rows, dtype=torch.float64,
                                           **kwargs))


def _softmax(row: list[float], tau: float) -> list[float]:
    exps = [math.exp(v / tau) for v in row]
    return [e / sum(exps) for e in exps]


def _expected_kd(teacher: list[list[float]], student: list[list[float]],
                 tau: float) -> float:
    """T^2 * mean over nodes of sum_c p_t log(p_t / p_s), in plain Python."""
    total = 0.0
    for z_t, z_s in zip(teacher, student):
        p_t, p_s = _softmax(z_t, tau), _softmax(z_s, tau)
        total += sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    return tau * tau * total / len(teacher)


def test_two_classes_pinned_value():
    # T = 2 and logits 2 ln 3 give the probabilities 3/4 and 1/4:
    # node 0: p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    #   KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.3040988 - 0.1732868 = 0.1308120
    # node 1: p_t = (1/2, 1/2), p_s = (1/4, 3/4)
    #   KL = 1/2 ln 2 + 1/2 ln(2/3) = 0.3465736 - 0.2027326 = 0.1438410
    # loss = T^2 * mean = 4 * (0.1308120 + 0.1438410) / 2 = 0.5493061
    ln3 = math.log(3)
    teacher = [[2 * ln3, 0.0], [0.0, 0.0]]
    student = [[0.0, 0.0], [0.0, 2 * ln3]]

    loss = KD(temperature=2.0).loss([_out(teacher)], _out(student),
                                    _graph(2))

    assert loss.dim() == 0
    assert float(loss) == pytest.approx(0.5493061, abs=1e-6)
    assert float(loss) == pytest.approx(_expected_kd(teacher, student, 2.0),
                                        rel=1e-12)


@pytest.mark.parametrize('tau', [1.0, 2.0, 4.0, 0.5])
def test_three_classes_matches_hand_formula(tau):
    teacher = [[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]
    student = [[0.0, 1.5, -0.5], [1.0, 1.0, 2.0]]

    loss = KD(temperature=tau).loss([_out(teacher)], _out(student),
                                    _graph(2))

    assert float(loss) == pytest.approx(_expected_kd(teacher, student, tau),
                                        rel=1e-10)


def test_default_temperature_is_four():
    teacher = [[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]
    student = [[0.0, 1.5, -0.5], [1.0, 1.0, 2.0]]

    method = KD()

    assert method.temperature == 4.0
    loss = method.loss([_out(teacher)], _out(student), _graph(2))
    assert float(loss) == pytest.approx(_expected_kd(teacher, student, 4.0),
                                        rel=1e-10)


def test_is_not_symmetric_in_teacher_and_student():
    # KL(p_t || p_s), not KL(p_s || p_t): swapping the roles changes the value.
    teacher = [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    student = [[0.0, 0.0, 0.0], [0.0, 2.0, -1.0]]

    loss = KD(temperature=1.0).loss([_out(teacher)], _out(student),
                                    _graph(2))

    assert float(loss) == pytest.approx(_expected_kd(teacher, student, 1.0),
                                        rel=1e-10)
    assert float(loss) != pytest.approx(_expected_kd(student, teacher, 1.0),
                                        rel=1e-3)


def test_zero_when_student_equals_teacher():
    logits = [[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]

    loss = KD(temperature=3.0).loss([_out(logits)], _out(logits), _graph(2))

    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_zero_when_logits_differ_by_a_constant_per_node():
    # Softmax ignores a per-node shift, so the soft labels are identical.
    teacher = [[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]
    student = [[7.0, 6.0, 5.0], [-3.0, 1.0, -1.5]]

    loss = KD(temperature=2.0).loss([_out(teacher)], _out(student),
                                    _graph(2))

    assert float(loss) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('tau', [0.0, -1.0])
def test_temperature_must_be_positive(tau):
    with pytest.raises(ValueError, match='temperature'):
        KD(temperature=tau)


def test_two_teachers_average():
    teacher_a = [[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]
    teacher_b = [[0.0, 0.0, 4.0], [1.0, -2.0, 0.0]]
    student = [[0.0, 1.5, -0.5], [1.0, 1.0, 2.0]]
    tau = 2.0

    loss = KD(temperature=tau).loss([_out(teacher_a), _out(teacher_b)],
                                    _out(student), _graph(2))

    expected = (_expected_kd(teacher_a, student, tau)
                + _expected_kd(teacher_b, student, tau)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-10)


def test_gradient_reaches_student_logits_only():
    teacher = _out([[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]], requires_grad=True)
    student = _out([[0.0, 1.5, -0.5], [1.0, 1.0, 2.0]], requires_grad=True)
    tau = 2.0

    KD(temperature=tau).loss([teacher.detach()], student, _graph(2)).backward()

    # d/dz_s of T^2 * mean_n KL = T / N * (p_s - p_t) per node.
    grad = student.logits.grad.tolist()
    for n in range(2):
        p_t = _softmax(teacher.logits[n].tolist(), tau)
        p_s = _softmax(student.logits[n].tolist(), tau)
        for c in range(3):
            assert grad[n][c] == pytest.approx(tau / 2 * (p_s[c] - p_t[c]),
                                               rel=1e-9)
    assert teacher.logits.grad is None
