"""The pipeline of docs/ci.md, run as written through the CLI (with a
config of a few epochs in place of configs/ci.toml)."""
from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path

from conftest import SAMPLES
from typer.testing import CliRunner

import gnncompress.api
from gnncompress import bench as bench_module
from gnncompress.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _doc_commands() -> list[list[str]]:
    text = (ROOT / 'docs' / 'ci.md').read_text()
    lines = re.findall(r'^\s+run: (gnncompress .+)$', text, re.M)
    return [shlex.split(line)[1:] for line in lines]


def test_the_documented_pipeline_runs_and_gates(tmp_path, monkeypatch):
    commands = _doc_commands()
    assert [c[0] for c in commands] == ['train-teacher', 'distill', 'bench']
    shipped = (ROOT / 'configs' / 'ci.toml').read_text()
    # The shipped config, with a tiny teacher and few epochs and runs.
    tiny = (shipped.replace('hidden = 64', 'hidden = 16')
            .replace('epochs = 200', 'epochs = 3')
            .replace('repeat = 20', 'repeat = 2')
            .replace('data_root = "samples"', f'data_root = "{SAMPLES}"'))
    assert tiny.count('epochs = 3') == 2
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'ci.toml').write_text(tiny)
    monkeypatch.chdir(tmp_path)
    for name in ('torch_latency', 'onnx_latency'):  # distill's report
        monkeypatch.setattr(gnncompress.api, name, functools.partial(
            getattr(bench_module, name), warmup=0, repeat=1))

    results = [runner.invoke(app, args) for args in commands]
    teacher_run, distill_run, bench_run = results
    assert teacher_run.exit_code == 0, teacher_run.output
    # Three epochs of a tiny teacher: the documented gates decide.
    report = json.loads(Path('build/student/report.json').read_text())
    assert report['config']['config'] == 'configs/ci.toml'
    assert report['training']['epochs_run'] == 3
    student = 100 * report['student']['test_accuracy']
    teacher = 100 * report['teacher']['test_accuracy']
    expect_pass = student >= 75 and teacher - student <= 3
    assert distill_run.exit_code == (0 if expect_pass else 3), \
        distill_run.output
    bench = json.loads(Path('build/bench/bench.json').read_text())
    assert bench['baseline'] == 'teacher.pt'
    # The student's ONNX export and the teacher both run at the 2 threads
    # asked for.
    assert {(r['runtime'], r['threads_asked']) for r in bench['rows']} == \
        {('eager', 2), ('onnxruntime', 2)}
    assert [g['name'] for g in bench['gates']] == ['min-speedup',
                                                  'max-accuracy-drop']
    failed = not all(g['passed'] for g in bench['gates'])
    assert bench_run.exit_code == (3 if failed else 0), bench_run.output

    # A gate nobody can meet fails with code 3 and still writes the report.
    args = commands[2] + ['--min-speedup', '1e9', '--out', 'build/b2']
    strict = runner.invoke(app, args)
    assert strict.exit_code == 3
    assert json.loads(Path('build/b2/bench.json').read_text())['gates'][0][
        'passed'] is False
