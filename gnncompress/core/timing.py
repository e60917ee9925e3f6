"""Where a command's wall time goes: named, non-overlapping phases.

A command opens a :func:`timed_run`; the code it calls marks its work with
``with phase('export'):``. A phase opened inside another pauses the outer
one, so the figures add up to the time the phases covered; ``other`` is
the rest of the run (argument checks, file moves, report writing). Outside
a timed run, ``phase`` costs nothing and records nothing.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Phases:
    """Seconds per phase name, accumulated over the run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._open: list[tuple[str, float]] = []
        self._announced: set[str] = set()

    def _add(self, name: str, since: float, now: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - since)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        listener = _listener.get()
        if listener is not None and name not in self._announced:
            self._announced.add(name)  # once per name and run
            listener(name)
        now = time.perf_counter()
        if self._open:  # pause the enclosing phase
            outer, since = self._open[-1]
            self._add(outer, since, now)
        self._open.append((name, now))
        try:
            yield
        finally:
            now = time.perf_counter()
            _, since = self._open.pop()
            self._add(name, since, now)
            if self._open:  # resume the enclosing phase
                self._open[-1] = (self._open[-1][0], now)

    def breakdown(self) -> dict[str, float]:
        """Each phase's seconds, ``other`` and ``total`` so far (rounded
        to milliseconds)."""
        total = time.perf_counter() - self.start
        covered = sum(self.seconds.values())
        out = {name: round(s, 3) for name, s in self.seconds.items()}
        out['other'] = round(max(0.0, total - covered), 3)
        out['total'] = round(total, 3)
        return out


_current: ContextVar[Phases | None] = ContextVar('gnncompress_phases',
                                                 default=None)
# Told each phase's name the first time a run enters it (the command
# line's status lines); None: no one listens.
_listener: ContextVar[Callable[[str], None] | None] = ContextVar(
    'gnncompress_phase_listener', default=None)


@contextmanager
def announce_phases(listener: Callable[[str], None] | None
                    ) -> Iterator[None]:
    """Call ``listener(name)`` when a run first enters each phase."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def timed_run() -> Iterator[Phases]:
    """Time the phases of one command (nested runs share the outer one)."""
    existing = _current.get()
    if existing is not None:
        yield existing
        return
    phases = Phases()
    token = _current.set(phases)
    try:
        yield phases
    finally:
        _current.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the enclosed work as ``name`` in the current timed run."""
    phases = _current.get()
    if phases is None:
        yield
        return
    with phases.phase(name):
        yield


def breakdown() -> dict[str, float]:
    """The current run's breakdown (empty outside a timed run)."""
    phases = _current.get()
    return phases.breakdown() if phases is not None else {}
