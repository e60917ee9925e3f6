"""Several-graph node datasets, multi-label targets and inductive training."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATASETS, needs_shared
from peer_steps import PeerSteps
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected, subgraph
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core.errors import DataError
from gnncompress.core.metrics import accuracy, micro_f1
from gnncompress.methods import resolve_method
from gnncompress.models import ArchSpec, ModelOutput, build_model, run_model
from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.inductive import graph_from_list
from gnncompress.tasks.synthetic import synthetic_ppi
from gnncompress.training.peer_regimes import train_peers
from gnncompress.training.regimes.graph_batches import cut
from gnncompress.training.train import fit, forward_frozen
from gnncompress.workflows.cotrain import build_online_methods

runner = CliRunner()
TINY = dict(num_graphs=(3, 1, 1), num_nodes=60, num_features=6,
            num_labels=5, num_communities=12)


@pytest.fixture(scope='module')
def tiny():
    return graph_from_list(synthetic_ppi(**TINY), 'tiny')


def test_synthetic_ppi_shape_and_seed():
    a = synthetic_ppi(num_graphs=(2, 1, 1), num_nodes=2000, num_labels=20)
    b = synthetic_ppi(num_graphs=(2, 1, 1), num_nodes=2000, num_labels=20)
    assert [len(a[s]) for s in ('train', 'val', 'test')] == [2, 1, 1]
    g = a['train'][0]
    assert torch.equal(g.x, b['train'][0].x)
    assert torch.equal(g.edge_index, a['train'][0].edge_index)
    assert not torch.equal(g.x[:10], a['train'][1].x[:10])
    assert g.x.shape == (2000, 50) and g.y.shape == (2000, 20)
    assert set(g.y.unique().tolist()) == {0.0, 1.0}
    assert is_undirected(g.edge_index)
    assert not bool((g.edge_index[0] == g.edge_index[1]).any())
    assert 12 < g.edge_index.size(1) / 2000 < 16     # ~14 per node
    assert 0.1 < float(g.y.mean()) < 0.35


def test_synthetic_labels_follow_the_neighbours():
    g = synthetic_ppi(num_graphs=(1, 1, 1), num_nodes=600,
                      num_labels=30)['train'][0]
    src, dst = g.edge_index
    along_edges = float((g.y[src] * g.y[dst]).mean())
    shuffled = g.y[torch.randperm(600, generator=torch.Generator()
                                  .manual_seed(0))]
    at_random = float((g.y * shuffled).mean())
    assert along_edges > 1.5 * at_random


def test_micro_f1_thresholds_logits_at_zero():
    logits = torch.tensor([[0.3, -2.0], [-0.1, 4.0], [0.3, 0.3]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([True, True, True])
    # Predicted positive: (0,0), (1,1), (2,0), (2,1): tp 2, fp 2, fn 1.
    assert micro_f1(logits, y, mask) == pytest.approx(4 / 7)
    assert accuracy(logits, y, mask) == pytest.approx(4 / 7)
    assert micro_f1(logits, y, torch.tensor([True, False, False])) == 1.0
    assert math.isnan(micro_f1(logits, y, torch.zeros(3, dtype=torch.bool)))


def test_multilabel_kd_value():
    kd = resolve_method('kd', temperature=2.0)
    s = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    t = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    graph = graph_from_list(synthetic_ppi(**TINY), 'tiny')
    p = torch.sigmoid(t / 2)
    q = torch.sigmoid(s / 2)
    bce = -(p * q.log() + (1 - p) * (1 - q).log()).mean()
    got = kd.loss([ModelOutput(t)], ModelOutput(s), graph)
    assert float(got) == pytest.approx(4 * float(bce), rel=1e-5)


def test_union_masks_select_whole_graphs(tiny):
    assert tiny.multilabel and tiny.num_classes == 5
    assert tiny.split['graphs'] == {'train': 3, 'val': 1, 'test': 1}
    assert tiny.split['metric'] == 'micro-F1'
    per_graph = [tiny.node_graph == i for i in range(5)]
    for i, nodes in enumerate(per_graph):
        expected = ['train'] * 3 + ['val', 'test']
        mask = getattr(tiny, f'{expected[i]}_mask')
        assert bool(mask[nodes].all())
    # No edge crosses graphs.
    assert torch.equal(tiny.node_graph[tiny.edge_index[0]],
                       tiny.node_graph[tiny.edge_index[1]])


def test_cut_matches_subgraph(tiny):
    part = cut(tiny, torch.tensor([2, 0]))
    nodes = (tiny.node_graph == 0) | (tiny.node_graph == 2)
    edges, _ = subgraph(nodes, tiny.edge_index, relabel_nodes=True)
    assert torch.equal(part.graph.edge_index, edges)
    assert torch.equal(part.graph.x, tiny.x[nodes])
    assert part.graph.node_graph.unique().tolist() == [0, 1]
    out = ModelOutput(tiny.x, [tiny.x * 2])
    assert torch.equal(part.slice(out).hiddens[0], tiny.x[nodes] * 2)


@pytest.mark.parametrize('method', ['kd', 'lsp', 'at'])
def test_training_never_sees_held_out_graphs(tiny, method):
    # Held-out features poisoned: any of them in a training step would make
    # the loss NaN and stop the run.
    graph = graph_from_list(synthetic_ppi(**TINY), 'tiny')
    held_out = graph.val_mask | graph.test_mask
    graph.x[held_out] = float('nan')
    spec = ArchSpec(arch='gcn', in_channels=6, hidden_channels=8,
                    num_layers=2, out_channels=5)
    torch.manual_seed(0)
    teacher = forward_frozen(build_model(spec), graph)
    result = fit(build_model(spec), graph, method=resolve_method(method),
                 teacher_outputs=[teacher], epochs=3, progress=False)
    assert result.epochs_run == 3
    assert all(math.isfinite(h['loss']) for h in result.history)


def test_inductive_training_learns(tiny):
    spec = ArchSpec(arch='gcn', in_channels=6, hidden_channels=32,
                    num_layers=2, out_channels=5, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(spec)
    result = fit(model, tiny, epochs=60, lr=0.02, progress=False)
    # All-negative predictions score 0; all-positive 2p / (1 + p).
    p = float(tiny.y[tiny.test_mask].mean())
    assert result.test_accuracy > 2 * p / (1 + p) + 0.05


def test_saved_list_with_split_attributes(tmp_path):
    graphs = synthetic_ppi(**TINY)
    flat = []
    for split, items in graphs.items():
        for d in items:
            flat.append(Data(x=d.x, edge_index=d.edge_index,
                             y=d.y.argmax(-1), split=split))
    path = tmp_path / 'graphs.pt'
    torch.save(flat, path)
    graph = load_graph(path)
    assert not graph.multilabel and graph.split['metric'] == 'accuracy'
    assert graph.split['graphs'] == {'train': 3, 'val': 1, 'test': 1}
    assert F.cross_entropy(torch.zeros(2, 5), graph.y[:2]) > 0


@pytest.mark.parametrize('change, message', [
    (lambda g: g['train'][0].__setattr__('y', g['train'][0].y * 2),
     'must hold only 0 and 1'),
    (lambda g: g['val'][0].__setattr__('x', g['val'][0].x[:, :4]),
     'every graph needs the same'),
    (lambda g: g.__setitem__('val', []), 'at least one training and one '
     'validation graph'),
])
def test_bad_graph_lists(change, message):
    graphs = synthetic_ppi(**TINY)
    change(graphs)
    with pytest.raises(DataError, match=message):
        graph_from_list(graphs, 'bad')


def test_list_without_split_is_refused(tmp_path):
    path = tmp_path / 'g.pt'
    torch.save(synthetic_ppi(**TINY)['train'], path)
    result = runner.invoke(app, ['train-teacher', '--data', str(path),
                                 '--out', str(tmp_path / 't.pt')])
    assert result.exit_code == 1
    assert "split='train', 'val' or 'test'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / 't.pt').exists()


def test_ppi_without_network_says_so(tmp_path):
    with pytest.raises(DataError, match='needs network access'):
        load_graph('PPI', tmp_path / 'ppi')


def test_cli_distill_multilabel_end_to_end(tmp_path):
    path = tmp_path / 'tiny.pt'
    torch.save(synthetic_ppi(**TINY), path)
    teacher = tmp_path / 'teacher.pt'
    result = runner.invoke(app, [
        'train-teacher', '--data', str(path), '--out', str(teacher),
        '--arch', 'gcn', '--hidden', '16', '--layers', '2', '--epochs',
        '5'])
    assert result.exit_code == 0, result.output
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(teacher), '--method', 'kd', '--out', str(out),
        '--hidden', '8', '--epochs', '3', '--baseline'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['data']['split']['metric'] == 'micro-F1'
    assert 'test micro-F1' in result.output  # the table names the metric
    assert 'test acc' not in result.output
    assert report['onnx_max_abs_diff'] < 1e-4
    assert 0 <= report['student']['test_accuracy'] <= 1


@needs_shared('MUTAG', 'raw')
def test_tu_node_labels_task():
    graph = load_graph('MUTAG-nodes', SHARED_DATASETS, seed=0)
    assert graph.split['graphs'] == {'train': 152, 'val': 18, 'test': 18}
    assert graph.num_classes == 7 and graph.num_features == 11
    assert not graph.multilabel
    for i in graph.node_graph.unique().tolist():
        nodes = graph.node_graph == i
        kinds = [bool(m[nodes].all()) for m in
                 (graph.train_mask, graph.val_mask, graph.test_mask)]
        assert sum(kinds) == 1
    again = load_graph('MUTAG-nodes', SHARED_DATASETS, seed=0)
    assert torch.equal(again.test_mask, graph.test_mask)


def test_glnn_uses_the_multilabel_form(tiny):
    s = torch.tensor([[1.0, -1.0, 0.0, 0.5, 2.0]])
    t = torch.tensor([[2.0, 0.0, -1.0, 1.0, 0.0]])
    kd = resolve_method('kd', temperature=1.0)
    glnn = resolve_method('glnn', temperature=1.0)
    want = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))
    assert float(kd.loss([ModelOutput(t)], ModelOutput(s), tiny)) == \
        pytest.approx(float(want))
    assert float(glnn.loss([ModelOutput(t)], ModelOutput(s), tiny)) == \
        pytest.approx(float(want))


def _online(graph, method, students=2, **options):
    spec = ArchSpec(arch='gcn', in_channels=graph.num_features,
                    hidden_channels=8, num_layers=2,
                    out_channels=graph.num_classes, dropout=0.0)
    torch.manual_seed(0)
    models = [build_model(spec) for _ in range(students)]
    return PeerSteps(
        models, graph, build_online_methods(method, students, options),
        lr=0.01, weight_decay=0.0, batch_size=2, seed=0)


def _first_step(trainer, k=0):
    """Student k's output on the epoch's first batch before its step, its
    peers' outputs, the batch, and the loss the step reports."""
    part = next(iter(trainer.parts()))
    g = part.graph
    with torch.no_grad():
        outs = [run_model(m.eval(), g.x, g.edge_index)
                for m in trainer.students]
    return outs, g, trainer.step(k, part)


def test_cotrain_steps_on_batches_of_whole_training_graphs(tiny):
    trainer = _online(tiny, 'self')
    parts = [p.graph for p in trainer.parts()]
    assert [p.num_nodes for p in parts] == [120, 60]   # 3 graphs, 2 + 1
    train_x = tiny.x[tiny.train_mask]
    for p in parts:   # every row a training node's, no held-out one
        assert bool((p.x[:, None] == train_x[None]).all(-1).any(-1).all())


def test_cotrain_multilabel_mutual_step_value(tiny):
    trainer = _online(tiny, 'mutual', students=3, temperature=2.0,
                      entropy_weight=0.3)
    outs, part, got = _first_step(trainer)
    # Three students: peer weights softmax(0, 0) = 1/2 each.
    target = (outs[1].logits + outs[2].logits) / 2
    p, q = torch.sigmoid(target / 2), torch.sigmoid(outs[0].logits / 2)
    kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    q1 = torch.sigmoid(outs[0].logits)
    entropy = -(q1 * q1.log() + (1 - q1) * (1 - q1).log()).mean()
    y = part.y

    def bce(z):
        s = torch.sigmoid(z)
        return -(y * s.log() + (1 - y) * (1 - s).log()).mean()

    want = bce(outs[0].logits) + 4 * kl - 0.3 * entropy + bce(target)
    assert float(kl) > 1e-4
    assert got == pytest.approx(float(want), rel=1e-5)


def test_cotrain_alignahead_step_value_on_a_batch(tiny):
    trainer = _online(tiny, 'alignahead')
    outs, part, got = _first_step(trainer)
    n = part.num_nodes
    adj = torch.zeros(n, n, dtype=torch.bool)   # adj[i, j]: edge j -> i
    adj[part.edge_index[1], part.edge_index[0]] = True

    def log_structure(h):
        score = -torch.cdist(h, h).pow(2)
        return torch.log_softmax(score.masked_fill(~adj, -math.inf), -1)

    def kl(own, peer):
        a, b = log_structure(own), log_structure(peer)
        per_node = torch.where(adj, b.exp() * (b - a), 0.0).sum(-1)
        return per_node.sum() / adj.any(-1).sum()

    own = [*outs[0].hiddens, outs[0].logits]
    peer = [*outs[1].hiddens, outs[1].logits]
    # Cyclic pairing of two layers: (0, 1), (1, 0).
    align = kl(own[0], peer[1]) + kl(own[1], peer[0])
    sup = F.binary_cross_entropy_with_logits(outs[0].logits, part.y)
    assert float(align) > 1e-4
    assert got == pytest.approx(float(sup + align), rel=1e-4)


def test_cotrain_never_sees_held_out_graphs():
    graph = graph_from_list(synthetic_ppi(**TINY), 'tiny')
    graph.x[graph.val_mask | graph.test_mask] = float('nan')
    peers = _online(graph, 'alignahead')
    results = train_peers(peers.students, graph, peers.methods, epochs=2,
                          lr=0.01, weight_decay=0.0, batch_size=2,
                          progress=False)
    assert all(math.isfinite(h['loss']) for r in results
               for h in r.history)


def test_cotrain_refuses_fanout_on_several_graphs(tmp_path):
    path = tmp_path / 'tiny.pt'
    torch.save(synthetic_ppi(**TINY), path)
    result = runner.invoke(app, ['cotrain', '--data', str(path), '--out',
                                 str(tmp_path / 'out'), '--batch-size', '2',
                                 '--fanout', '5,5', '--layers', '2'])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'drop --fanout' in lines[0]
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('multilabel', [True, False])
def test_cli_cotrain_several_graphs_end_to_end(tmp_path, multilabel):
    import onnx
    graphs = synthetic_ppi(**TINY)
    if not multilabel:   # one label per node, a split per graph
        graphs = [Data(x=d.x, edge_index=d.edge_index, y=d.y.argmax(-1),
                       split=s) for s, items in graphs.items()
                  for d in items]
    path = tmp_path / 'tiny.pt'
    torch.save(graphs, path)
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'cotrain', '--data', str(path), '--method', 'mutual', '--out',
        str(out), '--hidden', '8', '--layers', '2', '--epochs', '2',
        '--batch-size', '2', '--no-progress'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    metric = 'micro-F1' if multilabel else 'accuracy'
    assert report['data']['split']['metric'] == metric
    assert report['data']['graphs'] == 5
    assert report['training']['batch_size'] == 2
    if multilabel:
        assert 'val micro-F1' in result.output
        assert 'test micro-F1' in (out / 'report.md').read_text()
        assert 'test acc' not in result.output
    else:
        assert 'test acc' in result.output
    assert report['onnx_max_abs_diff'] < 1e-4
    onnx.checker.check_model(onnx.load(out / 'student.onnx'))
    for entry in report['students']:
        assert 0 <= entry['test_accuracy'] <= 1
