"""Alignahead against a local-structure loss worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from gnncompress.core.errors import ArchitectureError
from gnncompress.core.graph import Graph
from gnncompress.methods import resolve_method
from gnncompress.models import ModelOutput


def _star() -> Graph:
    """Node 0 receives edges from nodes 1 and 2; nodes 1, 2 receive none."""
    return Graph(name='star', x=torch.zeros(3, 1),
                 edge_index=torch.tensor([[1, 2], [0, 0]]),
                 y=torch.tensor([0, 1, 0]),
                 train_mask=torch.ones(3, dtype=torch.bool),
                 val_mask=torch.zeros(3, dtype=torch.bool),
                 test_mask=torch.zeros(3, dtype=torch.bool), num_classes=2)


def _out(hidden: list[float], logits: list[float]) -> ModelOutput:
    return ModelOutput(torch.tensor(logits).view(-1, 1),
                       [torch.tensor(hidden).view(-1, 1)])


def _dist(h0: float, h1: float, h2: float) -> list[float]:
    # l2 kernel -(h_i - h_j)^2, softmax over node 0's two incoming edges
    a, b = math.exp(-(h0 - h1) ** 2), math.exp(-(h0 - h2) ** 2)
    return [a / (a + b), b / (a + b)]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_cyclic_pairing_layer_i_learns_peer_layer_i_plus_1():
    assert resolve_method('alignahead').pairs(3) == [(0, 1), (1, 2), (2, 0)]
    assert resolve_method('alignahead').pairs(1) == [(0, 0)]
    same = resolve_method('alignahead', cyclic=False)
    assert same.pairs(3) == [(0, 0), (1, 1), (2, 2)]


@pytest.mark.parametrize('cyclic', [True, False])
def test_loss_matches_hand_computation(cyclic):
    graph = _star()
    own = _out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    peer = _out([0.0, 2.0, 1.0], [0.0, 1.0, 3.0])
    own_layers = [_dist(0, 1, 2), _dist(0, 0, 1)]
    peer_layers = [_dist(0, 2, 1), _dist(0, 1, 3)]
    # KL(peer || own) per pair; only node 0 has edges (N' = 1).
    if cyclic:
        expected = _kl(peer_layers[1], own_layers[0]) + \
            _kl(peer_layers[0], own_layers[1])
    else:
        expected = _kl(peer_layers[0], own_layers[0]) + \
            _kl(peer_layers[1], own_layers[1])
    method = resolve_method('alignahead', cyclic=cyclic)

    loss = method.loss([peer], own, graph)

    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Two peers are averaged: the same peer twice gives the same loss.
    assert float(method.loss([peer, peer], own, graph)) == \
        pytest.approx(expected, rel=1e-5)


def test_gradient_reaches_the_student_only():
    graph = _star()
    own = _out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    own.hiddens[0].requires_grad_(True)
    peer = _out([0.0, 2.0, 1.0], [0.0, 1.0, 3.0])
    peer.hiddens[0].requires_grad_(True)

    resolve_method('alignahead').loss([peer], own, graph).backward()

    assert own.hiddens[0].grad.abs().sum() > 0
    assert peer.hiddens[0].grad is None


def test_graph_level_aligns_node_layers_not_graph_logits():
    graph = _star()
    graph.batch = torch.zeros(3, dtype=torch.long)
    h = [torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.], [0.], [1.]])]
    own = ModelOutput(torch.zeros(1, 2), h)
    peer = ModelOutput(torch.zeros(1, 2), [h[1], h[0]])
    # Own layer 0 <- peer layer 1 (= own layer 0), and layer 1 <- peer 0.
    assert float(resolve_method('alignahead').loss([peer], own, graph)) == \
        pytest.approx(0.0, abs=1e-7)


def test_peers_of_another_depth_are_refused():
    graph = _star()
    own = _out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    shallow = ModelOutput(torch.zeros(3, 1), [])
    with pytest.raises(ArchitectureError, match='one depth'):
        resolve_method('alignahead').loss([shallow], own, graph)


def test_a_peer_structure_is_computed_once_for_all_students(monkeypatch):
    # Three students: student 1 reads peer 2's output after student 0 did,
    # unchanged, so its structures come from the shared cache; the losses
    # equal those computed from scratch.
    from gnncompress.methods import alignahead, lsp

    graph = _star()
    outs = [_out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0]),
            _out([0.0, 2.0, 1.0], [0.0, 1.0, 3.0]),
            _out([1.0, 0.0, 2.0], [2.0, 1.0, 0.0])]
    methods = [resolve_method('alignahead') for _ in outs]
    alignahead._PEERS.clear()
    calls = []
    real = lsp.LSP.local_structure

    def counted(self, h, edge_index):
        calls.append(h)
        return real(self, h, edge_index)

    monkeypatch.setattr(lsp.LSP, 'local_structure', counted)
    first = methods[0].loss([outs[1], outs[2]], outs[0], graph)
    second = methods[1].loss([outs[0], outs[2]], outs[1], graph)
    # 2 layers each: own + two peers, then own + peer 0 (peer 2 cached).
    assert len(calls) == 6 + 4
    alignahead._PEERS.clear()
    fresh = resolve_method('alignahead').loss([outs[0], outs[2]], outs[1],
                                              graph)
    assert float(second) == pytest.approx(float(fresh), rel=1e-6)
    assert float(first) > 0


def test_shared_peer_structures_go_with_the_peer_output():
    from gnncompress.methods import alignahead

    graph = _star()
    alignahead._PEERS.clear()
    own = _out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    peer = _out([0.0, 2.0, 1.0], [0.0, 1.0, 3.0])
    resolve_method('alignahead').loss([peer], own, graph)
    assert len(alignahead._PEERS._entries) == 2
    del peer
    assert len(alignahead._PEERS._entries) == 0


def _undirected(num_nodes: int, seed: int) -> tuple[torch.Tensor, Graph]:
    """A random undirected graph with duplicate edges, self-loops and an
    isolated last node, its edges shuffled."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, num_nodes - 1, (2, 60), generator=gen)
    edges = torch.cat([edges, edges[:, :6], torch.tensor([[2, 5], [2, 5]])],
                      dim=1)
    edges = torch.cat([edges, edges.flip(0)], dim=1)
    edges = edges[:, torch.randperm(edges.size(1), generator=gen)]
    n = num_nodes
    graph = Graph(name='random', x=torch.zeros(n, 1), edge_index=edges,
                  y=torch.zeros(n, dtype=torch.long),
                  train_mask=torch.ones(n, dtype=torch.bool),
                  val_mask=torch.zeros(n, dtype=torch.bool),
                  test_mask=torch.zeros(n, dtype=torch.bool), num_classes=2)
    return gen, graph


@pytest.mark.parametrize('options', [
    {}, {'kernel': 'rbf', 'sigma': 2.0}, {'cyclic': False}],
    ids=['l2', 'rbf', 'oc'])
@pytest.mark.parametrize('num_peers', [1, 2])
def test_undirected_path_matches_the_edge_order_formula(options, num_peers):
    # On an undirected graph the loss takes the symmetric path (structures
    # in CSR order, closed-form gradient); value and gradient equal the
    # edge-order structures and KL, in float64.
    from gnncompress.methods import alignahead
    from gnncompress.methods.lsp import structure_kl
    from gnncompress.models import edge_ops

    gen, graph = _undirected(24, seed=num_peers)
    widths = (6, 4, 3)

    def output(grad: bool) -> ModelOutput:
        layers = [(3 * torch.randn(24, w, generator=gen,
                                   dtype=torch.float64)).requires_grad_(grad)
                  for w in widths]
        return ModelOutput(layers[-1], layers[:-1])

    own = output(True)
    peers = [output(False) for _ in range(num_peers)]
    method = resolve_method('alignahead', **options)
    alignahead._PEERS.clear()
    loss = method.loss(peers, own, graph)
    layers = [*own.hiddens, own.logits]
    grads = torch.autograd.grad(loss, layers)
    assert edge_ops.edge_pattern(graph.edge_index, 24).__dict__.get(
        'symmetric') is not None   # the symmetric path ran

    structure, edge_index = method.structure, graph.edge_index
    expected = 0.0
    for peer in peers:
        theirs = [*peer.hiddens, peer.logits]
        for i, j in method.pairs(3):
            expected = expected + structure_kl(
                structure.local_structure(layers[i], edge_index),
                structure.local_structure(theirs[j], edge_index),
                edge_index[1], 24, direction='ts')
    expected = expected / num_peers
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-10)
    assert float(loss) > 0
    for got, want in zip(grads, torch.autograd.grad(expected, layers)):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-12)
    assert grads[0][23].abs().sum() == 0  # the isolated node


def test_undirected_star_matches_hand_computation():
    # Node 0 has two in-edges, nodes 1 and 2 one each (their structure is
    # certain, KL 0): the loss is node 0's KL over the 3 nodes with edges.
    graph = _star()
    graph.edge_index = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])
    own = _out([0.0, 1.0, 2.0], [0.0, 0.0, 1.0])
    peer = _out([0.0, 2.0, 1.0], [0.0, 1.0, 3.0])
    own_layers = [_dist(0, 1, 2), _dist(0, 0, 1)]
    peer_layers = [_dist(0, 2, 1), _dist(0, 1, 3)]
    expected = (_kl(peer_layers[1], own_layers[0])
                + _kl(peer_layers[0], own_layers[1])) / 3

    loss = resolve_method('alignahead').loss([peer], own, graph)

    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_undirected_path_passes_no_gradient_through_clamped_distances(
        monkeypatch):
    # As test_lsp's clamp test, on the symmetric path: every sampled
    # product shifted by +1 clamps the close pairs' distances at 0; the
    # loss and gradient equal the gathered formula's with clamp_min.
    from gnncompress.methods import alignahead
    from gnncompress.models import edge_ops

    real = edge_ops.sampled
    monkeypatch.setattr(edge_ops, 'sampled',
                        lambda *args: real(*args) + 1.0)
    gen, graph = _undirected(16, seed=5)
    h = (0.4 * torch.randn(16, 3, generator=gen, dtype=torch.float64)
         ).requires_grad_()
    peer = 0.4 * torch.randn(16, 3, generator=gen, dtype=torch.float64)
    src, dst = graph.edge_index

    def log_structure(x: torch.Tensor) -> torch.Tensor:
        sq = x.pow(2).sum(-1)
        score = -(sq[dst] + sq[src] - 2 * ((x[dst] * x[src]).sum(-1) + 1.0)
                  ).clamp_min(0)
        top = torch.zeros(16, dtype=x.dtype).index_reduce(
            0, dst, score.detach(), 'amax', include_self=False)
        sums = torch.zeros(16, dtype=x.dtype).index_add(
            0, dst, (score - top[dst]).exp())
        return score - top[dst] - sums.log()[dst]

    alignahead._PEERS.clear()
    method = resolve_method('alignahead', cyclic=False)
    loss = method.loss([ModelOutput(peer, [])], ModelOutput(h, []), graph)
    log_t, log_s = log_structure(peer), log_structure(h)
    expected = (log_t.exp() * (log_t - log_s)).sum() / \
        int(torch.unique(dst).numel())

    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-10)
    assert torch.allclose(torch.autograd.grad(loss, h)[0],
                          torch.autograd.grad(expected, h)[0],
                          rtol=1e-8, atol=1e-12)
