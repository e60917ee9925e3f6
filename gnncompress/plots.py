"""Pictures of a run, drawn with matplotlib (Agg, imported only when a
picture is drawn, so that the CLI starts fast): the training curves of
``distill`` (``training.png``), the widths of ``amalgamate``
(``widths.png``) and the students of ``cotrain`` (``training.png``).
Each takes what the run's report holds. A picture is a convenience: when
one cannot be drawn, :func:`drawn` prints a one-line note and the run goes
on."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Small enough to open beside a terminal, large enough to read.
FIGSIZE = (6.0, 3.5)
DPI = 120


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG through a temporary file, and
    free it."""
    from gnncompress.export import atomic_path

    try:
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format='png', dpi=DPI)
    finally:
        pyplot().close(fig)


def drawn(name: str, draw: Callable[..., Any], *args: Any,
          **kwargs: Any) -> bool:
    """Call ``draw``; on any failure print one line naming the picture and
    why, and return False instead of failing the run."""
    try:
        draw(*args, **kwargs)
    except Exception as e:  # a picture never fails a run
        why = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
        print(f'Note: {name} was not drawn ({why}); the other outputs are '
              f'complete', file=sys.stderr)
        return False
    return True
