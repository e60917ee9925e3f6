"""A run's frame: output folders staged and swapped in whole, devices, seeds,
versions, timing of a command, training checkpoints, and what a failed run
keeps."""
from __future__ import annotations

import contextlib
import functools
import inspect as _inspect
import json
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gnncompress import __version__
from gnncompress.checkpoints.students import save_safetensors
from gnncompress.core import out_folder as outputs
from gnncompress.core.errors import (
    GnnCompressError,
    OutputError,
    RunInterrupted,
    TrainingError,
)
from gnncompress.core.options import check_path_length
from gnncompress.core.timing import timed_run
from gnncompress.models import ArchSpec
from gnncompress.outputs.latency import REPORT_BUDGET_S, latency_budget
from gnncompress.training.resume import (
    DEFAULT_FOLDER as DEFAULT_CHECKPOINT_FOLDER,
)
from gnncompress.workflows.settings import CommandSettings

# Outputs or weights beyond this leave float32 fewer than 1e-4 of absolute
# precision at 7 digits: the ONNX parity check cannot pass.
OVERFLOW = 1e6


@contextlib.contextmanager
def staged_output(out: Path, owned: frozenset[str] = outputs.RUN_FILES,
                  ) -> Iterator[Path]:
    """A fresh folder beside ``out`` that takes the place of ``out`` in one
    rename when the block succeeds (:mod:`gnncompress.core.out_folder`), so a
    failed or killed run leaves ``out`` as it was."""
    out = Path(out)
    check_writable(out)
    with outputs.staged(out, owned) as stage:
        yield stage


def check_writable(out: Path) -> None:
    """Fail before any training if ``out`` cannot be written; creates
    nothing."""
    out = Path(out)
    check_path_length(out, '--out')
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f'Output folder {out} is a file: choose '
                              f'another --out')
        anchor = out
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            raise OutputError(f'Output folder {out} cannot be written: '
                              f'{anchor} is a file; choose another --out')
        shutil.rmtree(tempfile.mkdtemp(prefix='.gnncompress-', dir=anchor))
    except OSError as e:
        raise OutputError(f'Output folder {out} cannot be written '
                          f'({e.strerror}): choose another --out') from None


def run_inputs(*paths: str | Path | None) -> list[Path]:
    """The files among ``paths`` (``--data`` may be a dataset name)."""
    return [Path(p) for p in paths if p is not None and Path(p).exists()]


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f'Folder {folder} cannot be created '
                          f'({e.strerror}): choose another output') from None


def resolve_device(device: str) -> torch.device:
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device not in ('cpu', 'cuda') and not device.startswith('cuda:'):
        raise GnnCompressError(f"Unknown device '{device}' (choose from auto, "
                               f'cpu, cuda)')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise GnnCompressError("Device 'cuda' requested but CUDA is not "
                               'available: use --device cpu or auto')
    return torch.device(device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def versions() -> dict[str, str]:
    import onnxruntime
    import torch_geometric
    return {'gnncompress': __version__, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__,
            'onnxruntime': onnxruntime.__version__,
            'python': platform.python_version()}


def timed_command(fn):
    """A command whose report records where its time went (``timings``)
    and whose latency figures follow its ``latency`` and
    ``latency_budget_s`` arguments, or those of the settings object
    (:mod:`gnncompress.workflows.settings`) it is called with."""
    signature = _inspect.signature(fn)
    own = {'latency', 'latency_budget_s'} - set(signature.parameters)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        # a function without these arguments leaves them to this wrapper
        taken = {k: kwargs.pop(k) for k in own if k in kwargs}
        if len(args) == 1 and isinstance(args[0], CommandSettings):
            given = args[0].options()
        else:
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:  # the command says what it does not take
                bound = kwargs
            given = {**bound, **taken}
        enabled = given.get('latency', True)
        budget = given.get('latency_budget_s', REPORT_BUDGET_S)
        if not (isinstance(budget, (int, float)) and budget >= 0):
            raise GnnCompressError(f'--latency-budget-s must be a number of '
                                   f'seconds >= 0 (got {budget!r})')
        with timed_run(), latency_budget(float(budget), bool(enabled)):
            return fn(*args, **kwargs)
    return run


def training_checkpoint(out: Path, every: int | None,
                        folder: str | Path | None, resume: str | Path | None,
                        **run: Any):
    """The :class:`~gnncompress.training.resume.TrainingCheckpoint` that
    ``--checkpoint-every``, ``--checkpoint-dir`` and ``--resume`` ask for
    (``None`` when none of them is given)."""
    from gnncompress.training import resume as rs

    if every is None and resume is None:
        return None
    if resume is not None:
        found = rs.find_checkpoint(resume).parent
        folder = folder if folder is not None else found
        if Path(folder).resolve() != found.resolve():
            raise OutputError(f'--resume {resume} and --checkpoint-dir '
                              f'{folder} name different checkpoints: give '
                              f'one of them')
    folder = Path(folder) if folder is not None else \
        out / DEFAULT_CHECKPOINT_FOLDER
    return rs.TrainingCheckpoint(folder, every, rs.run_identity(**run),
                                 resume=resume is not None)


@contextlib.contextmanager
def interruptible(saver: Any) -> Iterator[None]:
    """Ctrl-C in a run that saves training checkpoints (``saver``, a
    :class:`~gnncompress.training.resume.TrainingCheckpoint`) becomes
    :class:`RunInterrupted`, which the CLI turns into the command that
    resumes the run."""
    try:
        yield
    except KeyboardInterrupt:
        if saver is None:
            raise
        raise RunInterrupted(saver.folder, saver.path.is_file()) from None


@contextlib.contextmanager
def kept_on_failure(saver: Any, model: torch.nn.Module, spec: ArchSpec,
                    out: Path, method: str, data: str,
                    rank: int = 0) -> Iterator[None]:
    """Around a distillation's training: a loss that stops being finite
    writes the best student so far (:func:`keep_last_good`; on rank 0
    alone), and Ctrl-C with a training checkpoint ``saver`` says how to
    resume (:func:`interruptible`)."""
    try:
        with interruptible(saver):
            yield
    except TrainingError as e:
        if rank != 0:
            raise
        raise keep_last_good(e, model, spec, out, method, data) from None


def finish_checkpoint(saver: Any, out: Path) -> None:
    """After a successful run: the default checkpoint folder inside
    ``out`` has served its turn."""
    if saver is not None and saver.folder == out / DEFAULT_CHECKPOINT_FOLDER:
        saver.remove()


def keep_last_good(error: TrainingError, model: torch.nn.Module,
                   spec: ArchSpec, out: Path, method: str,
                   data: str) -> TrainingError:
    """:func:`keep_best_student` for distill's students."""
    return keep_best_student(
        error, out, 'validation accuracy',
        lambda path, stopped: save_safetensors(
            model, spec, path, extra={'gnncompress.method': method,
                                      'gnncompress.data': data, **stopped}))


def keep_best_student(error: TrainingError, out: Path, score: str,
                      save: Callable[[Path, dict[str, str]], Any]
                      ) -> TrainingError:
    """The error of a run whose loss stopped being finite, after writing
    its best student so far (``fit`` put it back in the model) to
    ``out/student.safetensors`` with ``save(path, metadata)`` (the
    metadata say why and when the run stopped) and a failure report;
    nothing is written when no epoch finished. ``score`` names the
    selection score in the message."""
    if not error.best_epoch:
        return TrainingError(f'{error} (no epoch finished, so no student was '
                             f'written)')
    kept = TrainingError(
        f'{error}; the best student before it (epoch {error.best_epoch}, '
        f'{score} {100 * error.val_accuracy:.2f}%) is in '
        f"{out / 'student.safetensors'}")
    kept.best_epoch, kept.val_accuracy = error.best_epoch, error.val_accuracy
    with staged_output(out) as stage:
        save(stage / 'student.safetensors',
             {'gnncompress.stopped': str(error),
              'gnncompress.best_epoch': str(error.best_epoch)})
        write_failure(stage, out, kept, ['student.safetensors'],
                      best_epoch=error.best_epoch,
                      val_accuracy=error.val_accuracy)
    return kept


def write_failure(stage: Path, out: Path, error: Exception,
                  kept: list[str], **details: Any) -> None:
    """``report.json`` and ``report.md`` of a run that failed after it had
    something worth keeping (``kept``, files in ``stage``): what happened,
    so that the folder never passes for a finished run's."""
    record = {'status': 'failed', 'error': str(error),
              'files': {name: str(out / name) for name in kept},
              'command': command_line(), **details}
    (stage / 'report.json').write_text(
        json.dumps(record, indent=2, default=str) + '\n')
    (stage / 'report.md').write_text(
        f'# gnncompress run failed\n\n{error}\n\nKept: '
        f"{', '.join(kept)}.\n")


def command_line() -> str:
    return ' '.join(['gnncompress', *sys.argv[1:]])
