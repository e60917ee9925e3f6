import math

import pytest
import torch

from gnncompress.core.graph import Graph
from gnncompress.methods.glnn import GLNN
from gnncompress.models import ModelOutput


def _graph(n: int) -> Graph:
    mask = torch.ones(n, dtype=torch.bool)
    return Graph('g', torch.zeros(n, 1), torch.zeros(2, 0, dtype=torch.long),
                 torch.zeros(n, dtype=torch.long), mask, mask, mask, 2)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_loss_is_plain_kl_over_all_nodes():
    z_t = [[2.0, 0.0], [0.0, 1.0]]
    z_s = [[1.0, 1.0], [0.5, 0.0]]
    expected = sum(_kl(_softmax(t), _softmax(s))
                   for t, s in zip(z_t, z_s)) / 2

    loss = GLNN().loss([ModelOutput(torch.tensor(z_t))],
                       ModelOutput(torch.tensor(z_s)), _graph(2))

    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_lambda_sets_the_two_weights():
    method = GLNN(lam=0.3)
    assert method.default_label_weight == pytest.approx(0.3)
    assert method.default_weight == pytest.approx(0.7)
    assert GLNN.preferred_student == 'mlp'


@pytest.mark.parametrize('kwargs', [{'lam': -0.1}, {'lam': 1.5},
                                    {'temperature': 0.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        GLNN(**kwargs)
