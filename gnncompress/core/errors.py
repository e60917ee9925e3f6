"""Errors a user can fix. The CLI turns each into a one-line message and
exit code 1; anything else is a bug and keeps its traceback."""

import re


def plural(count: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``: a count and its noun, agreed."""
    return f'{count} {word}' + ('' if count == 1 else 's')


class GnnCompressError(Exception):
    """Base class of every error the user can fix."""


class CheckpointError(GnnCompressError):
    """A checkpoint file is missing, unreadable, unsafe or not a model."""


class ArchitectureError(GnnCompressError):
    """The architecture cannot be inferred, or does not fit the data."""


class DataError(GnnCompressError):
    """A dataset cannot be found, loaded or split."""


class UnknownMethodError(GnnCompressError):
    """A distillation method name is not registered."""


class ExportError(GnnCompressError):
    """An export failed or does not match PyTorch."""


class OutputError(GnnCompressError):
    """The output folder cannot be written."""


class TrainingError(GnnCompressError):
    """Training diverged (NaN or infinite loss). ``best_epoch`` and
    ``val_accuracy`` describe the best student before it (epoch 0: none)."""
    best_epoch: int = 0
    val_accuracy: float = float('nan')


def clip(text: str, limit: int) -> str:
    """``text`` on one line and at most about ``limit`` characters, cut
    between words, never inside one (``...`` marks the cut)."""
    text = ' '.join(str(text).split())
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    cut = head.rfind(' ')
    return (head[:cut] if cut > 0 else text.split(' ', 1)[0]).rstrip(
        ',;:') + ' ...'


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run that saves training checkpoints: ``folder``
    holds the last one (``saved`` False: none was written yet)."""

    def __init__(self, folder: object, saved: bool) -> None:
        super().__init__(f'interrupted; training checkpoint in {folder}')
        self.folder, self.saved = folder, saved


def error_line(e: BaseException) -> str:
    """The most telling line of an exception's message, without colour
    codes (torch's weights-only errors put the cause on a later line)."""
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', line).strip()
             for line in str(e).strip().splitlines()]
    lines = [line for line in lines if line] or [type(e).__name__]
    for line in lines:
        if 'Unsupported global' in line or 'Unsupported operand' in line:
            return clip(line, 200)
    return clip(lines[0], 200)


_MEMORY_SIGNS = ('out of memory', 'not enough memory', 'defaultcpuallocator',
                 'you tried to allocate')


def out_of_memory(e: BaseException) -> str | None:
    """A one-line message with the fix when ``e`` says memory ran out
    (``MemoryError``, ``torch.OutOfMemoryError`` or an allocator's
    ``RuntimeError``); None for any other error."""
    text = str(e).lower()
    if not (isinstance(e, MemoryError)
            or type(e).__name__ == 'OutOfMemoryError'
            or (isinstance(e, RuntimeError)
                and any(sign in text for sign in _MEMORY_SIGNS))):
        return None
    return ('Ran out of memory: give a smaller --hidden, a --batch-size '
            '(or a smaller one), fewer --layers, or --device cpu for a GPU '
            f'that is too small ({clip(error_line(e), 120)})')
