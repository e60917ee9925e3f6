"""``python -m gnncompress``: the same commands as ``gnncompress``."""
from gnncompress.cli import main

if __name__ == '__main__':
    main()
