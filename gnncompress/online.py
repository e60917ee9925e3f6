"""Online distillation without a teacher (``gnncompress cotrain``): M
students of one architecture, built from one seeded stream so each starts
differently, trained alternately; each receives its peers' current outputs
as "teachers" of an online method (Alignahead, its same-depth ablation OC,
mutual learning) or trains alone (``self``, the baseline).

The data: one node-classification graph (full-graph, or sampled subgraphs:
:class:`SampledOnlineTrainer`), graph classification (batches of graphs),
or several graphs of inductive node classification, single- or
multi-label (batches of whole training graphs:
:class:`InductiveOnlineTrainer`)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress import outputs, plots
from gnncompress.core import Graph, accuracy
from gnncompress.data import GRAPH_DATASETS, load_graph
from gnncompress.errors import GnnCompressError
from gnncompress.graphlevel import BATCH_SIZE, load_graph_set
from gnncompress.inductive import is_graph_list_name, supervised_loss
from gnncompress.methods import DistillMethod
from gnncompress.minibatch import check_minibatch, sample_subgraph
from gnncompress.models import (
    ArchSpec,
    ModelOutput,
    build_model,
    run_model,
    sparse_input,
)
from gnncompress.options import check_out
from gnncompress.report import CotrainReport, ModelEntry
from gnncompress.sampling import CSR, MEMMAP_BYTES, Batch, NeighborSampler
from gnncompress.training.loop import FitResult, check_finite, progress_bar
from gnncompress.training.regimes.graph_batches import (
    cut,
    graph_batches,
    graphs_per_batch,
    iter_batches,
    training_graphs,
)
from gnncompress.training.regimes.sampled import (
    batch_graph,
    batch_view,
    evaluate,
    seed_cross_entropy,
)
from gnncompress.training.selection import Selection

MIN_STUDENTS, MAX_STUDENTS = 2, 6
# cotrain --method NAME -> (registered method, its options); None: alone.
METHODS: dict[str, tuple[str, dict[str, Any]] | None] = {
    'alignahead': ('alignahead', {}),
    'oc': ('alignahead', {'cyclic': False}),
    'mutual': ('mutual', {}),
    'self': None,
}


class OnlineTrainer:
    """Alternating updates of ``students``: in each step one student k
    moves (its own Adam, its own method instance) while its peers are
    fixed and only provide outputs (eval mode, no gradient).

    A peer's output is computed once and kept until that peer's next step,
    so on a full graph each student runs one extra forward per epoch, the
    one its validation needs anyway; on graph batches the cache lives for
    one batch. An epoch's loss in the history is the mean over its
    batches.
    """

    def __init__(self, students: list[nn.Module], graph: Graph,
                 methods: list[DistillMethod] | None, *, lr: float,
                 weight_decay: float, weight: float | None = None,
                 label_weight: float = 1.0, patience: int | None = None,
                 batch_size: int = BATCH_SIZE, seed: int = 0) -> None:
        self.students, self.graph, self.methods = students, graph, methods
        self.label_weight = label_weight
        self.batch_size = batch_size
        self.term = 'bce' if graph.multilabel else 'ce'
        self.generator = torch.Generator().manual_seed(seed)
        self._cache: dict[int, ModelOutput] = {}
        if methods is not None:
            probe = self._probe()
            outs = [self._eval(s, probe) for s in students]
            for k, method in enumerate(methods):
                method.prepare(*self._loss_inputs(
                    method, self._others(outs, k), outs[k], probe))
                method.to(self.device)
            self.weight = methods[0].default_weight if weight is None \
                else weight
        self.optimizers = [
            torch.optim.Adam(list(s.parameters()) +
                             (list(methods[k].parameters()) if methods
                              else []), lr=lr, weight_decay=weight_decay)
            for k, s in enumerate(students)]
        self.selections = [Selection(s, patience) for s in students]

    @property
    def device(self) -> torch.device:
        return next(self.students[0].parameters()).device

    @staticmethod
    def _others(items: list, k: int) -> list:
        return items[:k] + items[k + 1:]

    # What one step trains on (a Graph here; subclasses use other parts).

    def _probe(self) -> Any:
        """The part the methods are prepared on."""
        return self.graph

    def _run(self, model: nn.Module, graph: Graph) -> ModelOutput:
        return run_model(model, graph.x, graph.edge_index, graph.batch)

    def _supervised(self, out: ModelOutput, graph: Graph) -> Tensor:
        mask = graph.train_mask
        return supervised_loss(out.logits[mask], graph.y[mask])

    def _loss_inputs(self, method: DistillMethod, peers: list[ModelOutput],
                     out: ModelOutput, graph: Graph,
                     ) -> tuple[list[ModelOutput], ModelOutput, Graph]:
        """The arguments of ``method.loss`` on one part."""
        return peers, out, graph

    def _logits(self, k: int) -> Tensor:
        """Student k's logits on the whole graph, in eval mode (validation
        and test)."""
        if self.graph.batch is None:  # the full graph: the cached forward
            return self.peer_output(k, self.graph).logits
        return self._eval(self.students[k], self.graph).logits

    @torch.no_grad()
    def _eval(self, model: nn.Module, part: Any) -> ModelOutput:
        model.eval()
        return self._run(model, part)

    def peer_output(self, j: int, part: Any) -> ModelOutput:
        if j not in self._cache:
            self._cache[j] = self._eval(self.students[j], part)
        return self._cache[j]

    def parts(self) -> Iterator[Any]:
        """The parts of one epoch: the whole graph (node
        classification) or shuffled batches of training graphs."""
        if self.graph.batch is None:
            yield self.graph
            return
        for part in iter_batches(self.graph, self.batch_size,
                                 self.generator):
            self._cache.clear()
            yield part.graph

    def step(self, k: int, part: Any, epoch: int = 0) -> float:
        """One update of student ``k`` on ``part`` (a graph, or a batch
        :meth:`parts` yields); its peers only run forward, without
        gradient."""
        student, optimizer = self.students[k], self.optimizers[k]
        peers = [self.peer_output(j, part) for j in
                 range(len(self.students)) if j != k] if self.methods \
            else []
        student.train()
        optimizer.zero_grad(set_to_none=True)
        out = self._run(student, part)
        terms = {self.term: self._supervised(out, part)}
        loss = self.label_weight * terms[self.term]
        if self.methods:
            method = self.methods[k].train()
            terms[method.name] = method.loss(
                *self._loss_inputs(method, peers, out, part))
            loss = loss + self.weight * terms[method.name]
        check_finite(loss, terms, epoch, who=f' of student {k + 1}')
        loss.backward()
        optimizer.step()
        self._cache.pop(k, None)  # its output changed
        return float(loss.detach())

    def validate(self, epoch: int) -> list[float]:
        scores = []
        for k, selection in enumerate(self.selections):
            score = accuracy(self._logits(k), self.graph.y,
                             self.graph.val_mask)
            selection.update(epoch, score)
            scores.append(score)
        return scores

    def run(self, epochs: int, progress: bool = True,
            desc: str = 'cotrain') -> list[FitResult]:
        """Train every student for ``epochs`` (or until every one has run
        out of patience) and leave each at its best validation epoch."""
        start = time.perf_counter()
        bar = progress_bar(epochs, desc, progress)
        histories: list[list[dict[str, float]]] = [[] for _ in self.students]
        epoch = 0
        for epoch in bar:
            losses = [0.0] * len(self.students)
            steps = 0
            for part in self.parts():
                for k in range(len(self.students)):
                    losses[k] += self.step(k, part, epoch)
                steps += 1
            scores = self.validate(epoch)
            for k, history in enumerate(histories):
                history.append({'epoch': epoch,
                                'loss': losses[k] / max(1, steps),
                                'val': scores[k]})
            bar.set_postfix(best=' '.join(f'{s.best_score:.3f}'
                                          for s in self.selections))
            if all(s.should_stop(epoch) for s in self.selections):
                break
        bar.close()
        seconds = time.perf_counter() - start
        self._cache.clear()
        results = []
        for k, selection in enumerate(self.selections):
            selection.restore()
            logits = self._logits(k)
            results.append(FitResult(
                best_epoch=selection.best_epoch,
                val_accuracy=selection.best_score
                if selection.best_epoch else float('nan'),
                test_accuracy=accuracy(logits, self.graph.y,
                                       self.graph.test_mask),
                epochs_run=epoch, seconds=seconds, history=histories[k]))
        self._cache.clear()
        return results


class InductiveOnlineTrainer(OnlineTrainer):
    """:class:`OnlineTrainer` on a several-graph node dataset (the union
    :mod:`gnncompress.inductive` builds), in the way of
    :func:`~gnncompress.inductive.fit_inductive`: each epoch shuffles the
    training graphs and every student takes one step per batch of
    ``batch_size`` whole training graphs (default: enough graphs for
    ``STEPS_PER_EPOCH`` steps), in the full-graph trainer's order, its
    peers' outputs on the batch kept until their own step.

    A step's loss is ``label_weight`` times the supervised loss over the
    batch's nodes (BCE-with-logits for a 0/1 label matrix, cross-entropy
    otherwise) plus ``weight`` times the online loss on the batch:
    Alignahead's (OC's) layer structures over its edges, mutual learning's
    terms over its nodes (their per-label Bernoulli form when multi-label,
    :class:`~gnncompress.methods.mutual.Mutual`). The methods are prepared
    on the training graphs; validation and test run each student once over
    the whole union (messages never cross graphs) and score the validation
    and test graphs: micro-F1 at logit 0 when multi-label, else accuracy.
    Validation and test graphs never enter a training step.
    """

    def __init__(self, students: list[nn.Module], graph: Graph,
                 methods: list[DistillMethod] | None, *, lr: float,
                 weight_decay: float, weight: float | None = None,
                 label_weight: float = 1.0, patience: int | None = None,
                 batch_size: int | None = None, seed: int = 0) -> None:
        if graph.node_graph is None:
            raise ValueError('InductiveOnlineTrainer needs a several-graph '
                             'node dataset')
        self.train_ids = training_graphs(graph)
        super().__init__(students, graph, methods, lr=lr,
                         weight_decay=weight_decay, weight=weight,
                         label_weight=label_weight, patience=patience,
                         batch_size=graphs_per_batch(self.train_ids,
                                                     batch_size),
                         seed=seed)

    def _probe(self) -> Graph:
        return cut(self.graph, self.train_ids).graph

    def parts(self) -> Iterator[Graph]:
        for part in graph_batches(self.graph, self.train_ids,
                                  self.batch_size, self.generator):
            self._cache.clear()
            yield part.graph

    def _logits(self, k: int) -> Tensor:
        return self._eval(self.students[k], self.graph).logits


@dataclass
class SampledPart:
    """One sampled subgraph as the students see it: the features and
    edges of its nodes on their device, and (filled as needed) the graph
    their losses take, per kind of ``batch_logits``."""
    batch: Batch
    x: Tensor           # [n, F]
    edge_index: Tensor  # [2, e], local ids
    graphs: dict[str, Graph] = field(default_factory=dict)


class SampledOnlineTrainer(OnlineTrainer):
    """:class:`OnlineTrainer` on sampled subgraphs of one
    node-classification graph (``cotrain --batch-size B --fanout 15,10``),
    for graphs too large for one full-graph pass.

    Every batch of seeds is sampled once (:class:`NeighborSampler`, up to
    ``fanout[i]`` in-neighbours per node at hop i) and all the students
    take their steps on it in turn, in the full-graph trainer's order:
    student k sees the peers before it already updated on this batch and
    those after it not yet (a peer's output on the batch is kept until its
    own step). Each step's loss is ``label_weight`` times the
    cross-entropy over the seeds that are training nodes, plus ``weight``
    times the online loss on :func:`~gnncompress.minibatch.batch_view` of
    student and peers: Alignahead's (and OC's) layer structures over the
    edges into the seeds, from every sampled node's features; mutual
    learning's KL and entropy over the seeds' logits, its ensemble
    cross-entropy over the training seeds.

    Seeds: with an online method, every node once per epoch (shuffled), as
    the full-graph trainer's online losses cover every node (each node's
    structure, each node's KL and entropy), not only the labelled ones;
    for ``self`` (no method) only the training nodes, the only ones its
    loss sees. So one batch of every node with ``fanout`` -1 (all
    neighbours) is the full graph and gives the full-graph trainer's
    losses. The methods are prepared on a first batch; validation and the
    final test run layer-wise over all nodes in bounded memory
    (:func:`~gnncompress.minibatch.evaluate`). ``graph`` stays where it is
    (the CPU); each batch moves to the students' device.
    """

    def __init__(self, students: list[nn.Module], graph: Graph,
                 methods: list[DistillMethod] | None, *,
                 fanout: Sequence[int], batch_size: int, lr: float,
                 weight_decay: float, weight: float | None = None,
                 label_weight: float = 1.0, patience: int | None = None,
                 seed: int = 0, csr: CSR | None = None,
                 memmap_bytes: int = MEMMAP_BYTES) -> None:
        if graph.batch is not None or graph.node_graph is not None:
            raise ValueError('sampled subgraphs need one node-'
                             'classification graph')
        self.csr = csr if csr is not None else \
            CSR.from_edges(graph.edge_index, graph.num_nodes)
        self.memmap_bytes = memmap_bytes
        self.sampler = NeighborSampler(self.csr, fanout, batch_size,
                                       torch.Generator().manual_seed(seed))
        self.seeds = torch.arange(graph.num_nodes) if methods is not None \
            else graph.train_mask.nonzero().view(-1)
        super().__init__(students, graph, methods, lr=lr,
                         weight_decay=weight_decay, weight=weight,
                         label_weight=label_weight, patience=patience,
                         batch_size=batch_size, seed=seed)

    def _part(self, batch: Batch) -> SampledPart:
        x = self.graph.x[batch.n_id].to(self.device)
        # Every student and peer reads these rows: large sparse features
        # are worth their sparse form (models/sparse_input.py) once each.
        sparse_input.register(x)
        return SampledPart(batch, x, batch.edge_index.to(self.device))

    def parts(self) -> Iterator[SampledPart]:
        for batch in self.sampler.batches(self.seeds):
            self._cache.clear()
            yield self._part(batch)

    def _probe(self) -> SampledPart:
        return self._part(self.sampler.sample(self.seeds[:self.batch_size]))

    def _run(self, model: nn.Module, part: SampledPart) -> ModelOutput:
        return run_model(model, part.x, part.edge_index)

    def _supervised(self, out: ModelOutput, part: SampledPart) -> Tensor:
        return seed_cross_entropy(out.logits, self.graph, part.batch)

    def _loss_inputs(self, method: DistillMethod, peers: list[ModelOutput],
                     out: ModelOutput, part: SampledPart,
                     ) -> tuple[list[ModelOutput], ModelOutput, Graph]:
        kind = method.batch_logits
        if kind not in part.graphs:
            part.graphs[kind] = batch_graph(self.graph, part.batch, part.x,
                                            labels=kind).to(self.device)
        return ([batch_view(p, part.batch, rows=False, logits=kind)
                 for p in peers],
                batch_view(out, part.batch, rows=False, logits=kind),
                part.graphs[kind])

    def _logits(self, k: int) -> Tensor:
        return evaluate(self.students[k], self.graph, self.csr,
                        self.memmap_bytes)


def build_online_methods(method: str, students: int,
                         options: dict[str, Any] | None = None,
                         ) -> list[DistillMethod] | None:
    """One method instance per student (their trainable parts are their
    own), or None for ``self``."""
    from gnncompress.api import build_method

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


@outputs.one_run
def cotrain(data: str | Path, *, data_root: str | Path | None = None,
            method: str = 'alignahead',
            method_options: dict[str, Any] | None = None,
            students: int = 2, arch: str = 'gcn', hidden: int = 128,
            layers: int = 3, heads: int = 1, readout: str = 'mean',
            dropout: float = 0.5, norm: str | None = None,
            epochs: int = 200, lr: float = 0.01,
            weight_decay: float = 5e-4, weight: float | None = None,
            patience: int | None = None, batch_size: int | None = None,
            fanout: str | Sequence[int] | None = None,
            folds: int | None = None, seed: int = 0, device: str = 'auto',
            out: str | Path | None = None, export: bool = True,
            progress: bool = True, command: str = '',
            config: dict[str, Any] | None = None) -> CotrainReport:
    """Train ``students`` peers of one architecture with an online method
    and write the best one by validation (``student.safetensors``,
    ``student.onnx``) and ``report.json``/``report.md`` listing every
    student to ``out``. ``folds`` (graph classification) repeats the run on
    each of that many stratified folds and exports fold 0's best.

    ``batch_size`` is the number of graphs per step for graph
    classification (default 32) and for several-graph node datasets
    (``SyntheticPPI``, ``PPI``, ``<TU>-nodes``, saved graph lists; default:
    enough graphs for 10 steps an epoch, :class:`InductiveOnlineTrainer`).
    On one node-classification graph it
    trains on sampled subgraphs of that many seed nodes with ``fanout``
    neighbours per hop (``'15,10'``, one count per layer; default 15, 10,
    then 5), validating layer-wise (:class:`SampledOnlineTrainer`); without
    it the students train full-graph."""
    from gnncompress import api

    if not MIN_STUDENTS <= students <= MAX_STUDENTS:
        raise GnnCompressError(
            f"'students' must be {MIN_STUDENTS} to {MAX_STUDENTS} (got "
            f'{students}): online distillation needs peers, and the paper '
            f'goes up to {MAX_STUDENTS}')
    if batch_size is not None and batch_size < 1:
        raise GnnCompressError(f"'batch_size' must be at least 1 "
                               f'(got {batch_size})')
    build_online_methods(method, students, method_options)  # check early
    key = str(data).lower()
    hops = None
    if key in GRAPH_DATASETS:
        _whole_graphs(fanout, 'graph classification')
        batch_size = BATCH_SIZE if batch_size is None else batch_size
    elif is_graph_list_name(key):
        _whole_graphs(fanout, 'a several-graph node dataset')
    elif batch_size is not None or fanout is not None:
        batch_size, hops = check_minibatch(None, batch_size, fanout, layers,
                                           who='each student')
    check_out(out)
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / f'{Path(str(data)).stem}-{method.lower()}'
    dev = api.resolve_device(device)
    api.check_writable(out)
    outputs.claim(out, api.run_inputs(data))
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

    def load(fold: int) -> Graph:
        if folds is None:
            return load_graph(data, data_root, seed=seed)
        return load_graph_set(GRAPH_DATASETS[key][1], data_root, seed, fold,
                              folds)

    graph = load(0)
    inductive = graph.node_graph is not None
    if inductive:  # a saved list of graphs shows itself once loaded
        _whole_graphs(fanout, 'a several-graph node dataset')
        hops = None
    spec = ArchSpec(arch=arch, in_channels=graph.num_features,
                    hidden_channels=hidden, num_layers=layers,
                    out_channels=graph.num_classes,
                    heads=heads if arch in ('gat', 'gatv2') else 1,
                    dropout=dropout, norm=norm,
                    readout=readout if graph.batch is not None else None)
    method_options = paper_options(method, graph, method_options)
    runs = []
    sample = None
    train_args = dict(lr=lr, weight_decay=weight_decay, weight=weight,
                      patience=patience, seed=seed)
    for fold in range(folds or 1):
        if fold:
            graph = load(fold)
        # Sampled batches move to the device one by one; the graph stays.
        g = graph.to(dev) if hops is None else graph.to('cpu')
        api.seed_everything(seed)
        models = [build_model(spec).to(dev) for _ in range(students)]
        online = build_online_methods(method, students, method_options)
        if inductive:
            trainer = InductiveOnlineTrainer(models, g, online,
                                             batch_size=batch_size,
                                             **train_args)
            batch_size = trainer.batch_size
        elif hops is None:
            trainer = OnlineTrainer(models, g, online,
                                    batch_size=batch_size or BATCH_SIZE,
                                    **train_args)
        else:
            trainer = SampledOnlineTrainer(models, g, online, fanout=hops,
                                           batch_size=batch_size,
                                           **train_args)
            sample = sample_subgraph(g, trainer.csr, hops, batch_size,
                                     seed)
        desc = f'cotrain {method}' + (f' fold {fold}' if folds else '')
        runs.append(OnlineRun(models, trainer.run(epochs, progress, desc),
                              g))
    return _write(runs, spec, method, method_options, weight, out, dev,
                  export, command, folds, seed,
                  dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                       patience=patience, batch_size=batch_size,
                       fanout=hops),
                  config or {}, sample)


def _whole_graphs(fanout: Any, kind: str) -> None:
    """Refuse ``--fanout`` where training takes batches of whole graphs."""
    if fanout is not None:
        raise GnnCompressError(
            f'--fanout samples subgraphs of one node-classification graph; '
            f'{kind} trains on batches of whole graphs (--batch-size '
            f'graphs per step): drop --fanout')


def _write(runs: list[OnlineRun], spec: ArchSpec, method: str,
           method_options: dict[str, Any] | None, weight: float | None,
           out: Path, dev: torch.device, export: bool, command: str,
           folds: int | None, seed: int, training: dict[str, Any],
           config: dict[str, Any],
           sample: tuple[Tensor, Tensor] | None = None) -> CotrainReport:
    """Export the best student of fold 0 and write the report. ``sample``
    (features and edges of a sampled subgraph, for mini-batch runs) stands
    in for the whole graph in the latency and ONNX measurements."""
    from gnncompress import api
    from gnncompress.bench import measuring, onnx_latency, torch_latency
    from gnncompress.export import export_onnx, save_safetensors
    from gnncompress.models import count_parameters

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
    with api.staged_output(out) as stage:
        if measuring():
            chosen.latency[f'pytorch-{dev.type}'] = torch_latency(
                model, *measured).to_dict()
        if export:
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
            command=command or f'gnncompress cotrain --data {g.name}',
            method=method, method_options={
                **(method_options or {}),
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
            seed=seed, device=str(dev), versions=api.versions(),
            files=files, config=config, notes=notes)
        if plots.drawn('training.png', plots.cotrain_training,
                       report.to_dict(), stage / 'training.png'):
            files['training_png'] = str(out / 'training.png')
        (stage / 'report.json').write_text(report.to_json() + '\n')
        (stage / 'report.md').write_text(report.to_markdown())
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


__all__ = ['METHODS', 'InductiveOnlineTrainer', 'OnlineTrainer',
           'SampledOnlineTrainer',
           'build_online_methods', 'cotrain']
