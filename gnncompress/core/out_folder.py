"""The ``--out`` folder of a run: one run at a time, published all at once.

A run takes an exclusive lock on ``--out`` (``flock`` on the file
``.NAME.gnncompress-lock`` beside it, removed when the run ends) for its
whole length; a second run into the same folder fails at once with a
one-line error naming the pid that holds it. Its files are written into a
fresh folder beside ``--out``
(``.NAME.gnncompress-stage-XXXX``), which then takes the place of ``--out``
in one ``rename`` (``renameat2(RENAME_EXCHANGE)``; two renames where the
file system lacks it). Files in an earlier ``--out`` that a run does not
own (a training checkpoint, the user's own files) are carried over as hard
links; the files a run owns (:data:`RUN_FILES`, :data:`BENCH_FILES`)
never mix two runs. A kill
at any moment leaves ``--out`` as it was or wholly replaced, and the next
run into it removes the stage folders the killed one left, with a note.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gnncompress.core.errors import OutputError

LOCK_TAG = '.gnncompress-lock'
STAGE_TAG = '.gnncompress-stage-'
OLD_TAG = '.gnncompress-old-'
# Inside --out: the default training checkpoint folder, which survives.
CHECKPOINT_FOLDER = '.gnncompress-checkpoint'
# What a run writes into --out: an earlier run's copies are not carried
# over, so a folder never holds the report of one run beside the student
# of another. A bench run owns its bench files alone (it may measure the
# student files in its --out).
RUN_FILES = frozenset({'student.safetensors', 'student.onnx', 'report.json',
                       'report.md', 'onnx', 'training.png', 'widths.png'})
BENCH_FILES = frozenset({'bench.json', 'bench.md', 'bench.png',
                         'bench-sizes.png'})
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_HELD: dict[Path, int] = {}  # --out -> the descriptor holding its lock

F = TypeVar('F', bound=Callable[..., Any])


def _resolved(out: Path | str) -> Path:
    out = Path(out).resolve()
    if not out.name:
        raise OutputError(f'Output folder {out} is a file system root: '
                          f'choose a folder below it with --out')
    return out


def lock_file(out: Path | str) -> Path:
    """The lock file of ``out`` (beside it: ``out`` itself is replaced)."""
    out = _resolved(out)
    return out.parent / f'.{out.name}{LOCK_TAG}'


def claim(out: Path | str, inputs: Sequence[Path | str | None] = ()) -> None:
    """Make ``out`` this process's until :func:`release`: refuse an ``out``
    that holds one of the run's ``inputs``, take its lock (again in the
    same process is a no-op) and remove what killed runs left there. Ranks
    other than 0 of a distributed run write nothing and take no lock."""
    given, out = Path(out), _resolved(out)
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        # --out is replaced whole: the shell would be left in a folder
        # that no longer exists.
        raise OutputError(f'--out {given} is the current folder or holds '
                          f'it, which a run replaces whole: give a folder '
                          f'inside it, e.g. --out {given / "run"}')
    for item in inputs:
        if item is None:
            continue
        path = Path(item).resolve()
        if path == out or out in path.parents:
            raise OutputError(
                f'--out {out} holds {item}, an input of this run, which '
                f'the run would replace: choose another --out')
    if os.environ.get('RANK', '0') not in ('', '0') or out in _HELD:
        return
    fd = _HELD[out] = _lock(out)  # held at once: an interrupt from here
    os.ftruncate(fd, 0)           # on still releases it
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    record = os.environ.get(CLAIMS_ENV)
    if record:  # a rank of --nproc: its parent cleans up if it is killed
        with open(record, 'a') as f:
            f.write(f'{out}\n')
    _remove_stale(out)


# A file where the ranks of a --nproc run list the folders they claim.
CLAIMS_ENV = 'GNNCOMPRESS_CLAIMS'


def release_abandoned(record: Path | str) -> None:
    """The folders listed in ``record`` (:data:`CLAIMS_ENV`) whose
    claiming process is gone without releasing them (a rank killed while
    blocked in a collective): remove their lock file and what they
    staged, unless a process still holds the lock."""
    try:
        listed = set(Path(record).read_text().splitlines())
    except OSError:
        return
    for line in sorted(listed - {''}):
        out = Path(line)
        try:
            fd = os.open(lock_file(out), os.O_RDWR)
        except OSError:  # released as it should be
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # still held by a live process
            os.close(fd)
            continue
        _remove_stale(out)
        with contextlib.suppress(OSError):
            os.unlink(lock_file(out))
        os.close(fd)


def _lock(out: Path) -> int:
    """A descriptor of ``out``'s lock file, locked. The holder removes the
    file when it is done, so a lock taken on a file that has just been
    removed is given up and taken again on the new one."""
    path = lock_file(out)
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f'Output folder {out} cannot be written '
                              f'({e.strerror}): choose another --out') \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip()
            os.close(fd)
            raise OutputError(
                f'Output folder {out} is in use by another gnncompress run '
                f'(pid {holder or "unknown"}, lock {path}): wait for it to '
                f'end or choose another --out') from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release(out: Path | str) -> None:
    """Remove the lock file :func:`claim` made and give up its lock."""
    out = _resolved(out)
    fd = _HELD.pop(out, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.unlink(lock_file(out))
        os.close(fd)  # which releases the lock


def one_run(fn: F) -> F:
    """Release, when ``fn`` returns or raises, the output folders it
    claimed."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = set(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            for out in set(_HELD) - before:
                release(out)
    return wrapper  # type: ignore[return-value]


def _remove_stale(out: Path) -> None:
    """Stage folders of a killed run beside ``out`` (and, from versions
    that staged inside it, in ``out``): the lock says no run owns them."""
    pattern = f'.{glob.escape(out.name)}.gnncompress-*'
    stale = [p for p in out.parent.glob(pattern)
             if p.is_dir() and not p.is_symlink()]
    if out.is_dir():
        stale += [p for p in out.glob('.gnncompress-*')
                  if p.is_dir() and not p.is_symlink()
                  and p.name != CHECKPOINT_FOLDER]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        print(f'Note: removed {path}, left by an interrupted run',
              file=sys.stderr)


@contextlib.contextmanager
def staged(out: Path | str,
           owned: frozenset[str] = RUN_FILES) -> Iterator[Path]:
    """A fresh folder beside ``out`` that replaces ``out`` when the block
    succeeds; on failure ``out`` is untouched. Of what ``out`` held, the
    names in ``owned`` are the run's own and are not carried over."""
    out = _resolved(out)
    mine = out not in _HELD  # else the run claimed it and releases it
    claim(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f'.{out.name}{STAGE_TAG}',
                                      dir=out.parent))
        try:
            yield stage
            publish(stage, out, owned)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    except OSError as e:
        raise OutputError(f'Output folder {out} cannot be written '
                          f'({e.strerror}): choose another --out') from None
    finally:
        if mine:
            release(out)


def publish(stage: Path, out: Path,
            owned: frozenset[str] = RUN_FILES) -> None:
    """Put ``stage`` in the place of ``out``; ``stage`` then holds what
    ``out`` held (for the caller to remove)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp made it private
    if not out.exists():
        os.rename(stage, out)
        return
    if not out.is_dir():
        raise OutputError(f'Output folder {out} is a file: choose another '
                          f'--out')
    _carry(out, stage, owned)
    if _exchange(stage, out):
        return
    old = Path(tempfile.mkdtemp(prefix=f'.{out.name}{OLD_TAG}',
                                dir=out.parent))
    os.rename(out, old / 'out')
    os.rename(stage, out)
    os.rename(old, stage)


def _carry(out: Path, stage: Path, owned: frozenset[str]) -> None:
    """Hard links in ``stage`` to what ``out`` holds beyond the run's own
    files (``out`` stays whole until the exchange)."""
    for item in out.iterdir():
        target = stage / item.name
        if item.name in owned or target.exists() or \
                target.is_symlink():
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.copytree(item, target, symlinks=True,
                            copy_function=_link)
        else:
            _link(item, target)


def _link(src: Path | str, dst: Path | str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the
    system or the file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                          ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                     _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it on success and is
    removed on failure, so no half-written file is ever left."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                               suffix='.tmp')
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
