"""--baseline exports the better student by validation: the student trained
alone when the distilled one scores below it, said in the output and
recorded in report.json (``exported``)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLE_TEACHER, SAMPLES
from layouts import ExampleGCN
from safetensors.torch import load_file
from typer.testing import CliRunner

import gnncompress.api
from gnncompress.cli import app
from gnncompress.outputs.report import ModelEntry, export_choice
from gnncompress.tasks.datasets import load_graph
from gnncompress.workflows import distill as distill_workflow

runner = CliRunner()


@pytest.fixture
def trained(monkeypatch):
    """The weights each fit left in its student, by its progress label
    ('student alone', 'distill kd'); ``alter`` changes a fit's result."""
    seen, alter = {}, {}
    real = distill_workflow.fit

    def spy(model, graph, **kwargs):
        result = real(model, graph, **kwargs)
        seen[kwargs['desc']] = {k: v.detach().clone()
                                for k, v in model.state_dict().items()}
        for key, value in alter.get(kwargs['desc'], {}).items():
            setattr(result, key, value)
        return result

    monkeypatch.setattr(distill_workflow, 'fit', spy)
    return seen, alter


def _assert_holds(folder, weights):
    saved = load_file(folder / 'student.safetensors')
    assert sorted(saved) == sorted(weights)
    for key, value in weights.items():
        assert torch.equal(saved[key], value), key


def _useless_teacher(path):
    """A teacher whose every prediction is Cora's rarest validation class:
    distilled from it alone (no label loss), a student learns nothing."""
    cora = load_graph('Cora', SAMPLES, seed=0)
    rare = int(torch.bincount(cora.y[cora.val_mask],
                              minlength=cora.num_classes).argmin())
    model = ExampleGCN(cora.num_features, cora.num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv2.bias[rare] = 10.0
    torch.save(model.state_dict(), path)


def test_baseline_wins_and_is_exported(tmp_path, trained):
    seen, _ = trained
    teacher = tmp_path / 'useless.pt'
    _useless_teacher(teacher)
    out = tmp_path / 'run'

    result = runner.invoke(app, [
        'distill', str(teacher), '--data', 'Cora', '--data-root',
        str(SAMPLES), '--epochs', '5', '--hidden', '8', '--label-weight',
        '0', '--baseline', '--no-latency', '--no-progress', '--out',
        str(out), '--min-accuracy', '1'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    exported = report['exported']
    distilled = report['student']['val_accuracy']
    alone = report['student_alone']['val_accuracy']
    assert alone > distilled
    assert exported == {
        'model': 'baseline', 'distilled_val_accuracy': distilled,
        'baseline_val_accuracy': alone, 'reason': (
            'the student trained alone, not the distilled one, which scored '
            f'below it ({100 * distilled:.1f}% distilled against '
            f'{100 * alone:.1f}% alone on the validation nodes)')}
    # The files hold the student trained alone, and say so.
    _assert_holds(out, seen['student alone'])
    assert not torch.equal(seen['student alone']['convs.0.lin.weight'],
                           seen['distill kd']['convs.0.lin.weight'])
    assert report['student_alone']['file'] == str(out / 'student.safetensors')
    assert report['student']['file'] is None
    line = f"exported: {exported['reason']}"
    assert line in result.output.splitlines()   # the text report
    assert f"- {line}" in (out / 'report.md').read_text()
    assert f"Warning: exported {exported['reason']}" in \
        ' '.join(result.output.split())          # and one highlighted line
    # The gates judge the student the files hold.
    assert report['gates'] == [{'name': 'min-accuracy', 'limit': 1.0,
                                'passed': True, 'failures': []}]


def test_distilled_student_is_exported_when_not_worse(tmp_path, trained):
    seen, alter = trained
    alter['student alone'] = {'val_accuracy': 0.0}  # the distilled one wins
    out = tmp_path / 'run'

    report = gnncompress.api.distill(
        SAMPLE_TEACHER, data='Cora', data_root=SAMPLES, method='kd',
        epochs=2, hidden=8, baseline=True, latency=False, progress=False,
        out=out)

    assert report.exported['model'] == 'distilled'
    assert report.exported['reason'].startswith('the distilled student (')
    _assert_holds(out, seen['distill kd'])
    saved = json.loads((out / 'report.json').read_text())
    assert saved['exported'] == report.exported
    assert saved['student']['file'] == str(out / 'student.safetensors')
    assert f"exported: {report.exported['reason']}" in report.to_text()


def test_without_baseline_nothing_is_chosen(tmp_path):
    report = gnncompress.api.distill(
        SAMPLE_TEACHER, data='Cora', data_root=SAMPLES, epochs=1, hidden=8,
        latency=False, progress=False, out=tmp_path / 'run', export=False)

    assert report.exported is None
    assert not any(line.startswith('exported')
                   for line in report.summary_lines())


def _entry(val):
    return ModelEntry(role='x', spec={}, parameters=1, test_accuracy=0.5,
                      val_accuracy=val)


@pytest.mark.parametrize('distilled, alone, model', [
    (0.70, 0.71, 'baseline'), (0.71, 0.71, 'distilled'),
    (0.72, 0.71, 'distilled')])
def test_export_choice_prefers_the_distilled_student_on_a_tie(
        distilled, alone, model):
    assert export_choice(_entry(distilled), _entry(alone))['model'] == model


def test_minibatch_runs_choose_too(tmp_path):
    report = gnncompress.api.distill(
        SAMPLE_TEACHER, data='Cora', data_root=SAMPLES, epochs=1, hidden=8,
        batch_size=512, fanout='5,5', baseline=True, latency=False,
        progress=False, out=tmp_path / 'run')

    alone = report.student_alone.val_accuracy
    assert report.exported['model'] == (
        'baseline' if alone > report.student.val_accuracy else 'distilled')
    holder = report.student_alone if report.exported['model'] == \
        'baseline' else report.student
    assert holder.file == str(tmp_path / 'run' / 'student.safetensors')


def test_baseline_is_the_student_trained_alone(tmp_path):
    # KD at weight 0 trains exactly as labels alone do, from the same seed:
    # --baseline's student alone must match the distilled student, score
    # for score. (On sampled subgraphs the two differ: preparing the method
    # draws one batch from the sampler first.)
    report = gnncompress.api.distill(
        SAMPLE_TEACHER, epochs=3, weight=0.0, label_weight=1.0,
        baseline=True, export=False, latency=False, progress=False,
        out=tmp_path / 'out')
    alone = report.student_alone
    assert alone is not None and alone.role == 'student-alone'
    assert alone.parameters == report.student.parameters
    assert alone.val_accuracy == report.student.val_accuracy
    assert alone.test_accuracy == report.student.test_accuracy
