"""Checks on numeric and naming options, shared by the API and the CLI:
each failure is a :class:`GnnCompressError` naming the option and the fix."""
from __future__ import annotations

import math
from pathlib import Path

from gnncompress.catalogue import COTRAIN_METHODS
from gnncompress.errors import GnnCompressError

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


def check_out(out: str | Path | None, flag: str = '--out') -> None:
    if out is not None and str(out).strip() == '':
        raise GnnCompressError(f"{flag} is empty: give a folder, e.g. "
                               f"{flag} gnncompress-out/run")


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


NAME_MAX = 255  # bytes in one path component on common file systems


def check_out_file(out: Path, flag: str = '--out') -> None:
    """An output file path: not a folder, no name longer than the file
    system allows."""
    # 20 bytes spare for the temporary name the file is written under
    long = [p for p in out.parts if len(p.encode()) > NAME_MAX - 20]
    if long:
        raise GnnCompressError(f'{flag} has a name of {len(long[0])} '
                               f'characters, longer than the file system '
                               f'allows: give a shorter name')
    if len(str(out.absolute()).encode()) > 4000:
        raise GnnCompressError(f'{flag} is a path of over 4,000 bytes: give '
                               f'a shorter path')
    if out.is_dir():
        raise GnnCompressError(f'{flag} {out} is a folder: give a file '
                               f'name inside it, e.g. {out / "model.onnx"}')
