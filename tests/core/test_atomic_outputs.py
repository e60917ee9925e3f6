"""Outputs are all-or-nothing (docs/robustness.md, "Outputs"): atomic
publication of ``--out``, one run per folder, failed runs, partial
checkpoints, kept students and byte-identical files."""
from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import gnncompress.api as api
from gnncompress.checkpoints.students import save_safetensors
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core import out_folder as outputs
from gnncompress.core.errors import ExportError, OutputError, TrainingError
from gnncompress.models import ArchSpec, build_model
from gnncompress.training import resume
from gnncompress.training.regimes import full_graph
from gnncompress.workflows import distill as distill_workflow
from gnncompress.workflows import results as run_results
from tests.training.test_resume import _quick, files  # noqa: F401 -- shared fixtures


def test_identical_students_give_identical_bytes(tmp_path):
    # safetensors writes metadata keys in hash order, new for every call.
    spec = ArchSpec('gcn', 5, 8, 2, 3)
    torch.manual_seed(0)
    model = build_model(spec)
    extra = {'gnncompress.method': 'kd', 'gnncompress.data': 'Cora',
             'gnncompress.best_epoch': '3', 'é': 'ü'}
    digests = set()
    for i in range(6):
        path = save_safetensors(model, spec, tmp_path / f's{i}.safetensors',
                                extra=dict(reversed(extra.items())) if i % 2
                                else extra)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], 'little')
    assert size % 8 == 0
    header = data[8:8 + size].decode()
    keys = ['gnncompress.best_epoch', 'gnncompress.data', 'é']
    positions = [header.index(f'"{k}"') for k in keys]
    assert positions == sorted(positions)


# A run into --out -----------------------------------------------------------

def _distill(files, out: Path, **kwargs):
    teacher, graph = files
    # kd: the failure paths of one method's training (auto's own are in
    # tests/workflows/test_auto.py).
    options = dict(data=graph, method='kd', hidden=8, epochs=6, out=out,
                   progress=False, export=False)
    return api.distill(teacher, **{**options, **kwargs})


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def _earlier_run(out: Path) -> dict[str, bytes]:
    """A folder as an earlier run left it, plus a file of the user's and a
    training checkpoint folder."""
    out.mkdir(parents=True)
    for name in ('report.json', 'report.md', 'student.onnx',
                 'student.safetensors', 'training.png', 'notes.txt'):
        (out / name).write_text(f'earlier {name}\n')
    (out / '.gnncompress-checkpoint').mkdir()
    (out / '.gnncompress-checkpoint' / 'training.ckpt').write_text('ckpt\n')
    return _contents(out)


class _Killed(BaseException):
    """A kill -9 at that moment: nothing after it runs (no except clause
    of the tool catches a BaseException)."""


def test_run_replaces_the_earlier_run_wholly(files, tmp_path):
    out = tmp_path / 'out'
    _earlier_run(out)
    _distill(files, out)  # without export: no student files
    names = sorted(p.name for p in out.iterdir())
    # The run owns student.* and report.*: the earlier student files must
    # not survive beside the new report; the user's files do.
    assert names == ['.gnncompress-checkpoint', 'notes.txt', 'report.json',
                     'report.md', 'training.png']
    assert json.loads((out / 'report.json').read_text())['files']
    assert (out / 'training.png').read_bytes()[:4] == b'\x89PNG'
    assert (out / 'notes.txt').read_text() == 'earlier notes.txt\n'
    assert (out / '.gnncompress-checkpoint' / 'training.ckpt').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


@pytest.mark.parametrize('exchange', [True, False])
def test_publication_is_one_step(tmp_path, monkeypatch, exchange):
    out = tmp_path / 'out'
    _earlier_run(out)
    if not exchange:  # a file system without renameat2
        monkeypatch.setattr(outputs, '_exchange', lambda a, b: False)
    with outputs.staged(out) as stage:
        (stage / 'report.json').write_text('new\n')
    assert _contents(out)['report.json'] == b'new\n'
    assert 'student.onnx' not in _contents(out)
    assert (out / 'notes.txt').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_bench_keeps_the_student_files_it_measures(tmp_path):
    out = tmp_path / 'out'
    _earlier_run(out)
    (out / 'bench.json').write_text('earlier bench\n')
    (out / 'bench-sizes.png').write_text('earlier plot\n')
    with outputs.staged(out, outputs.BENCH_FILES) as stage:
        (stage / 'bench.json').write_text('new\n')
    assert _contents(out)['bench.json'] == b'new\n'
    assert 'bench-sizes.png' not in _contents(out)
    assert (out / 'student.onnx').read_text() == 'earlier student.onnx\n'


@pytest.mark.parametrize('moment', ['writing', 'carrying', 'swapping'])
def test_a_kill_leaves_out_as_it_was(tmp_path, monkeypatch, moment):
    out = tmp_path / 'out'
    before = _earlier_run(out)

    def kill(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(shutil, 'rmtree', lambda *a, **k: None)  # kill -9
    if moment == 'carrying':
        monkeypatch.setattr(outputs, '_link', kill)
    if moment == 'swapping':
        monkeypatch.setattr(outputs, '_exchange', kill)
    with pytest.raises(_Killed):
        with outputs.staged(out) as stage:
            (stage / 'student.safetensors').write_text('half')
            if moment == 'writing':
                raise _Killed
    assert _contents(out) == before
    monkeypatch.undo()
    outputs.release(out)  # the killed process would have lost its lock
    stale = [p for p in tmp_path.iterdir() if p.name != 'out']
    assert stale and all('.gnncompress-stage-' in p.name for p in stale)


def test_next_run_removes_stale_stages_with_a_note(files, tmp_path,
                                                   capsys):
    out = tmp_path / 'out'
    _earlier_run(out)
    stale = [tmp_path / '.out.gnncompress-stage-abcd1234',
             out / '.gnncompress-x1y2z3w4']  # staged inside, by 0.x
    for folder in stale:
        folder.mkdir()
        (folder / 'report.json').write_text('stale\n')
    _distill(files, out)
    assert not any(p.exists() for p in stale)
    err = capsys.readouterr().err
    assert all(f'Note: removed {p}, left by an interrupted run' in err
               for p in stale)
    assert (out / '.gnncompress-checkpoint').exists()


def test_second_run_into_one_out_fails_naming_the_holder(files, tmp_path):
    out = tmp_path / 'out'
    lock = outputs.lock_file(out)
    with open(lock, 'w') as holder:  # another run, holding the lock
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write('4242\n')
        holder.flush()
        with pytest.raises(OutputError, match=r'in use by another gnncompress '
                                              r'run \(pid 4242, lock'):
            _distill(files, out)
        result = CliRunner().invoke(app, [
            'distill', str(files[0]), '--data', str(files[1]), '--hidden',
            '8', '--epochs', '2', '--out', str(out)])
        assert result.exit_code == 1
        assert result.output.count('\n') == 1
        assert 'pid 4242' in result.output
        assert not out.exists()
    _distill(files, out)  # released: the next run goes ahead
    assert not lock.exists()  # and the lock file goes with the run


def test_out_holding_an_input_is_refused(files, tmp_path):
    prev = tmp_path / 'prev'
    _distill(files, prev, export=True)
    before = _contents(prev)
    with pytest.raises(OutputError, match='holds .*student.safetensors, an '
                                          'input of this run'):
        _distill((prev / 'student.safetensors', files[1]), prev)
    assert _contents(prev) == before


def test_failed_run_replaces_the_earlier_run_with_its_report(
        files, tmp_path, monkeypatch):
    from gnncompress.methods.kd import KD

    out = tmp_path / 'out'
    _earlier_run(out)
    real_loss, calls = KD.loss, []

    def loss(self, *args):
        calls.append(1)
        value = real_loss(self, *args)
        return value * float('nan') if len(calls) >= 4 else value

    monkeypatch.setattr(KD, 'loss', loss)
    with pytest.raises(TrainingError):
        _distill(files, out, export=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == ['.gnncompress-checkpoint', 'notes.txt', 'report.json',
                     'report.md', 'student.safetensors']
    report = json.loads((out / 'report.json').read_text())
    assert report['status'] == 'failed'
    assert 'The loss became nan at epoch 4' in report['error']
    assert report['best_epoch'] == 3
    assert 'failed' in (out / 'report.md').read_text()


def test_kept_student_is_the_best_finite_one_and_exports(
        files, tmp_path, monkeypatch):
    # Epoch 4 blows the weights up to ~1e30 and its outputs to infinity,
    # with a perfect argmax; epoch 5's loss is NaN. The student kept must
    # be an earlier one, which the documented `export` accepts.
    from gnncompress.methods.kd import KD

    students, calls, blown = [], [], []
    real_fit, real_loss = distill_workflow.fit, KD.loss
    real_run = full_graph.run_model

    def recording_fit(model, *args, **kw):
        students.append(model)
        return real_fit(model, *args, **kw)

    def loss(self, *args):
        calls.append(1)
        if len(calls) == 4:
            with torch.no_grad():
                for p in students[-1].parameters():
                    p.data.mul_(1e30)
            blown.append(True)
        value = real_loss(self, *args)
        return value * float('nan') if len(calls) >= 5 else value

    def run_model(model, x, *args):
        out = real_run(model, x, *args)
        if blown and not model.training:
            y = torch.arange(x.size(0)) % 3
            out.logits = torch.where(
                torch.nn.functional.one_hot(y, 3).bool(),
                torch.tensor(float('inf')), torch.tensor(0.0))
        return out

    monkeypatch.setattr(distill_workflow, 'fit', recording_fit)
    monkeypatch.setattr(KD, 'loss', loss)
    monkeypatch.setattr(full_graph, 'run_model', run_model)
    out = tmp_path / 'out'
    with pytest.raises(TrainingError) as info:
        _distill(files, out)
    assert info.value.best_epoch < 4
    kept = load_file(out / 'student.safetensors')
    assert max(float(t.abs().max()) for t in kept.values()) < 1e3
    monkeypatch.undo()
    api.export(out / 'student.safetensors', tmp_path / 'kept.onnx')
    assert (tmp_path / 'kept.onnx').stat().st_size > 0


def test_lr_1e10_keeps_and_exports_the_student(files, tmp_path):
    # Since ONNX parity is checked relative to the outputs' scale, a
    # student with huge but finite values exports: both files are kept.
    out = tmp_path / 'out'
    report = _distill(files, out, lr=1e10, epochs=2, export=True)
    kept = load_file(out / 'student.safetensors')
    assert max(float(t.abs().max()) for t in kept.values()) > 1e6
    assert (out / 'student.onnx').stat().st_size > 0
    assert report.student.parameters > 0
    assert 'status' not in json.loads((out / 'report.json').read_text())


def test_lr_1e10_keeps_the_student_and_says_it_overflows(
        files, tmp_path, monkeypatch):
    # Where the export still fails on such values, the run keeps the
    # student and says why in one line.
    def mismatch(*args, **kwargs):
        raise ExportError('ONNX export does not match PyTorch (max '
                          'difference 3e+12)')
    monkeypatch.setattr(run_results, 'export_onnx', mismatch)
    out = tmp_path / 'out'
    with pytest.raises(ExportError) as info:
        _distill(files, out, lr=1e10, epochs=2, export=True)
    message = str(info.value)
    assert message.startswith('The student cannot be exported: its values '
                              'overflow float32 (largest weight ')
    assert message.endswith('so PyTorch and ONNX Runtime cannot agree; '
                            'lower --lr; the student is kept in '
                            f"{out / 'student.safetensors'}")
    assert '\n' not in message
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.safetensors']
    assert json.loads((out / 'report.json').read_text())['status'] == \
        'failed'
    assert load_checkpoint(out / 'student.safetensors').spec.arch == 'gcn'


# Training checkpoints --------------------------------------------------------

def test_kill_during_first_checkpoint_write_resumes_from_start(
        files, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    real_save = resume.torch.save

    def killed_save(obj, path):
        Path(path).write_bytes(b'')  # the 0-byte temporary file
        raise _Killed

    monkeypatch.setattr(resume.torch, 'save', killed_save)
    with pytest.raises(_Killed):
        _distill(files, out, checkpoint_every=2, export=True)
    folder = out / resume.DEFAULT_FOLDER
    assert [p.stat().st_size for p in resume.partial_files(folder)] == [0]
    monkeypatch.setattr(resume.torch, 'save', real_save)
    outputs.release(out)  # the killed process would have lost its lock

    report = _distill(files, out, checkpoint_every=2, resume=out,
                      export=True)
    assert 'holds no complete checkpoint' in capsys.readouterr().err
    plain = _distill(files, tmp_path / 'plain', export=True)
    assert report.student.test_accuracy == plain.student.test_accuracy
    assert _contents(out)['student.safetensors'] == \
        _contents(tmp_path / 'plain')['student.safetensors']
    assert not folder.exists()


def test_partial_write_after_a_complete_checkpoint_is_ignored(
        files, tmp_path):
    out = tmp_path / 'out'
    _distill(files, out, checkpoint_every=2,
             checkpoint_dir=tmp_path / 'ckpt', epochs=4)
    folder = tmp_path / 'ckpt'
    (folder / '.training.ckpt.99999.tmp').write_bytes(b'')
    _distill(files, out, checkpoint_every=2, checkpoint_dir=folder,
             resume=folder, epochs=4)
    assert not resume.partial_files(folder)


def test_what_a_killed_rank_claimed_is_released_by_its_parent(
        tmp_path, monkeypatch):
    # A --nproc rank blocked in a collective is killed when it does not
    # unwind in time; its lock file and stage folder were left behind.
    record = tmp_path / 'claims'
    monkeypatch.setenv(outputs.CLAIMS_ENV, str(record))
    gone, held = tmp_path / 'gone', tmp_path / 'held'
    outputs.claim(gone)
    outputs.claim(held)
    assert record.read_text().split() == [str(gone.resolve()),
                                          str(held.resolve())]
    stage = tmp_path / '.gone.gnncompress-stage-x'
    stage.mkdir()
    # As after a kill: the descriptor is gone, the lock file stays.
    import os
    os.close(outputs._HELD.pop(gone.resolve()))
    outputs.release_abandoned(record)
    assert not outputs.lock_file(gone).exists() and not stage.exists()
    assert outputs.lock_file(held).exists()  # this process holds it
    outputs.release(held)
    assert not outputs.lock_file(held).exists()
