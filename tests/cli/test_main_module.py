"""``python -m gnncompress`` runs the same commands as the script."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SAMPLE_TEACHER
from typer.testing import CliRunner

from gnncompress.cli import app


def test_python_m_gnncompress_runs_the_cli():
    done = subprocess.run(
        [sys.executable, '-m', 'gnncompress', 'inspect', str(SAMPLE_TEACHER)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    script = CliRunner().invoke(app, ['inspect', str(SAMPLE_TEACHER)])
    assert script.exit_code == 0
    assert done.stdout == script.output
    assert '448,375' in done.stdout  # the sample teacher's parameters


def test_python_m_gnncompress_names_itself_in_usage():
    done = subprocess.run(
        [sys.executable, '-m', 'gnncompress', '--help'],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'gnncompress' in done.stdout and '__main__' not in done.stdout
