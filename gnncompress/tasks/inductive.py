"""Inductive node classification over several graphs (the PPI setting):
datasets made of whole graphs assigned to training, validation and test,
single- or multi-label node targets and their label loss (training runs
over batches of whole training graphs:
:class:`gnncompress.training.regimes.graph_batches.GraphParts`).

Such a dataset is one :class:`~gnncompress.core.Graph` holding the disjoint
union of its graphs, with ``node_graph`` giving the graph of every node and
masks that select whole graphs. Message passing never crosses graphs, so a
teacher's output on the union is its output on every graph, computed once;
training only ever runs the student on training graphs (batches of whole
graphs), so validation and test graphs stay unseen until evaluation.

Multi-label targets (``y`` a 0/1 matrix ``[N, labels]``) are trained with
BCE-with-logits and scored by micro-averaged F1 with predictions ``logit >
0`` (``sigmoid > 0.5``, never ``logit > 0.5``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from gnncompress.core.catalogue import TU_NODE_TASKS, default_root
from gnncompress.core.errors import DataError
from gnncompress.core.graph import Graph
from gnncompress.tasks.pyg import (
    build_dataset,
    check_data,
    check_labels,
    working_copy,
)

SPLIT_NAMES = ('train', 'val', 'test')
MAX_DEGREE = 10   # one-hot degree features of the TU node tasks: 0..10+


# Names -----------------------------------------------------------------------

def graph_list_names() -> list[str]:
    return ['PPI', 'SyntheticPPI', *(f'{n}-nodes' for n in TU_NODE_TASKS)]


def is_graph_list_name(key: str) -> bool:
    return key.lower() in {n.lower() for n in graph_list_names()}


def load_graph_list(name: str, root: str | Path | None = None,
                    seed: int = 0) -> Graph:
    """A named several-graph node dataset: ``PPI`` (PyG), ``SyntheticPPI``
    (:func:`gnncompress.tasks.synthetic.synthetic_ppi` at its defaults) or
    ``<TU>-nodes`` (a TU dataset's node labels, graphs split 80/10/10 with
    ``seed``)."""
    key = name.lower()
    if key == 'syntheticppi':
        from gnncompress.tasks.synthetic import synthetic_ppi
        graph = graph_from_list(synthetic_ppi(), 'SyntheticPPI', seed)
        graph.split['generator'] = 'gnncompress.tasks.synthetic.synthetic_ppi()'
        return graph
    if key == 'ppi':
        return graph_from_list(load_ppi(root), 'PPI', seed)
    tu = next(n for n in TU_NODE_TASKS if key == f'{n.lower()}-nodes')
    return tu_node_task(tu, root, seed)


def load_ppi(root: str | Path | None) -> dict[str, list[Data]]:
    """PyG's ``PPI`` (its three splits) from ``root`` (default: the cache's
    ``PPI`` folder), which PyG downloads there when a network exists; read
    safely, as every PyG dataset
    (gnncompress.tasks.pyg.load_pyg_dataset)."""
    from torch_geometric.datasets import PPI

    folder = Path(root).expanduser() if root is not None else \
        default_root() / 'PPI'
    has_raw = (folder / 'raw').is_dir()
    work = working_copy(folder) if has_raw else folder
    try:
        return {s: list(build_dataset(
            lambda s=s: PPI(str(work), split=s), 'PPI', work, folder))
            for s in SPLIT_NAMES}
    except DataError:
        if has_raw:
            raise
        raise DataError(
            f'PPI could not be loaded from {folder}: PyG downloads it on '
            f'first use, which needs network access; on a machine without '
            f"it, pass --data-root with a folder holding PPI's raw/ "
            f'files') from None


def tu_node_task(name: str, root: str | Path | None, seed: int = 0) -> Graph:
    """A TU dataset's node labels as inductive node classification: the
    target is each node's label (PyG's one-hot ``x``), the features are
    one-hot degrees (0..``MAX_DEGREE``, higher ones capped), and whole
    graphs go 80/10/10 to training, validation and test (seeded)."""
    from torch_geometric.utils import degree

    from gnncompress.tasks.pyg import load_pyg_dataset
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        dataset = load_pyg_dataset('TUDataset', name, root)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen).tolist()
    n_val = n_test = max(1, len(dataset) // 10)
    parts = {'test': order[:n_test], 'val': order[n_test:n_test + n_val],
             'train': order[n_test + n_val:]}
    out: dict[str, list[Data]] = {s: [] for s in SPLIT_NAMES}
    for split, ids in parts.items():
        for i in sorted(ids):
            data = dataset[i]
            deg = degree(data.edge_index[1], data.num_nodes).long()
            x = F.one_hot(deg.clamp_max(MAX_DEGREE), MAX_DEGREE + 1).float()
            out[split].append(Data(x=x, edge_index=data.edge_index,
                                   y=data.x.argmax(-1)))
    graph = graph_from_list(out, f'{name}-nodes', seed)
    graph.split.update(features=f'one-hot degree 0-{MAX_DEGREE}',
                       targets='TU node labels', scheme='graphs 80/10/10')
    return graph


# Saved lists of graphs ------------------------------------------------------

def is_graph_list(obj: Any) -> bool:
    """Whether a loaded object is several graphs with their split: a dict
    ``{'train': [Data, ...], 'val': [...], 'test': [...]}`` or a list of
    ``Data`` each carrying ``split`` ('train', 'val' or 'test')."""
    if isinstance(obj, dict) and obj and set(obj) <= set(SPLIT_NAMES):
        return all(isinstance(v, (list, tuple)) for v in obj.values())
    return isinstance(obj, (list, tuple)) and bool(obj) and \
        all(isinstance(d, Data) for d in obj)


def graph_from_list(obj: Any, name: str, seed: int = 0,
                    multilabel: bool | None = None) -> Graph:
    """The disjoint union of a graph list (see :func:`is_graph_list`) as
    one Graph whose masks select whole graphs. ``multilabel`` None detects
    the task from ``y`` (a 0/1 matrix: multi-label; one integer per node:
    single-label); True or False insists on one."""
    splits = _by_split(obj, name)
    graphs = [d for s in SPLIT_NAMES for d in splits[s]]
    labels = _check_graphs(graphs, name, multilabel)
    xs, edges, ys, owner, sizes = [], [], [], [], []
    offset = 0
    for i, d in enumerate(graphs):
        store = d._store
        n = store['x'].size(0)
        xs.append(store['x'].float())
        edges.append(store['edge_index'].long() + offset)
        ys.append(store['y'].float() if labels else store['y'].long())
        owner.append(torch.full((n,), i, dtype=torch.long))
        sizes.append(n)
        offset += n
    node_graph = torch.cat(owner)
    counts = [len(splits[s]) for s in SPLIT_NAMES]
    graph_split = torch.repeat_interleave(torch.arange(3),
                                          torch.tensor(counts))
    masks = [(graph_split == k)[node_graph] for k in range(3)]
    y = torch.cat(ys)
    num_classes = labels or int(y.max()) + 1
    split = {'kind': 'inductive', 'graphs': dict(zip(SPLIT_NAMES, counts)),
             'seed': seed,
             'metric': 'micro-F1' if labels else 'accuracy',
             **{s: int(m.sum()) for s, m in zip(SPLIT_NAMES, masks)}}
    return Graph(name=name, x=torch.cat(xs), edge_index=torch.cat(edges, 1),
                 y=y, train_mask=masks[0], val_mask=masks[1],
                 test_mask=masks[2], num_classes=num_classes, split=split,
                 node_graph=node_graph)


def _by_split(obj: Any, name: str) -> dict[str, list[Data]]:
    if isinstance(obj, dict):
        splits = {s: list(obj.get(s, [])) for s in SPLIT_NAMES}
    else:
        splits = {s: [] for s in SPLIT_NAMES}
        if obj and all(isinstance(d, Data) and d.pos is not None and
                       d.edge_index is None for d in obj):
            raise DataError(
                f"Dataset '{name}' holds point clouds (points, no edges), "
                f'which distill alone trains, from a DGCNN teacher '
                f'(gnncompress distill TEACHER --data FILE): give this '
                f'command a dataset of graphs')
        for i, d in enumerate(obj):
            s = d._store.get('split')
            if s not in SPLIT_NAMES:
                raise DataError(
                    f"Dataset '{name}': graph {i} has split {s!r:.20}; give "
                    f"every graph split='train', 'val' or 'test'")
            splits[s].append(d)
    for s in SPLIT_NAMES:
        if not all(isinstance(d, Data) for d in splits[s]):
            raise DataError(f"Dataset '{name}': the '{s}' list holds "
                            f'something other than torch_geometric Data')
    if not splits['train'] or not splits['val']:
        raise DataError(f"Dataset '{name}' needs at least one training and "
                        f'one validation graph (has {len(splits["train"])} '
                        f'and {len(splits["val"])})')
    return splits


def _check_graphs(graphs: list[Data], name: str,
                  multilabel: bool | None) -> int:
    """Refuse graphs the engine cannot train on; the number of labels of a
    multi-label dataset, 0 for single-label."""
    features, labels = None, None
    for i, d in enumerate(graphs):
        where = f'{name} graph {i}'
        store = d._store
        y = store.get('y')
        x = store.get('x')
        if not isinstance(y, Tensor) or not isinstance(x, Tensor) or \
                y.dim() not in (1, 2) or y.size(0) != x.size(0):
            raise DataError(f"Dataset '{where}' needs 'x' and one label (or "
                            f"one row of 0/1 labels) per node in 'y'")
        # Features and edges: the single-graph checks, labels set aside.
        check_data(Data(x=x, edge_index=store.get('edge_index'),
                        y=torch.zeros(x.size(0), dtype=torch.long)), where)
        if y.dim() == 2:
            if y.is_complex() or not bool(((y == 0) | (y == 1)).all()):
                raise DataError(f"Dataset '{where}': a label matrix 'y' must "
                                f'hold only 0 and 1')
            width = y.size(1)
        else:
            # One graph may have fewer nodes than the dataset has classes
            # (NCI1: 37 node labels, graphs of 3 nodes and up), so only the
            # labels themselves are checked here.
            check_labels(y, where)
            width = 0
        if (features, labels) != (None, None) and \
                (x.size(1), width) != (features, labels):
            raise DataError(f"Dataset '{where}' has {x.size(1)} features "
                            f'and {width or "single"} labels but graph 0 '
                            f'has {features} and {labels or "single"}: '
                            f'every graph needs the same')
        features, labels = x.size(1), width
    if multilabel is True and not labels:
        raise DataError(f"Dataset '{name}' has one label per node, not a 0/1 "
                        f'label matrix: drop --multilabel')
    if multilabel is False and labels:
        raise DataError(f"Dataset '{name}' has a 0/1 label matrix: drop "
                        f'the single-label option')
    return labels or 0


def single_graph_only(graph: Graph, command: str) -> None:
    """Refuse a several-graph node dataset in a command that trains on one
    graph (or on graph classification) only."""
    if graph.node_graph is not None:
        raise DataError(f"'{command}' does not support several-graph node "
                        f"datasets such as '{graph.name}' yet: use "
                        f"'gnncompress distill'")


# Losses ----------------------------------------------------------------------

def supervised_loss(logits: Tensor, y: Tensor) -> Tensor:
    """BCE-with-logits for a 0/1 label matrix, cross-entropy otherwise;
    nodes labelled -1 (outside a class subset,
    :func:`gnncompress.tasks.datasets.class_subset`) are left out (a loss of 0
    when
    no node is left)."""
    if y.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, y)
    if bool((y < 0).any()):
        known = (y >= 0).sum().clamp(min=1)
        return F.cross_entropy(logits, y, ignore_index=-1,
                               reduction='sum') / known
    return F.cross_entropy(logits, y)
