"""amalgamate in the one training loop: a run resumed from a training
checkpoint ends bit-identical to an uninterrupted one (full graph, sampled
subgraphs, batches of whole graphs), and a NaN stops the run with the best
student kept."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.students import load_slimmable
from gnncompress.cli import app
from gnncompress.cli import common as cli_common
from gnncompress.core.errors import CheckpointError, TrainingError
from gnncompress.training import resume
from gnncompress.workflows import amalgamate as amalgamation
from gnncompress.workflows.amalgamate import regimes
from tests.training.test_resume import _interrupt_at
from tests.workflows.test_amalgamation import _save_graph, _save_teacher
from tests.workflows.test_amalgamation_inductive import _save_list, _teacher

runner = CliRunner()
EPOCHS = 6


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """Two single-graph datasets with their teachers, and a several-graph
    multi-label dataset with two label-column teachers."""
    d = tmp_path_factory.mktemp('amalgamate-resume')
    a = _save_graph(d / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(d / 'b.pt', 24, 9, 4, 1)
    single = [_save_teacher(d / 'ta.pt', 'gcn', 6, 3, 0),
              _save_teacher(d / 'tb.pt', 'gat', 9, 4, 1)]
    several = []
    for i, (arch, classes) in enumerate([('gin', 2), ('gcn', 3)]):
        several.append(d / f'p{i}.pt')
        torch.save(_teacher(classes, i, arch).state_dict(), several[-1])
    return {'full': (single, dict(data=f'{a},{b}')),
            'minibatch': (single, dict(data=f'{a},{b}', batch_size=10,
                                       fanout='3,2')),
            'several': (several, dict(data=str(_save_list(d / 'ppi.pt')),
                                      tasks='0-1,2-4'))}


def _run(inputs, regime, out, monkeypatch, **kwargs):
    """api.amalgamate without export or latency; returns the report, the
    trained student's weights and the loop's result."""
    trained, real = [], amalgamation.train_student

    def recording(student, *args, **kw):
        fitted = real(student, *args, **kw)
        trained.append(({k: v.clone() for k, v in
                         student.state_dict().items()}, fitted))
        return fitted

    monkeypatch.setattr(amalgamation, 'train_student', recording)
    teachers, options = inputs[regime]
    report = api.amalgamate(teachers, **{
        **options, 'epochs': EPOCHS, 'widths': '0.5,1', 'patience': None,
        'seed': 2, 'out': out, 'export': False, 'latency': False,
        'progress': False, 'device': 'cpu', **kwargs})
    monkeypatch.setattr(amalgamation, 'train_student', real)
    return report, *trained[0]


@pytest.mark.parametrize('regime', ['full', 'minibatch', 'several'])
def test_resumed_amalgamation_matches_an_uninterrupted_one(
        inputs, tmp_path, monkeypatch, regime):
    full_report, full, full_fit = _run(inputs, regime, tmp_path / 'full',
                                       monkeypatch)
    out = tmp_path / 'cut'
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 5, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt) as info:
            _run(inputs, regime, out, mp, checkpoint_every=2)
    # Ctrl-C says where the checkpoint is (the CLI prints the resume
    # command).
    assert info.value.saved and info.value.folder == \
        out / resume.DEFAULT_FOLDER
    saved = torch.load(out / resume.DEFAULT_FOLDER / resume.FILE_NAME,
                       weights_only=True)
    assert saved['epoch'] == 4
    # The batches' generators and the passes under way (none: full graph).
    assert len(saved['extra']['regime']['passes']) == \
        {'full': 0, 'minibatch': 2, 'several': 1}[regime]

    report, resumed, fitted = _run(inputs, regime, out, monkeypatch,
                                   resume=out)

    assert full.keys() == resumed.keys()
    for key in full:  # bit-identical student
        assert torch.equal(full[key], resumed[key]), key
    assert fitted.history == full_fit.history  # floats, exactly
    assert len(fitted.history) == EPOCHS
    assert report.training['best_epoch'] == full_report.training['best_epoch']
    assert report.training['best_agreement'] == \
        full_report.training['best_agreement']
    assert [r['agreement'] for r in report.results] == \
        [r['agreement'] for r in full_report.results]
    assert not (out / resume.DEFAULT_FOLDER).exists()  # removed on success


def test_resume_refuses_another_amalgamation(inputs, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            _run(inputs, 'full', out, mp, checkpoint_every=1)
    with pytest.raises(CheckpointError) as info:
        _run(inputs, 'full', out, monkeypatch, resume=out, lr=0.02)
    assert "belongs to another run (lr was 0.01, now 0.02)" in \
        str(info.value)
    assert '\n' not in str(info.value)


def test_cli_amalgamate_checkpoint_options(inputs, tmp_path, monkeypatch):
    # ONNX export (and the summary that loads the files) is tested
    # elsewhere: skip its seconds here.
    monkeypatch.setattr(amalgamation, 'export_onnx',
                        lambda *a: SimpleNamespace(max_abs_diff=0.0,
                                                   cases={}))
    monkeypatch.setattr(cli_common, 'print_summary',
                        lambda report: None)
    teachers, options = inputs['full']
    folder = tmp_path / 'checkpoints'
    result = runner.invoke(app, [
        'amalgamate', *map(str, teachers), '--data', options['data'],
        '--epochs', '3', '--widths', '0.5,1', '--no-progress', '--device',
        'cpu', '--no-latency', '--out', str(tmp_path / 'out'),
        '--checkpoint-every', '2', '--checkpoint-dir', str(folder)])
    assert result.exit_code == 0, result.output
    # A folder outside OUT is kept; it holds the last multiple of 2.
    saved = torch.load(folder / resume.FILE_NAME, weights_only=True)
    assert saved['epoch'] == 2 and saved['every'] == 2
    result = runner.invoke(app, ['amalgamate', '--help'],
                           env={'COLUMNS': '200'})
    for option in ('--checkpoint-every', '--checkpoint-dir', '--resume'):
        assert option in result.output


def test_nan_stops_amalgamation_with_the_best_student(inputs, tmp_path,
                                                      monkeypatch):
    nan_epoch = 6
    real_loss, calls = regimes.group_loss, []

    def group_loss(*args, **kwargs):
        loss, terms = real_loss(*args, **kwargs)
        calls.append(1)
        # 2 widths x 2 tasks (one forward each) per epoch; the NaN comes
        # at width 1 of the NaN epoch.
        return (loss * float('nan'), terms) \
            if len(calls) > 4 * (nan_epoch - 1) + 2 else (loss, terms)

    students = []
    real_train = amalgamation.train_student

    def recording(student, *args, **kwargs):
        students.append(student)
        return real_train(student, *args, **kwargs)

    # The run up to the epoch before the NaN: its best student is the one
    # the diverging run must keep.
    ref_report, good, _ = _run(inputs, 'full', tmp_path / 'ref',
                               monkeypatch, epochs=nan_epoch - 1)
    monkeypatch.setattr(regimes, 'group_loss', group_loss)
    monkeypatch.setattr(amalgamation, 'train_student', recording)
    teachers, options = inputs['full']
    with pytest.raises(TrainingError) as info:
        api.amalgamate(teachers, **options, epochs=EPOCHS, widths='0.5,1',
                       patience=None, seed=2, out=tmp_path / 'nan',
                       export=False, latency=False, progress=False,
                       device='cpu')
    message = str(info.value)
    assert message.startswith(f'The loss (width 1) became nan at epoch '
                              f'{nan_epoch} (')
    assert '\n' not in message
    # Epoch 5 ran but did not beat epoch 4: the student goes back.
    assert info.value.best_epoch == ref_report.training['best_epoch'] == 4
    assert info.value.val_accuracy == \
        ref_report.training['best_agreement']
    kept = students[0].state_dict()
    for key in good:  # the student is back at its best epoch
        assert torch.equal(kept[key], good[key]), key
    # ... and in the output folder, with a report saying what happened.
    out = tmp_path / 'nan'
    assert f"is in {out / 'student.safetensors'}" in message
    assert 'agreement with the teachers' in message
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.safetensors']
    assert json.loads((out / 'report.json').read_text())['status'] == \
        'failed'
    model, metadata = load_slimmable(out / 'student.safetensors')
    assert metadata['gnncompress.best_epoch'] == '4'
    written = model.state_dict()
    assert written.keys() == good.keys()
    for key in good:
        assert torch.equal(written[key], good[key]), key
