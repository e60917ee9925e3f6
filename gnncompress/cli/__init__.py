"""The command line: parse options, call one API function, print."""
import importlib

from gnncompress.cli.common import api, app

__all__ = ['api', 'app']

# Each module registers its command when imported, in the order --help
# lists them.
COMMANDS = ('distill', 'teacher', 'export', 'bench', 'cotrain',
            'amalgamate', 'datasets')
for _name in COMMANDS:
    importlib.import_module(f'gnncompress.cli.{_name}')
