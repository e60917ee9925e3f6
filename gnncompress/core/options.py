"""Checks on numeric and naming options, shared by the API and the CLI:
each failure is a :class:`GnnCompressError` naming the option and the fix."""
from __future__ import annotations

import math
import os
from pathlib import Path

from gnncompress.core.catalogue import COTRAIN_METHODS
from gnncompress.core.errors import GnnCompressError

MAX_SEED = 2 ** 32 - 1


def _flag(name: str) -> str:
    return '--' + name.replace('_', '-')


def check_rate(name: str, value: float | None) -> None:
    """A learning rate, decay or loss weight: finite and not negative."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0:
        raise GnnCompressError(f'{_flag(name)} must be a finite number >= 0 '
                               f'(got {value}): give e.g. {_flag(name)} 0.01')


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise GnnCompressError(f'--seed must be between 0 and {MAX_SEED} '
                               f'(got {seed}): give a smaller seed')


def check_ratio(ratio: float | None) -> None:
    """A compression ratio: the student at least this many times smaller,
    so above 1 (at 1 or below it would be as large as the teacher)."""
    if ratio is None:
        return
    if not math.isfinite(ratio) or ratio <= 1:
        raise GnnCompressError(f'--ratio must be a finite number above 1 '
                               f'(got {ratio}): give e.g. --ratio 4')


def check_method_name(name: str) -> None:
    """``a+b``: no empty and no repeated term."""
    terms = [t.strip().lower() for t in name.split('+')]
    if any(not t for t in terms):
        raise GnnCompressError(f"--method '{name}' has an empty term: give "
                               f"e.g. --method kd+fitnet")
    repeated = sorted({t for t in terms if terms.count(t) > 1})
    if repeated:
        raise GnnCompressError(f"--method '{name}' repeats "
                               f"{', '.join(repeated)}: name each method "
                               f"once (raise its weight with --weight or "
                               f"-o NAME.weight=W)")


def check_distill_method(name: str) -> None:
    """distill --method names no cotrain method (those train students
    that teach each other, with no teacher)."""
    online = {t.replace('-', '').replace('_', ''): t for t in COTRAIN_METHODS}
    for term in name.split('+'):
        key = term.strip().lower().replace('-', '').replace('_', '')
        if key in online:
            raise GnnCompressError(
                f"'{term.strip()}' is a cotrain method (students that teach "
                f'each other, no teacher): run gnncompress cotrain --method '
                f'{online[key]}, or pick a distill method (gnncompress '
                f'distill --list-methods)')


def check_out(out: str | Path | None, flag: str = '--out',
              example: str = 'gnncompress-out/run') -> None:
    """An output path as given: not empty (``Path('')`` is the current
    folder, which a run would replace) and no name longer than the file
    system allows."""
    if out is None:
        return
    if str(out).strip() == '':
        kind = 'a file' if Path(example).suffix else 'a folder'
        raise GnnCompressError(f"{flag} is empty: give {kind}, e.g. "
                               f"{flag} {example}")
    check_path_length(Path(out), flag)


def check_path_length(path: Path, flag: str) -> None:
    """Refuse, before the file system does (``Errno 36``), a name or a
    path longer than it allows."""
    # 40 bytes spare for the stage and temporary names written beside it
    long = [p for p in path.parts if len(p.encode()) > NAME_MAX - 40]
    if long:
        raise GnnCompressError(f'{flag} has a name of {len(long[0])} '
                               f'characters, longer than the file system '
                               f'allows: give a shorter name')
    if len(str(path.absolute()).encode()) > PATH_MAX:
        raise GnnCompressError(f'{flag} is a path of over {PATH_MAX:,} '
                               f'bytes: give a shorter path')


def check_training(*, lr: float, weight_decay: float,
                   seed: int, weight: float | None = None,
                   label_weight: float | None = None,
                   out: str | Path | None = None) -> None:
    """Every training option at once, before anything is loaded."""
    check_rate('lr', lr)
    check_rate('weight_decay', weight_decay)
    check_rate('weight', weight)
    check_rate('label_weight', label_weight)
    check_seed(seed)
    check_out(out)


def check_checkpointing(every: int | None, folder: str | Path | None,
                        resume: str | Path | None) -> None:
    """``--checkpoint-dir`` names where checkpoints go: alone it would
    save nothing."""
    if folder is not None and every is None and resume is None:
        raise GnnCompressError(
            '--checkpoint-dir saves nothing without --checkpoint-every: add '
            '--checkpoint-every N (epochs), or drop --checkpoint-dir')


NAME_MAX = 255  # bytes in one path component on common file systems
PATH_MAX = 4000  # bytes in a whole path (Linux allows 4,096)


def check_out_file(out: str | Path, flag: str = '--out',
                   example: str = 'model.onnx') -> None:
    """An output file path: not empty, not a folder, no name longer than
    the file system allows."""
    check_out(out, flag, example)
    out = Path(out)
    try:
        folder = out.is_dir()
    except OSError as e:  # a parent folder this user may not enter
        raise GnnCompressError(f'{flag} {out} cannot be reached '
                               f'({e.strerror}): give a path in a folder '
                               f'you can write to') from None
    if folder:
        raise GnnCompressError(f'{flag} {out} is a folder: give a file '
                               f'name inside it, e.g. {out / example}')


def memory_bytes() -> int:
    """The machine's physical memory."""
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def training_bytes(parameters: int, nodes: int, width: int,
                   layers: int) -> int:
    """A lower bound on what training a model takes: its weights,
    gradients and Adam's two moments (float32), and one activation and its
    gradient per layer and node."""
    return 16 * parameters + 8 * nodes * width * layers


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse, before anything is allocated, what cannot fit in this
    machine's memory (``--hidden 1000000000``, a 10^12-node
    ``--graph-size``), rather than fail in the allocator or swap."""
    total = memory_bytes()
    if needed > total:
        raise GnnCompressError(f'{what} needs at least {_size(needed)} of '
                               f'memory, more than the {_size(total)} of '
                               f'this machine: {fix}')


def _size(nbytes: float) -> str:
    """``25.3 GB``, ``66,400 TB``."""
    value, unit = nbytes / 1e9, 'GB'
    if value >= 1000:
        value, unit = value / 1000, 'TB'
    return f'{value:,.0f} {unit}' if value >= 100 else f'{value:.3g} {unit}'
