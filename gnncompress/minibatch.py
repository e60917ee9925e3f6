"""Mini-batch distillation on sampled subgraphs, for graphs too large for
one full-batch pass (``gnncompress distill --batch-size B --fanout 15,10``).

The teacher runs once, layer-wise over all nodes
(:func:`gnncompress.sampling.layerwise_inference`); its logits and hidden
features are kept in memory or in memory-mapped files, and every batch
reads the rows of its nodes. Evaluation is layer-wise too."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress import distributed
from gnncompress.core import Graph, accuracy
from gnncompress.errors import GnnCompressError, TrainingError
from gnncompress.methods import DistillMethod, canonical_name
from gnncompress.models import ModelOutput, run_model
from gnncompress.sampling import (
    CSR,
    MEMMAP_BYTES,
    Batch,
    NeighborSampler,
    TensorStore,
    layerwise_inference,
    parse_fanout,
)
from gnncompress.training.loop import (
    FitResult,
    TermMeans,
    adam,
    guard_finite,
    progress_bar,
    record_epoch,
    train_mode,
)
from gnncompress.training.selection import Selection

# Methods whose loss is defined on a sampled subgraph (see batch_view).
MINIBATCH_METHODS = ('kd', 'lsp')


def default_fanout(layers: int) -> list[int]:
    """15 neighbours at the first hop, 10 at the second, 5 beyond (the
    GraphSAGE paper samples 25 and 10; fewer keep batches small on CPU)."""
    return [15, 10, *[5] * max(0, layers - 2)][:layers]


def check_minibatch(method: DistillMethod | None, batch_size: int | None,
                    fanout: str | Sequence[int] | None, layers: int,
                    who: str = 'the student') -> tuple[int, list[int]]:
    """``--batch-size`` and ``--fanout`` checked against the student and
    the method; the fanout (one count per student layer). ``who`` names
    the model(s) in the message about layers."""
    if batch_size is None:
        raise GnnCompressError('--fanout needs --batch-size (seed nodes per '
                               'mini-batch), e.g. --batch-size 1024')
    if batch_size < 1:
        raise GnnCompressError(f'--batch-size must be at least 1 (got '
                               f'{batch_size})')
    hops = default_fanout(layers) if fanout is None else parse_fanout(fanout)
    if len(hops) != layers:
        raise GnnCompressError(
            f'--fanout lists {len(hops)} hop(s) but {who} has {layers} '
            f'layer(s): give one count per layer, e.g. '
            f"{','.join(map(str, default_fanout(layers)))}")
    if method is not None:
        parts = getattr(method, 'parts', [method])
        other = [p.name for p in parts
                 if canonical_name(p.name) not in MINIBATCH_METHODS]
        if other:
            raise GnnCompressError(
                f"Method '{', '.join(other)}' does not train on sampled "
                f"subgraphs yet (--batch-size works with "
                f"{', '.join(MINIBATCH_METHODS)} and their sums): drop "
                f'--batch-size or pick one of those')
    return batch_size, hops


def batch_view(output: ModelOutput, batch: Batch, rows: bool,
               logits: str = 'seeds', trimmed: bool = False) -> ModelOutput:
    """What a method's loss sees of one batch: logits of the seed nodes
    only (their sampled neighbourhood is complete, the other nodes' is
    cut short), hidden features of every sampled node (structure losses
    need both ends of an edge). ``rows``: ``output`` covers the whole graph
    (the teacher's cache), else the batch (the student). ``logits='nodes'``
    keeps the logits of every sampled node too, for a structure loss over
    the logits (the method's ``batch_logits``). ``trimmed``: hidden
    features of the seeds and their sampled neighbours only (the student's
    rows of the last hidden layer in :func:`trimmed_output`, all that
    :func:`batch_graph`'s edges reach)."""
    keep = batch.n_id if logits == 'nodes' else batch.n_id[:batch.batch_size]
    if rows:
        nodes = batch.n_id[:batch.hop_nodes[1]] if trimmed else batch.n_id
        return ModelOutput(logits=output.logits[keep],
                           hiddens=[h[nodes] for h in output.hiddens])
    return ModelOutput(logits=output.logits[:keep.numel()],
                       hiddens=output.hiddens)


def batch_graph(graph: Graph, batch: Batch, x: Tensor,
                labels: str = 'nodes') -> Graph:
    """The batch as a :class:`Graph` whose edges are those into the seeds:
    structure losses compare each seed's sampled neighbourhood.
    ``labels='seeds'`` gives ``y`` and the masks of the seeds alone, the
    rows of :func:`batch_view`'s logits (for losses that use labels)."""
    into_seeds = batch.edge_index[1] < batch.batch_size
    rows = batch.n_id if labels == 'nodes' else batch.n_id[:batch.batch_size]
    return Graph(name=graph.name, x=x,
                 edge_index=batch.edge_index[:, into_seeds],
                 y=graph.y[rows], train_mask=graph.train_mask[rows],
                 val_mask=graph.val_mask[rows],
                 test_mask=graph.test_mask[rows],
                 num_classes=graph.num_classes)


def seed_cross_entropy(logits: Tensor, graph: Graph, batch: Batch) -> Tensor:
    """The label loss of one batch: cross-entropy over its seeds that are
    training nodes (``logits``: the batch's, seeds first; zero, with a
    gradient, when no seed is a training node)."""
    seed_ids = batch.n_id[:batch.batch_size]
    logits = logits[:batch.batch_size]
    train = graph.train_mask[seed_ids].to(logits.device)
    if not bool(train.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[train],
                           graph.y[seed_ids].to(logits.device)[train])


def evaluate(model: nn.Module, graph: Graph, csr: CSR,
             memmap_bytes: int = MEMMAP_BYTES) -> Tensor:
    """The model's logits on every node, layer-wise in bounded memory."""
    store = TensorStore(memmap_bytes)
    try:
        logits = layerwise_inference(model, graph.x, csr, keep_hiddens=False,
                                     store=store).logits
        return logits.clone() if store.files else logits
    finally:
        store.close()


def teacher_cache(teacher: nn.Module, graph: Graph, csr: CSR,
                  method: DistillMethod | None,
                  store: TensorStore) -> ModelOutput:
    """The teacher's logits, and hidden features when the method needs
    them, on every node: computed once for the whole run."""
    keep = method is not None and 'hiddens' in method.requires
    return layerwise_inference(teacher, graph.x, csr, keep_hiddens=keep,
                               store=store)


def fit_minibatch(student: nn.Module, graph: Graph, csr: CSR, *,
                  fanout: Sequence[int], batch_size: int,
                  method: DistillMethod | None = None,
                  teacher_outputs: Sequence[ModelOutput] = (),
                  epochs: int = 200, lr: float = 0.01,
                  weight_decay: float = 5e-4, label_weight: float = 1.0,
                  weight: float | None = None, patience: int | None = 100,
                  progress: bool = True, desc: str = 'train', seed: int = 0,
                  memmap_bytes: int = MEMMAP_BYTES) -> FitResult:
    """Train ``student`` on sampled subgraphs and leave it at its best
    validation epoch (the mini-batch counterpart of
    :func:`gnncompress.engine.fit`).

    One epoch visits every node once as a seed (every training node when
    there is no method) in batches of ``batch_size``, each with its
    ``fanout`` neighbourhood. The loss of a batch is ``label_weight * CE``
    over its training seeds plus ``weight * method.loss`` on
    :func:`batch_view` of the cached ``teacher_outputs`` (whole-graph
    tensors) and of the student. Validation runs layer-wise over all nodes
    after every epoch. ``graph`` and the teacher cache stay on the CPU;
    batches move to the student's device. In a joined process group every
    rank calls this alike and trains its share of each epoch's seeds under
    DDP (:mod:`gnncompress.distributed`; ``batch_size`` is the global
    batch); only rank 0 scores the test split (NaN elsewhere).
    """
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    dev = next(student.parameters()).device
    ranks = distributed.current()  # no-ops unless in a DDP process group
    batch_size = ranks.share(batch_size)
    generator = torch.Generator().manual_seed(ranks.sampler_seed(seed))
    order = torch.Generator().manual_seed(seed)  # the same on every rank
    sampler = NeighborSampler(csr, fanout, batch_size, generator)
    seeds = torch.arange(graph.num_nodes) if method is not None else \
        graph.train_mask.nonzero().view(-1)
    trim = trimmable(student, len(fanout))

    def views(batch: Batch, out: ModelOutput) -> tuple[list[ModelOutput],
                                                       ModelOutput, Graph]:
        teachers = [_to(batch_view(t, batch, rows=True, trimmed=trim),
                        dev) for t in teacher_outputs]
        return teachers, batch_view(out, batch, rows=False), \
            batch_graph(graph, batch, x=out.logits).to(dev)

    if method is not None:
        first = sampler.sample(seeds[:batch_size])
        with torch.no_grad():
            probe = _forward(student.eval(), graph, first, dev, trim)
        method.prepare(*views(first, probe))
        method = method.to(dev)
        weight = method.default_weight if weight is None else weight
    optimizer = adam(student, method, lr, weight_decay)
    together = ranks.wrap(student, method)

    def step(batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = _forward(student, graph, batch, dev, trim)
        terms = {'ce': seed_cross_entropy(out.logits, graph, batch)}
        loss = label_weight * terms['ce']
        if method is not None:
            terms[method.name] = method.loss(*views(batch, out))
            loss = loss + weight * terms[method.name]
        return loss, terms

    def score(mask: Tensor) -> float:
        logits = evaluate(student, graph, csr, memmap_bytes)
        return accuracy(logits, graph.y, mask)

    selection = Selection(student, patience)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = progress_bar(epochs, desc, progress)
    epoch = 0
    for epoch in bar:
        train_mode(student, method)
        total, steps, means = 0.0, 0, TermMeans()
        mine, shuffle = ranks.epoch_seeds(seeds, order)
        for batch in sampler.batches(mine, shuffle=shuffle):
            optimizer.zero_grad(set_to_none=True)
            loss, terms = together(step, batch)
            guard_finite(ranks.total(loss), terms, epoch, bar, selection)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
            means.add(terms)  # this process's batches
            means.end_step()
        val = ranks.score(lambda: score(graph.val_mask))
        if record_epoch(selection, bar, history, epoch,
                        ranks.mean_loss(total, steps), val, means):
            break
    bar.close()
    seconds = time.perf_counter() - start
    selection.restore()
    ranks.check_in_sync(student)
    test = score(graph.test_mask) if ranks.rank == 0 else float('nan')
    return FitResult(best_epoch=selection.best_epoch,
                     val_accuracy=selection.best_score
                     if selection.best_epoch else float('nan'),
                     test_accuracy=test, epochs_run=epoch, seconds=seconds,
                     history=history)


def _forward(student: nn.Module, graph: Graph, batch: Batch,
             dev: torch.device, trim: bool) -> ModelOutput:
    x, edge_index = graph.x[batch.n_id].to(dev), batch.edge_index.to(dev)
    if trim:
        return trimmed_output(student, x, edge_index, batch)
    return run_model(student, x, edge_index)


def trimmable(model: nn.Module, hops: int) -> bool:
    """Whether :func:`trimmed_output` applies: a plain stack of
    message-passing layers (no jumping knowledge), one per sampled hop."""
    from torch_geometric.nn.models.basic_gnn import BasicGNN

    return isinstance(model, BasicGNN) and model.jk_mode is None and \
        model.num_layers == hops


def trimmed_output(model: nn.Module, x: Tensor, edge_index: Tensor,
                   batch: Batch) -> ModelOutput:
    """:func:`~gnncompress.models.run_model` on a sampled subgraph, each
    layer computed only where a later layer or the loss reads it: layer
    ``i`` of ``L`` for the nodes within ``L - 1 - i`` hops of the seeds,
    over the edges into them (so the logits of the seeds alone, the last
    hidden layer for the seeds and their sampled neighbours, what
    :func:`batch_graph`'s edges need). The values are those of the whole
    subgraph's (GCN's normalisation included); :func:`trimmable` says
    when it applies."""
    from gnncompress.models import propagation
    from gnncompress.models.build import _norm_and_act

    layers = model.num_layers
    kinds = propagation.plan(model.convs, x, edge_index)
    hiddens: list[Tensor] = []
    for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
        depth = layers - 1 - i
        rows = batch.hop_nodes[depth]
        if kinds is None:
            x = conv(x, edge_index[:, :batch.hop_edges[depth]])[:rows]
        else:
            x = propagation.fast_layer(conv, kinds[i], x, edge_index,
                                       rows=rows,
                                       num_nodes=batch.hop_nodes[-1])
        if i < layers - 1:
            hiddens.append(x)
            x = _norm_and_act(model, norm, x)
            x = model.dropout(x)
    x = model.lin(x) if hasattr(model, 'lin') else x
    return ModelOutput(logits=x, hiddens=hiddens)


def _to(output: ModelOutput, dev: torch.device) -> ModelOutput:
    return ModelOutput(logits=output.logits.to(dev),
                       hiddens=[h.to(dev) for h in output.hiddens])


def sample_subgraph(graph: Graph, csr: CSR, fanout: Sequence[int],
                    size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Features and edges of one sampled subgraph around ``size`` test
    nodes (for latency and the ONNX parity check on a graph that does not
    fit one pass)."""
    generator = torch.Generator().manual_seed(seed)
    nodes = graph.test_mask.nonzero().view(-1)
    if nodes.numel() == 0:
        nodes = torch.arange(graph.num_nodes)
    pick = nodes[torch.randperm(nodes.numel(), generator=generator)[:size]]
    batch = NeighborSampler(csr, fanout, size, generator).sample(pick)
    return graph.x[batch.n_id], batch.edge_index


def distill(teacher: Path, *, ckpt: Any, graph: Graph, s_spec: Any,
            distiller: DistillMethod, batch_size: int,
            fanout: Sequence[int], epochs: int, lr: float,
            weight_decay: float, label_weight: float, weight: float | None,
            patience: int | None, seed: int, dev: torch.device, out: Path,
            baseline: bool, export: bool, min_accuracy: float | None,
            max_accuracy_drop: float | None, progress: bool, command: str,
            config: dict[str, Any] | None, method_options: dict[str, Any],
            memmap_bytes: int = MEMMAP_BYTES,
            teacher_onnx: bool = False) -> Any:
    """The mini-batch branch of :func:`gnncompress.api.distill`: teacher
    cached once layer-wise, student trained on sampled subgraphs, latency
    and the ONNX parity check on one sampled subgraph of ``batch_size``
    test nodes. In a DDP process group (:mod:`gnncompress.distributed`)
    every rank trains and rank 0 alone writes the outputs (the others
    return None)."""
    from gnncompress import api
    from gnncompress.models import build_model, count_parameters
    from gnncompress.report import ModelEntry

    ranks = distributed.current()
    graph = graph.to('cpu')
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    store = TensorStore(memmap_bytes)
    try:
        teacher_model = ckpt.build().to(dev)
        cached = teacher_cache(teacher_model, graph, csr, distiller, store)
        teacher_acc = accuracy(cached.logits, graph.y, graph.test_mask)
        train_args = dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                          patience=patience, progress=progress,
                          batch_size=batch_size, fanout=fanout, seed=seed,
                          memmap_bytes=memmap_bytes)
        alone_entry, alone = None, None
        if baseline:
            api.seed_everything(seed)
            alone = build_model(s_spec).to(dev)
            alone_fit = fit_minibatch(alone, graph, csr, label_weight=1.0,
                                      desc='student alone', **train_args)
            alone_entry = ModelEntry(
                role='student-alone', spec=s_spec.to_dict(),
                parameters=count_parameters(alone),
                test_accuracy=alone_fit.test_accuracy,
                val_accuracy=alone_fit.val_accuracy)
        api.seed_everything(seed)
        model = build_model(s_spec).to(dev)
        try:
            result = fit_minibatch(model, graph, csr, method=distiller,
                                   teacher_outputs=[cached],
                                   label_weight=label_weight, weight=weight,
                                   desc=f'distill {distiller.name}',
                                   **train_args)
        except TrainingError as e:
            if ranks.rank != 0:
                raise
            raise api.keep_last_good(e, model, s_spec, out, distiller.name,
                                     graph.name) from None
    finally:
        store.close()
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    x_sub, edges_sub = sample_subgraph(graph, csr, fanout, batch_size, seed)
    note = (f'mini-batch training: latency and ONNX parity measured on a '
            f'sampled subgraph of {x_sub.size(0):,} nodes and '
            f'{edges_sub.size(1):,} edges')
    return api.distill_outputs(
        out, teacher=teacher, ckpt=ckpt, teacher_model=teacher_model,
        teacher_acc=teacher_acc, model=model, s_spec=s_spec,
        distiller=distiller, graph=graph, result=result,
        alone_entry=alone_entry, alone_model=alone,
        inputs=(x_sub, edges_sub, None),
        training=api.describe_training(
            result, epochs=epochs, lr=lr, weight_decay=weight_decay,
            patience=patience, batch_size=batch_size, fanout=list(fanout),
            processes=ranks.world),
        notes=[note], export=export, dev=dev, weight=weight,
        label_weight=label_weight, method_options=method_options,
        command=command, config=config, seed=seed,
        min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop,
        teacher_onnx=teacher_onnx)
