"""`gnncompress --help`, each command's help and usage errors answer
without importing torch (issue 23: help under a second)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import sys
from typer.testing import CliRunner
from gnncompress.cli import app
runner = CliRunner()
codes = []
for args in (['--help'], ['distill', '--help'], ['amalgamate', '--help'],
             ['cotrain', '--help'], ['bench', '--help'], ['export', '--help'],
             ['inspect', '--help'], ['train-teacher', '--help'],
             ['datasets'], ['cotrain', '--list-methods'],
             ['distill', '--epochs', '0', 't.pt']):
    codes.append(runner.invoke(app, args).exit_code)
heavy = sorted(m for m in ('torch', 'torch_geometric', 'onnx', 'onnxruntime',
                           'matplotlib', 'gnncompress.api') if m in sys.modules)
print(codes, heavy)
'''


def test_help_and_usage_errors_import_no_torch():
    done = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2] []'


def test_a_command_runs_after_the_lazy_import(tmp_path):
    # The first command that needs the API imports it (and torch_geometric)
    # from inside a Click callback; a lazy module in sys.modules made that
    # a circular import of torch_geometric.
    sample = Path(__file__).resolve().parents[2] / 'samples' / 'cora_gat.pt'
    done = subprocess.run(
        [sys.executable, '-m', 'gnncompress', 'inspect', str(sample)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'gat' in done.stdout


def test_the_lazy_api_is_the_real_module():
    from gnncompress import api, cli
    assert cli.api.distill is api.distill
    assert cli.api.__name__ == 'gnncompress.api'
