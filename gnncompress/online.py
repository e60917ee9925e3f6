"""Online distillation without a teacher (``gnncompress cotrain``): M
students of one architecture, built from one seeded stream so each starts
differently, trained alternately; each receives its peers' current outputs
as "teachers" of an online method (Alignahead, its same-depth ablation OC,
mutual learning) or trains alone (``self``, the baseline)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gnncompress.data import GRAPH_DATASETS, Graph, load_graph
from gnncompress.engine import (
    FitResult,
    Selection,
    accuracy,
    check_finite,
    progress_bar,
)
from gnncompress.errors import GnnCompressError
from gnncompress.graphlevel import BATCH_SIZE, iter_batches, load_graph_set
from gnncompress.inductive import single_graph_only
from gnncompress.methods import DistillMethod
from gnncompress.models import ArchSpec, ModelOutput, build_model, run_model
from gnncompress.report import CotrainReport, ModelEntry

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
    one batch.
    """

    def __init__(self, students: list[nn.Module], graph: Graph,
                 methods: list[DistillMethod] | None, *, lr: float,
                 weight_decay: float, weight: float | None = None,
                 label_weight: float = 1.0, patience: int | None = None,
                 batch_size: int = BATCH_SIZE, seed: int = 0) -> None:
        self.students, self.graph, self.methods = students, graph, methods
        self.label_weight = label_weight
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._cache: dict[int, ModelOutput] = {}
        if methods is not None:
            whole = [self._eval(s, graph) for s in students]
            for k, method in enumerate(methods):
                method.prepare(self._others(whole, k), whole[k], graph)
                method.to(graph.x.device)
            self.weight = methods[0].default_weight if weight is None \
                else weight
        self.optimizers = [
            torch.optim.Adam(list(s.parameters()) +
                             (list(methods[k].parameters()) if methods
                              else []), lr=lr, weight_decay=weight_decay)
            for k, s in enumerate(students)]
        self.selections = [Selection(s, patience) for s in students]

    @staticmethod
    def _others(items: list, k: int) -> list:
        return items[:k] + items[k + 1:]

    @staticmethod
    @torch.no_grad()
    def _eval(model: nn.Module, graph: Graph) -> ModelOutput:
        model.eval()
        return run_model(model, graph.x, graph.edge_index, graph.batch)

    def peer_output(self, j: int, graph: Graph) -> ModelOutput:
        if j not in self._cache:
            self._cache[j] = self._eval(self.students[j], graph)
        return self._cache[j]

    def parts(self) -> Iterator[Graph]:
        """The graphs of one epoch: the whole graph (node
        classification) or shuffled batches of training graphs."""
        if self.graph.batch is None:
            yield self.graph
            return
        for part in iter_batches(self.graph, self.batch_size,
                                 self.generator):
            self._cache.clear()
            yield part.graph

    def step(self, k: int, graph: Graph, epoch: int = 0) -> float:
        """One update of student ``k`` on ``graph``; its peers only run
        forward, without gradient."""
        student, optimizer = self.students[k], self.optimizers[k]
        peers = [self.peer_output(j, graph) for j in
                 range(len(self.students)) if j != k] if self.methods \
            else []
        student.train()
        optimizer.zero_grad(set_to_none=True)
        out = run_model(student, graph.x, graph.edge_index, graph.batch)
        mask = graph.train_mask
        terms = {'ce': F.cross_entropy(out.logits[mask], graph.y[mask])}
        loss = self.label_weight * terms['ce']
        if self.methods:
            method = self.methods[k].train()
            terms[method.name] = method.loss(peers, out, graph)
            loss = loss + self.weight * terms[method.name]
        check_finite(loss, terms, epoch, who=f' of student {k + 1}')
        loss.backward()
        optimizer.step()
        self._cache.pop(k, None)  # its output changed
        return float(loss.detach())

    def validate(self, epoch: int) -> list[float]:
        scores = []
        whole = self.graph
        for k, student in enumerate(self.students):
            if whole.batch is None:
                logits = self.peer_output(k, whole).logits
            else:
                logits = self._eval(student, whole).logits
            score = accuracy(logits, whole.y, whole.val_mask)
            self.selections[k].update(epoch, score)
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
            for part in self.parts():
                for k in range(len(self.students)):
                    losses[k] += self.step(k, part, epoch)
            scores = self.validate(epoch)
            for k, history in enumerate(histories):
                history.append({'epoch': epoch, 'loss': losses[k],
                                'val': scores[k]})
            bar.set_postfix(best=' '.join(f'{s.best_score:.3f}'
                                          for s in self.selections))
            if all(s.should_stop(epoch) for s in self.selections):
                break
        bar.close()
        seconds = time.perf_counter() - start
        self._cache.clear()
        results = []
        for k, student in enumerate(self.students):
            selection = self.selections[k]
            selection.restore()
            logits = self._eval(student, self.graph).logits
            results.append(FitResult(
                best_epoch=selection.best_epoch,
                val_accuracy=selection.best_score
                if selection.best_epoch else float('nan'),
                test_accuracy=accuracy(logits, self.graph.y,
                                       self.graph.test_mask),
                epochs_run=epoch, seconds=seconds, history=histories[k]))
        return results


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


def cotrain(data: str | Path, *, data_root: str | Path | None = None,
            method: str = 'alignahead',
            method_options: dict[str, Any] | None = None,
            students: int = 2, arch: str = 'gcn', hidden: int = 128,
            layers: int = 3, heads: int = 1, readout: str = 'mean',
            dropout: float = 0.5, epochs: int = 200, lr: float = 0.01,
            weight_decay: float = 5e-4, weight: float | None = None,
            patience: int | None = None, batch_size: int = BATCH_SIZE,
            folds: int | None = None, seed: int = 0, device: str = 'auto',
            out: str | Path | None = None, export: bool = True,
            progress: bool = True, command: str = '',
            config: dict[str, Any] | None = None) -> CotrainReport:
    """Train ``students`` peers of one architecture with an online method
    and write the best one by validation (``student.safetensors``,
    ``student.onnx``) and ``report.json``/``report.md`` listing every
    student to ``out``. ``folds`` (graph classification) repeats the run on
    each of that many stratified folds and exports fold 0's best."""
    from gnncompress import api

    if not MIN_STUDENTS <= students <= MAX_STUDENTS:
        raise GnnCompressError(
            f"'students' must be {MIN_STUDENTS} to {MAX_STUDENTS} (got "
            f'{students}): online distillation needs peers, and the paper '
            f'goes up to {MAX_STUDENTS}')
    if batch_size < 1:
        raise GnnCompressError(f"'batch_size' must be at least 1 "
                               f'(got {batch_size})')
    build_online_methods(method, students, method_options)  # check early
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / f'{Path(str(data)).stem}-{method.lower()}'
    dev = api.resolve_device(device)
    api.check_writable(out)
    if folds is not None:
        key = str(data).lower()
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
    single_graph_only(graph, 'cotrain')
    spec = ArchSpec(arch=arch, in_channels=graph.num_features,
                    hidden_channels=hidden, num_layers=layers,
                    out_channels=graph.num_classes,
                    heads=heads if arch in ('gat', 'gatv2') else 1,
                    dropout=dropout,
                    readout=readout if graph.batch is not None else None)
    runs = []
    for fold in range(folds or 1):
        if fold:
            graph = load(fold)
        g = graph.to(dev)
        api.seed_everything(seed)
        models = [build_model(spec).to(dev) for _ in range(students)]
        trainer = OnlineTrainer(
            models, g, build_online_methods(method, students,
                                            method_options),
            lr=lr, weight_decay=weight_decay, weight=weight,
            patience=patience, batch_size=batch_size, seed=seed)
        desc = f'cotrain {method}' + (f' fold {fold}' if folds else '')
        runs.append(OnlineRun(models, trainer.run(epochs, progress, desc),
                              g))
    return _write(runs, spec, method, method_options, weight, out, dev,
                  export, command, folds, seed,
                  dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                       patience=patience, batch_size=batch_size),
                  config or {})


def _write(runs: list[OnlineRun], spec: ArchSpec, method: str,
           method_options: dict[str, Any] | None, weight: float | None,
           out: Path, dev: torch.device, export: bool, command: str,
           folds: int | None, seed: int, training: dict[str, Any],
           config: dict[str, Any]) -> CotrainReport:
    from gnncompress import api
    from gnncompress.bench import onnx_latency, torch_latency
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
    with api.staged_output(out) as stage:
        chosen.latency[f'pytorch-{dev.type}'] = torch_latency(
            model, g.x, g.edge_index, g.batch).to_dict()
        if export:
            path = save_safetensors(
                model, spec, stage / 'student.safetensors',
                extra={'gnncompress.method': f'cotrain-{method}',
                       'gnncompress.data': g.name})
            chosen.file = str(out / 'student.safetensors')
            chosen.file_bytes = path.stat().st_size
            files['safetensors'] = chosen.file
            cpu = g.to('cpu')
            onnx_path = stage / 'student.onnx'
            parity = export_onnx(model, cpu.x, cpu.edge_index, onnx_path,
                                 batch=cpu.batch).cases
            files['onnx'] = str(out / 'student.onnx')
            chosen.latency['onnxruntime-cpu'] = onnx_latency(
                onnx_path, cpu.x, cpu.edge_index, cpu.batch).to_dict()
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
            onnx_parity=parity,
            training={**training, 'epochs_run': res.epochs_run,
                      'seconds': sum(r.results[0].seconds for r in runs),
                      'seconds_per_epoch': res.seconds /
                      max(1, res.epochs_run),
                      'best_epochs': [r.best_epoch for r in first.results]},
            seed=seed, device=str(dev), versions=api.versions(),
            files=files, config=config)
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
    return info


__all__ = ['METHODS', 'OnlineTrainer', 'build_online_methods', 'cotrain']
