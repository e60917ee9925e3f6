"""The `gnncompress` process itself: how it starts and how it ends.

Two costs of a short command have nothing to do with its work
(docs/BENCHMARKS.md, "Command overhead"; `benchmarks/process_costs.py`):

- **The collector during the imports.** Importing torch, PyG and
  onnxruntime makes millions of objects, and Python's cyclic garbage
  collector walks all of them each time it runs a full collection: about
  0.5 s of the Cora quick start, spent finding almost nothing. :func:`main`
  pauses the collector while the command line parses its options (the
  options' checks do the heavy imports), then freezes what the imports made
  (:func:`gc.freeze`) and resumes it before the command runs, so the
  command's own garbage is collected as usual and later collections skip
  the frozen objects.
- **The interpreter's teardown.** At exit Python frees those objects
  module by module, about 1 s. Once the command has finished, its output
  is flushed and the ``atexit`` handlers have run, :func:`main` ends the
  process at once (:func:`os._exit`), unless a thread that is not a daemon
  is still running, which a normal exit would wait for.

Only the console script and ``python -m gnncompress`` go through
:func:`main`; a script or test that calls the Typer app, or the API,
keeps Python's usual behaviour.
"""
from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from typing import Any, NoReturn

from gnncompress.core import interrupts

_paused = False


def pause_collector() -> None:
    """Stop cyclic garbage collection until :func:`resume_collector`."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collector() -> None:
    """Undo :func:`pause_collector` (nothing if it did not pause): freeze
    the objects made so far, then collect again."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def exit_code(code: Any) -> int:
    """The status :func:`sys.exit` gives for ``code``: ``None`` is 0, an
    integer itself, anything else is printed and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def finish(code: Any) -> NoReturn:
    """End the process with ``code`` after the ``atexit`` handlers and a
    flush of stdout and stderr, skipping the interpreter's teardown."""
    status = exit_code(code)
    if _terminated and status != 0:
        status = TERMINATED_EXIT_CODE
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(status)  # a normal exit waits for them
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed stream
            pass
    _flush_c_streams()
    os._exit(status)


def _flush_c_streams() -> None:
    """Flush the C library's buffered streams too: native code (NCCL's
    or MKL's verbose output) writes through them, and ``os._exit`` does
    not flush them."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask
        pass


# Exit status after SIGTERM, as shells report a process it ended.
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job's timeout, ``kill``) ends the command as Ctrl-C
    does: the interrupt unwinds the run, so what it was writing is removed
    and its output folder's lock released. A second SIGTERM ends the
    process at once."""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    interrupts.request()
    raise KeyboardInterrupt


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C, as Python's own handler, noted for code that could lose it
    (gnncompress.core.interrupts)."""
    interrupts.request()
    raise KeyboardInterrupt


def main(app: Any) -> NoReturn:
    """Run the Typer ``app`` as the `gnncompress` command."""
    # A parent that chose to ignore a signal keeps it ignored.
    for number, handler in ((signal.SIGTERM, _on_sigterm),
                            (signal.SIGINT, _on_sigint)):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, handler)
    pause_collector()
    try:
        app(prog_name='gnncompress')
    except SystemExit as e:
        finish(e.code)
    finally:
        resume_collector()  # an exception on its way out
    finish(0)
