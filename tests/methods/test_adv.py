"""Adv (NOSMOG's adversarial feature augmentation): the perturbation and
the loss on a 4-node case worked out by hand, the gradient it leaves, the
hook the loop feeds it, and glnn+adv on the Cora sample."""
import math

import pytest
import torch

from gnncompress import api
from gnncompress.core.errors import GnnCompressError
from gnncompress.methods import StudentInputs
from gnncompress.methods.adv import Adv
from gnncompress.models import ModelOutput
from gnncompress.training import loop
from gnncompress.training.regimes.full_graph import FullGraph
from tests.conftest import literal_graph
from tests.methods.test_rsd import cora_losses

LN3 = math.log(3.0)
# The "student" reads its two features as its two logits. Teacher and
# student start as: node 0 p_t = (.75, .25), p_s = (.5, .5); node 1 the
# mirror image; node 2 p_t = (.5, .5), p_s = softmax(1, 0); node 3 equal.
X = [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
Z_T = [[LN3, 0.0], [0.0, LN3], [0.0, 0.0], [0.0, 2.0]]


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


# The gradient of KL(p_t || softmax(x)) in x is (p_s - p_t) / 4, so one
# ascent step of eps from delta = 0 moves node 0 to (-eps, eps), node 1 to
# (eps, -eps), node 2 to (1 + eps, -eps) and leaves node 3 (gradient 0).
def _expected(eps: float) -> float:
    moved = [[-eps, eps], [eps, -eps], [1 + eps, -eps], [0.0, 2.0]]
    return sum(_kl(_softmax(t), _softmax(x))
               for t, x in zip(Z_T, moved)) / 4


def _inputs(x=None, student=None) -> StudentInputs:
    x = torch.tensor(X, dtype=torch.float64) if x is None else x
    run = student or (lambda v: v)
    return StudentInputs(x, lambda v: ModelOutput(logits=run(v)))


def _teacher():
    return [ModelOutput(logits=torch.tensor(Z_T, dtype=torch.float64))]


def _loss(method: Adv, inputs: StudentInputs | None = None) -> float:
    method.see_inputs(inputs or _inputs())
    return float(method.loss(_teacher(), ModelOutput(logits=torch.zeros(
        4, 2, dtype=torch.float64)), literal_graph(4)).detach())


def test_one_step_from_zero_by_hand():
    method = Adv(epsilon=0.5, steps=1, step_size=0.5, random_start=False)
    assert _loss(method) == pytest.approx(_expected(0.5), rel=1e-12)
    clean = sum(_kl(_softmax(t), _softmax(x)) for t, x in zip(Z_T, X)) / 4
    assert _expected(0.5) > clean  # the perturbation does its job


def test_steps_stay_in_the_ball():
    """Three steps of 0.3 would go 0.9 out; the clip holds them at 0.5
    (every gradient keeps its sign on the way), the one-step value."""
    method = Adv(epsilon=0.5, steps=3, step_size=0.3, random_start=False)
    assert _loss(method) == pytest.approx(_expected(0.5), rel=1e-12)


def test_random_start_and_nosmogs_defaults():
    method = Adv(epsilon=0.2, steps=0)
    torch.manual_seed(5)
    delta = (torch.rand(4, 2, dtype=torch.float64) * 2 - 1) * 0.2
    x = torch.tensor(X, dtype=torch.float64) + delta
    expected = sum(_kl(_softmax(t), _softmax(row))
                   for t, row in zip(Z_T, x.tolist())) / 4
    torch.manual_seed(5)
    assert _loss(method) == pytest.approx(expected, rel=1e-12)
    nosmog = Adv()
    assert (nosmog.epsilon, nosmog.steps, nosmog.step_size) == \
        (0.04, 5, 0.01)
    assert nosmog.random_start
    assert (Adv.default_weight, Adv.default_label_weight) == (0.1, 0.0)


def test_only_the_loss_at_the_perturbed_input_trains_the_student():
    """The search's backward passes reach delta alone: the student's
    gradient is that of the final loss at the delta the search found."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2).double()
    inputs = _inputs(student=lin)
    method = Adv(epsilon=0.3, steps=4)
    graph = literal_graph(4)
    torch.manual_seed(1)
    method.see_inputs(inputs)
    method.loss(_teacher(), ModelOutput(logits=torch.zeros(4, 2)),
                graph).backward()
    got = lin.weight.grad.clone()
    lin.zero_grad()
    torch.manual_seed(1)
    delta = method.perturbation(_teacher(), inputs, graph)
    assert delta.abs().max() <= 0.3 + 1e-12
    assert lin.weight.grad is None  # the search left no gradient
    final = method._distance(_teacher(), inputs.rerun(inputs.x + delta),
                             graph)
    final.backward()
    assert torch.equal(got, lin.weight.grad)


def test_loss_without_the_inputs_is_refused():
    with pytest.raises(GnnCompressError, match='reruns the student'):
        Adv().loss(_teacher(), ModelOutput(logits=torch.zeros(4, 2)),
                   literal_graph(4))


@pytest.mark.parametrize('kwargs', [{'epsilon': 0.0}, {'steps': -1},
                                    {'steps': 1.5}, {'step_size': 0.0},
                                    {'random_start': 'yes'}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Adv(**kwargs)


def test_the_sum_hands_the_inputs_to_adv():
    method = api.build_method('glnn+adv', {'adv.epsilon': 0.5,
                                           'adv.steps': 1, 'adv.step_size': 0.5,
                                           'adv.random_start': False})
    assert method.reruns_student and method.preferred_student == 'mlp'
    assert not api.build_method('glnn+rsd').reruns_student
    method.see_inputs(_inputs())
    total = float(method.loss(_teacher(), ModelOutput(logits=torch.tensor(
        X, dtype=torch.float64)), literal_graph(4)).detach())
    clean = sum(_kl(_softmax(t), _softmax(x)) for t, x in zip(Z_T, X)) / 4
    assert total == pytest.approx(clean + 0.1 * _expected(0.5), rel=1e-12)


class _Bare:
    """A regime that cannot rerun the student (as batches of graphs)."""


def test_a_regime_without_student_inputs_is_refused(tiny_graph):
    with pytest.raises(GnnCompressError) as info:
        loop.check_reruns(api.build_method('kd+adv'), _Bare())
    assert str(info.value) == (
        'adv perturbs the node features of one graph: it trains on a '
        'node-classification graph, full-graph or with --batch-size, not on '
        'this dataset: drop adv from --method')
    regime = FullGraph(tiny_graph)
    loop.check_reruns(api.build_method('kd+adv'), regime)  # has them


def test_glnn_plus_adv_trains_on_the_cora_sample(cora):
    """Finite, falling losses of a 2-layer MLP under glnn+adv for a few
    epochs, above glnn's own (the perturbed term adds to it)."""
    results = cora_losses(cora, ['glnn', 'glnn+adv'], hidden=16, epochs=3,
                          options={'adv.steps': 2})
    losses = results['glnn+adv']
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert losses[0] > results['glnn'][0]
