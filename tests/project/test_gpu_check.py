"""benchmarks/gpu_check.py: its summary says what ran, what failed and what
the budget left out (the GPU run itself happens on a GPU machine)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', ROOT / 'benchmarks' / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_counts_ok_failed_and_not_run(tmp_path):
    check = _module()
    runner = check.Runner(tmp_path, budget_s=60)
    assert runner.run('ok step', [sys.executable, '-c', 'print("fine")'], 30)
    assert not runner.run('bad step', [sys.executable, '-c',
                                       'import sys; print("boom"); '
                                       'sys.exit(3)'], 30)
    runner.deadline = 0.0
    assert not runner.run('late step', [sys.executable, '-c', 'pass'], 30)
    code = runner.write({'device': 'cpu', 'machine': 'test', 'torch': 'x'})
    assert code == 1
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert [s['status'] for s in summary['steps']] == ['ok', 'failed',
                                                      'not run']
    assert summary['steps'][0]['last_line'] == 'fine'
    assert summary['steps'][1]['rc'] == 3
    assert summary['steps'][1]['last_line'] == 'boom'
    assert (summary['passed'], summary['failed'], summary['not_run']) == \
        (1, 1, 1)
    assert '| bad step | failed |' in (tmp_path / 'summary.md').read_text()


def test_only_filter_skips_other_steps(tmp_path):
    check = _module()
    runner = check.Runner(tmp_path, budget_s=60, only='keep,also')
    assert runner.run('drop me', [sys.executable, '-c', 'exit(1)'], 30)
    runner.run('keep me', [sys.executable, '-c', 'pass'], 30)
    runner.run('also me', [sys.executable, '-c', 'pass'], 30)
    assert [s['step'] for s in runner.steps] == ['keep me', 'also me']


def test_refuses_cuda_without_a_gpu(monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert _module().main(['--device', 'cuda']) == 1
    assert 'sees no GPU' in capsys.readouterr().err


def test_summary_names_no_machine_paths(tmp_path):
    check = _module()
    runner = check.Runner(tmp_path, budget_s=60)
    out = check.ROOT / 'samples'
    runner.run('paths', [sys.executable, '-c', f'print("wrote {out}/")'], 30)
    step = runner.steps[0]
    assert step['command'].startswith('python -c')
    assert step['last_line'] == 'wrote samples/'
    # Figures read from a report (bench's rows name their files).
    step['figures'] = {'file': str(out / 'cora_gat.pt')}
    runner.write({'machine': 'test', 'device': 'cpu', 'torch': 'x'})
    written = (tmp_path / 'summary.json').read_text()
    assert str(check.ROOT) not in written and sys.executable not in written
    assert '"file": "samples/cora_gat.pt"' in written
