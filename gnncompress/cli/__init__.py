"""The command line: parse options, call one API function, print."""
import importlib
import os

# OpenMP's worker threads spin between parallel regions unless told to
# sleep. On a small or busy machine the spinning takes the cores the work
# needs: the Cora quick start's wall time fell to about a third with
# PASSIVE on 2 shared cores (docs/BENCHMARKS.md, "Command overhead"). It
# must be set before torch loads OpenMP; a user's own setting wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from gnncompress.cli.common import api, app

__all__ = ['api', 'app', 'main']

# Each module registers its command when imported, in the order --help
# lists them.
COMMANDS = ('distill', 'teacher', 'export', 'bench', 'cotrain',
            'amalgamate', 'datasets')
for _name in COMMANDS:
    importlib.import_module(f'gnncompress.cli.{_name}')


def main() -> None:
    """The `gnncompress` console script (gnncompress.cli.process)."""
    from gnncompress.cli import process
    process.main(app)
