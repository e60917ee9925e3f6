"""cotrain: alternate updates, peers' outputs, training on sampled
subgraphs against the full graph, the command end to end and its errors."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from conftest import quick_latency
from peer_steps import PeerSteps
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.graph import Graph
from gnncompress.models import ArchSpec, build_model, run_model
from gnncompress.outputs import latency as bench
from gnncompress.training.peer_regimes import train_peers
from gnncompress.workflows.cotrain import build_online_methods, cotrain

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[3] / 'shared' / 'datasets'


@pytest.fixture
def fast_latency(monkeypatch):
    # Latency is measured for the report; its shape is what matters here.
    for name in ('torch_latency', 'onnx_latency'):
        monkeypatch.setattr(bench, name, functools.partial(
            getattr(bench, name), warmup=1, repeat=2))


def _trainer(graph, method='alignahead', students=2):
    spec = ArchSpec('gcn', graph.num_features, 8, 3, graph.num_classes,
                    dropout=0.5)
    torch.manual_seed(0)
    models = [build_model(spec) for _ in range(students)]
    return PeerSteps(models, graph, build_online_methods(method, students),
                     lr=0.05, weight_decay=5e-4)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize('method', ['alignahead', 'mutual'])
def test_a_step_moves_one_student_and_leaves_its_peers(tiny_graph, method):
    trainer = _trainer(tiny_graph, method, students=3)
    before = [_params(m) for m in trainer.students]

    trainer.step(1, tiny_graph)

    after = [_params(m) for m in trainer.students]
    for k in (0, 2):
        assert all(torch.equal(a, b) for a, b in zip(before[k], after[k]))
        assert all(p.grad is None for p in trainer.students[k].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before[1], after[1]))
    # Each student's method has its own trainable parts.
    if method == 'mutual':
        assert trainer.methods[0].scores is not trainer.methods[1].scores


def test_the_next_student_sees_its_peer_after_the_update(tiny_graph,
                                                         monkeypatch):
    trainer = _trainer(tiny_graph)
    seen = []
    loss = type(trainer.methods[1]).loss

    def spy(self, peers, out, graph):
        seen.append(peers[0].logits.clone())
        return loss(self, peers, out, graph)

    monkeypatch.setattr(type(trainer.methods[1]), 'loss', spy)
    trainer.step(0, tiny_graph)
    trainer.step(1, tiny_graph)

    student0 = trainer.students[0].eval()
    with torch.no_grad():
        current = run_model(student0, tiny_graph.x,
                            tiny_graph.edge_index).logits
    assert torch.equal(seen[1], current)
    assert not torch.equal(seen[0], seen[1])  # student 1 saw the old one


def test_self_trains_alone(tiny_graph):
    assert build_online_methods('self', 2) is None
    trainer = _trainer(tiny_graph, 'self')
    results = train_peers(trainer.students, tiny_graph, None, epochs=3,
                          lr=0.05, weight_decay=5e-4, progress=False)
    assert len(results) == 2 and all(r.epochs_run == 3 for r in results)


def _random_graph(num_nodes: int = 30) -> Graph:
    """Both directions of random edges, a third of the nodes labelled."""
    gen = torch.Generator().manual_seed(0)
    half = torch.randint(0, num_nodes, (2, 2 * num_nodes), generator=gen)
    x = torch.randn(num_nodes, 5, generator=gen)
    split = torch.arange(num_nodes) % 3
    return Graph(name='random', x=x,
                 edge_index=torch.cat([half, half.flip(0)], 1),
                 y=x[:, :3].argmax(-1), train_mask=split == 0,
                 val_mask=split == 1, test_mask=split == 2, num_classes=3)


def _twin_trainers(graph, method, fanout, batch_size, students=3):
    """A full-graph trainer and a sampled one over copies of the same
    students (no dropout, so that both see the same function)."""
    spec = ArchSpec('gcn', graph.num_features, 8, 3, graph.num_classes,
                    dropout=0.0)
    torch.manual_seed(0)
    models = [build_model(spec) for _ in range(students)]
    args = dict(lr=0.05, weight_decay=5e-4)
    full = PeerSteps(models, graph, build_online_methods(method, students),
                     **args)
    sampled = PeerSteps(
        copy.deepcopy(models), graph, build_online_methods(method, students),
        fanout=fanout, batch_size=batch_size, **args)
    return full, sampled


@pytest.mark.parametrize('method', ['alignahead', 'oc', 'mutual'])
def test_one_batch_of_every_node_gives_the_full_graph_losses(method):
    """Every node a seed, all neighbours: the sampled subgraph is the whole
    graph (in shuffled order), so every step's loss, and the first step's
    gradients, are the full-graph trainer's."""
    graph = _random_graph()
    full, sampled = _twin_trainers(graph, method, [-1, -1, -1],
                                   graph.num_nodes)
    for epoch in (1, 2):
        parts = list(sampled.parts())
        assert len(parts) == 1
        assert sorted(parts[0].batch.n_id.tolist()) == \
            list(range(graph.num_nodes))
        for k in range(3):
            expected = full.step(k, graph)
            got = sampled.step(k, parts[0])
            assert got == pytest.approx(expected, rel=1e-5)
            if epoch == 1 and k == 0:
                for p, q in zip(full.students[0].parameters(),
                                sampled.students[0].parameters()):
                    torch.testing.assert_close(q.grad, p.grad, rtol=1e-4,
                                               atol=1e-6)


@pytest.mark.parametrize('method', ['alignahead', 'mutual', 'self'])
def test_seeds_of_an_epoch(method):
    """With an online method every node is a seed once per epoch (the
    full-graph losses cover every node); alone, only the training nodes."""
    graph = _random_graph()
    _, sampled = _twin_trainers(graph, method, [2, 2, 2], batch_size=7)
    seeds = torch.cat([p.batch.n_id[:p.batch.batch_size]
                       for p in sampled.parts()])
    expected = torch.arange(graph.num_nodes) if method != 'self' else \
        graph.train_mask.nonzero().view(-1)
    assert sorted(seeds.tolist()) == expected.tolist()
    assert all(p.batch.batch_size <= 7 for p in sampled.parts())


def test_sampled_label_loss_covers_the_training_seeds():
    graph = _random_graph()
    _, trainer = _twin_trainers(graph, 'self', [3, 2, 2], batch_size=4)
    part = next(iter(trainer.parts()))
    seeds = part.batch.n_id[:4]
    train = graph.train_mask[seeds]
    assert 0 < int(train.sum())
    # Untrained students see the same seeds alike: its CE by hand.
    with torch.no_grad():
        logits = run_model(trainer.students[0], part.x,
                           part.edge_index).logits[:4]
    expected = torch.nn.functional.cross_entropy(logits[train],
                                                 graph.y[seeds][train])

    assert trainer.step(0, part) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize('method', ['alignahead', 'mutual'])
def test_sampled_losses_see_the_batch(method, monkeypatch):
    """Alignahead compares the logits' structure too, so it gets the logits
    of every sampled node; mutual learning the seeds' logits and labels.
    Both get the edges into the seeds only, and student 1 sees student 0
    as it is after its step on the same batch."""
    graph = _random_graph()
    _, trainer = _twin_trainers(graph, method, [3, 2, 2], batch_size=8,
                                students=2)
    seen = []
    loss = type(trainer.methods[0]).loss

    def spy(self, peers, out, g):
        seen.append((peers[0].logits.detach().clone(), out, g))
        return loss(self, peers, out, g)

    monkeypatch.setattr(type(trainer.methods[0]), 'loss', spy)
    part = next(iter(trainer.parts()))
    batch = part.batch

    def student0() -> torch.Tensor:
        with torch.no_grad():
            return run_model(trainer.students[0].eval(), part.x,
                             part.edge_index).logits[:rows]

    rows = batch.n_id.numel() if method == 'alignahead' else 8
    before = student0()
    trainer.step(0, part)
    trainer.step(1, part)

    for _, out, g in seen:
        assert out.logits.size(0) == rows
        assert all(h.size(0) == batch.n_id.numel() for h in out.hiddens)
        assert int(g.edge_index[1].max()) < 8
        assert g.edge_index.size(1) == int((batch.edge_index[1] < 8).sum())
    labels = batch.n_id if method == 'alignahead' else batch.n_id[:8]
    assert torch.equal(seen[0][2].train_mask, graph.train_mask[labels])
    assert torch.equal(seen[1][0], student0())
    assert not torch.equal(seen[1][0], before)


def test_sampled_run_keeps_each_students_best_epoch():
    graph = _random_graph(60)
    _, trainer = _twin_trainers(graph, 'mutual', [4, 3, 2], batch_size=16)
    results = train_peers(trainer.students, graph, trainer.methods,
                          epochs=4, lr=0.05, weight_decay=5e-4,
                          fanout=[4, 3, 2], batch_size=16, progress=False)

    assert len(results) == 3
    for student, result in zip(trainer.students, results):
        history = result.history
        assert len(history) == 4
        best = max(history, key=lambda h: (h['val'], -h['epoch']))
        assert result.best_epoch == best['epoch']
        assert result.val_accuracy == best['val']
        # The student is back at that epoch: layer-wise logits agree.
        with torch.no_grad():
            logits = run_model(student.eval(), graph.x,
                               graph.edge_index).logits
        val = graph.val_mask
        assert float((logits[val].argmax(-1) == graph.y[val]).float()
                     .mean()) == pytest.approx(result.val_accuracy)


@pytest.fixture
def synthetic_file(tmp_path):
    """40 nodes in two communities whose features tell the class apart."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 6, generator=gen) + y.view(-1, 1).float()
    src = torch.randint(0, 40, (160,), generator=gen)
    dst = torch.randint(0, 40, (160,), generator=gen)
    keep = y[src] == y[dst]
    edge_index = torch.stack([src[keep], dst[keep]])
    edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
    path = tmp_path / 'toy.pt'
    torch.save(Data(x=x, edge_index=edge_index, y=y), path)
    return path


def test_cli_node_level_end_to_end(synthetic_file, tmp_path, fast_latency):
    out = tmp_path / 'run'
    result = runner.invoke(app, [
        'cotrain', '--data', str(synthetic_file), '--students', '3',
        '--hidden', '16', '--epochs', '4', '--out', str(out),
        '--no-progress'])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.onnx', 'student.safetensors',
        'training.png']
    report = json.loads((out / 'report.json').read_text())
    assert report['kind'] == 'cotrain' and report['method'] == 'alignahead'
    assert [s['role'] for s in report['students']] == [
        'student 1', 'student 2', 'student 3']
    vals = [s['val_accuracy'] for s in report['students']]
    assert vals[report['best_student'] - 1] == max(vals)
    assert max(report['onnx_parity_relative'].values()) <= 1e-4
    assert report['data']['task'] == 'node'
    assert load_checkpoint(out / 'student.safetensors').spec.num_layers == 3
    assert '(exported)' in result.output
    # Each latency column names its runtime, device and threads.
    chosen = report['students'][report['best_student'] - 1]['latency']
    for latency in chosen.values():
        label = f"{latency['runtime']} {latency['device']} " \
            f"x{latency['threads']} p50 / p95 ms"
        assert label in result.output


def test_cli_node_level_on_sampled_subgraphs(synthetic_file, tmp_path,
                                             fast_latency):
    out = tmp_path / 'run'
    result = runner.invoke(app, [
        'cotrain', '--data', str(synthetic_file), '--method', 'mutual',
        '--layers', '2', '--hidden', '16', '--epochs', '3',
        '--batch-size', '16', '--fanout', '5,3', '--out', str(out),
        '--no-progress'])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.onnx', 'student.safetensors',
        'training.png']
    report = json.loads((out / 'report.json').read_text())
    assert report['training']['batch_size'] == 16
    assert report['training']['fanout'] == [5, 3]
    assert report['training']['epochs_run'] == 3
    assert report['data']['task'] == 'node'
    assert max(report['onnx_parity_relative'].values()) <= 1e-4
    assert 'sampled subgraph' in report['notes'][0]
    line = 'mini-batch: 16 seed nodes per step, fanout 5,3'
    assert line in result.output
    assert line in (out / 'report.md').read_text()
    vals = [s['val_accuracy'] for s in report['students']]
    assert vals[report['best_student'] - 1] == max(vals)


def test_cli_full_graph_reports_no_batches(synthetic_file, tmp_path,
                                           fast_latency):
    out = tmp_path / 'run'
    result = runner.invoke(app, [
        'cotrain', '--data', str(synthetic_file), '--hidden', '8',
        '--epochs', '1', '--out', str(out), '--no-progress'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['training']['batch_size'] is None
    assert report['training']['fanout'] is None
    assert report['notes'] == [] and 'mini-batch' not in result.output


@pytest.mark.skipif(not (SHARED / 'MUTAG' / 'raw').is_dir(),
                    reason='shared datasets not available')
def test_cli_mutag_mutual_with_folds(tmp_path, fast_latency):
    out = tmp_path / 'mutag'
    result = runner.invoke(app, [
        'cotrain', '--data', 'MUTAG', '--data-root', str(SHARED),
        '--method', 'mutual', '--arch', 'gin', '--hidden', '16',
        '--layers', '2', '--readout', 'sum', '--folds', '3',
        '--norm', 'batch_norm', '--dropout', '0',
        '--epochs', '2', '--batch-size', '64', '--out', str(out),
        '--no-progress'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['data']['task'] == 'graph'
    assert report['data']['graphs'] == 188
    assert [f['fold'] for f in report['folds']] == [0, 1, 2]
    picked = [f['test_accuracy'][f['best_student'] - 1]
              for f in report['folds']]
    assert report['test_accuracy_mean'] == pytest.approx(
        sum(picked) / 3)
    assert max(report['onnx_parity_relative'].values()) <= 1e-4
    spec = load_checkpoint(out / 'student.safetensors').spec
    assert (spec.readout, spec.norm) == ('sum', 'batch_norm')
    assert '## Folds' in (out / 'report.md').read_text()


@pytest.mark.skipif(not (SHARED / 'MUTAG' / 'raw').is_dir(),
                    reason='shared datasets not available')
def test_cli_graph_level_teacher_and_kd(tmp_path, fast_latency,
                                        monkeypatch):
    quick_latency(monkeypatch, warmup=1, repeat=2)
    teacher = tmp_path / 't.pt'
    result = runner.invoke(app, [
        'train-teacher', '--data', 'MUTAG', '--data-root', str(SHARED),
        '--out', str(teacher), '--arch', 'gin', '--hidden', '16',
        '--epochs', '2', '--readout', 'max', '--no-progress'])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(teacher).spec.readout == 'max'  # from the card

    out = tmp_path / 'kd'
    result = runner.invoke(app, [
        'distill', str(teacher), '--student', 'gin', '--hidden', '4',
        '--epochs', '2', '--out', str(out), '--no-progress'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['student']['spec']['readout'] == 'max'
    assert max(report['onnx_parity_relative'].values()) <= 1e-4

    result = runner.invoke(app, [
        'distill', str(teacher), '--method', 'lsp', '--epochs', '1',
        '--out', str(tmp_path / 'lsp'), '--no-progress'])
    assert result.exit_code == 1
    assert 'logit methods such as kd' in result.output
    assert not (tmp_path / 'lsp').exists()


@pytest.mark.parametrize('args,message', [
    (['--students', '1'], "'students' must be 2 to 6 (got 1)"),
    (['--students', '7'], "'students' must be 2 to 6 (got 7)"),
    (['--method', 'nope'], "Unknown cotrain method 'nope'"),
    (['--folds', '5'], '--folds applies to the graph-classification'),
    (['--arch', 'transformer'], "Unknown architecture 'transformer'"),
    (['--norm', 'group'], "Unknown norm 'group'"),
    (['-o', 'kernel=cubic'], "Bad option for method 'alignahead'"),
    (['--method', 'self', '-o', 'kernel=rbf'], "'self' takes no options"),
    (['--fanout', '5,5,5'], '--fanout needs --batch-size'),
    (['--batch-size', '8', '--fanout', '5,5'],
     '--fanout lists 2 hop(s) but each student has 3 layer(s)'),
    (['--batch-size', '8', '--fanout', '5,x,5'], '--fanout takes'),
    (['--batch-size', '8', '--fanout', '5,0,5'], '--fanout needs one'),
])
def test_cli_bad_input(args, message, synthetic_file, tmp_path):
    out = tmp_path / 'bad'
    result = runner.invoke(app, ['cotrain', '--data', str(synthetic_file),
                                 '--epochs', '1', '--out', str(out),
                                 '--no-progress', *args])

    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
    assert not list(tmp_path.glob('.gnncompress-*'))


def test_online_module_is_the_api_function():
    assert api.cotrain.__wrapped__ is cotrain  # timed: report timings


def test_cli_fanout_on_graph_classification_is_refused(tmp_path):
    out = tmp_path / 'bad'
    result = runner.invoke(app, ['cotrain', '--data', 'MUTAG', '--fanout',
                                 '5,5', '--out', str(out), '--no-progress'])

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'drop --fanout' in lines[0]
    assert not out.exists()


def test_alignahead_uses_rbf_kernel_on_multilabel_data():
    """The paper's PPI kernel; the Euclidean default collapses students on
    multi-label logits. An explicit kernel is kept."""
    from types import SimpleNamespace

    from gnncompress.workflows.cotrain import paper_options
    multi, single = SimpleNamespace(multilabel=True), \
        SimpleNamespace(multilabel=False)
    assert paper_options('alignahead', multi, None) == {'kernel': 'rbf'}
    assert paper_options('oc', multi, {'sigma': 2.0}) == \
        {'sigma': 2.0, 'kernel': 'rbf'}
    assert paper_options('alignahead', multi, {'kernel': 'l2'}) == \
        {'kernel': 'l2'}
    assert paper_options('alignahead', single, None) is None
    assert paper_options('mutual', multi, None) is None
