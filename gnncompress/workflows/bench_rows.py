"""How `gnncompress bench` runs its rows: the models loaded and checked against
the graph, synthetic graphs, each row timed under its runtime and thread
count within a time budget, with its peak memory and accuracy."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnncompress.core.defaults import DEFAULT_ROW_BUDGET_S
from gnncompress.core.errors import CheckpointError, DataError
from gnncompress.core.graph import Graph
from gnncompress.core.options import check_memory
from gnncompress.models import (
    count_parameters,
    forward_inputs,
    forward_logits,
)
from gnncompress.outputs.cuda_graph import replayed
from gnncompress.outputs.latency import measure_latency, session_threads
from gnncompress.workflows.bench_table import RUNTIMES, BenchModel, BenchRow


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
    check_synthetic(*values, f'--graph-size {text}', 'give a smaller graph')
    return values  # type: ignore[return-value]


def check_synthetic(nodes: int, edges: int, features: int, what: str,
                    fix: str) -> None:
    """Refuse a :func:`synthetic_graph` that cannot fit in memory."""
    # float32 features, int64 edges, labels and three masks
    check_memory(4 * nodes * features + 16 * edges + 11 * nodes, what, fix)


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
        from gnncompress.core.metrics import micro_f1
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
    replay: list[Any] = []  # cuda-graph: the replay, once captured

    @torch.no_grad()
    def run() -> Tensor:
        budget.check()
        if runtime == 'cuda-graph':
            if not replay:
                again, why = replayed(
                    lambda: forward_logits(model, x, edge_index), device,
                    model)
                if again is None:
                    raise RuntimeError(why)
                replay.append(again)
            return replay[0]()
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
    if device.type == 'cuda':
        replay.clear()  # the captured graph's memory, before the floors
        row.latency.floors = _floors(model, x, edge_index, device)
    row.accuracy = _accuracy(logits.float(), graph)
    row.predictions = _predictions(logits.float().cpu().numpy(), graph)
    return row


def _floors(model: torch.nn.Module, x: Tensor, edge_index: Tensor,
            device: torch.device) -> dict[str, Any] | None:
    """The forward's memory- and launch-bound floors on the GPU (None
    when they cannot be had)."""
    from gnncompress.outputs.floors import safe_floors

    with torch.no_grad():
        return safe_floors(model, forward_inputs(model, x, edge_index),
                           lambda: forward_logits(model, x, edge_index),
                           device)


def _onnx_row(entry: BenchModel, graph: Graph, threads: int, warmup: int,
              repeat: int,
              budget_s: float = DEFAULT_ROW_BUDGET_S) -> BenchRow:
    from gnncompress.outputs.parity import onnx_feeds, onnx_session

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
    from gnncompress.checkpoints.teachers import load_checkpoint

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
    from gnncompress.outputs.onnx import export_onnx

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
                if runtime == 'cuda-graph' and not any(
                        d.type == 'cuda' for d in devices):
                    rows.append(BenchRow(
                        entry.name, runtime, 'cpu', None,
                        error='cuda-graph replays a captured CUDA graph: '
                              'add --device cuda on a machine with a GPU'))
                    continue
                for device in devices:
                    if runtime == 'cuda-graph' and device.type != 'cuda':
                        continue
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
