"""What the tool knows by name (architectures, methods, datasets), as plain
strings: the help text reads them without importing torch, and the
registries that do the work are checked against them
(tests/test_catalogue.py), so each list has one source."""
from __future__ import annotations

from collections.abc import Iterable

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
DISTILL_METHODS = ('abkd', 'at', 'fitnet', 'g-crd', 'glnn', 'gsp', 'kd',
                   'lsp')
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

# Dataset names --data takes (data.py, inductive.py, pointdata.py load
# them); a saved Data file works too.
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
