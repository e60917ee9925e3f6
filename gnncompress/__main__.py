"""``python -m gnncompress``: the same commands as ``gnncompress``."""
from gnncompress.cli import app

if __name__ == '__main__':
    app(prog_name='gnncompress')
