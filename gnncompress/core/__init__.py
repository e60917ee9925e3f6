"""The ground floor: the Graph and its parts, metrics, timing, errors, and
the names, defaults and option checks the help reads without torch.
Imports nothing else of gnncompress (an import-linter contract in
pyproject.toml). This file imports nothing, so ``gnncompress --help`` can
read the catalogue without importing torch."""
