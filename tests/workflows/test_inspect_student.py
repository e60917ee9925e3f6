"""inspect --ratio/--hidden previews the student distill would build."""
from __future__ import annotations

import json

from conftest import SAMPLES
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.tasks.datasets import load_graph

runner = CliRunner()
TEACHER = SAMPLES / 'cora_gat.pt'


def test_preview_is_the_student_distill_builds():
    preview = api.inspect(TEACHER, ratio=10)
    graph = load_graph('Cora', SAMPLES, seed=0)
    built = api.student_spec(load_checkpoint(TEACHER).spec, graph, ratio=10)
    assert preview.student == built
    assert preview.student.hidden_channels == 31
    assert preview.student_parameters == 44_678


def test_inspect_prints_the_student():
    result = runner.invoke(app, ['inspect', str(TEACHER), '--hidden', '16'])
    assert result.exit_code == 0, result.output
    assert ('student distill would build: GCN 2 layers x 16 hidden, '
            '1433 -> 7, 23,063 parameters (19.4x fewer than the teacher)'
            ) in result.output
    as_json = runner.invoke(app, ['inspect', str(TEACHER), '--ratio', '10',
                                  '--json'])
    student = json.loads(as_json.output)['student']
    assert student['parameters'] == 44_678
    assert student['spec']['hidden_channels'] == 31
    assert round(student['ratio'], 1) == 10.0


def test_inspect_refuses_a_degenerate_student():
    result = runner.invoke(app, ['inspect', str(TEACHER), '--ratio', '200'])
    assert result.exit_code == 1
    assert ('would be 1 wide, below 8 (the number of classes, at least 8): '
            'pass --hidden 8 or more, or a smaller --ratio') in \
        ' '.join(result.output.split())
