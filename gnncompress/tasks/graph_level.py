"""Graph classification: TU datasets as one batched Graph and seeded
stratified splits of the graphs (batches of graphs for training are cut in
:mod:`gnncompress.training.regimes.graph_batches`).

A graph-level dataset is a :class:`~gnncompress.core.Graph` whose ``batch``
maps every node to its graph and whose ``y`` and masks are per graph, so
evaluation, teachers' frozen outputs and accuracy are the node-level code
run once on the whole union.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from gnncompress.core.errors import DataError
from gnncompress.core.graph import Graph
from gnncompress.tasks.pyg import load_pyg_dataset

BATCH_SIZE = 32    # graphs per step (the GIN paper's smaller setting)
FOLDS = 10
# IMDB-BINARY has no node features: one-hot degree is the usual choice.
_NO_FEATURES = ('IMDB-BINARY',)


def load_graph_set(name: str, root: str | Path | None, seed: int = 0,
                   fold: int | None = None, folds: int = FOLDS) -> Graph:
    """A TU dataset as one batched Graph with a seeded stratified split:
    80/10/10 of each class, or, with ``fold`` k, the k-th of ``folds``
    stratified folds as test set, the next one as validation set and the
    rest for training."""
    from torch_geometric.data import Batch
    from torch_geometric.utils import degree, one_hot

    with warnings.catch_warnings():
        # PyG reloads its own processed cache file (not a user checkpoint)
        # and warns that weights-only loading needs its Data class.
        warnings.simplefilter('ignore', UserWarning)
        dataset = load_pyg_dataset('TUDataset', name, root)
    union = Batch.from_data_list(list(dataset))
    if getattr(union, 'x', None) is None or name in _NO_FEATURES:
        deg = degree(union.edge_index[1], union.num_nodes).long()
        x = one_hot(deg, int(deg.max()) + 1)
        features = 'one-hot degree'
    else:
        x = union.x.float()
        features = 'node labels'
    y = union.y.view(-1).long()
    train, val, test = graph_split(y, seed, fold, folds)
    split = {'kind': 'graphs', 'seed': seed, 'graphs': int(y.numel()),
             'features': features, 'train': int(train.sum()),
             'val': int(val.sum()), 'test': int(test.sum())}
    split.update({'scheme': 'stratified 80/10/10'} if fold is None else
                 {'scheme': f'{folds}-fold cross-validation', 'fold': fold})
    return Graph(name=name, x=x, edge_index=union.edge_index.long(), y=y,
                 train_mask=train, val_mask=val, test_mask=test,
                 num_classes=int(y.max()) + 1, split=split,
                 batch=union.batch.long())


def graph_split(y: Tensor, seed: int, fold: int | None = None,
                folds: int = FOLDS) -> tuple[Tensor, Tensor, Tensor]:
    """Per class, a seeded permutation of its graphs dealt round-robin into
    ``folds`` folds: with ``fold`` k, fold k is the test set and fold k+1
    the validation set; without, folds 0 and 1 (10% each at 10 folds)."""
    if fold is not None and not 0 <= fold < folds:
        raise DataError(f"'fold' must be in 0..{folds - 1} (got {fold})")
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.empty_like(y)
    for c in y.unique():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        fold_of[idx] = torch.arange(idx.numel()) % folds
    k = 0 if fold is None else fold
    test = fold_of == k
    val = fold_of == (k + 1) % folds
    return ~(test | val), val, test
