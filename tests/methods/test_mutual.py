"""Mutual learning against values worked out by hand, and where its
gradients go."""
from __future__ import annotations

import math

import pytest
import torch

from gnncompress.core.graph import Graph
from gnncompress.methods import resolve_method
from gnncompress.models import ModelOutput


def _graph(y: list[int], train: list[bool]) -> Graph:
    n = len(y)
    return Graph(name='g', x=torch.zeros(n, 1),
                 edge_index=torch.zeros(2, 0, dtype=torch.long),
                 y=torch.tensor(y), train_mask=torch.tensor(train),
                 val_mask=torch.zeros(n, dtype=torch.bool),
                 test_mask=torch.zeros(n, dtype=torch.bool), num_classes=2)


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_two_students_is_dml_plus_entropy_plus_unit():
    graph = _graph([0], [True])
    student = ModelOutput(torch.tensor([[1.0, 0.0]]))
    peer = ModelOutput(torch.tensor([[0.0, 1.0]]))
    p, q = _softmax([1, 0]), _softmax([0, 1])
    kl = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    entropy = -sum(pi * math.log(pi) for pi in p)
    unit = -math.log(q[0])  # CE of the (single) peer on the label 0
    method = resolve_method('mutual', entropy_weight=0.1)
    method.prepare([peer], student, graph)

    loss = method.loss([peer], student, graph)

    assert float(loss) == pytest.approx(kl - 0.1 * entropy + unit, rel=1e-5)


def test_temperature_and_uniform_weights_of_three_students():
    graph = _graph([1, 0], [True, False])
    student = ModelOutput(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    peers = [ModelOutput(torch.tensor([[0.0, 2.0], [1.0, 0.0]])),
             ModelOutput(torch.tensor([[2.0, 0.0], [1.0, 2.0]]))]
    tau = 2.0
    method = resolve_method('mutual', temperature=tau, entropy_weight=0.0,
                            adaptive=False)
    method.prepare(peers, student, graph)
    # Equal weights: the target logits are the peers' mean.
    targets = [[1.0, 1.0], [1.0, 1.0]]
    kl = 0.0
    for z_s, z_t in zip([[2.0, 0.0], [0.0, 0.0]], targets):
        p = _softmax([v / tau for v in z_s])
        q = _softmax([v / tau for v in z_t])
        kl += sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    expected = tau * tau * kl / 2  # batchmean over the two nodes

    assert float(method.loss(peers, student, graph)) == \
        pytest.approx(expected, rel=1e-5)


def test_weighting_unit_learns_from_labels_not_from_the_kl():
    graph = _graph([0, 1, 0], [True, True, False])
    logits = torch.tensor([[0.5, 0.0], [0.0, 0.3], [1.0, 1.0]],
                          requires_grad=True)
    good = ModelOutput(torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
    bad = ModelOutput(torch.tensor([[0.0, 3.0], [3.0, 0.0], [0.0, 0.0]]))
    grads = {}
    for adaptive in (True, False):
        method = resolve_method('mutual', adaptive=adaptive)
        method.prepare([good, bad], ModelOutput(logits), graph)
        logits.grad = None
        method.loss([good, bad], ModelOutput(logits), graph).backward()
        grads[adaptive] = logits.grad.clone()
        if adaptive:
            scores = method.scores.grad
    # The unit's CE does not move the student ...
    assert torch.allclose(grads[True], grads[False])
    # ... and pushes the weight towards the peer that fits the labels.
    assert scores[0] < 0 < scores[1]


def test_bad_options():
    with pytest.raises(ValueError, match='temperature'):
        resolve_method('mutual', temperature=0)
    with pytest.raises(ValueError, match='entropy_weight'):
        resolve_method('mutual', entropy_weight=-1)
