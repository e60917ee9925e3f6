"""`gnncompress datasets`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.common import Command, app, call
from gnncompress.core.catalogue import dataset_table, default_root


@app.command(cls=Command)
def datasets(
    data_root: Annotated[Optional[Path], typer.Option(
        help='Look in this folder (PyG layout) instead of the cache '
        '(default: the cache, $GNNCOMPRESS_CACHE/datasets or the user cache '
        'folder).')] = None,
) -> None:
    """List the dataset names --data takes, where each is kept and whether
    it is there (a missing one downloads on first use when a network
    exists)."""
    from tabulate import tabulate

    base = default_root() if data_root is None else data_root.expanduser()
    call(_check_root, base)
    rows = [[e.name, e.task, e.here, '-' if e.folder is None else str(e.folder)]
            for e in dataset_table(base)]
    typer.echo(tabulate(rows, headers=['dataset', 'task', 'here', 'folder']))
    where = ('--data-root' if data_root is not None else
             '$GNNCOMPRESS_CACHE' if os.environ.get('GNNCOMPRESS_CACHE')
             else 'the default cache; set GNNCOMPRESS_CACHE to move it')
    typer.echo(f'\n{base} ({where}). --data also takes a saved '
               'torch_geometric Data file.')


def _check_root(base: Path) -> None:
    from gnncompress.core.errors import DataError

    if base.exists() and not base.is_dir():
        raise DataError(f'--data-root {base} is a file, not a folder: pass '
                        'the folder that holds the datasets')
