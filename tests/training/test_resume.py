"""Long runs: the same seed gives the same student bit for bit, a run killed
mid-training and resumed from its checkpoint ends with the student of an
uninterrupted run, and a loss that stops being finite keeps the last good
student."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quick_latency
from safetensors.torch import load_file
from torch_geometric.data import Data
from typer.testing import CliRunner

import gnncompress.api as api
from gnncompress.cli import app
from gnncompress.core.errors import CheckpointError, OutputError, TrainingError
from gnncompress.models import ArchSpec, build_model
from gnncompress.training import loop, resume
from gnncompress.workflows import distill as distill_workflow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 30
# The methods with trainable parts of their own (FitNet maps, G-CRD heads
# with batch norm and sampled nodes, ABKD projections) and plain KD.
METHODS = ['kd', 'fitnet', 'g-crd', 'abkd']


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    torch.set_num_threads(1)
    # Latency is measured for the report; a few runs are enough here.
    quick_latency(monkeypatch, warmup=0, repeat=1)


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> tuple[Path, Path]:
    """A 90-node, 3-class graph whose classes the features and edges tell
    apart (so the best validation epoch is a late one) and a random GCN
    teacher for it."""
    folder = tmp_path_factory.mktemp('long-runs')
    n = 90
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = 1.5 * torch.randn(n, 8, generator=gen) + \
        torch.nn.functional.one_hot(y, 8).float()
    src = torch.randint(0, n, (300,), generator=gen)
    dst = (src + 3 * torch.randint(1, 20, (300,), generator=gen)) % n
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    torch.save(Data(x=x, edge_index=edge_index, y=y), folder / 'graph.pt')
    torch.manual_seed(0)
    torch.save(build_model(ArchSpec('gcn', 8, 32, 2, 3)).state_dict(),
               folder / 'teacher.pt')
    return folder / 'teacher.pt', folder / 'graph.pt'


def _distill(files, out: Path, monkeypatch, **kwargs):
    """api.distill without export; returns the report and the student's
    weights (the best epoch's)."""
    students = []
    real_fit = distill_workflow.fit

    def recording_fit(model, *args, **kw):
        students.append(model)
        return real_fit(model, *args, **kw)

    monkeypatch.setattr(distill_workflow, 'fit', recording_fit)
    teacher, graph = files
    options = dict(data=graph, method='kd', hidden=8, epochs=EPOCHS,
                   out=out, progress=False, export=False)
    report = api.distill(teacher, **{**options, **kwargs})
    monkeypatch.setattr(distill_workflow, 'fit', real_fit)
    state = {k: v.clone() for k, v in students[-1].state_dict().items()}
    return report, state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Same seed, same machine ----------------------------------------------------

@pytest.mark.parametrize('method', ['kd', 'g-crd'])
def test_same_seed_gives_bit_identical_students(files, tmp_path, monkeypatch,
                                                method):
    first, a = _distill(files, tmp_path / 'a', monkeypatch, method=method)
    second, b = _distill(files, tmp_path / 'b', monkeypatch, method=method)
    _, c = _distill(files, tmp_path / 'c', monkeypatch, method=method,
                    seed=1)

    assert first.training['best_epoch'] > 5  # not the untrained student
    assert _same(a, b)
    assert first.student.test_accuracy == second.student.test_accuracy
    assert not _same(a, c)  # the seed does matter


# Checkpoints and resume in one process ----------------------------------------

class _Interrupted(Exception):
    pass


def _interrupt_at(monkeypatch, stop_epoch: int,
                  error: type[BaseException] = _Interrupted) -> None:
    """Make the run die at the start of ``stop_epoch``'s update, as a kill
    (or with ``KeyboardInterrupt``, Ctrl-C) would."""
    real = loop.check_finite

    def check(loss, terms, epoch, who=''):
        if epoch == stop_epoch:
            raise error
        return real(loss, terms, epoch, who)

    monkeypatch.setattr(loop, 'check_finite', check)


@pytest.mark.parametrize('method', METHODS)
def test_resumed_run_matches_an_uninterrupted_one(files, tmp_path,
                                                  monkeypatch, method):
    full_report, full = _distill(files, tmp_path / 'full', monkeypatch,
                                 method=method)
    out = tmp_path / 'cut'
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 27)
        with pytest.raises(_Interrupted):
            _distill(files, out, mp, method=method, checkpoint_every=8)
    saved = torch.load(out / resume.DEFAULT_FOLDER / resume.FILE_NAME,
                       weights_only=True)
    assert saved['epoch'] == 24 and len(saved['history']) == 24
    # The best epoch comes before the checkpoint, so the resumed run must
    # also have restored the selection to end with it.
    assert full_report.training['best_epoch'] <= 24

    report, resumed = _distill(files, out, monkeypatch, method=method,
                               resume=out)

    assert _same(full, resumed)
    assert report.training['best_epoch'] == full_report.training['best_epoch']
    assert report.training['epochs_run'] == EPOCHS
    assert not (out / resume.DEFAULT_FOLDER).exists()  # removed on success


def test_checkpoint_every_k_epochs_holds_the_run(files, tmp_path,
                                                  monkeypatch):
    folder = tmp_path / 'ckpts'
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 8)
        with pytest.raises(_Interrupted):
            _distill(files, tmp_path / 'out', mp, method='fitnet',
                     checkpoint_every=3, checkpoint_dir=folder)
    state = torch.load(folder / resume.FILE_NAME, weights_only=True)

    assert state['epoch'] == 6 and state['every'] == 3
    assert [h['epoch'] for h in state['history']] == [1, 2, 3, 4, 5, 6]
    assert state['selection']['best_epoch'] == max(
        range(1, 7), key=lambda e: (state['history'][e - 1]['val'], -e))
    assert any(k.startswith('projections.') for k in state['method'])
    assert state['optimizer']['state']  # Adam's moments
    assert json.loads(state['run']['student'])['hidden_channels'] == 8
    assert state['run']['seed'] == 0
    assert sorted(p.name for p in folder.iterdir()) == [resume.FILE_NAME]
    assert not (tmp_path / 'out').exists()  # nothing half-written

    # Resumed through the named folder, which is kept afterwards.
    report, _ = _distill(files, tmp_path / 'out', monkeypatch,
                         method='fitnet', resume=folder)
    assert report.training['epochs_run'] == EPOCHS
    assert torch.load(folder / resume.FILE_NAME,
                      weights_only=True)['epoch'] == 30


def test_resume_refuses_another_run(files, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 5)
        with pytest.raises(_Interrupted):
            _distill(files, out, mp, checkpoint_every=2)

    with pytest.raises(CheckpointError, match=r'another run \(seed was 0, '
                                              r'now 1\)'):
        _distill(files, out, monkeypatch, seed=1, resume=out)
    with pytest.raises(CheckpointError, match=r'another run \(lr was 0.01'):
        _distill(files, out, monkeypatch, lr=0.02, resume=out)


def test_resume_without_a_checkpoint(files, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match='No training checkpoint in'):
        _distill(files, tmp_path / 'out', monkeypatch, resume=tmp_path)


def test_corrupt_training_checkpoint(files, tmp_path, monkeypatch):
    (tmp_path / resume.FILE_NAME).write_bytes(b'PK\x03\x04 not a zip')

    with pytest.raises(CheckpointError, match='cannot be read'):
        _distill(files, tmp_path / 'out', monkeypatch, resume=tmp_path)


def test_checkpoint_dir_and_resume_must_agree(files, tmp_path, monkeypatch):
    torch.save({'kind': 'x'}, tmp_path / resume.FILE_NAME)

    with pytest.raises(OutputError, match='different checkpoints'):
        _distill(files, tmp_path / 'out', monkeypatch, resume=tmp_path,
                 checkpoint_dir=tmp_path / 'other')


# Killed for real -------------------------------------------------------------

# Runs the CLI in a child process that blocks (after writing a marker) when
# epoch STOP begins, so that the test can SIGKILL it mid-training.
_CHILD = '''
import sys, time
from pathlib import Path
import gnncompress.training.loop as loop
real = loop.check_finite
def check(loss, terms, epoch, who=''):
    if epoch == int(sys.argv[1]):
        Path(sys.argv[2]).write_text('blocked')
        time.sleep(600)
    return real(loss, terms, epoch, who)
loop.check_finite = check
from gnncompress.cli import app
app(sys.argv[3:])
'''


def test_sigkilled_run_resumes_to_the_same_student(files, tmp_path,
                                                    monkeypatch):
    teacher, graph = files
    _, full = _distill(files, tmp_path / 'full', monkeypatch, method='g-crd')
    out, marker = tmp_path / 'out', tmp_path / 'blocked'
    args = ['distill', str(teacher), '--data', str(graph), '--hidden', '8',
            '--method', 'g-crd', '--epochs', str(EPOCHS), '--out', str(out),
            '--no-progress', '--checkpoint-every', '5']
    env = {**os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': str(ROOT) + os.pathsep +
           os.environ.get('PYTHONPATH', '')}
    child = subprocess.Popen([sys.executable, '-c', _CHILD, '13',
                              str(marker), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), child.communicate(timeout=5)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    folder = out / resume.DEFAULT_FOLDER
    assert sorted(p.name for p in out.iterdir()) == [resume.DEFAULT_FOLDER]
    assert torch.load(folder / resume.FILE_NAME,
                      weights_only=True)['epoch'] == 10

    result = CliRunner().invoke(app, [*args, '--resume', str(out)])

    assert result.exit_code == 0, result.output
    assert _same(full, load_file(out / 'student.safetensors'))
    assert not folder.exists()


# A loss that stops being finite ---------------------------------------------

def test_nan_loss_keeps_the_last_good_student(files, tmp_path, monkeypatch):
    from gnncompress.methods.kd import KD

    nan_epoch = 25
    # The run up to the epoch before the NaN: its best student is the one
    # the diverging run must keep.
    _, good = _distill(files, tmp_path / 'short', monkeypatch,
                       epochs=nan_epoch - 1)
    real_loss, calls = KD.loss, []

    def loss(self, *args):
        calls.append(1)
        value = real_loss(self, *args)
        return value * float('nan') if len(calls) >= nan_epoch else value

    monkeypatch.setattr(KD, 'loss', loss)
    out = tmp_path / 'out'
    with pytest.raises(TrainingError) as info:
        _distill(files, out, monkeypatch)

    message = str(info.value)
    assert f'at epoch {nan_epoch} (ce=' in message and 'kd=nan' in message
    assert str(out / 'student.safetensors') in message
    assert '\n' not in message
    # The kept student and a report saying what happened.
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.safetensors']
    assert json.loads((out / 'report.json').read_text())['status'] == \
        'failed'
    kept = load_file(out / 'student.safetensors')
    assert _same(good, kept)
    assert info.value.best_epoch == \
        int(_metadata(out / 'student.safetensors')['gnncompress.best_epoch'])


def test_nan_at_the_first_epoch_writes_nothing(files, tmp_path, monkeypatch):
    from gnncompress.methods.kd import KD

    monkeypatch.setattr(KD, 'loss', lambda self, t, s, g:
                        s.logits.sum() * float('nan'))
    with pytest.raises(TrainingError, match='no epoch finished, so no '
                                            'student was written'):
        _distill(files, tmp_path / 'out', monkeypatch)
    assert not (tmp_path / 'out').exists()


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework='pt') as f:
        return f.metadata()


# Ctrl-C ----------------------------------------------------------------------

def test_ctrl_c_prints_the_resume_command(files, tmp_path, monkeypatch):
    """Ctrl-C after a checkpoint: one line with the exact command that
    resumes the run, exit code 130 (issue 24: it exited silently)."""
    teacher, graph = files
    real_after_epoch = resume.TrainingCheckpoint.after_epoch

    def interrupt_at_epoch_3(self, epoch, *args, **kwargs):
        real_after_epoch(self, epoch, *args, **kwargs)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume.TrainingCheckpoint, 'after_epoch',
                        interrupt_at_epoch_3)
    out = tmp_path / 'my out'
    args = ['distill', str(teacher), '--data', str(graph), '--hidden', '8',
            '--epochs', '6', '--out', str(out), '--no-progress',
            '--checkpoint-every', '2', '--no-latency']
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 130, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    folder = out / resume.DEFAULT_FOLDER
    assert lines[0] == (
        'Interrupted; the training checkpoint is kept. Resume with: '
        f"gnncompress distill {teacher} --data {graph} --hidden 8 --epochs 6 "
        f"--out '{out}' --no-progress --checkpoint-every 2 --no-latency "
        f"--resume '{folder}'")
    assert torch.load(folder / resume.FILE_NAME,
                      weights_only=True)['epoch'] == 2

    monkeypatch.setattr(resume.TrainingCheckpoint, 'after_epoch',
                        real_after_epoch)
    again = CliRunner().invoke(app, [*args, '--resume', str(folder)])
    assert again.exit_code == 0, again.output


def test_ctrl_c_before_the_first_checkpoint(files, tmp_path, monkeypatch):
    teacher, graph = files

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(resume.TrainingCheckpoint, 'after_epoch', interrupt)
    result = CliRunner().invoke(app, [
        'distill', str(teacher), '--data', str(graph), '--hidden', '8',
        '--epochs', '6', '--out', str(tmp_path / 'o'), '--no-progress',
        '--checkpoint-every', '2', '--no-latency'])
    assert result.exit_code == 130
    assert result.output.strip() == (
        'Interrupted before the first training checkpoint was written: run '
        'the same command again to start over.')
