"""Mini-batch distillation on sampled subgraphs, for graphs too large for
one full-batch pass (``gnncompress distill --batch-size B --fanout 15,10``).

The teacher runs once, layer-wise over all nodes
(:func:`gnncompress.training.sampling.layerwise_inference`); its logits and
hidden
features are kept in memory or in memory-mapped files, and every batch
reads the rows of its nodes. Evaluation is layer-wise too."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core.errors import GnnCompressError
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput
from gnncompress.training import ranks as process_ranks
from gnncompress.training.loop import FitResult, fit
from gnncompress.training.regimes.sampled import (
    SampledSubgraphs,
    hidden_view,
    trimmable,
)
from gnncompress.training.sampling import (
    CSR,
    MEMMAP_BYTES,
    NeighborSampler,
    TensorStore,
    layerwise_inference,
    parse_fanout,
)


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
    hidden_view(method)  # the method's parts agree on what they see
    return batch_size, hops


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
                  memmap_bytes: int = MEMMAP_BYTES,
                  checkpoint: Any = None, ties: str = 'first') -> FitResult:
    """Train ``student`` on sampled subgraphs with the one training loop
    (:func:`gnncompress.training.loop.fit` under
    :class:`~gnncompress.training.regimes.sampled.SampledSubgraphs`) and
    leave it at its best validation epoch.

    One epoch visits every node once as a seed (every training node when
    there is no method) in batches of ``batch_size``, each with its
    ``fanout`` neighbourhood. The loss of a batch is ``label_weight * CE``
    over its training seeds plus ``weight * method.loss`` on the cached
    ``teacher_outputs`` (whole-graph tensors) and the student, both cut to
    the batch. Validation runs layer-wise over all nodes after every
    epoch. ``graph`` and the teacher cache stay on the CPU; batches move to
    the student's device. ``checkpoint`` (a
    :class:`gnncompress.training.resume.TrainingCheckpoint`) saves and resumes
    the
    run, the sampler's generators included. In a joined process group
    every rank calls this alike and trains its share of each batch's seeds
    (:mod:`gnncompress.training.ranks`; ``batch_size`` is the global
    batch); only rank 0 scores the test split (NaN elsewhere). ``ties``:
    as in :func:`gnncompress.training.train.fit`.
    """
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    regime = SampledSubgraphs(
        graph, csr, teacher_outputs, fanout=fanout, batch_size=batch_size,
        trim=trimmable(student, len(fanout)),
        device=next(student.parameters()).device,
        all_nodes=method is not None, hiddens=hidden_view(method), seed=seed,
        memmap_bytes=memmap_bytes)
    return fit(student, regime, method=method, epochs=epochs, lr=lr,
               weight_decay=weight_decay, label_weight=label_weight,
               weight=weight, patience=patience, progress=progress, desc=desc,
               checkpoint=checkpoint, ties=ties)


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


def distill(settings: Any, *, teacher: Path, ckpt: Any, graph: Graph,
            s_spec: Any, distiller: DistillMethod, fanout: Sequence[int],
            dev: torch.device, checkpoint: Any = None,
            memmap_bytes: int = MEMMAP_BYTES) -> Any:
    """The mini-batch branch of :func:`gnncompress.api.distill` on its
    resolved ``settings``
    (:class:`~gnncompress.workflows.settings.DistillSettings`): teacher
    cached once layer-wise, student trained on sampled subgraphs of
    ``fanout`` neighbours per hop, latency and the ONNX parity check on one
    sampled subgraph of ``batch_size`` test nodes. ``checkpoint`` saves
    and resumes the distillation (not the baseline). In a DDP process
    group (:mod:`gnncompress.workflows.distributed`) every rank trains and
    rank 0 alone writes the outputs (the others return None)."""
    from gnncompress.models import build_model
    from gnncompress.workflows.results import (
        describe_training,
        distill_outputs,
        trained_alone,
    )
    from gnncompress.workflows.runs import kept_on_failure, seed_everything
    from gnncompress.workflows.students import flat_teacher_note

    t, batch_size = settings.training, settings.batching.batch_size
    ranks = process_ranks.current()
    graph = graph.to('cpu')
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    store = TensorStore(memmap_bytes)
    try:
        teacher_model = ckpt.build().to(dev)
        cached = teacher_cache(teacher_model, graph, csr, distiller, store)
        teacher_acc = accuracy(cached.logits, graph.y, graph.test_mask)
        train_args = dict(epochs=t.epochs, lr=t.lr,
                          weight_decay=t.weight_decay, patience=t.patience,
                          progress=t.progress, batch_size=batch_size,
                          fanout=fanout, seed=t.seed,
                          memmap_bytes=memmap_bytes)
        alone_entry, alone = None, None
        if settings.baseline:
            alone_entry, alone = trained_alone(
                s_spec, t.seed, dev, lambda m: fit_minibatch(
                    m, graph, csr, label_weight=1.0, desc='student alone',
                    **train_args))
        seed_everything(t.seed)
        model = build_model(s_spec).to(dev)
        with kept_on_failure(checkpoint, model, s_spec,
                             Path(settings.outputs.out), distiller.name,
                             graph.name, ranks.rank):
            result = fit_minibatch(model, graph, csr, method=distiller,
                                   teacher_outputs=[cached],
                                   label_weight=settings.label_weight,
                                   weight=settings.weight,
                                   desc=f'distill {distiller.name}',
                                   checkpoint=checkpoint, **train_args)
    finally:
        store.close()
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    x_sub, edges_sub = sample_subgraph(graph, csr, fanout, batch_size,
                                       t.seed)
    note = (f'mini-batch training: latency and ONNX parity measured on a '
            f'sampled subgraph of {x_sub.size(0):,} nodes and '
            f'{edges_sub.size(1):,} edges')
    return distill_outputs(
        settings, teacher=teacher, ckpt=ckpt, teacher_model=teacher_model,
        teacher_acc=teacher_acc, model=model, s_spec=s_spec,
        distiller=distiller, graph=graph, result=result,
        alone_entry=alone_entry, alone_model=alone,
        inputs=(x_sub, edges_sub, None),
        training=describe_training(
            result, epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
            patience=t.patience, batch_size=batch_size, fanout=list(fanout),
            **ranks.described()),
        notes=[n for n in (note, flat_teacher_note(cached.logits,
                                                     graph.multilabel)) if n],
        dev=dev)
