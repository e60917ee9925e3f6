"""TAM: attribution maps against hand-computed values, the per-node
normalisation, the soft losses, and the trap METHODS.md names (a student map
without create_graph trains nothing)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gnncompress.core.errors import ArchitectureError
from gnncompress.methods.tam import (
    TAM,
    attribution,
    normalise_per_node,
    unit_edge_weights,
)
from gnncompress.models import ArchSpec, build_model, run_model
from gnncompress.models.propagation import EdgeProbe
from gnncompress.models.slimmable import SlimmableGNN, SlimmableSpec


def _three_node_gcn():
    model = build_model(ArchSpec('gcn', 1, 4, 1, 1))
    with torch.no_grad():
        model.convs[0].lin.weight.fill_(1.0)
        model.convs[0].bias.zero_()
    x = torch.tensor([[1.0], [2.0], [3.0]])
    edge_index = torch.tensor([[0, 1, 2], [2, 2, 0]])  # 0->2, 1->2, 2->0
    return model, x, edge_index


@pytest.mark.parametrize('probe', [False, True])
def test_gcn_attribution_matches_hand_computed_value(probe):
    """Through PyG's explain masks, and through the sparse products
    (EdgeProbe, when the features are given)."""
    model, x, edge_index = _three_node_gcn()
    with unit_edge_weights(model, edge_index, x if probe else None) \
            as weight:
        assert isinstance(weight, EdgeProbe) == probe
        logits = run_model(model, x, edge_index).logits
        grad = attribution(logits, weight, torch.zeros(3, dtype=torch.long),
                           create_graph=False)
    # In-degrees with GCN's self-loops: node 0: 2, node 1: 1, node 2: 3.
    # d out_i / d w_ji = x_j / sqrt(deg_j deg_i).
    expected = torch.tensor([1 / math.sqrt(2 * 3), 2 / math.sqrt(1 * 3),
                             3 / math.sqrt(3 * 2)])
    assert torch.allclose(grad, expected, atol=1e-6)
    # The masks are gone afterwards: the model runs as before.
    assert not model.convs[0].explain


def test_unit_weights_do_not_change_the_output():
    model, x, edge_index = _three_node_gcn()
    plain = run_model(model, x, edge_index).logits
    with unit_edge_weights(model, edge_index):
        masked = run_model(model, x, edge_index).logits
    assert torch.equal(plain, masked)


def test_normalise_per_node_by_hand():
    values = torch.tensor([1.0, 3.0, 5.0])
    dst = torch.tensor([0, 0, 1])
    out = normalise_per_node(values, dst, num_nodes=3)
    s = math.sqrt(1 + 1e-5)  # node 0: mean 2, variance 1
    assert torch.allclose(out, torch.tensor([-1 / s, 1 / s, 0.0]))


@pytest.mark.parametrize('arch', ['gcn', 'gat', 'sage', 'gin', 'gcnii'])
def test_every_architecture_gets_a_map(arch, tiny_graph):
    spec = ArchSpec(arch, 5, 8, 2, 2, heads=2 if arch == 'gat' else 1)
    torch.manual_seed(0)
    teacher = build_model(spec).eval()
    task = TAM().prepare(teacher, tiny_graph.x, tiny_graph.edge_index)
    assert task.attribution.shape == (tiny_graph.edge_index.size(1),)
    assert torch.isfinite(task.attribution).all()
    assert task.attribution.abs().sum() > 0
    assert not task.attribution.requires_grad  # computed once, a constant


def test_mlp_teacher_has_no_map(tiny_graph):
    mlp = build_model(ArchSpec('mlp', 5, 8, 2, 2))
    with pytest.raises(ArchitectureError, match='passes no messages'):
        TAM().prepare(mlp, tiny_graph.x, tiny_graph.edge_index)


def _student_terms(arch, graph, tam):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('gcn', 5, 8, 2, 2)).eval()
    task = tam.prepare(teacher, graph.x, graph.edge_index)
    student = SlimmableGNN(SlimmableSpec(arch, [5], 8, 2, [2], heads=2
                                         if arch == 'gat' else 1))
    weight = torch.ones(graph.edge_index.size(1), requires_grad=True)
    out = student.forward_output(graph.x, graph.edge_index, 0, 0.5,
                                 edge_mask=weight)
    return student, tam.loss(out, task, graph.edge_index, weight)


@pytest.mark.parametrize('arch', ['gcn', 'gat', 'sage', 'gin'])
def test_topology_loss_reaches_student_parameters(arch, tiny_graph):
    student, terms = _student_terms(arch, tiny_graph, TAM())
    topology = terms['topology']
    assert topology.requires_grad, 'the student map is a constant'
    topology.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_lambda_zero_and_lsp_ablations(tiny_graph):
    _, off = _student_terms('gcn', tiny_graph, TAM(weight=0.0))
    assert set(off) == {'soft'}
    lsp = TAM(topology='lsp')
    assert lsp.weight == 100.0
    student, terms = _student_terms('gcn', tiny_graph, lsp)
    assert set(terms) == {'soft', 'topology'} and terms['topology'] >= 0


def test_soft_losses_by_hand():
    tam = TAM(soft='bce')
    teacher_logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    from gnncompress.methods.tam import TeacherTask
    from gnncompress.models import ModelOutput
    task = TeacherTask(ModelOutput(teacher_logits), torch.tensor([0, 1]),
                       None)
    student = torch.tensor([[0.5, 0.5], [-1.0, 2.0]])
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -(hard * F.logsigmoid(student)
                 + (1 - hard) * F.logsigmoid(-student)).mean()
    assert torch.allclose(tam.soft_loss(student, task), expected)
    mse = TAM(soft='mse').soft_loss(student, task)
    assert torch.allclose(mse, ((student - teacher_logits) ** 2).mean())


@pytest.mark.parametrize('kwargs', [{'soft': 'kl'}, {'topology': 'gsp'},
                                    {'weight': -1.0}])
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        TAM(**kwargs)


def _random_graph(num_nodes=30, num_edges=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    keep = src != dst
    # Duplicate edges stay: each is its own message with its own weight.
    edge_index = torch.stack([src[keep], dst[keep]])
    edge_index = torch.cat([edge_index, edge_index[:, :5]], 1)
    return torch.randn(num_nodes, 7, generator=gen), edge_index


@pytest.mark.parametrize('arch', ['gcn', 'sage', 'gin'])
@pytest.mark.parametrize('width', [0.5, 1.0])
def test_edge_probe_equals_explain_masks_with_gradients(arch, width):
    """The sparse-product map (EdgeProbe) and PyG's per-edge messages
    give the same map and the same gradient of a loss on it."""
    x, edge_index = _random_graph()
    target = torch.randint(0, 3, (x.size(0),),
                           generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    student = SlimmableGNN(SlimmableSpec(arch, [7], 16, 3, [3])).eval()
    goal = torch.randn(edge_index.size(1))
    maps, grads = [], []
    for weight in (student.unit_edge_weights(x, edge_index, 0, width),
                   torch.ones(edge_index.size(1), requires_grad=True)):
        student.zero_grad()
        out = student.forward_output(x, edge_index, 0, width,
                                     edge_mask=weight)
        raw = attribution(out.logits, weight, target, create_graph=True)
        F.mse_loss(raw, goal).backward()
        maps.append(raw.detach())
        grads.append(torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p))
            .reshape(-1) for p in student.parameters()]))
    assert isinstance(
        student.unit_edge_weights(x, edge_index, 0, width), EdgeProbe)
    assert maps[0].abs().sum() > 0
    assert torch.allclose(maps[0], maps[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_edge_probe_is_not_used_with_self_loops_or_gat():
    x, edge_index = _random_graph()
    looped = torch.cat([edge_index, torch.tensor([[3], [3]])], 1)
    gcn = SlimmableGNN(SlimmableSpec('gcn', [7], 16, 2, [3]))
    assert not isinstance(gcn.unit_edge_weights(x, looped), EdgeProbe)
    gat = SlimmableGNN(SlimmableSpec('gat', [7], 16, 2, [3]))
    assert not isinstance(gat.unit_edge_weights(x, edge_index), EdgeProbe)


def test_teacher_map_through_probe_equals_masks():
    x, edge_index = _random_graph()
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('sage', 7, 16, 3, 3)).eval()
    target = torch.randint(0, 3, (x.size(0),))
    maps = []
    for given in (x, None):
        with unit_edge_weights(teacher, edge_index, given) as weight:
            assert isinstance(weight, EdgeProbe) == (given is not None)
            logits = run_model(teacher, x, edge_index).logits
            maps.append(attribution(logits, weight, target, False))
    assert torch.allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)
