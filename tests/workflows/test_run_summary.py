"""The end of a run (issue 24): a few lines on what to do with the files,
report.json's config holding what the run resolved, and an explicit
--data naming the card's dataset still reading the card's copy."""
from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_TEACHER, SAMPLES
from typer.testing import CliRunner

from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.workflows import results as run_results
from gnncompress.workflows.inputs import card_data_root


def test_explicit_data_named_on_the_card_uses_the_cards_root():
    ckpt = load_checkpoint(SAMPLE_TEACHER)
    assert card_data_root('Cora', None, ckpt) == SAMPLES / '.'
    assert card_data_root('cora', None, ckpt) == SAMPLES / '.'
    assert card_data_root('CiteSeer', None, ckpt) is None
    assert card_data_root('Cora', '/elsewhere', ckpt) == '/elsewhere'


@pytest.mark.cpu_only  # asserts the CPU is the device
def test_distill_ends_with_a_summary_and_a_resolved_config(tmp_path,
                                                           fast_latency):
    # GNNCOMPRESS_CACHE is an empty temporary folder (conftest): Cora is
    # found only through the card's data_root, though --data names it.
    from gnncompress.cli import app
    out = tmp_path / 'run'
    result = CliRunner().invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--data', 'Cora', '--epochs', '1',
        '--out', str(out), '--no-progress', '--min-accuracy', '0',
        '--latency-budget-s', '0'])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index(f'wrote {out}/') + 1
    summary = lines[start:start + 3]
    assert summary[0] == (f'Load {out}/student.onnx with onnxruntime: '
                          'inputs x [N, 1433] float32, edge_index [2, E] '
                          'int64.')
    assert summary[1].startswith('Speed-up over the teacher: ')
    assert summary[1].endswith('x (pytorch cpu x1).') or \
        'x (pytorch cpu x' in summary[1]
    assert summary[2] == 'Gates passed: min-accuracy.'

    config = json.loads((out / 'report.json').read_text())['config']
    assert config['data'] == 'Cora'
    assert config['data_root'] == str(SAMPLES / '.')
    assert config['ratio'] == 10.0
    assert config['student'] == 'gcn' and config['layers'] == 2
    report = json.loads((out / 'report.json').read_text())
    assert config['hidden'] == report['student']['spec']['hidden_channels']
    assert config['weight'] == 1.0 and config['label_weight'] == 1.0
    assert config['arch'] == 'gat' and config['device'] == 'cpu'
    assert config['normalize_features'] is False
    assert config['split'] == 'default'
    assert config['epochs'] == 1  # given on the command line, kept


def test_summary_without_latency_or_gates():
    from types import SimpleNamespace

    from gnncompress.api import run_summary
    report = SimpleNamespace(files={}, speedups=[], gates=[])
    assert run_summary(report) == [
        'Speed-up over the teacher: not measured (--no-latency); gnncompress '
        'bench TEACHER STUDENT.onnx --baseline TEACHER times both.',
        'Gates: none set.']
    failed = SimpleNamespace(name='max-accuracy-drop', passed=False)
    report = SimpleNamespace(files={}, speedups=[], gates=[failed])
    assert run_summary(report)[-1] == \
        'Gate failed: max-accuracy-drop (exit code 3).'


def test_amalgamate_and_cotrain_summaries(monkeypatch):
    from types import SimpleNamespace

    from gnncompress.api import run_summary
    monkeypatch.setattr(run_results, 'onnx_signature',
                        lambda path: 'x [N, 8] float32, edge_index [2, E] '
                                     'int64')

    def timed(ms):
        return {'pytorch-cpu': {'runtime': 'pytorch', 'device': 'cpu',
                                'threads': 1, 'median_ms': ms}}

    amalgamated = SimpleNamespace(
        files={'onnx': ['/o/onnx/a-w0.5.onnx', '/o/onnx/a-w1.onnx']},
        tasks=[{'name': 'a'}], teachers=[SimpleNamespace(latency=timed(10))],
        results=[{'task': 'a', 'latency': timed(5)},
                 {'task': 'a', 'latency': timed(2)}], gates=[])
    assert run_summary(amalgamated) == [
        'Load /o/onnx/a-w0.5.onnx (one per task and width in /o/onnx/) with '
        'onnxruntime: inputs x [N, 8] float32, edge_index [2, E] int64.',
        'Speed-up over the teachers: 2.0x to 5.0x across tasks and widths '
        '(pytorch cpu x1).',
        'Gates: none set.']
    cotrained = SimpleNamespace(files={'onnx': '/o/student.onnx'},
                                data={'name': 'Cora'})
    assert run_summary(cotrained)[1] == (
        'No teacher to compare with: time it with gnncompress bench '
        '/o/student.onnx --data Cora.')
