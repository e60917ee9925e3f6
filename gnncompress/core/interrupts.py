"""Interrupts the code below the CLI must not lose.

The `gnncompress` process turns Ctrl-C and SIGTERM into a
``KeyboardInterrupt`` (gnncompress.cli.process). Code that catches broad
exceptions around a third-party call can lose it: torch's ONNX exporter
turns an interrupt that lands inside its graph capture into a
``TypeError``, or tries another capture strategy and succeeds. The
signal handlers note each interrupt here, and such code calls
:func:`raise_if_requested` after the call, and in its ``except``.
"""
from __future__ import annotations

_requested = False


def request() -> None:
    """Note that the user asked this process to stop."""
    global _requested
    _requested = True


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt was noted, so that a
    caught or lost one still stops the run."""
    if _requested:
        raise KeyboardInterrupt
