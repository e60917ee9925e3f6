"""The pipeline of docs/ci.md, run as written through the CLI (with a
config of a few epochs in place of configs/ci.toml)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from conftest import SAMPLES, quick_latency
from typer.testing import CliRunner

from gnncompress.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _doc_commands() -> list[list[str]]:
    text = (ROOT / 'docs' / 'ci.md').read_text()
    lines = re.findall(r'^\s+run: (gnncompress .+)$', text, re.M)
    return [shlex.split(line)[1:] for line in lines]


def test_the_documented_pipeline_runs_and_passes_its_gates(tmp_path,
                                                         monkeypatch):
    """The shipped configs/ci.toml, byte for byte, with the documented
    gates: every command must exit 0 and every gate must pass."""
    commands = _doc_commands()
    assert [c[0] for c in commands] == ['train-teacher', 'distill', 'bench']
    (tmp_path / 'configs').mkdir()
    shipped = (ROOT / 'configs' / 'ci.toml').read_bytes()
    (tmp_path / 'configs' / 'ci.toml').write_bytes(shipped)
    # data_root = "samples" is read, never written (README).
    (tmp_path / 'samples').symlink_to(SAMPLES)
    monkeypatch.chdir(tmp_path)
    quick_latency(monkeypatch, warmup=0, repeat=1)  # distill's report

    teacher_run, distill_run, bench_run = (
        runner.invoke(app, args) for args in commands)
    assert teacher_run.exit_code == 0, teacher_run.output
    assert distill_run.exit_code == 0, distill_run.output
    report = json.loads(Path('build/student/report.json').read_text())
    assert report['config']['config'] == 'configs/ci.toml'
    assert report['gates'] and all(g['passed'] for g in report['gates'])
    assert bench_run.exit_code == 0, bench_run.output
    bench = json.loads(Path('build/bench/bench.json').read_text())
    assert bench['baseline'] == 'teacher.pt'
    assert [g['name'] for g in bench['gates']] == ['min-speedup',
                                                  'max-accuracy-drop']
    assert all(g['passed'] for g in bench['gates'])

    # A gate nobody can meet fails with code 3 and still writes the report.
    args = commands[2] + ['--min-speedup', '1e9', '--out', 'build/b2']
    strict = runner.invoke(app, args)
    assert strict.exit_code == 3
    assert json.loads(Path('build/b2/bench.json').read_text())['gates'][0][
        'passed'] is False
