"""NOSMOG's position features: the walks, the skip-gram step, the
embeddings and the rule for new nodes (the distill run is in
tests/cli/test_cli_methods.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnncompress.core.errors import ArchitectureError, GnnCompressError
from gnncompress.methods.position import (
    Position,
    deepwalk,
    expected_pairs,
    in_neighbours,
    positions_for_new_nodes,
    random_walks,
    rate_for,
    sgns_step,
    skipgram_pairs,
)
from gnncompress.workflows.students import build_method, with_student_inputs
from tests.conftest import literal_graph


def _undirected(pairs):
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    return torch.tensor([src, dst])


def test_walks_follow_in_edges_and_have_the_length():
    # A triangle 0-1-2 with a tail 2-3, node 4 isolated, and one directed
    # edge 5 -> 6 (a walk at 6 moves to 5; 5 has no in-edge and stays).
    edges = torch.cat([_undirected([(0, 1), (1, 2), (2, 0), (2, 3)]),
                       torch.tensor([[5], [6]])], 1)
    rowptr, sources = in_neighbours(edges, 7)
    starts = torch.arange(7).repeat(20)
    walks = random_walks(rowptr, sources, starts, 9,
                         torch.Generator().manual_seed(0))

    assert walks.shape == (140, 10)
    assert torch.equal(walks[:, 0], starts)
    allowed = {(int(d), int(s)) for s, d in edges.t()}  # current -> source
    steps = {(int(a), int(b)) for row in walks for a, b in
             zip(row[:-1], row[1:])}
    stay = {(4, 4), (5, 5)}
    assert steps <= allowed | stay
    assert torch.all(walks[starts == 4] == 4)
    assert torch.all(walks[starts == 6][:, 1:] == 5)
    # every edge of the triangle and the tail is taken somewhere
    assert {e for e in allowed if e[0] < 4} <= steps


def test_skipgram_pairs_lie_within_the_window():
    walks = torch.tensor([[0, 1, 2, 3, 4, 5]])
    centres, contexts = skipgram_pairs(walks, 2,
                                       torch.Generator().manual_seed(0))
    gaps = (centres - contexts).abs()
    assert gaps.min() >= 1 and gaps.max() <= 2
    # gap 1 is always kept, both ways round
    pairs = set(zip(centres.tolist(), contexts.tolist()))
    assert {(i, i + 1) for i in range(5)} <= pairs
    assert {(i + 1, i) for i in range(5)} <= pairs


def test_sgns_step_is_one_sgd_step_of_the_skipgram_loss():
    gen = torch.Generator().manual_seed(0)
    embedding = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    context = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    centres = torch.tensor([0, 2, 0])           # node 0 twice
    targets = torch.tensor([[1, 3, 4], [0, 1, 1], [2, 2, 3]])

    e = embedding.clone().requires_grad_()
    q = context.clone().requires_grad_()
    score = (q[targets] * e[centres][:, None, :]).sum(2)
    loss = -(F.logsigmoid(score[:, 0]).sum()
             + F.logsigmoid(-score[:, 1:]).sum())
    loss.backward()
    sgns_step(embedding, context, centres, targets, 0.1)

    # a row met k times moves by the mean of its k gradients
    seen_e = torch.bincount(centres, minlength=5).clamp(min=1)
    seen_q = torch.bincount(targets.reshape(-1), minlength=5).clamp(min=1)
    assert seen_e.tolist() == [2, 1, 1, 1, 1]
    assert seen_q.tolist() == [1, 3, 2, 2, 1]
    torch.testing.assert_close(
        embedding, e.detach() - 0.1 * e.grad / seen_e[:, None])
    torch.testing.assert_close(
        context, q.detach() - 0.1 * q.grad / seen_q[:, None])


def test_the_expected_number_of_pairs_matches_the_pairs_drawn():
    # walks of 3 steps (4 nodes), window 2: gap 1 kept always (3 pairs a
    # way), gap 2 with probability 1/2 (2 pairs a way): 2 * (3 + 1) = 8
    assert expected_pairs(3, 1, 2, 1) == 8.0
    walks = torch.arange(400 * 31).reshape(400, 31) % 50
    centres, _ = skipgram_pairs(walks, 5, torch.Generator().manual_seed(0))
    per_walk = centres.numel() / 400
    assert abs(per_walk - expected_pairs(30, 1, 5, 1)) < 0.02 * per_walk


def test_the_rate_grows_as_the_budget_of_pairs_shrinks():
    assert rate_for(50, 5, 5, 1) == 1.0     # the defaults (NOSMOG's Cora)
    assert rate_for(50, 3, 5, 5) == 1.0     # more pairs: word2vec's rate
    # NOSMOG's Photo settings: 172 pairs per node against 1,460
    assert expected_pairs(30, 1, 5, 1) == 172.0
    assert rate_for(30, 1, 5, 1) == pytest.approx(1460 / 172)
    assert rate_for(2, 1, 1, 1) == 10.0     # at most 10 times


def _two_communities(n: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    """A graph of two groups of ``n`` nodes, edges 20 times likelier
    within a group than across."""
    gen = torch.Generator().manual_seed(0)
    side = torch.arange(2 * n) >= n
    same = side[:, None] == side[None, :]
    prob = torch.where(same, torch.tensor(0.08), torch.tensor(0.004))
    adjacency = torch.triu(torch.rand(2 * n, 2 * n, generator=gen) < prob, 1)
    return (adjacency | adjacency.t()).nonzero().t(), side


def test_one_short_walk_per_node_and_one_pass_still_separate_communities():
    """NOSMOG's budget on the Amazon graphs (one walk per node, one pass):
    at word2vec's rate the embeddings barely moved (cosines within and
    across the groups both near 0); the rate scaled to the budget trains
    them."""
    edges, side = _two_communities()
    same = side[:, None] == side[None, :]
    off_diagonal = ~torch.eye(side.numel(), dtype=torch.bool)
    within, across = [], []
    for seed in range(3):
        p = deepwalk(edges, side.numel(), dim=16, walk_length=30,
                     walks_per_node=1, seed=seed)
        p = F.normalize(p - p.mean(0), dim=1)
        cosine = p @ p.t()
        within.append(float(cosine[same & off_diagonal].mean()))
        across.append(float(cosine[~same].mean()))
    assert sum(within) / 3 > 0.1 and sum(across) / 3 < -0.1, (within,
                                                               across)


def test_embeddings_are_deterministic_under_a_seed():
    edges = _undirected([(i, (i + 1) % 12) for i in range(12)])
    options = dict(dim=8, walk_length=10, walks_per_node=2)
    threads = torch.get_num_threads()
    a = deepwalk(edges, 12, seed=3, **options)
    b = deepwalk(edges, 12, seed=3, **options)
    c = deepwalk(edges, 12, seed=4, **options)

    assert a.shape == (12, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.get_num_threads() == threads  # put back after one thread


def test_nodes_of_one_cluster_end_up_closer_than_across_clusters():
    # two cliques of 8 nodes joined by a single edge 0-8
    clique = [(i, j) for i in range(8) for j in range(i + 1, 8)]
    pairs = clique + [(i + 8, j + 8) for i, j in clique] + [(0, 8)]
    p = deepwalk(_undirected(pairs), 16, dim=16, walk_length=20,
                 walks_per_node=10)
    p = F.normalize(p - p.mean(0), dim=1)   # cosine about the centre
    cosine = p @ p.t()
    side = torch.arange(16) < 8
    same = side[:, None] == side[None, :]
    off_diagonal = ~torch.eye(16, dtype=torch.bool)

    within = cosine[same & off_diagonal].mean()
    across = cosine[~same].mean()
    assert within > 0.5 and across < -0.5, (float(within), float(across))


def test_a_new_node_takes_the_mean_of_its_known_neighbours():
    known = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0],
                          [0.0, 0.0], [0.0, 0.0]])
    has = torch.tensor([True, True, True, False, False])
    # node 3: neighbours 0 and 1 (and 4, which has no position);
    # node 4: only node 3, which has none
    edges = _undirected([(0, 3), (1, 3), (3, 4)])

    got = positions_for_new_nodes(known, edges, has)

    expected = known.clone()
    expected[3] = torch.tensor([2.0, 1.0])
    assert torch.equal(got, expected)


def test_position_adds_columns_and_no_loss():
    method = build_method('glnn+position', {'position.dim': 4,
                                            'position.walk_length': 5})
    graph = literal_graph(6, _undirected([(0, 1), (1, 2), (3, 4)]))

    assert method.adds_inputs and method.preferred_student == 'mlp'
    assert method.default_label_weight == 0.0  # GLNN's, unchanged
    extended, extra = with_student_inputs(method, graph, 'mlp', seed=0)
    assert extra.shape == (6, 4)
    assert torch.equal(extended.x, torch.cat([graph.x, extra], 1))
    assert torch.equal(extra, deepwalk(graph.edge_index, 6, dim=4,
                                       walk_length=5, seed=0))
    logits = torch.randn(6, 2, requires_grad=True)
    from gnncompress.models import ModelOutput
    assert Position().loss([], ModelOutput(logits=logits), graph) == 0
    # a method that adds nothing leaves the graph as it is
    assert with_student_inputs(build_method('glnn'), graph, 'mlp',
                               seed=0) == (graph, None)


@pytest.mark.parametrize('method,student,sampled,error,message', [
    ('position', 'mlp', False, GnnCompressError,
     "'position' adds input features and no loss: combine it with a "
     'method, e.g. --method glnn+position'),
    ('glnn+position', 'gcn', False, ArchitectureError,
     "'glnn+position' feeds its features to an MLP student (the student "
     "reads [x, features]); got 'gcn': pass --student mlp"),
    ('glnn+position', 'mlp', True, GnnCompressError,
     "'glnn+position' computes its features once on the whole graph: drop "
     '--batch-size and --fanout'),
])
def test_runs_that_cannot_feed_positions_are_refused(method, student,
                                                     sampled, error,
                                                     message):
    graph = literal_graph(3)
    with pytest.raises(error) as info:
        with_student_inputs(build_method(method), graph, student, 0,
                            sampled=sampled)
    assert str(info.value) == message


@pytest.mark.parametrize('option', ['dim', 'walk_length', 'window'])
def test_bad_settings_are_refused(option):
    with pytest.raises(GnnCompressError, match=f"'{option}' must be a "
                                               f'positive integer'):
        build_method('glnn+position', {f'position.{option}': 0})
