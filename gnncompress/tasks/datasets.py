"""Resolve datasets (PyG names or saved ``Data`` files) and their splits."""
from __future__ import annotations

import dataclasses
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

from gnncompress.core import catalogue
from gnncompress.core.defaults import SPLITS
from gnncompress.core.errors import DataError, error_line
from gnncompress.core.graph import Graph
from gnncompress.models import sparse_input
from gnncompress.tasks.pyg import check_data, load_pyg_dataset

# Lower-cased name -> (PyG class, canonical name).
NODE_DATASETS = {
    'cora': ('Planetoid', 'Cora'), 'citeseer': ('Planetoid', 'CiteSeer'),
    'pubmed': ('Planetoid', 'PubMed'), 'computers': ('Amazon', 'Computers'),
    'photo': ('Amazon', 'Photo'), 'cs': ('Coauthor', 'CS'),
    'physics': ('Coauthor', 'Physics'),
}


GRAPH_DATASETS = {n.lower(): ('TUDataset', n) for n in
                  catalogue.GRAPH_DATASETS}


TRAIN_PER_CLASS = 20


VAL_PER_CLASS = 30


# Point-cloud datasets (gnncompress.tasks.point_clouds loads them): lower-cased
# name
# -> canonical name.
POINT_DATASETS = {n.lower(): n for n in catalogue.POINT_DATASETS}


def dataset_names() -> list[str]:
    from gnncompress.tasks.inductive import graph_list_names
    return [v[1] for v in NODE_DATASETS.values()] + \
        [v[1] for v in GRAPH_DATASETS.values()] + graph_list_names() + \
        list(POINT_DATASETS.values())


def normalize_features(graph: Graph) -> Graph:
    """Each node's features divided by their sum (PyG's
    ``NormalizeFeatures``): the usual preprocessing of bag-of-words
    features, which otherwise reach the first layer as raw counts (Photo:
    about 259 ones per node). Nodes without features stay zero."""
    if graph.feature_norm == 'row':
        return graph
    if bool((graph.x < 0).any()):
        raise DataError(f'{graph.name} has negative features, which row '
                        f'normalisation cannot take: drop '
                        f'--normalize-features')
    total = graph.x.sum(-1, keepdim=True)
    x = graph.x / torch.where(total > 0, total, torch.ones_like(total))
    sparse_input.register(x)
    return dataclasses.replace(graph, x=x, feature_norm='row')


def load_graph(data: str | Path, root: str | Path | None = None,
               seed: int = 0, fold: int | None = None,
               split: str = 'default') -> Graph:
    """A node-classification graph from a PyG dataset name or a file holding
    a ``torch_geometric.data.Data`` (``torch.save(data)``); a TU
    graph-classification dataset as one batched Graph with a stratified
    80/10/10 split of its graphs (``fold`` k of 10 instead, if given).
    ``split='glnn'`` replaces a node-classification graph's split with
    :func:`glnn_split`'s."""
    check_split(split)
    if split != 'default':
        graph = load_graph(data, root, seed, fold)
        if graph.batch is not None or graph.node_graph is not None or \
                graph.multilabel or graph.split.get('kind') == 'clouds':
            raise DataError(f'--split {split} is for one node-classification '
                            f'graph; {graph.name} is not one: drop --split')
        return with_glnn_split(graph, seed)
    text = str(data)
    key = text.lower()
    if key in GRAPH_DATASETS:
        from gnncompress.tasks.graph_level import load_graph_set
        return load_graph_set(GRAPH_DATASETS[key][1], root, seed, fold)
    from gnncompress.tasks import inductive
    if inductive.is_graph_list_name(key):
        return inductive.load_graph_list(text, root, seed)
    if key in NODE_DATASETS:
        cls_name, name = NODE_DATASETS[key]
        pyg_data = _load_pyg(cls_name, name, root)
        return _registered(_to_graph(pyg_data, name, seed))
    path = Path(text)
    if path.suffix in ('.pt', '.pth') or path.exists():
        if not path.is_file():
            raise DataError(f'Data file not found: {path}')
        obj = load_saved(path)
        if inductive.is_graph_list(obj):
            return inductive.graph_from_list(obj, path.stem, seed)
        return _registered(_to_graph(_data_object(obj, path), path.stem,
                                     seed))
    raise DataError(f"Unknown dataset '{text}' (choose from "
                    f"{', '.join(dataset_names())}, or pass a saved "
                    f'torch_geometric Data file)')


def _registered(graph: Graph) -> Graph:
    """The graph, its features' sparse form kept for the first layer when
    they are large and mostly zero (models/sparse_input.py)."""
    sparse_input.register(graph.x)
    return graph


def load_saved(path: Path, what: str = 'torch_geometric Data object'):
    """A file written by ``torch.save`` holding PyG ``Data`` (alone or in
    lists and dicts), read with ``weights_only=True``."""
    try:
        # A pickled Data also names its storage and attribute classes, which
        # PyG does not allowlist for weights_only loading.
        with torch.serialization.safe_globals(
                [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(_unreadable(Path(path), what, e)) from None


def _unreadable(path: Path, what: str, error: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in the user's terms:
    not torch.save's format, cut short, or holding objects beyond the
    allow-list (torch's own message there suggests ``weights_only=False``,
    which would run the file's code)."""
    save = f'save the {what} again with torch.save(data, PATH)'
    text = str(error)
    if 'weights only load failed' in text.lower() and 'GLOBAL' in text:
        found = re.search(r'GLOBAL ([\w.]+)', text)
        name = f': {found.group(1)}' if found else ''
        return (f'{path} holds pickled Python objects other than PyG Data, '
                f'tensors, lists and dicts (Unsupported global{name}), which '
                f'gnncompress never unpickles: save a Data object of tensors')
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError as e:
        return f'{path} cannot be read ({e.strerror}): {save}'
    if head != b'PK\x03\x04':
        return f'{path} is not a file written by torch.save: {save}'
    if not zipfile.is_zipfile(path):
        return f'{path} is truncated or corrupted: {save}'
    return f'{path} could not be read ({error_line(error)}): {save}'


def _load_data_file(path: Path) -> Data:
    if not path.is_file():
        raise DataError(f'Data file not found: {path}')
    return _data_object(load_saved(path), path)


def _data_object(obj: Any, path: Path) -> Data:
    if isinstance(obj, dict) and 'x' in obj and 'edge_index' in obj:
        if not all(isinstance(k, str) for k in obj):
            raise DataError(f'{path} holds a dict whose keys are not all '
                            f'strings: save a torch_geometric Data object')
        obj = Data(**obj)
    if not isinstance(obj, Data):
        raise DataError(f'{path} holds a {type(obj).__name__}, not a '
                        f'torch_geometric Data object')
    x = obj._store.get('x')
    if isinstance(x, Tensor) and x.layout in (torch.sparse_coo,
                                              torch.sparse_csr):
        # Sparse features (bag-of-words) are densified; the first layer
        # multiplies them sparse again when they are large and mostly
        # zero (models/sparse_input.py).
        obj.x = x.to_dense()
    return obj


def _load_pyg(cls_name: str, name: str, root: str | Path | None) -> Data:
    return load_pyg_dataset(cls_name, name, root)[0]


def _to_graph(data: Data, name: str, seed: int) -> Graph:
    check_data(data, name)
    y = getattr(data, 'y', None)
    if y is None or y.dim() != 1 or y.numel() != data.num_nodes:
        raise DataError(f"Dataset '{name}' needs one integer label per node "
                        f"in 'y'")
    y = y.long()
    num_classes = int(y.max()) + 1
    masks = [getattr(data, m, None) for m in
             ('train_mask', 'val_mask', 'test_mask')]
    if all(isinstance(m, Tensor) and m.dim() == 1 for m in masks):
        split = {'kind': 'given', 'train': int(masks[0].sum()),
                 'val': int(masks[1].sum()), 'test': int(masks[2].sum())}
    else:
        masks = list(stratified_split(y, seed))
        split = {'kind': 'stratified', 'seed': seed,
                 'train_per_class': TRAIN_PER_CLASS,
                 'val_per_class': VAL_PER_CLASS,
                 'train': int(masks[0].sum()), 'val': int(masks[1].sum()),
                 'test': int(masks[2].sum())}
    return Graph(name=name, x=data.x.float(), edge_index=data.edge_index.long(),
                 y=y, train_mask=masks[0].bool(), val_mask=masks[1].bool(),
                 test_mask=masks[2].bool(), num_classes=num_classes,
                 split=split)


def stratified_split(y: Tensor, seed: int,
                     train_per_class: int = TRAIN_PER_CLASS,
                     val_per_class: int = VAL_PER_CLASS,
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per class: ``train_per_class`` training nodes, ``val_per_class``
    validation nodes, the rest test; seeded, so every run can repeat it."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.zeros_like(y, dtype=torch.bool)
    val = torch.zeros_like(train)
    for c in y.unique():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_train = min(train_per_class, idx.numel() // 2)
        n_val = min(val_per_class, (idx.numel() - n_train) // 2)
        train[idx[:n_train]] = True
        val[idx[n_train:n_train + n_val]] = True
    return train, val, ~(train | val)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split '{split}' (choose from "
                        f"{', '.join(SPLITS)})")


def largest_component(edge_index: Tensor, num_nodes: int) -> Tensor:
    """A boolean mask of the nodes in the largest connected component of
    the graph taken as undirected (ties: the component holding the lowest
    node number)."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    row, col = edge_index.cpu().numpy()
    adj = sp.coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)),
                        shape=(num_nodes, num_nodes))
    _, label = connected_components(adj, directed=True, connection='weak')
    sizes = np.bincount(label)
    # argmax returns the first of equal sizes; components are numbered in
    # order of their lowest node.
    return torch.from_numpy(label == int(sizes.argmax()))


def glnn_split(y: Tensor, edge_index: Tensor, seed: int,
               train_per_class: int = TRAIN_PER_CLASS,
               val_per_class: int = VAL_PER_CLASS, name: str = 'the graph',
               ) -> tuple[Tensor, Tensor, Tensor]:
    """GLNN's split (as CPF's data loader draws it): the graph's largest
    connected component only; in it, per class, ``train_per_class``
    training nodes and ``val_per_class`` validation nodes drawn at random
    (seeded), every other node of the component a test node. Nodes outside
    the component belong to no split: a GNN never sees them from inside
    it, so a model trained and scored on these masks scores as one run on
    the component alone."""
    inside = largest_component(edge_index, y.numel())
    need = train_per_class + val_per_class
    gen = torch.Generator().manual_seed(seed)
    train = torch.zeros_like(inside)
    val = torch.zeros_like(inside)
    for c in range(int(y.max()) + 1):
        idx = ((y == c) & inside).nonzero().view(-1)
        if idx.numel() < need:
            raise DataError(
                f'Class {c} of {name} has {idx.numel()} nodes in the largest '
                f'connected component; --split glnn needs {need} per class '
                f'({train_per_class} training, {val_per_class} validation): '
                f'use --split default')
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        train[idx[:train_per_class]] = True
        val[idx[train_per_class:need]] = True
    return train, val, inside & ~(train | val)


def with_glnn_split(graph: Graph, seed: int) -> Graph:
    """``graph`` with :func:`glnn_split`'s masks, recorded in its
    ``split``."""
    train, val, test = glnn_split(graph.y.cpu(), graph.edge_index, seed,
                                  name=graph.name)
    dev = graph.y.device
    split = {'kind': 'glnn', 'seed': seed,
             'train_per_class': TRAIN_PER_CLASS,
             'val_per_class': VAL_PER_CLASS,
             'scheme': 'largest connected component',
             'train': int(train.sum()), 'val': int(val.sum()),
             'test': int(test.sum())}
    return dataclasses.replace(graph, train_mask=train.to(dev),
                               val_mask=val.to(dev), test_mask=test.to(dev),
                               split=split)


def parse_classes(text: str) -> list[int]:
    """``'0-4'`` -> ``[0, 1, 2, 3, 4]``; ``'1,3,5'`` -> ``[1, 3, 5]``."""
    classes: list[int] = []
    try:
        for part in text.split(','):
            first, sep, last = part.strip().partition('-')
            classes += list(range(int(first), int(last) + 1)) if sep \
                else [int(first)]
    except ValueError:
        raise DataError(f"Classes are written like 0-4 or 1,3,5 (got "
                        f"'{text}')") from None
    if not classes or len(set(classes)) != len(classes) or min(classes) < 0:
        raise DataError(f"Classes '{text}' must be distinct non-negative "
                        f'integers')
    return classes


def class_subset(graph: Graph, classes: list[int]) -> Graph:
    """The graph with labels restricted to ``classes`` (renumbered
    ``0..len(classes)-1``): every node and edge stays, the masks keep only
    nodes whose label is in the subset, the other nodes get label -1. On
    multi-label data (``y`` a 0/1 matrix) the classes are label columns:
    ``y`` keeps those columns, in that order, and every node stays in its
    split. Several-graph data keeps its graphs (``node_graph``)."""
    what = 'label columns' if graph.multilabel else 'classes'
    missing = [c for c in classes if c >= graph.num_classes]
    if missing:
        raise DataError(f'{graph.name} has {what} 0-{graph.num_classes - 1};'
                        f" {', '.join(map(str, missing))} do not exist")
    split = {**graph.split, 'classes': list(classes)}
    if graph.multilabel:
        return dataclasses.replace(
            graph, y=graph.y[:, torch.tensor(classes,
                                             device=graph.y.device)],
            num_classes=len(classes), split=split)
    lookup = torch.full((graph.num_classes,), -1, dtype=torch.long,
                        device=graph.y.device)
    lookup[torch.tensor(classes, device=graph.y.device)] = \
        torch.arange(len(classes), device=graph.y.device)
    y = lookup[graph.y]
    inside = y >= 0
    if not bool((graph.train_mask & inside).any()):
        raise DataError(f'No training node of {graph.name} has a label in '
                        f'classes {classes}: choose other classes')
    return dataclasses.replace(
        graph, y=y, train_mask=graph.train_mask & inside,
        val_mask=graph.val_mask & inside, test_mask=graph.test_mask & inside,
        num_classes=len(classes), split=split)
