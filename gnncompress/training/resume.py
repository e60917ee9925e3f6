"""Training checkpoints: save a run every K epochs and resume it after an
interruption, ending with the very student an uninterrupted run gives.

A checkpoint holds everything the rest of the run depends on: the epoch, the
student's and the method's weights (FitNet maps, G-CRD heads, ABKD
projections), the optimiser state, the selection state (best weights, best
epoch, best score; the patience counter follows from them), the history and
the random number generators (torch's CPU generator and, when CUDA exists,
every CUDA generator; the regime's own generator, which shuffles batches)
and the learning-rate schedule. A run over several processes saves from
rank 0 alone, with every rank's generators
(:mod:`gnncompress.training.ranks`); every rank reads the file to resume,
which needs as many processes as wrote it. It holds only tensors and plain
containers, so it is read back with ``torch.load(weights_only=True)`` like
any checkpoint.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gnncompress.core.errors import CheckpointError, OutputError, clip

FILE_NAME = 'training.ckpt'
DEFAULT_FOLDER = '.gnncompress-checkpoint'
KIND = 'gnncompress.training-checkpoint'
VERSION = 1


def find_checkpoint(folder: Path | str) -> Path:
    """The checkpoint file that ``--resume FOLDER`` means: FOLDER may be the
    checkpoint folder itself or the output folder of the interrupted run."""
    folder = Path(folder)
    for candidate in (folder / FILE_NAME, folder / DEFAULT_FOLDER / FILE_NAME):
        # A run killed while it wrote its first checkpoint leaves only a
        # partial temporary file: it resumes from the start.
        if candidate.is_file() or partial_files(candidate.parent):
            return candidate
    raise CheckpointError(
        f'No training checkpoint in {folder} (looked for {FILE_NAME} there '
        f'and in {DEFAULT_FOLDER}/): pass the --out or --checkpoint-dir of '
        f'a run started with --checkpoint-every')


class TrainingCheckpoint:
    """Saves :func:`gnncompress.training.loop.fit`'s state every
    ``every`` epochs to ``folder/training.ckpt`` (temporary file, then
    rename: a kill never leaves a half-written checkpoint) and restores it
    when ``resume``.

    Args:
        folder (Path): Where the checkpoint lives.
        every (int, optional): Save after every ``every``-th epoch;
            :obj:`None` saves nothing (resume only).
        run (dict): What identifies the run (teacher, data, method, student,
            optimiser settings, seed): a resumed run must match it, or it
            would silently mix two runs.
        resume (bool): Read the checkpoint in ``folder`` and continue from
            it. (default: :obj:`False`)
    """

    def __init__(self, folder: Path | str, every: int | None,
                 run: dict[str, Any], resume: bool = False) -> None:
        if every is not None and every < 1:
            raise OutputError(f'--checkpoint-every must be at least 1 (got '
                              f'{every})')
        self.folder, self.every, self.run = Path(folder), every, run
        self.path = self.folder / FILE_NAME
        first = os.environ.get('RANK', '0') in ('', '0')
        partial = partial_files(self.folder)
        if first and os.environ.get('WORLD_SIZE', '1') in ('', '1'):
            # A kill in the middle of a write. (With several processes the
            # others may still be reading the folder: remove() takes them.)
            for leftover in partial:
                leftover.unlink(missing_ok=True)
        if resume and partial and not self.path.is_file():
            if first:
                print(f'Note: {self.folder} holds no complete checkpoint, '
                      f'only one whose writing was interrupted (removed): '
                      f'the run starts from its first epoch',
                      file=sys.stderr)
            resume = False
        self.state = self._read() if resume else None
        if self.state is not None and self.every is None:
            self.every = self.state.get('every')

    # Reading ------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            state = torch.load(self.path, map_location='cpu',
                               weights_only=True)
        except Exception as e:  # noqa: BLE001 -- any failure means corrupt
            from gnncompress.core.errors import error_line
            raise CheckpointError(
                f'Training checkpoint {self.path} cannot be read '
                f'({error_line(e)}): delete it and start again without '
                f'--resume') from None
        if not isinstance(state, dict) or state.get('kind') != KIND or \
                state.get('version') != VERSION:
            raise CheckpointError(
                f'{self.path} is not a gnncompress training checkpoint of '
                f'version {VERSION}: start again without --resume')
        saved = state.get('run', {})
        for key in sorted(set(saved) | set(self.run)):
            if saved.get(key) != self.run.get(key):
                raise CheckpointError(
                    f'The checkpoint in {self.folder} belongs to another run '
                    f'({key} was {saved.get(key)!r:.60}, now '
                    f'{self.run.get(key)!r:.60}): repeat the options of the '
                    f'interrupted run, or start again without --resume')
        return state

    def restore(self, student: nn.Module, method: nn.Module | None,
                optimizer: torch.optim.Optimizer, selection: Any,
                ) -> tuple[int, list[dict[str, float]], float]:
        """Load the saved state into the run's objects; returns the last
        finished epoch, the history and the seconds trained so far (0,
        [] and 0.0 when there is nothing to resume)."""
        if self.state is None:
            return 0, [], 0.0
        state = self.state
        try:
            student.load_state_dict(state['student'])
            if method is not None:
                method.load_state_dict(state['method'])
            optimizer.load_state_dict(state['optimizer'])
            selection.load_state_dict(state['selection'])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f'Training checkpoint {self.path} does not fit this run '
                f'({clip(str(e), 160)}): start again without '
                f'--resume') from None
        torch.set_rng_state(state['rng']['cpu'])
        if torch.cuda.is_available() and state['rng']['cuda']:
            torch.cuda.set_rng_state_all(state['rng']['cuda'])
        return (int(state['epoch']), [dict(h) for h in state['history']],
                float(state['seconds']))

    def extra(self) -> dict[str, Any]:
        """What the loop saved beside the weights (the regime's random
        state, the schedule's state); empty when there is nothing to
        resume."""
        return {} if self.state is None else dict(self.state.get('extra', {}))

    # Writing ------------------------------------------------------------

    def due(self, epoch: int) -> bool:
        """Whether :meth:`after_epoch` saves after ``epoch``."""
        return self.every is not None and epoch % self.every == 0

    def after_epoch(self, epoch: int, student: nn.Module,
                    method: nn.Module | None,
                    optimizer: torch.optim.Optimizer, selection: Any,
                    history: list[dict[str, float]], seconds: float,
                    extra: dict[str, Any] | None = None) -> None:
        """Save when ``epoch`` is a multiple of ``every``; ``extra`` holds
        the loop's other state (tensors and plain values only)."""
        if not self.due(epoch):
            return
        state = {
            'kind': KIND, 'version': VERSION, 'run': self.run,
            'every': self.every, 'epoch': epoch, 'seconds': seconds,
            'student': _cpu(student.state_dict()),
            'method': _cpu(method.state_dict()) if method is not None
            else {},
            'optimizer': optimizer.state_dict(),
            'selection': selection.state_dict(),
            'history': [dict(h) for h in history],
            'extra': extra or {},
            'rng': {'cpu': torch.get_rng_state(),
                    'cuda': torch.cuda.get_rng_state_all()
                    if torch.cuda.is_available() else []}}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f'.{FILE_NAME}.{os.getpid()}.tmp'
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        except OSError as e:
            raise OutputError(f'Training checkpoint {self.path} cannot be '
                              f'written ({e.strerror}): choose another '
                              f'--checkpoint-dir') from None

    def remove(self) -> None:
        """Delete the checkpoint (and its folder when it is left empty);
        rank 0's to do in a run over several processes."""
        if os.environ.get('RANK', '0') not in ('', '0'):
            return
        for leftover in [self.path, *partial_files(self.folder)]:
            leftover.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


def partial_files(folder: Path) -> list[Path]:
    """Temporary checkpoint files that a killed write left in ``folder``."""
    return sorted(folder.glob(f'.{FILE_NAME}.*.tmp')) if folder.is_dir() \
        else []


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to('cpu', copy=True) for k, v in state.items()}


def run_identity(**fields: Any) -> dict[str, Any]:
    """A run's identity as plain values (what a checkpoint may hold):
    anything that is not a string, number, bool or None becomes JSON."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or isinstance(value, (str, int, float, bool)):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out
