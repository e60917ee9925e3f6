"""Graph classification: TU datasets as one batched Graph, seeded stratified
splits of the graphs, mini-batches cut from the union, and the training loop
for one graph-level student.

A graph-level dataset is a :class:`~gnncompress.core.Graph` whose ``batch``
maps every node to its graph and whose ``y`` and masks are per graph, so
evaluation, teachers' frozen outputs and accuracy are the node-level code
run once on the whole union.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core import Graph
from gnncompress.data import load_pyg_dataset
from gnncompress.errors import DataError
from gnncompress.models import ModelOutput, run_model

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


@dataclass
class GraphBatch:
    """Some graphs of a union: the sub-Graph (its ``y`` and masks per
    graph, every graph marked for training), which graphs and which nodes
    of the union it holds."""
    graph: Graph
    graph_ids: Tensor   # [B] sorted
    node_mask: Tensor   # [N_union] bool

    def slice(self, out: ModelOutput) -> ModelOutput:
        """The rows of a whole-union output that belong to this batch."""
        return ModelOutput(out.logits[self.graph_ids],
                           [h[self.node_mask] for h in out.hiddens])


def iter_batches(graph: Graph, batch_size: int,
                 generator: torch.Generator) -> Iterator[GraphBatch]:
    """The training graphs of ``graph`` in shuffled batches of
    ``batch_size``, each cut from the union with vectorised masks."""
    assert graph.batch is not None
    device = graph.x.device
    ids = graph.train_mask.nonzero().view(-1).cpu()
    ids = ids[torch.randperm(ids.numel(), generator=generator)].to(device)
    num_graphs = graph.y.numel()
    for chunk in ids.split(batch_size):
        chunk = chunk.sort().values
        node_mask, edge_index, batch = select_graphs(
            graph.batch, graph.edge_index, chunk, num_graphs)
        ones = torch.ones(chunk.numel(), dtype=torch.bool, device=device)
        sub = Graph(name=graph.name, x=graph.x[node_mask],
                    edge_index=edge_index, y=graph.y[chunk],
                    train_mask=ones, val_mask=~ones, test_mask=~ones,
                    num_classes=graph.num_classes, split=graph.split,
                    batch=batch)
        yield GraphBatch(sub, chunk, node_mask)


def select_graphs(membership: Tensor, edge_index: Tensor, graph_ids: Tensor,
                  num_graphs: int) -> tuple[Tensor, Tensor, Tensor]:
    """The graphs ``graph_ids`` of a union whose node ``i`` belongs to
    graph ``membership[i]``, with vectorised masks: which nodes they hold,
    their edges renumbered, and each kept node's graph renumbered
    ``0..len(graph_ids) - 1`` in the order of the ids."""
    device = membership.device
    chosen = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    chosen[graph_ids] = True
    node_mask = chosen[membership]
    new_node = node_mask.long().cumsum(0) - 1
    edges = edge_index[:, node_mask[edge_index[0]]]
    new_graph = torch.full((num_graphs,), -1, device=device)
    new_graph[graph_ids.sort().values] = torch.arange(graph_ids.numel(),
                                                      device=device)
    return node_mask, new_node[edges], new_graph[membership[node_mask]]


def whole_output(model: nn.Module, graph: Graph) -> ModelOutput:
    """A model's output on every graph of the union at once."""
    return run_model(model, graph.x, graph.edge_index, graph.batch)


def fit_graphs(student: nn.Module, graph: Graph, *, method=None,
               teacher_outputs: Sequence[ModelOutput] = (),
               epochs: int = 200, lr: float = 0.01,
               weight_decay: float = 5e-4, label_weight: float = 1.0,
               weight: float | None = None, patience: int | None = 100,
               progress: bool = True, desc: str = 'train',
               batch_size: int = BATCH_SIZE, seed: int = 0):
    """:func:`gnncompress.engine.fit` for graph classification: one
    optimiser step per batch of training graphs, teachers' whole-union
    outputs sliced per batch, validation accuracy over graphs after each
    epoch."""
    from gnncompress.core import accuracy
    from gnncompress.engine import (
        FitResult,
        Selection,
        TermMeans,
        adam,
        check_finite,
        progress_bar,
        train_mode,
    )
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    if method is not None:
        with torch.no_grad():
            probe = whole_output(student.eval(), graph)
        method.prepare(teacher_outputs, probe, graph)
        method = method.to(graph.x.device)
        weight = method.default_weight if weight is None else weight
    optimizer = adam(student, method, lr, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    selection = Selection(student, patience)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = progress_bar(epochs, desc, progress)
    epoch = 0
    for epoch in bar:
        train_mode(student, method)
        total, steps, means = 0.0, 0, TermMeans()
        for part in iter_batches(graph, batch_size, gen):
            g = part.graph
            optimizer.zero_grad(set_to_none=True)
            out = run_model(student, g.x, g.edge_index, g.batch)
            terms = {'ce': F.cross_entropy(out.logits, g.y)}
            loss = label_weight * terms['ce']
            if method is not None:
                peers = [part.slice(t) for t in teacher_outputs]
                terms[method.name] = method.loss(peers, out, g)
                loss = loss + weight * terms[method.name]
            check_finite(loss, terms, epoch)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
            means.add(terms)
        student.eval()
        with torch.no_grad():
            logits = whole_output(student, graph).logits
        val = accuracy(logits, graph.y, graph.val_mask)
        history.append({'epoch': epoch, 'loss': total / max(1, steps),
                        'val': val, **means.entries()})
        selection.update(epoch, val)
        bar.set_postfix(loss=f'{total / max(1, steps):.4f}',
                        val=f'{val:.3f}', best=f'{selection.best_score:.3f}')
        if selection.should_stop(epoch):
            break
    bar.close()
    seconds = time.perf_counter() - start
    selection.restore()
    student.eval()
    with torch.no_grad():
        logits = whole_output(student, graph).logits
    return FitResult(best_epoch=selection.best_epoch,
                     val_accuracy=selection.best_score
                     if selection.best_epoch else float('nan'),
                     test_accuracy=accuracy(logits, graph.y, graph.test_mask),
                     epochs_run=epoch, seconds=seconds, history=history)
