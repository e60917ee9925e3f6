"""What the tool knows by name (architectures, methods, datasets), as plain
strings: the help text reads them without importing torch, and the
registries that do the work are checked against them
(tests/core/test_catalogue.py), so each list has one source."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Layouts of torch_geometric.nn.models.BasicGNN subclasses.
BASIC_GNN_ARCHS = ('gcn', 'gat', 'gatv2', 'sage', 'gin')
# Every node-classification architecture (models/spec.py, build.py).
ARCHS = (*BASIC_GNN_ARCHS, 'gcnii', 'mlp')
# Point-cloud models: a kNN graph rebuilt from the features in every layer.
POINT_ARCHS = ('dgcnn',)
# What train-teacher trains and distill builds as a student.
STUDENT_ARCHS = (*ARCHS, *POINT_ARCHS)
# Message-passing layers of a slimmable student (amalgamate) and of the
# cotrain peers.
SLIMMABLE_ARCHS = BASIC_GNN_ARCHS
# Teachers amalgamate merges, in any mix.
AMALGAMATE_TEACHERS = (*BASIC_GNN_ARCHS, 'gcnii')
# How the help and the docs spell each architecture.
ARCH_NAMES = {'gcn': 'GCN', 'gat': 'GAT', 'gatv2': 'GATv2',
              'sage': 'GraphSAGE', 'gin': 'GIN', 'gcnii': 'GCNII',
              'mlp': 'MLP', 'dgcnn': 'DGCNN'}

# distill --method: registered methods that distil a teacher into a
# student (their one-line summaries live on the classes, methods/).
DISTILL_METHODS = ('abkd', 'adv', 'at', 'fitnet', 'g-crd', 'glnn', 'gsp',
                   'kd', 'lsp', 'position', 'rsd')
# cotrain --method: students teach each other, no teacher
# (online.METHODS maps each to its registered method).
COTRAIN_METHODS = {
    'alignahead': "each layer learns the peers' next-layer local structure "
                  '(cross-layer, cyclic)',
    'oc': "each layer learns the peers' same-layer local structure "
          '(Alignahead ablation)',
    'mutual': "KL to the adaptively weighted peers' logits",
    'self': 'each student trained alone (the no-distillation baseline)',
}

# Dataset names --data takes (tasks/datasets.py, inductive.py and
# point_clouds.py load them); a saved Data file works too.
NODE_DATASETS = ('Cora', 'CiteSeer', 'PubMed', 'Computers', 'Photo', 'CS',
                 'Physics')
GRAPH_DATASETS = ('MUTAG', 'PROTEINS', 'ENZYMES', 'NCI1', 'IMDB-BINARY')
# TU datasets whose node labels become an inductive node task (-nodes).
TU_NODE_TASKS = ('ENZYMES', 'PROTEINS', 'NCI1', 'MUTAG')
GRAPH_LIST_DATASETS = ('PPI', 'SyntheticPPI',
                       *(f'{n}-nodes' for n in TU_NODE_TASKS))
POINT_DATASETS = ('ModelNet10', 'ModelNet40', 'GeometricShapes')


def listed(items: Iterable[str], last: str = 'or') -> str:
    """``a, b, c or d``."""
    items = list(items)
    if len(items) < 2:
        return ''.join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def arch_names(archs: Iterable[str]) -> list[str]:
    return [ARCH_NAMES[a] for a in archs]


def dataset_names() -> list[str]:
    """Every dataset name --data takes."""
    return [*NODE_DATASETS, *GRAPH_DATASETS, *GRAPH_LIST_DATASETS,
            *POINT_DATASETS]


def default_root() -> Path:
    """Where datasets are downloaded and processed copies kept:
    ``$GNNCOMPRESS_CACHE/datasets``, else the user cache folder."""
    if os.environ.get('GNNCOMPRESS_CACHE'):
        return Path(os.environ['GNNCOMPRESS_CACHE']) / 'datasets'
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'gnncompress' / 'datasets'


def dataset_kind(name: str) -> str:
    if name in NODE_DATASETS:
        return 'node classification'
    if name in GRAPH_DATASETS:
        return 'graph classification'
    if name in GRAPH_LIST_DATASETS:
        return 'several graphs'
    return 'point clouds'


def dataset_places(name: str) -> list[Path]:
    """Where the loaders look for dataset ``name``, relative to the cache or
    a --data-root, the place it downloads to first; empty when it is
    generated (SyntheticPPI). The loaders read ``<place>/raw``
    (tasks/datasets.py, inductive.py, point_clouds.py)."""
    if name == 'SyntheticPPI':
        return []
    if name.endswith('-nodes'):
        name = name[:-len('-nodes')]
    if name == 'ModelNet10':
        return [Path('clouds/ModelNet10'), Path('ModelNet10'),
                Path('ModelNet10-PCD')]
    if name in POINT_DATASETS:
        return [Path('clouds') / name, Path(name)]
    return [Path(name)]


@dataclass
class DatasetEntry:
    """One row of ``gnncompress datasets``: a name --data takes, its task,
    whether it is in ``root`` (``'generated'`` when it never is a folder)
    and the folder it is (or would be) kept in."""
    name: str
    task: str
    here: str                # 'yes', 'no' or 'generated'
    folder: Path | None


def dataset_table(root: Path | None = None) -> list[DatasetEntry]:
    """Every dataset name --data takes, where it is kept under ``root``
    (default :func:`default_root`) and whether it is there: the Python side
    of ``gnncompress datasets``."""
    base = default_root() if root is None else Path(root).expanduser()
    rows = []
    for name in dataset_names():
        places = dataset_places(name)
        found = [p for p in places if (base / p / 'raw').is_dir()]
        rows.append(DatasetEntry(
            name, dataset_kind(name),
            'generated' if not places else 'yes' if found else 'no',
            base / (found or places)[0] if places else None))
    return rows
