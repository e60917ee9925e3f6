"""G-CRD: the contrastive loss against plain Python, the heads (their sizes,
that they learn, that they are the method's), and the node sampling."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import literal_graph, literal_output
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods.gcrd import GCRD
from gnncompress.models import ArchSpec, ModelOutput, build_model
from gnncompress.training.train import fit, forward_frozen

H_T = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.5]]
H_S = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, -1.0]]


def _graph(num_nodes: int) -> Graph:
    # G-CRD never looks at the edges.
    return literal_graph(num_nodes, name='gcrd')


def _out(h, requires_grad: bool = False) -> ModelOutput:
    return literal_output(h, requires_grad)


def _unit(a: list[float]) -> list[float]:
    # An all-zero row (possible after the ReLU) stays zero, as with
    # F.normalize's epsilon.
    norm = max(math.sqrt(sum(x * x for x in a)), 1e-12)
    return [x / norm for x in a]


def _expected_nce(s: list[list[float]], t: list[list[float]],
                  tau: float) -> float:
    """mean_i -log( exp(s_i.t_i / tau) / sum_j exp(s_i.t_j / tau) ) on
    L2-normalised rows, in plain Python."""
    s, t = [_unit(r) for r in s], [_unit(r) for r in t]
    total = 0.0
    for i, s_i in enumerate(s):
        logits = [sum(a * b for a, b in zip(s_i, t_j)) / tau for t_j in t]
        total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    return total / len(s)


def _head_by_hand(head: nn.Sequential, h: Tensor) -> list[list[float]]:
    """The head in training mode, written out: Linear, BatchNorm with the
    batch's own (biased) statistics, ReLU, and the optional last Linear."""
    lin, bn = head[0], head[1]
    z = h.detach() @ lin.weight.detach().t() + lin.bias.detach()
    mean = z.mean(0)
    var = ((z - mean) ** 2).mean(0)
    z = (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach() \
        + bn.bias.detach()
    z = z.clamp_min(0)
    if len(head) == 4:
        z = z @ head[3].weight.detach().t() + head[3].bias.detach()
    return z.tolist()


def _expected_gcrd(method: GCRD, h_t, h_s, term: int = 0) -> float:
    t = _head_by_hand(method.teacher_heads[term],
                      torch.tensor(h_t, dtype=torch.float64))
    s = _head_by_hand(method.student_heads[term],
                      torch.tensor(h_s, dtype=torch.float64))
    return _expected_nce(s, t, method.tau)


def test_contrastive_loss_pinned_values():
    method = GCRD(tau=1.0)
    # Orthonormal and matched: logits [[1, 0], [0, 1]], so each row's loss
    # is log(e + 1) - 1 = log(1 + e^-1) = 0.3132617.
    eye = torch.eye(2, dtype=torch.float64)
    assert float(method.contrastive_loss(eye, eye)) == pytest.approx(
        0.3132617, abs=1e-7)
    # Swapped: the positives score 0, the negatives 1:
    # log(1 + e) - 0 = 1.3132617.
    swapped = eye.flip(0)
    assert float(method.contrastive_loss(eye, swapped)) == pytest.approx(
        1.3132617, abs=1e-7)


@pytest.mark.parametrize('tau', [0.075, 0.5, 1.0])
def test_contrastive_loss_matches_hand_formula(tau):
    s = [[1.0, 2.0], [0.0, 1.0], [-1.0, 0.5]]
    t = [[3.0, 0.0], [1.0, 1.0], [0.0, -2.0]]
    method = GCRD(tau=tau)

    loss = method.contrastive_loss(torch.tensor(s, dtype=torch.float64),
                                   torch.tensor(t, dtype=torch.float64))

    assert float(loss) == pytest.approx(_expected_nce(s, t, tau), rel=1e-10)


def test_contrastive_loss_is_minimal_for_matched_separated_rows():
    # Identical orthonormal rows: only the negatives' e^0 terms remain,
    # log(1 + (n - 1) e^(-1/tau)), about 4e-6 at tau = 0.075.
    eye = torch.eye(4, dtype=torch.float64)
    method = GCRD()

    matched = float(method.contrastive_loss(eye, eye))

    assert matched == pytest.approx(math.log1p(3 * math.exp(-1 / 0.075)),
                                    rel=1e-9)
    assert matched < 1e-5
    assert float(method.contrastive_loss(eye, eye.roll(1, 0))) > 10


@pytest.mark.parametrize('head', ['mlp', 'linear-bn-relu'])
def test_loss_matches_heads_and_formula_by_hand(head):
    torch.manual_seed(0)
    method = GCRD(head=head, proj_dim=5, tau=0.5)
    method.prepare([_out(H_T)], _out(H_S), _graph(4))

    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    assert loss.dim() == 0
    assert float(loss) == pytest.approx(_expected_gcrd(method, H_T, H_S),
                                        rel=1e-9)


def test_heads_are_sized_from_prepare_tensors():
    method = GCRD()
    method.prepare([_out(H_T)], _out(H_S), _graph(4))

    student_head, teacher_head = method.student_heads[0], \
        method.teacher_heads[0]
    assert [type(m) for m in student_head] == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert student_head[0].in_features == 2   # the student's width
    assert teacher_head[0].in_features == 3   # the teacher's width
    assert student_head[3].out_features == 256
    assert teacher_head[3].out_features == 256
    assert student_head[0].weight.dtype == torch.float64


def test_authors_code_head_stops_after_relu():
    method = GCRD(head='linear-bn-relu', proj_dim=7)
    method.prepare([_out(H_T)], _out(H_S), _graph(4))

    assert [type(m) for m in method.teacher_heads[0]] == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert method.teacher_heads[0][0].out_features == 7


def test_heads_are_method_parameters_and_learn():
    method = GCRD(proj_dim=6)
    teacher = _out(H_T, requires_grad=True)
    student = _out(H_S, requires_grad=True)
    method.prepare([teacher], student, _graph(4))

    method.loss([teacher], student, _graph(4)).backward()

    params = {id(p) for p in method.parameters()}
    heads = list(method.student_heads.parameters()) + \
        list(method.teacher_heads.parameters())
    assert heads and all(id(p) in params for p in heads)
    # The teacher's head learns; the teacher does not.
    for p in heads:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert method.teacher_heads[0][0].weight.grad.abs().sum() > 0
    assert teacher.hiddens[0].grad is None
    assert student.hiddens[0].grad.abs().sum() > 0


def test_loss_without_prepare_builds_the_heads():
    method = GCRD(proj_dim=4)
    assert len(method.student_heads) == 0

    torch.manual_seed(0)
    loss = method.loss([_out(H_T)], _out(H_S), _graph(4))

    assert len(method.student_heads) == len(method.teacher_heads) == 1
    assert method.teacher_heads[0][0].in_features == 3
    assert float(loss) == pytest.approx(_expected_gcrd(method, H_T, H_S),
                                        rel=1e-9)


def test_prepare_again_rebuilds_cleanly():
    method = GCRD(proj_dim=4)
    method.prepare([_out(H_T)], _out(H_S), _graph(4))
    first = method.teacher_heads[0][0].weight

    # A new teacher of another width: fresh heads, not extra ones.
    wider = [row + [1.0] for row in H_T]
    method.prepare([_out(wider)], _out(H_S), _graph(4))

    assert len(method.teacher_heads) == len(method.student_heads) == 1
    assert method.teacher_heads[0][0].in_features == 4
    assert method.teacher_heads[0][0].weight is not first
    assert len(list(method.parameters())) == 2 * 6  # 2 heads x 6 tensors


def test_prepared_heads_are_reused_by_loss():
    method = GCRD(proj_dim=4)
    method.prepare([_out(H_T)], _out(H_S), _graph(4))
    heads = method.teacher_heads[0]

    method.loss([_out(H_T)], _out(H_S), _graph(4))

    assert method.teacher_heads[0] is heads


def test_two_teachers_get_their_own_heads_and_average():
    h_t2 = [[0.0, 2.0], [1.0, 0.5], [-1.0, 1.0], [0.5, 0.0]]
    torch.manual_seed(0)
    method = GCRD(proj_dim=5, tau=0.5)
    method.prepare([_out(H_T), _out(h_t2)], _out(H_S), _graph(4))

    loss = method.loss([_out(H_T), _out(h_t2)], _out(H_S), _graph(4))

    assert [h[0].in_features for h in method.teacher_heads] == [3, 2]
    expected = (_expected_gcrd(method, H_T, H_S, 0)
                + _expected_gcrd(method, h_t2, H_S, 1)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_selected_layers():
    teacher = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.tensor(H_T, dtype=torch.float64),
                                   torch.ones(4, 9, dtype=torch.float64)])
    student = ModelOutput(logits=torch.zeros(4, 2, dtype=torch.float64),
                          hiddens=[torch.ones(4, 8, dtype=torch.float64),
                                   torch.tensor(H_S, dtype=torch.float64)])
    torch.manual_seed(0)
    method = GCRD(proj_dim=5, teacher_layers=[0], student_layers=[1])

    loss = method.loss([teacher], student, _graph(4))

    assert method.teacher_heads[0][0].in_features == 3
    assert method.student_heads[0][0].in_features == 2
    assert float(loss) == pytest.approx(_expected_gcrd(method, H_T, H_S),
                                        rel=1e-9)


def test_sample_uses_global_rng_and_bounds_the_logits():
    gen = torch.Generator().manual_seed(0)
    h_t = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    h_s = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    teacher = ModelOutput(torch.zeros(30, 2), [h_t])
    student = ModelOutput(torch.zeros(30, 2), [h_s])
    method = GCRD(proj_dim=4, max_samples=7)
    method.prepare([teacher], student, _graph(30))
    sizes = []
    method.teacher_heads[0].register_forward_hook(
        lambda mod, args, out: sizes.append(out.size(0)))

    torch.manual_seed(3)
    loss = method.loss([teacher], student, _graph(30))
    torch.manual_seed(3)
    again = method.loss([teacher], student, _graph(30))

    torch.manual_seed(3)
    index = torch.randperm(30)[:7]
    expected = _expected_gcrd(method, h_t[index].tolist(),
                              h_s[index].tolist())
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    assert float(again) == float(loss)
    assert sizes == [7, 7]


def test_single_node_gives_zero_not_an_error():
    student = _out([[1.0, 2.0]], requires_grad=True)

    loss = GCRD().loss([_out([[1.0, 0.0, 0.0]])], student, _graph(1))
    loss.backward()

    assert float(loss) == 0.0
    assert torch.isfinite(student.hiddens[0].grad).all()


def test_missing_layer_index_raises():
    with pytest.raises(ValueError, match='teacher has 1 hidden layers'):
        GCRD(teacher_layers=[2]).loss([_out(H_T)], _out(H_S), _graph(4))


def test_student_without_hidden_layer_raises():
    student = ModelOutput(logits=torch.zeros(4, 2))

    with pytest.raises(ValueError, match='student has no hidden layer'):
        GCRD().prepare([_out(H_T)], student, _graph(4))


def test_defaults():
    method = GCRD()

    assert (method.tau, method.proj_dim, method.max_samples, method.head) \
        == (0.075, 256, 1024, 'mlp')
    assert method.pairs == [(-1, -1)]
    assert GCRD.default_weight == 0.1


def test_engine_trains_the_heads(tiny_graph):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('gcn', 5, 8, 2, 2))
    student = build_model(ArchSpec('gcn', 5, 4, 2, 2))
    method = GCRD(proj_dim=8)
    built = []
    prepare = method.prepare

    def spy(*args):
        prepare(*args)
        built.append([p.detach().clone() for p in method.parameters()])

    method.prepare = spy
    fit(student, tiny_graph, method=method,
        teacher_outputs=[forward_frozen(teacher, tiny_graph)], epochs=1,
        progress=False)

    # fit built the heads from its tensors' widths, then Adam moved them.
    assert len(built) == 1
    assert method.student_heads[0][0].in_features == 4
    assert method.teacher_heads[0][0].in_features == 8
    after = [p.detach() for p in method.parameters()]
    assert len(after) == len(built[0])
    assert all(not torch.equal(a, b) for a, b in zip(after, built[0]))


@pytest.mark.parametrize('options, match', [
    ({'tau': 0.0}, 'tau'),
    ({'tau': -0.1}, 'tau'),
    ({'proj_dim': 0}, 'proj_dim'),
    ({'proj_dim': 2.5}, 'proj_dim'),
    ({'max_samples': 1}, 'max_samples'),
    ({'max_samples': 100.5}, 'max_samples'),
    ({'head': 'linear'}, 'head'),
    ({'teacher_layers': []}, 'empty'),
])
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        GCRD(**options)


def test_bad_option_message_shows_value():
    with pytest.raises(ValueError, match=r"'tau' must be positive \(got -2"):
        GCRD(tau=-2)
