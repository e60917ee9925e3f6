"""cotrain: alternate updates, peers' outputs, the command end to end and
its errors."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress import api, bench
from gnncompress.checkpoint import load_checkpoint
from gnncompress.cli import app
from gnncompress.models import ArchSpec, build_model, run_model
from gnncompress.online import OnlineTrainer, build_online_methods, cotrain

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'datasets'


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
    return OnlineTrainer(models, graph,
                         build_online_methods(method, students),
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
    results = trainer.run(3, progress=False)
    assert len(results) == 2 and all(r.epochs_run == 3 for r in results)


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
        'report.json', 'report.md', 'student.onnx', 'student.safetensors']
    report = json.loads((out / 'report.json').read_text())
    assert report['kind'] == 'cotrain' and report['method'] == 'alignahead'
    assert [s['role'] for s in report['students']] == [
        'student 1', 'student 2', 'student 3']
    vals = [s['val_accuracy'] for s in report['students']]
    assert vals[report['best_student'] - 1] == max(vals)
    assert report['onnx_max_abs_diff'] <= 1e-4
    assert report['data']['task'] == 'node'
    assert load_checkpoint(out / 'student.safetensors').spec.num_layers == 3
    assert '(exported)' in result.output


@pytest.mark.skipif(not (SHARED / 'MUTAG' / 'raw').is_dir(),
                    reason='shared datasets not available')
def test_cli_mutag_mutual_with_folds(tmp_path, fast_latency):
    out = tmp_path / 'mutag'
    result = runner.invoke(app, [
        'cotrain', '--data', 'MUTAG', '--data-root', str(SHARED),
        '--method', 'mutual', '--arch', 'gin', '--hidden', '16',
        '--layers', '2', '--readout', 'sum', '--folds', '3',
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
    assert report['onnx_max_abs_diff'] <= 1e-4
    spec = load_checkpoint(out / 'student.safetensors').spec
    assert spec.readout == 'sum'
    assert '## Folds' in (out / 'report.md').read_text()


@pytest.mark.skipif(not (SHARED / 'MUTAG' / 'raw').is_dir(),
                    reason='shared datasets not available')
def test_cli_graph_level_teacher_and_kd(tmp_path, fast_latency,
                                        monkeypatch):
    for name in ('torch_latency', 'onnx_latency'):
        monkeypatch.setattr(api, name, functools.partial(
            getattr(bench, name), warmup=1, repeat=2))
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
    assert report['onnx_max_abs_diff'] <= 1e-4

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
    (['-o', 'kernel=cubic'], "Bad option for method 'alignahead'"),
    (['--method', 'self', '-o', 'kernel=rbf'], "'self' takes no options"),
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
    assert api.cotrain is cotrain
