"""`gnncompress --help`, each command's help and usage errors answer
without importing torch (issue 23: help under a second)."""
from __future__ import annotations

import subprocess
import sys

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
                           'matplotlib', 'gnncompress.api') if m in sys.modules
               and type(sys.modules[m]).__name__ != '_LazyModule')
print(codes, heavy)
'''


def test_help_and_usage_errors_import_no_torch():
    done = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2] []'


def test_the_lazy_api_is_the_real_module():
    from gnncompress import api, cli
    assert cli.api.distill is api.distill
    assert cli.api.__name__ == 'gnncompress.api'
