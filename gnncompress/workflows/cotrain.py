"""Online distillation without a teacher (``gnncompress cotrain``): M
students of one architecture, built from one seeded stream so each starts
differently, trained in turn by the one training loop; each receives its
peers' current outputs as "teachers" of an online method (Alignahead, its
same-depth ablation OC, mutual learning) or trains alone (``self``, the
baseline). The steps are those of
:class:`~gnncompress.training.regimes.peers.Peers`, the losses those of
:func:`~gnncompress.training.objectives.peers.peer_objective`.

The data (:mod:`gnncompress.training.peer_regimes`): one node-classification
graph (full-graph, or sampled subgraphs), graph classification (batches of
graphs), or several graphs of inductive node classification, single- or
multi-label (batches of whole training graphs)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core import out_folder as outputs
from gnncompress.core.errors import GnnCompressError, TrainingError
from gnncompress.core.graph import Graph
from gnncompress.core.options import (
    check_checkpointing,
    check_out,
    check_training,
)
from gnncompress.methods import DistillMethod
from gnncompress.models import ArchSpec, build_model
from gnncompress.models.spec import check_readout
from gnncompress.outputs import plots
from gnncompress.outputs.report import CotrainReport, ModelEntry
from gnncompress.tasks.datasets import GRAPH_DATASETS, load_graph
from gnncompress.tasks.graph_level import BATCH_SIZE, load_graph_set
from gnncompress.tasks.inductive import is_graph_list_name
from gnncompress.training import ranks as process_ranks
from gnncompress.training.loop import FitResult
from gnncompress.training.peer_regimes import train_peers
from gnncompress.training.regimes.graph_batches import (
    graphs_per_batch,
    training_graphs,
)
from gnncompress.training.sampling import CSR
from gnncompress.workflows.distill_sampled import (
    check_minibatch,
    sample_subgraph,
)
from gnncompress.workflows.distributed import (
    check_batches,
    launch,
    one_at_a_time,
    under_torchrun,
)
from gnncompress.workflows.settings import CotrainSettings

MIN_STUDENTS, MAX_STUDENTS = 2, 6
# cotrain --method NAME -> (registered method, its options); None: alone.
METHODS: dict[str, tuple[str, dict[str, Any]] | None] = {
    'alignahead': ('alignahead', {}),
    'oc': ('alignahead', {'cyclic': False}),
    'mutual': ('mutual', {}),
    'self': None,
}


def build_online_methods(method: str, students: int,
                         options: dict[str, Any] | None = None,
                         ) -> list[DistillMethod] | None:
    """One method instance per student (their trainable parts are their
    own), or None for ``self``."""
    from gnncompress.workflows.students import build_method

    key = method.lower()
    if key not in METHODS:
        raise GnnCompressError(f"Unknown cotrain method '{method}' (choose "
                               f"from {', '.join(METHODS)})")
    entry = METHODS[key]
    if entry is None:
        if options:
            raise GnnCompressError(f"Method 'self' takes no options (got "
                                   f"{', '.join(options)})")
        return None
    name, fixed = entry
    return [build_method(name, {**(options or {}), **fixed})
            for _ in range(students)]


def paper_options(method: str, graph: Graph,
                  options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Alignahead's (and OC's) kernel on multi-label data is the RBF
    kernel, as in the paper's PPI experiments, unless ``options`` name
    one: the default Euclidean kernel's structures over 100-odd label
    logits are so sharp that the students shrink every representation to
    flatten them and stop predicting any label."""
    if method.lower() in ('alignahead', 'oc') and graph.multilabel and \
            'kernel' not in (options or {}):
        return {**(options or {}), 'kernel': 'rbf'}
    return options


@dataclass
class OnlineRun:
    """The students of one split (one fold) after training."""
    students: list[nn.Module]
    results: list[FitResult]
    graph: Graph
    best: int = field(init=False)

    def __post_init__(self) -> None:
        vals = [r.val_accuracy for r in self.results]
        self.best = max(range(len(vals)),
                        key=lambda k: (vals[k] == vals[k], vals[k], -k))


@CotrainSettings.signed('CotrainReport | None')
def cotrain(data: str | Path | CotrainSettings,
            **options: Any) -> CotrainReport | None:
    """Train ``students`` peers of one architecture with an online method
    and write the best one by validation (``student.safetensors``,
    ``student.onnx``) and ``report.json``/``report.md`` listing every
    student to ``out``. ``folds`` (graph classification) repeats the run on
    each of that many stratified folds and exports fold 0's best.

    ``batch_size`` is the number of graphs per step for graph
    classification (default 32) and for several-graph node datasets
    (``SyntheticPPI``, ``PPI``, ``<TU>-nodes``, saved graph lists; default:
    enough graphs for 10 steps an epoch; see
    :func:`~gnncompress.training.peer_regimes.peer_regime`). On one
    node-classification graph it trains on sampled subgraphs of that many
    seed nodes with ``fanout`` neighbours per hop (``'15,10'``, one count
    per layer; default 15, 10, then 5), validating layer-wise
    (:class:`~gnncompress.training.peer_regimes.SampledParts`); without
    it the students train full-graph.

    ``checkpoint_every``, ``checkpoint_dir`` and ``resume`` save and
    continue the run as :func:`gnncompress.api.distill`'s do (one split:
    not with ``folds``). When a loss stops being finite, the best student
    so far is written to ``out/student.safetensors`` before the
    :class:`TrainingError`.

    ``nproc`` N (sampled subgraphs with ``batch_size``, or batches of
    whole graphs of the default size or ``batch_size``, split between the
    processes) trains in N processes with
    data parallelism, as does running under ``torchrun``
    (:mod:`gnncompress.workflows.distributed`); rank 0 writes the outputs
    and the other torchrun ranks return None.

    In place of ``data`` and the keywords: one
    :class:`~gnncompress.workflows.settings.CotrainSettings`."""
    return run_cotrain(CotrainSettings.given(data, options))


@outputs.one_run
def run_cotrain(settings: CotrainSettings) -> CotrainReport | None:
    """:func:`cotrain` on its settings, resolved on the way (output folder,
    the method's paper options, report.json's config) and handed to
    :func:`_write`."""
    s, batching = settings, settings.batching
    data = s.data
    if batching.nproc is not None or under_torchrun():
        return launch(run_cotrain, s)
    from gnncompress.workflows.inputs import root_used, with_resolved
    from gnncompress.workflows.runs import (
        check_writable,
        finish_checkpoint,
        interruptible,
        resolve_device,
        run_inputs,
        seed_everything,
        training_checkpoint,
    )

    t, p, c = s.training, s.peers, s.checkpointing
    batch_size, fanout, folds = batching.batch_size, batching.fanout, s.folds
    check_training(lr=t.lr, weight_decay=t.weight_decay, seed=t.seed,
                   weight=s.weight)
    if folds is None:  # with --folds, any checkpoint option is refused
        check_checkpointing(c.checkpoint_every, c.checkpoint_dir, c.resume)
    check_readout(p.readout, '--readout')  # node tasks ignore it
    if not MIN_STUDENTS <= p.students <= MAX_STUDENTS:
        raise GnnCompressError(
            f"'students' must be {MIN_STUDENTS} to {MAX_STUDENTS} (got "
            f'{p.students}): online distillation needs peers, and the paper '
            f'goes up to {MAX_STUDENTS}')
    if batch_size is not None and batch_size < 1:
        raise GnnCompressError(f"'batch_size' must be at least 1 "
                               f'(got {batch_size})')
    peers = build_online_methods(s.method, p.students, s.method_options)
    # The online loss's weight; 'self' has none.
    default_weight = peers[0].default_weight if peers else 0.0
    key = str(data).lower()
    hops = None
    if key in GRAPH_DATASETS:
        _whole_graphs(fanout, 'graph classification')
        batch_size = BATCH_SIZE if batch_size is None else batch_size
    elif is_graph_list_name(key):
        _whole_graphs(fanout, 'a several-graph node dataset')
    elif batch_size is not None or fanout is not None:
        batch_size, hops = check_minibatch(None, batch_size, fanout,
                                           p.layers, who='each student')
    check_out(s.outputs.out)
    out = Path(s.outputs.out) if s.outputs.out is not None else \
        Path('gnncompress-out') / f'{Path(str(data)).stem}-{s.method.lower()}'
    dev = resolve_device(s.device)
    check_writable(out)
    outputs.claim(out, run_inputs(data))
    if folds is not None:
        if key not in GRAPH_DATASETS:
            raise GnnCompressError(
                f"--folds applies to the graph-classification datasets "
                f"({', '.join(v[1] for v in GRAPH_DATASETS.values())}; got "
                f"'{data}')")
        if not 3 <= folds <= 20:
            raise GnnCompressError(
                f"'folds' must be 3 to 20 (got {folds}): one fold tests, "
                f'the next validates')
        if c.checkpoint_every is not None or c.resume is not None or \
                c.checkpoint_dir is not None:
            raise GnnCompressError(
                '--checkpoint-every, --checkpoint-dir and --resume save one '
                'run, and --folds '
                'trains one per fold: drop --folds or the checkpoint')

    def load(fold: int) -> Graph:
        if folds is None:
            return load_graph(data, s.data_root, seed=t.seed)
        return load_graph_set(GRAPH_DATASETS[key][1], s.data_root, t.seed,
                              fold, folds)

    with one_at_a_time():
        graph = load(0)
    check_batches([graph], batch_size)
    inductive = graph.node_graph is not None
    if inductive:  # a saved list of graphs shows itself once loaded
        _whole_graphs(fanout, 'a several-graph node dataset')
        hops = None
    spec = ArchSpec(arch=p.arch, in_channels=graph.num_features,
                    hidden_channels=p.hidden, num_layers=p.layers,
                    out_channels=graph.num_classes,
                    heads=p.heads if p.arch in ('gat', 'gatv2') else 1,
                    dropout=p.dropout, norm=p.norm,
                    readout=p.readout if graph.batch is not None else None)
    method_options = paper_options(s.method, graph, s.method_options)
    runs = []
    sample = None
    ranks = process_ranks.current()
    if inductive:
        batch_size = graphs_per_batch(training_graphs(graph), batch_size)
    s = s.with_options(out=out, method_options=method_options, config=(
        with_resolved(s.outputs.config or {}, {
            'data_root': root_used(data, s.data_root),
            'weight': default_weight if s.weight is None else s.weight,
            'batch_size': batch_size,
            'fanout': None if hops is None else ','.join(map(str, hops)),
            'device': dev.type, 'out': str(out)})))
    saver = training_checkpoint(
        out, c.checkpoint_every, c.checkpoint_dir, c.resume,
        data=graph.name, nodes=graph.num_nodes,
        edges=int(graph.edge_index.size(1)), split=graph.split,
        method=s.method.lower(), method_options=method_options or {},
        weight=s.weight, students=p.students, student=spec.to_dict(),
        epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
        patience=t.patience, batch_size=batch_size, fanout=hops,
        seed=t.seed, device=dev.type)
    for fold in range(folds or 1):
        if fold:
            graph = load(fold)
        # Sampled batches move to the device one by one; the graph stays.
        g = graph.to(dev) if hops is None else graph.to('cpu')
        seed_everything(t.seed)
        models = [build_model(spec).to(dev) for _ in range(p.students)]
        online = build_online_methods(s.method, p.students, method_options)
        csr = None
        if hops is not None:
            csr = CSR.from_edges(g.edge_index, g.num_nodes)
            sample = sample_subgraph(g, csr, hops, batch_size, t.seed)
        desc = f'cotrain {s.method}' + (f' fold {fold}' if folds else '')
        try:
            with interruptible(saver):
                results = train_peers(
                    models, g, online, epochs=t.epochs, lr=t.lr,
                    weight_decay=t.weight_decay, weight=s.weight,
                    patience=t.patience, batch_size=batch_size, fanout=hops,
                    seed=t.seed, csr=csr, progress=t.progress, desc=desc,
                    checkpoint=saver)
        except TrainingError as e:
            if ranks.rank != 0:
                raise
            raise _keep_best(e, models, spec, out, s.method, g) from None
        runs.append(OnlineRun(models, results, g))
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    report = _write(runs, spec, s, dev,
                    dict(epochs=t.epochs, lr=t.lr,
                         weight_decay=t.weight_decay, patience=t.patience,
                         batch_size=batch_size, fanout=hops,
                         **ranks.described()),
                    sample)
    finish_checkpoint(saver, out)
    return report

def _keep_best(error: TrainingError, models: Sequence[nn.Module],
               spec: ArchSpec, out: Path, method: str,
               graph: Graph) -> TrainingError:
    """A run whose loss stopped being finite, every student back at its
    best epoch: the best of them by validation is written to
    ``out/student.safetensors`` (nothing when no epoch finished)."""
    from gnncompress.workflows.runs import (
        keep_last_good,
    )

    epochs, scores = error.best_epoch, error.val_accuracy
    vals = [v if e else math.nan for e, v in zip(epochs, scores)]
    best = max(range(len(vals)),
               key=lambda k: (vals[k] == vals[k], vals[k], -k))
    kept = TrainingError(str(error))
    kept.best_epoch, kept.val_accuracy = epochs[best], scores[best]
    return keep_last_good(kept, models[best], spec, out,
                              f'cotrain-{method.lower()}', graph.name)


def _whole_graphs(fanout: Any, kind: str) -> None:
    """Refuse ``--fanout`` where training takes batches of whole graphs."""
    if fanout is not None:
        raise GnnCompressError(
            f'--fanout samples subgraphs of one node-classification graph; '
            f'{kind} trains on batches of whole graphs (--batch-size '
            f'graphs per step): drop --fanout')


def _write(runs: list[OnlineRun], spec: ArchSpec, settings: CotrainSettings,
           dev: torch.device, training: dict[str, Any],
           sample: tuple[Tensor, Tensor] | None = None) -> CotrainReport:
    """Export the best student of fold 0 and write the report, as the
    resolved ``settings`` say. ``sample`` (features and edges of a sampled
    subgraph, for mini-batch runs) stands in for the whole graph in the
    latency and ONNX measurements."""
    from gnncompress.checkpoints.students import save_safetensors
    from gnncompress.models import count_parameters
    from gnncompress.outputs.latency import (
        measuring,
        onnx_latency,
        torch_figures,
    )
    from gnncompress.outputs.onnx import export_onnx
    from gnncompress.workflows.results import report_files
    from gnncompress.workflows.runs import (
        staged_output,
        versions,
    )

    method, weight = settings.method, settings.weight
    out, folds = Path(settings.outputs.out), settings.folds
    first = runs[0]
    g = first.graph
    graph_level = g.batch is not None
    entries = [[ModelEntry(role=f'student {k + 1}', spec=spec.to_dict(),
                           parameters=count_parameters(m),
                           test_accuracy=r.test_accuracy,
                           val_accuracy=r.val_accuracy)
                for k, (m, r) in enumerate(zip(run.students, run.results))]
               for run in runs]
    chosen = entries[0][first.best]
    model = first.students[first.best]
    files: dict[str, str] = {}
    parity: dict[str, float] = {}
    relative: dict[str, float] = {}
    notes: list[str] = []
    if sample is None:
        measured = g.x, g.edge_index, g.batch
    else:
        measured = sample[0].to(dev), sample[1].to(dev), None
        notes.append(f'mini-batch training: latency and ONNX parity measured '
                     f'on a sampled subgraph of {sample[0].size(0):,} nodes '
                     f'and {sample[1].size(1):,} edges')
    with staged_output(out) as stage:
        if measuring():
            chosen.latency.update(torch_figures(model, *measured))
        if settings.outputs.export:
            path = save_safetensors(
                model, spec, stage / 'student.safetensors',
                extra={'gnncompress.method': f'cotrain-{method}',
                       'gnncompress.data': g.name})
            chosen.file = str(out / 'student.safetensors')
            chosen.file_bytes = path.stat().st_size
            files['safetensors'] = chosen.file
            cpu = [t if t is None else t.to('cpu') for t in measured]
            onnx_path = stage / 'student.onnx'
            checked = export_onnx(model, cpu[0], cpu[1], onnx_path,
                                  batch=cpu[2])
            parity, relative = checked.cases, checked.relative_cases()
            files['onnx'] = str(out / 'student.onnx')
            if measuring():
                chosen.latency['onnxruntime-cpu'] = onnx_latency(
                    onnx_path, *cpu).to_dict()
            model.to(dev)
        files['report_json'] = str(out / 'report.json')
        files['report_md'] = str(out / 'report.md')
        selected = [run.results[run.best].test_accuracy for run in runs]
        res = first.results[0]
        report = CotrainReport(
            command=settings.outputs.command or
            f'gnncompress cotrain --data {g.name}',
            method=method, method_options={
                **(settings.method_options or {}),
                **({} if METHODS[method.lower()] is None else
                   {'weight': 1.0 if weight is None else weight})},
            data=_describe_data(g, graph_level),
            students=entries[0], best_student=first.best + 1,
            folds=[{'fold': i, 'best_student': run.best + 1,
                    'test_accuracy': [e.test_accuracy for e in fold],
                    'val_accuracy': [e.val_accuracy for e in fold]}
                   for i, (run, fold) in enumerate(zip(runs, entries))]
            if folds else [],
            test_accuracy_mean=statistics.fmean(selected),
            test_accuracy_std=statistics.stdev(selected)
            if len(selected) > 1 else 0.0,
            onnx_max_abs_diff=max(parity.values(), default=float('nan')),
            onnx_parity=parity, onnx_parity_relative=relative,
            training={**training, 'epochs_run': res.epochs_run,
                      'seconds': sum(r.results[0].seconds for r in runs),
                      'seconds_per_epoch': res.seconds /
                      max(1, res.epochs_run),
                      'best_epochs': [r.best_epoch for r in first.results],
                      'histories': [r.history for r in first.results]},
            seed=settings.training.seed, device=str(dev),
            versions=versions(), files=files,
            config=settings.outputs.config, notes=notes)
        report_files(report, stage, out, files, 'training.png',
                     plots.cotrain_training)
    return report


def _describe_data(g: Graph, graph_level: bool) -> dict[str, Any]:
    info = {'name': g.name, 'nodes': g.num_nodes,
            'edges': int(g.edge_index.size(1)), 'features': g.num_features,
            'classes': g.num_classes, 'split': g.split,
            'task': 'graph' if graph_level else 'node'}
    if graph_level:
        info['graphs'] = int(g.y.numel())
    elif g.node_graph is not None:
        info['graphs'] = int(g.node_graph.max()) + 1
    return info


__all__ = ['METHODS', 'build_online_methods', 'cotrain', 'run_cotrain']
