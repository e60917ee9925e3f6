"""The ground floor: the Graph and the metrics. Imports nothing else of
gnncompress (an import-linter contract in pyproject.toml)."""
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy, micro_f1

__all__ = ['Graph', 'accuracy', 'micro_f1']
