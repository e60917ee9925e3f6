"""``gnncompress bench``: several models on one graph, every runtime that
applies, at one thread and at all cores, with the gates a CI pipeline
checks."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnncompress.bench import Latency, measure_latency, session_threads
from gnncompress.core import Graph
from gnncompress.defaults import DEFAULT_ROW_BUDGET_S
from gnncompress.errors import CheckpointError, DataError
from gnncompress.models import count_parameters, forward_logits
from gnncompress.options import check_memory
from gnncompress.report import Gate

RUNTIMES = ('eager', 'compile', 'onnxruntime')
BENCH_SCHEMA = 1


@dataclass
class BenchModel:
    """One model to compare: a PyTorch model (from ``.pt`` or
    ``.safetensors``) or an ONNX file, which runs in onnxruntime only."""
    name: str
    path: Path
    model: nn.Module | None = None
    onnx_path: Path | None = None
    uses_graph: bool = True
    in_channels: int | None = None  # None: the ONNX file does not say
    parameters: int | None = None
    file_bytes: int = 0

    @property
    def is_onnx(self) -> bool:
        return self.model is None


@dataclass
class BenchRow:
    """One model x runtime x device x thread count."""
    model: str
    runtime: str
    device: str
    threads: int | None
    latency: Latency | None = None
    nodes_per_second: float | None = None
    peak_memory_mb: float | None = None
    accuracy: float | None = None
    speedup: float | None = None
    accuracy_drop: float | None = None
    error: str | None = None
    # What --threads asked for; `threads` is what ran (the session's own
    # count; every exported graph is right on any number of threads).
    threads_asked: int | None = None
    # The fraction of nodes (multi-label: of node x label cells) whose
    # prediction is the baseline's.
    agreement: float | None = None
    # The predicted classes, for `agreement` (not written out).
    predictions: np.ndarray | None = field(default=None, repr=False)

    def key(self) -> tuple[str, str, int | None]:
        """What a speed-up is computed between: the same runtime, device
        and threads really used."""
        return self.runtime, self.device, self.threads

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(
            replace(self, predictions=None)).items() if k != 'predictions'}
        out['latency'] = self.latency.to_dict() if self.latency else None
        return out


@dataclass
class BenchResult:
    graph: dict[str, Any]
    models: list[dict[str, Any]]
    rows: list[BenchRow]
    baseline: str | None = None
    gates: list[Gate] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    # --sizes: synthetic graph size (nodes) -> its rows
    scaling: dict[int, list[BenchRow]] = field(default_factory=dict)

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': BENCH_SCHEMA, 'graph': self.graph,
            'models': self.models, 'baseline': self.baseline,
            'settings': self.settings,
            'rows': [r.to_dict() for r in self.rows],
            'scaling': [{'num_nodes': n, 'rows': [r.to_dict() for r in rows]}
                        for n, rows in self.scaling.items()],
            'gates': [g.to_dict() for g in self.gates],
        }

    def table_rows(self) -> list[list[str]]:
        rows = []
        for r in self.rows:
            if r.error:
                rows.append([r.model, r.runtime, r.device, _threads(r),
                             'failed: ' + r.error, '', '', '', '', '', ''])
                continue
            assert r.latency is not None
            rows.append([
                r.model, r.runtime, r.device, _threads(r),
                f'{r.latency.median_ms:.2f}', f'{r.latency.p95_ms:.2f}',
                f'{r.latency.mean_ms:.2f}', _rate(r.nodes_per_second),
                _peak_cell(r),
                _num(r.accuracy, '{:.1%}'),
                (_num(r.speedup, '{:.2f}x') + ' / '
                 + _num(r.accuracy_drop, '{:+.1f}'))
                if self.baseline else '',
                _num(r.agreement, '{:.1%}') if self.baseline else ''])
        return rows

    HEADERS = ['model', 'runtime', 'device', 'threads', 'median ms',
               'p95 ms', 'mean ms', 'nodes/s', 'peak MB', 'accuracy',
               'speed-up / acc. drop', 'agrees with baseline']
    BASELINE_COLUMNS = 2

    def headers(self) -> list[str]:
        """The table's columns: the baseline's only with a baseline."""
        return self.HEADERS if self.baseline else \
            self.HEADERS[:-self.BASELINE_COLUMNS]

    def markdown(self) -> str:
        g = self.graph
        lines = ['# gnncompress bench', '',
                 f"Graph: {g['name']} ({g['num_nodes']:,} nodes, "
                 f"{g['num_edges']:,} edges, {g['num_features']:,} "
                 f"features).", '']
        if self.baseline:
            lines += [f'Baseline: {self.baseline} (speed-up = its median '
                      'latency / the row\'s, only against its row with the '
                      'same runtime, device and threads the row really ran '
                      'with, else none; accuracy drop in points; agreement: '
                      'share of nodes with its predicted class).', '']
        headers = self.headers()
        lines += ['| ' + ' | '.join(headers) + ' |',
                  '|' + '---|' * len(headers)]
        for row in self.table_rows():
            lines.append('| ' + ' | '.join(row[:len(headers)]) + ' |')
        if self.gates:
            lines += ['', '## Gates', '']
            for gate in self.gates:
                state = 'passed' if gate.passed else \
                    'FAILED: ' + '; '.join(gate.failures)
                lines.append(f'- {gate.name} {gate.limit:g}: {state}')
        if self.scaling:
            lines += ['', '## Latency against graph size (median ms)', '',
                      f"Synthetic graphs, {self.settings.get('degree'):g} "
                      'edges per node.', '']
            labels = sorted({_label(r) for rows in self.scaling.values()
                             for r in rows})
            lines += ['| nodes | ' + ' | '.join(labels) + ' |',
                      '|' + '---|' * (len(labels) + 1)]
            for n, rows in self.scaling.items():
                cells = {_label(r): (f'{r.latency.median_ms:.2f}'
                                     if r.latency else 'failed')
                         for r in rows}
                lines.append(f'| {n:,} | ' + ' | '.join(
                    cells.get(label, '-') for label in labels) + ' |')
        s = self.settings
        lines += ['', f"Latency: median, p95 and mean of {s.get('repeat')} "
                  f"timed runs after {s.get('warmup')} warm-up runs; peak MB "
                  'is the resident (CPU) or allocated (CUDA) memory above '
                  'what the process held before the run.', '']
        return '\n'.join(lines)


def _label(row: BenchRow) -> str:
    return f'{row.model} {row.runtime} {row.device}' + \
        (f' x{row.threads}' if row.threads else '')


def _threads(row: BenchRow) -> str:
    return '-' if row.threads is None else str(row.threads)


def _peak_cell(row: Any) -> str:
    """Peak memory in MB; ``n/a`` where onnxruntime allocated its arena
    when the session was created, before the measured runs, so the runs
    themselves add nothing measurable."""
    peak = row.peak_memory_mb
    if row.runtime == 'onnxruntime' and (peak is None or peak < 0.5):
        return 'n/a'
    return _num(peak, '{:.0f}')


def _num(value: float | None, fmt: str) -> str:
    return '-' if value is None else fmt.format(value)


def _rate(value: float | None) -> str:
    if value is None:
        return '-'
    for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if value >= scale:
            return f'{value / scale:.1f}{unit}'
    return f'{value:.0f}'


def parse_graph_size(text: str) -> tuple[int, int, int]:
    """``NODES:EDGES:FEATURES`` (e.g. ``169343:1166243:128``)."""
    parts = text.split(':')
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or values[0] < 2 or values[1] < 0 or values[2] < 1:
        raise DataError(f"--graph-size takes NODES:EDGES:FEATURES with at "
                        f"least 2 nodes and 1 feature, e.g. 169343:1166243:128 "
                        f"(got '{text}')")
    nodes, edges, features = values
    # float32 features, int64 edges, labels and three masks
    check_memory(4 * nodes * features + 16 * edges + 11 * nodes,
                 f'--graph-size {text}', 'give a smaller graph')
    return values  # type: ignore[return-value]


def synthetic_graph(num_nodes: int, num_edges: int, num_features: int,
                    seed: int = 0) -> Graph:
    """A random graph of exactly that size, without labels: for latency
    only (edges drawn uniformly, self-loops allowed)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, num_features, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    empty = torch.zeros(num_nodes, dtype=torch.bool)
    return Graph(name=f'synthetic {num_nodes}:{num_edges}:{num_features}',
                 x=x, edge_index=edge_index,
                 y=torch.zeros(num_nodes, dtype=torch.long),
                 train_mask=empty, val_mask=empty, test_mask=empty,
                 num_classes=0)


class PeakMemory:
    """Peak memory above the starting point while the block runs: CUDA's
    allocator counter on a GPU, else the process's resident set sampled
    every millisecond (torch releases the GIL inside its kernels)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb = max(0, peak - self._start) / 2 ** 20


def _rss_bytes() -> int:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):  # not Linux
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _accuracy(logits: np.ndarray | Tensor, graph: Graph) -> float | None:
    if graph.num_classes < 1 or not bool(graph.test_mask.any()):
        return None
    logits = torch.as_tensor(np.asarray(logits) if not isinstance(
        logits, Tensor) else logits.cpu())
    mask = graph.test_mask.cpu()
    if logits.dim() != 2 or logits.size(0) != mask.size(0):
        return None
    if graph.multilabel:
        from gnncompress.core import micro_f1
        return micro_f1(logits, graph.y.cpu(), mask)
    pred = logits[mask].argmax(-1)
    return float((pred == graph.y.cpu()[mask]).float().mean())


def _predictions(logits: np.ndarray, graph: Graph) -> np.ndarray | None:
    """Each node's predicted class (multi-label: each label's yes/no)."""
    if logits.ndim != 2:
        return None
    if graph.multilabel:
        return logits > 0
    return logits.argmax(-1).astype(np.int32)


class RowBudget:
    """The time one bench row may take from now. ONNX Runtime stops a run
    in the middle when the budget is spent (``RunOptions.terminate``, set
    from a timer thread); a PyTorch row is checked between its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.perf_counter() + seconds

    @property
    def spent(self) -> bool:
        return time.perf_counter() >= self.end

    def check(self) -> None:
        if self.spent:
            raise TimeoutError(self.message)

    @property
    def message(self) -> str:
        return (f'stopped: over its time budget of {self.seconds:g} s '
                f'(--row-budget-s)')

    @contextlib.contextmanager
    def onnx_options(self) -> Iterator[Any]:
        import onnxruntime as ort

        options = ort.RunOptions()
        options.log_severity_level = 4  # the stop is reported in the row
        timer = threading.Timer(max(0.0, self.end - time.perf_counter()),
                                setattr, (options, 'terminate', True))
        timer.daemon = True
        timer.start()
        try:
            yield options
        finally:
            timer.cancel()


def _torch_row(entry: BenchModel, runtime: str, graph: Graph,
               device: torch.device, threads: int | None, warmup: int,
               repeat: int,
               budget_s: float = DEFAULT_ROW_BUDGET_S) -> BenchRow:
    budget = RowBudget(budget_s)
    row = BenchRow(entry.name, runtime, device.type, threads,
                   threads_asked=threads)
    assert entry.model is not None
    model = entry.model.to(device).eval()
    x, edge_index = graph.x.to(device), graph.edge_index.to(device)
    fn: Any = model
    if runtime == 'compile':
        fn = torch.compile(model)

    @torch.no_grad()
    def run() -> Tensor:
        budget.check()
        if fn is model:
            return forward_logits(model, x, edge_index)
        return fn(x, edge_index) if entry.uses_graph else fn(x)

    sync = (lambda: torch.cuda.synchronize(device)) \
        if device.type == 'cuda' else None
    with contextlib.ExitStack() as stack:
        if threads is not None:
            stack.enter_context(torch_threads(threads))
        try:
            with PeakMemory(device) as memory:
                row.latency = measure_latency(run, warmup=warmup,
                                              repeat=repeat, sync=sync)
                logits = run()
        except Exception as e:  # a runtime that cannot run this model
            row.error = budget.message if budget.spent else _short(e)
            return row
    row.peak_memory_mb = memory.peak_mb
    row.accuracy = _accuracy(logits.float(), graph)
    row.predictions = _predictions(logits.float().cpu().numpy(), graph)
    return row


def _onnx_row(entry: BenchModel, graph: Graph, threads: int, warmup: int,
              repeat: int,
              budget_s: float = DEFAULT_ROW_BUDGET_S) -> BenchRow:
    from gnncompress.export import onnx_feeds, onnx_session

    budget = RowBudget(budget_s)
    row = BenchRow(entry.name, 'onnxruntime', 'cpu', threads,
                   threads_asked=threads)
    assert entry.onnx_path is not None
    try:
        session = onnx_session(entry.onnx_path, threads=threads)
        feeds = onnx_feeds(session, graph.x, graph.edge_index)
        with PeakMemory(torch.device('cpu')) as memory, \
                budget.onnx_options() as options:
            def run() -> Any:
                budget.check()
                return session.run(None, feeds, options)

            row.latency = measure_latency(run, warmup=warmup, repeat=repeat)
            logits = run()[0]
        if not np.issubdtype(np.asarray(logits).dtype, np.floating):
            raise TypeError(f'the output is {np.asarray(logits).dtype}, not '
                            f'float logits')
    except Exception as e:  # a graph the exported model cannot take
        row.error = budget.message if budget.spent else _short(e)
        return row
    row.threads = session_threads(session)
    row.peak_memory_mb = memory.peak_mb
    row.accuracy = _accuracy(logits, graph)
    row.predictions = _predictions(logits, graph)
    return row


def _short(e: BaseException) -> str:
    text = ' '.join(str(e).split()) or type(e).__name__
    return text[:160]


def load_models(paths: Sequence[str | Path],
                overrides: dict[str, Any] | None = None) -> list[BenchModel]:
    """Each path as a :class:`BenchModel`; names are the file names (made
    unique with their folder when two collide)."""
    from gnncompress.checkpoint import load_checkpoint

    entries = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise CheckpointError(f'Model file not found: {path}')
        entry = BenchModel(name=path.name, path=path,
                           file_bytes=path.stat().st_size)
        if path.suffix == '.onnx':
            _check_onnx(path)
            entry.onnx_path = path
            entry.uses_graph, entry.in_channels = _onnx_inputs(path)
        else:
            ckpt = load_checkpoint(path, overrides)
            entry.model = ckpt.build()
            entry.uses_graph = ckpt.spec.uses_graph
            entry.in_channels = ckpt.spec.in_channels
            entry.parameters = count_parameters(entry.model)
        entries.append(entry)
    names = [e.name for e in entries]
    for entry in entries:
        if names.count(entry.name) > 1:
            entry.name = f'{entry.path.parent.name}/{entry.path.name}'
    return entries


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # onnx raises several unrelated types
        raise CheckpointError(
            f'{path} is not a valid ONNX model ({_short(e)}): export it '
            f'again with gnncompress export') from None


def _onnx_inputs(path: Path) -> tuple[bool, int | None]:
    """Whether the file takes ``edge_index``, and its feature width (None
    for a sparse-feature export, whose CSR inputs do not say it)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    if 'x_indptr' in inputs and 'edge_index' in inputs:
        return True, None
    if 'x' not in inputs:
        raise CheckpointError(
            f"{path} has no input named 'x' (inputs: "
            f"{', '.join(sorted(inputs))}): bench takes the ONNX files "
            f'gnncompress exports')
    _check_signature(path, model, inputs)
    dims = inputs['x'].type.tensor_type.shape.dim
    width = dims[1].dim_value if len(dims) == 2 else 0
    return 'edge_index' in inputs, width or None


def _check_signature(path: Path, model: Any, inputs: dict[str, Any]) -> None:
    """Refuse, before anything runs, inputs and outputs that no exported
    node classifier has: ``x`` must be a float [nodes, features] matrix,
    ``edge_index`` a [2, edges] int64 one, and the first output float
    logits (a bool or string output has no classes to score)."""
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
              TensorProto.BFLOAT16)
    expected = {'x': (floats, 'float'), 'edge_index': ((TensorProto.INT64,),
                                                       'int64')}
    for name, (types, word) in expected.items():
        if name not in inputs:
            continue
        tensor = inputs[name].type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField('shape') else 2
        if tensor.elem_type not in types or rank != 2:
            raise CheckpointError(
                f"{path} takes '{name}' as a {rank}-d "
                f'{TensorProto.DataType.Name(tensor.elem_type).lower()} '
                f'tensor, but bench feeds a 2-d {word} one: bench takes the '
                f'ONNX files gnncompress exports')
    output = model.graph.output[0].type.tensor_type \
        if model.graph.output else None
    if output is None or output.elem_type not in floats:
        kind = TensorProto.DataType.Name(output.elem_type).lower() \
            if output is not None else 'no'
        raise CheckpointError(
            f'{path} has {kind} output, not float logits: bench takes the '
            f'ONNX files gnncompress exports')


def _export_for_bench(entry: BenchModel, graph: Graph, folder: Path) -> None:
    """Export a PyTorch model to ONNX (validated like every export) so it
    can run in onnxruntime too."""
    from gnncompress.export import export_onnx

    assert entry.model is not None
    path = folder / (Path(entry.name).stem.replace('/', '_') + '.onnx')
    sample = min(graph.num_nodes, 64)
    keep = (graph.edge_index < sample).all(0)
    export_onnx(entry.model.cpu(), graph.x[:sample].cpu(),
                graph.edge_index[:, keep].cpu(), path,
                uses_graph=entry.uses_graph)
    entry.onnx_path = path


def run_bench(entries: Sequence[BenchModel], graph: Graph, *,
              runtimes: Sequence[str] = RUNTIMES,
              threads: Sequence[int] | None = None,
              devices: Sequence[torch.device] = (torch.device('cpu'),),
              warmup: int = 3, repeat: int = 20, progress: Any = None,
              workdir: Path | None = None,
              row_budget_s: float = DEFAULT_ROW_BUDGET_S) -> list[BenchRow]:
    """Every model under every runtime that applies to it. PyTorch models
    are exported to ONNX in ``workdir`` (kept for later calls) or in a
    temporary folder (gone after this call). A row that takes longer than
    ``row_budget_s`` seconds is stopped and reported as failed."""
    threads = list(threads or sorted({1, os.cpu_count() or 1}))
    rows: list[BenchRow] = []
    with contextlib.ExitStack() as stack:
        tmp = workdir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix='gnncompress-bench-'))
        if workdir is None:
            stack.callback(_forget_exports, entries)
        for entry in entries:
            for runtime in runtimes:
                if entry.is_onnx and runtime != 'onnxruntime':
                    continue
                if runtime == 'onnxruntime':
                    if entry.onnx_path is None:
                        try:
                            _export_for_bench(entry, graph, Path(tmp))
                        except Exception as e:  # noqa: BLE001 - shown as a row
                            rows.append(BenchRow(entry.name, runtime, 'cpu',
                                                 None, error=_short(e)))
                            continue
                    for n in threads:
                        if progress:
                            progress(f'{entry.name} onnxruntime cpu x{n}')
                        rows.append(_onnx_row(entry, graph, n, warmup,
                                              repeat, row_budget_s))
                    continue
                for device in devices:
                    thread_counts: list[int | None] = \
                        list(threads) if device.type == 'cpu' else [None]
                    for n in thread_counts:
                        if progress:
                            progress(f'{entry.name} {runtime} {device.type}'
                                     + (f' x{n}' if n else ''))
                        rows.append(_torch_row(entry, runtime, graph, device,
                                               n, warmup, repeat,
                                               row_budget_s))
            if entry.model is not None:
                entry.model.cpu()
    for row in rows:
        if row.latency:
            row.nodes_per_second = graph.num_nodes / (
                row.latency.median_ms / 1e3)
    return rows


def _forget_exports(entries: Sequence[BenchModel]) -> None:
    for entry in entries:
        if entry.model is not None:
            entry.onnx_path = None


def compare_to_baseline(rows: Sequence[BenchRow], baseline: str) -> None:
    """Speed-up: the baseline's median over the row's, only against the
    baseline's row with the same runtime, device and threads really used
    (none otherwise: a figure across thread counts or runtimes is not a
    speed-up). Accuracy drop in points and agreement of predictions:
    against the baseline's run with the same key, else its eager run, else
    any of its runs."""
    base = {r.key(): r for r in rows if r.model == baseline and r.latency}
    ordered = sorted(base.values(), key=lambda r: r.runtime != 'eager')
    any_accuracy = next((r.accuracy for r in ordered
                         if r.accuracy is not None), None)
    any_predictions = next((r.predictions for r in ordered
                            if r.predictions is not None), None)
    for row in rows:
        if not row.latency:
            continue
        ref = base.get(row.key())
        if ref is not None and ref.latency is not None:
            row.speedup = ref.latency.median_ms / row.latency.median_ms
        reference = ref.accuracy if ref is not None and \
            ref.accuracy is not None else any_accuracy
        if reference is not None and row.accuracy is not None:
            row.accuracy_drop = 100 * (reference - row.accuracy)
        predicted = ref.predictions if ref is not None and \
            ref.predictions is not None else any_predictions
        if predicted is not None and row.predictions is not None and \
                predicted.shape == row.predictions.shape:
            row.agreement = float((predicted == row.predictions).mean())


def check_gates(rows: Sequence[BenchRow], baseline: str | None, *,
                max_latency_ms: float | None = None,
                min_speedup: float | None = None,
                max_accuracy_drop: float | None = None) -> list[Gate]:
    """Every gate applies to every row of every model but the baseline; a
    row that failed to run fails every gate."""
    gates = []
    candidates = [r for r in rows if r.model != baseline]

    specs = [('max-latency-ms', max_latency_ms,
              lambda r: r.latency.median_ms if r.latency else None,
              lambda v, lim: v <= lim, '{:.2f} ms'),
             ('min-speedup', min_speedup, lambda r: r.speedup,
              lambda v, lim: v >= lim, '{:.2f}x'),
             ('max-accuracy-drop', max_accuracy_drop,
              lambda r: r.accuracy_drop, lambda v, lim: v <= lim,
              '{:.1f} points')]
    for name, limit, value_of, ok, fmt in specs:
        if limit is None:
            continue
        gate = Gate(name, limit)
        for row in candidates:
            value = value_of(row)
            if name == 'min-speedup' and value is None and not row.error:
                gate.failures.append(
                    f'{_label(row)}: no speed-up (the baseline has no run '
                    f'with this runtime, device and threads)')
            elif row.error or value is None:
                gate.failures.append(f'{_label(row)}: no value')
            elif not ok(value, limit):
                gate.failures.append(f'{_label(row)}: {fmt.format(value)}')
        gates.append(gate)
    return gates


RUNTIME_COLOURS = {'eager': '#4c72b0', 'compile': '#dd8452',
                   'onnxruntime': '#55a868'}


def bar_notes(result: BenchResult, rows: Sequence[BenchRow]) -> list[str]:
    """What bench.png writes beside each bar: ``baseline`` on the
    baseline's, else the speed-up against it (``no baseline run`` where the
    baseline has no run with that runtime, device and threads); nothing
    without a baseline."""
    if not result.baseline:
        return [''] * len(rows)
    return ['baseline' if r.model == result.baseline else
            f'{r.speedup:.2f}x' if r.speedup is not None else
            'no baseline run' for r in rows]


def plot(result: BenchResult, path: Path) -> None:
    """Median latency per model and runtime (p95 as the whisker; log scale
    when they span more than 20x), coloured by runtime, the baseline's bars
    hatched and every other bar labelled with its speed-up."""
    from gnncompress.plots import pyplot, save

    plt = pyplot()
    from matplotlib.patches import Patch

    rows = [r for r in result.rows if r.latency]
    if not rows:
        raise ValueError('no model ran, so there is no latency to draw')
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(4, len(rows)) + 1.6))
    labels = [f'{r.model} · {r.runtime} · {r.device}'
              + (f' x{r.threads}' if r.threads else '') for r in rows]
    medians = [r.latency.median_ms for r in rows]  # type: ignore[union-attr]
    tops = [r.latency.p95_ms for r in rows]  # type: ignore[union-attr]
    is_base = [r.model == result.baseline for r in rows]
    bars = ax.barh(range(len(rows)), medians,
                   xerr=[[0] * len(rows),
                         [t - m for t, m in zip(tops, medians)]],
                   color=[RUNTIME_COLOURS.get(r.runtime, '#888888')
                          for r in rows],
                   edgecolor=['black' if b else 'none' for b in is_base])
    for bar, base in zip(bars, is_base):
        if base:
            bar.set_hatch('//')
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, base in zip(ax.get_yticklabels(), is_base):
        if base:
            tick.set_fontweight('bold')
    ax.invert_yaxis()
    log = max(medians) > 20 * min(medians)
    if log:
        ax.set_xscale('log')
    right = max(max(tops), max(medians))
    # Room on the right for the notes.
    ax.set_xlim(right=right * (4 if log else 1.3))
    for i, (note, top) in enumerate(zip(bar_notes(result, rows), tops)):
        if note:
            ax.text(top * (1.08 if log else 1) + (0 if log else 0.02 * right),
                    i, note, va='center', fontsize=8,
                    fontweight='bold' if is_base[i] else 'normal')
    ax.set_xlabel('latency per forward pass, ms (median; whisker: p95)')
    title = (f"{result.graph['name']}: {result.graph['num_nodes']:,} "
             f"nodes, {result.graph['num_edges']:,} edges")
    if result.baseline:
        title += (f'\nspeed-up against {result.baseline} (hatched) with the '
                  'same runtime, device and threads')
    ax.set_title(title, fontsize=9)
    runtimes = [name for name in RUNTIME_COLOURS
                if any(r.runtime == name for r in rows)]
    handles = [Patch(color=RUNTIME_COLOURS[name], label=name)
               for name in runtimes]
    if any(is_base):
        handles.append(Patch(facecolor='white', edgecolor='black',
                             hatch='//', label='baseline'))
    ax.legend(handles=handles, fontsize=8, loc='upper left',
              bbox_to_anchor=(1.01, 1.0), title='runtime',
              title_fontsize=8)
    fig.tight_layout()
    save(fig, path)


def parse_sizes(text: str) -> list[int]:
    """``1000,10000,...`` node counts for ``--sizes``."""
    try:
        sizes = [int(float(part)) for part in text.split(',') if part]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise DataError(f'--sizes takes node counts of at least 2, comma-'
                        f"separated, e.g. 1000,10000,100000 (got '{text}')")
    return sorted(set(sizes))


def plot_scaling(result: BenchResult, path: Path) -> None:
    """Median latency against graph size, log-log, one line per model x
    runtime x device x threads."""
    from gnncompress.plots import pyplot, save

    plt = pyplot()

    series: dict[str, list[tuple[int, float]]] = {}
    for n, rows in result.scaling.items():
        for r in rows:
            if r.latency:
                series.setdefault(_label(r), []).append(
                    (n, r.latency.median_ms))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker='o', label=label)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('nodes (synthetic graph, '
                  f"{result.settings.get('degree'):g} edges per node)")
    ax.set_ylabel('latency per forward pass, ms (median)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def timestamp() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%S')
