"""Latency of PyTorch models and ONNX files."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core.defaults import REPORT_BUDGET_S
from gnncompress.core.timing import phase
from gnncompress.models import forward_inputs, forward_logits
from gnncompress.outputs.cuda_graph import replayed

WARMUP = 3
REPEAT = 20
# Reports spend about REPORT_BUDGET_S (gnncompress.core.defaults) on all their
# latency figures together (--latency-budget-s): each figure may take half
# of what is left, and a forward over a large graph runs fewer times, never
# under MIN_REPEAT. `gnncompress bench` times exactly what it is asked.
# Three, not more: on Physics the teacher's forward takes 0.25 s and the
# student's ONNX one 0.18 s on 2 cores, and a warm-up and five runs of
# each took the figures 0.8 s past a 3 s budget (docs/BENCHMARKS.md).
MIN_REPEAT = 3


class LatencyBudget:
    """The seconds a report may still spend timing, and whether it times
    at all (``--no-latency``)."""

    def __init__(self, seconds: float = REPORT_BUDGET_S,
                 enabled: bool = True) -> None:
        self.left = seconds
        self.enabled = enabled

    def next_figure(self) -> float:
        """The budget of the next figure: half of what is left."""
        return max(0.0, self.left) / 2

    def spent(self, seconds: float) -> None:
        self.left -= seconds


_budget: ContextVar[LatencyBudget | None] = ContextVar(
    'gnncompress_latency_budget', default=None)


@contextmanager
def latency_budget(seconds: float = REPORT_BUDGET_S,
                   enabled: bool = True) -> Iterator[LatencyBudget]:
    """The latency budget of one command's report."""
    budget = LatencyBudget(seconds, enabled)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def current_budget() -> tuple[float, bool] | None:
    """The seconds left and whether to time at all, of the command under
    way (None outside a command)."""
    budget = _budget.get()
    return None if budget is None else (budget.left, budget.enabled)


def measuring() -> bool:
    """False under ``--no-latency``: reports leave latency out."""
    budget = _budget.get()
    return budget is None or budget.enabled


def report_figure(measure: Callable[[float], Latency]) -> Latency:
    """Run ``measure(budget_s)`` within the command's latency budget
    (:data:`REPORT_BUDGET_S` per figure outside a command) and charge it."""
    budget = _budget.get()
    start = time.perf_counter()
    with phase('measure'):
        latency = measure(budget.next_figure() if budget is not None
                          else REPORT_BUDGET_S)
    if budget is not None:
        budget.spent(time.perf_counter() - start)
    return latency


@dataclass
class Latency:
    """Wall-clock latency of one forward pass over the whole graph, and
    what it ran on: ``runtime`` (pytorch, onnxruntime), ``device`` and the
    intra-op ``threads`` it really used (``None`` on a GPU)."""
    median_ms: float
    p95_ms: float
    mean_ms: float
    runs: int
    runtime: str = ''
    device: str = ''
    threads: int | None = None
    # On a GPU: the forward's memory- and launch-bound floors
    # (gnncompress.outputs.floors), and why it was not captured as a
    # CUDA graph when it was not.
    floors: dict[str, Any] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedup(slow: Mapping[str, Any], fast: Mapping[str, Any]
            ) -> float | None:
    """``slow``'s median latency over ``fast``'s (latency dicts as
    :meth:`Latency.to_dict` writes them): only when both ran in the same
    runtime, on the same device, with the same threads; else ``None``."""
    same = all(slow.get(k) == fast.get(k)
               for k in ('runtime', 'device', 'threads'))
    if not same or not slow.get('runtime') or fast['median_ms'] <= 0:
        return None
    return slow['median_ms'] / fast['median_ms']


def describe(latency: Mapping[str, Any]) -> str:
    """``'onnxruntime cpu x2'``: what a latency figure ran on."""
    threads = latency.get('threads')
    return ' '.join(str(p) for p in (
        latency.get('runtime'), latency.get('device'),
        f'x{threads}' if threads else None) if p)


def measure_latency(fn: Callable[[], object], warmup: int = WARMUP,
                    repeat: int = REPEAT,
                    sync: Callable[[], None] | None = None,
                    budget_s: float | None = None) -> Latency:
    """``warmup`` untimed calls of ``fn``, then ``repeat`` timed ones; with
    ``budget_s``, fewer of both (one warm-up, at least MIN_REPEAT timed)
    when the first call shows they would take longer than that: as many
    as the budget left after that warm-up holds."""
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        if i == 0 and budget_s is not None:
            first = time.perf_counter() - start
            if first * (warmup - 1 + repeat) > budget_s:
                repeat = min(repeat, max(MIN_REPEAT, int(
                    (budget_s - first) / max(first, 1e-9))))
                break
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return Latency(median_ms=statistics.median(times), p95_ms=p95,
                   mean_ms=statistics.fmean(times), runs=repeat)


def torch_latency(model: nn.Module, x: Tensor, edge_index: Tensor,
                  batch: Tensor | None = None, **kwargs: Any) -> Latency:
    model.eval()
    sync = torch.cuda.synchronize if x.is_cuda else None

    @torch.no_grad()
    def run() -> Tensor:
        return forward_logits(model, x, edge_index, batch)

    if 'budget_s' in kwargs:
        latency = measure_latency(run, sync=sync, **kwargs)
    else:
        latency = report_figure(
            lambda s: measure_latency(run, sync=sync, budget_s=s, **kwargs))
    latency.runtime, latency.device = 'pytorch', x.device.type
    latency.threads = None if x.is_cuda else torch.get_num_threads()
    return latency


def cuda_graph_latency(model: nn.Module, x: Tensor, edge_index: Tensor,
                       batch: Tensor | None = None
                       ) -> tuple[Latency | None, str | None]:
    """``model``'s forward on the GPU replayed as one captured CUDA graph
    (runtime ``cuda-graph``), or ``(None, why)`` when it cannot be
    captured."""
    model.eval()

    def run() -> Tensor:
        return forward_logits(model, x, edge_index, batch)

    with torch.no_grad():
        replay, why = replayed(run, x.device, model)
    if replay is None:
        return None, why
    sync = torch.cuda.synchronize
    latency = report_figure(
        lambda s: measure_latency(replay, sync=sync, budget_s=s))
    latency.runtime, latency.device = 'cuda-graph', x.device.type
    return latency, None


def torch_figures(model: nn.Module, x: Tensor, edge_index: Tensor,
                  batch: Tensor | None = None) -> dict[str, dict[str, Any]]:
    """The report's PyTorch figures of ``model`` by key (as
    :meth:`Latency.to_dict` writes them): ``pytorch-<device>``, the eager
    forward, comparable with any model's; on a GPU also
    ``cuda-graph-cuda``, the forward replayed as one captured CUDA graph
    where it can be captured. On a GPU the figure closest to the hardware
    (the replay, else the eager one with the reason in ``note``) carries
    the forward's floors (:func:`gnncompress.outputs.floors.safe_floors`),
    measured after the timing."""
    eager = torch_latency(model, x, edge_index, batch)
    figures = {f'pytorch-{x.device.type}': eager}
    if x.is_cuda:
        from gnncompress.outputs.floors import safe_floors

        graph, why = cuda_graph_latency(model, x, edge_index, batch)
        if graph is not None:
            figures['cuda-graph-cuda'] = graph
        closest = graph or eager
        closest.note = why
        with torch.no_grad():
            closest.floors = safe_floors(
                model, forward_inputs(model, x, edge_index, batch),
                lambda: forward_logits(model, x, edge_index, batch),
                x.device)
    return {key: figure.to_dict() for key, figure in figures.items()}


def onnx_latency(path: Path, x: Tensor, edge_index: Tensor,
                 batch: Tensor | None = None, threads: int | None = None,
                 **kwargs: Any) -> Latency:
    """onnxruntime on the CPU, asked for ``threads`` (default: as many as
    torch uses); the result names the threads the session really ran
    with."""
    from gnncompress.outputs.parity import onnx_feeds, onnx_session

    def measure(budget_s: float | None) -> Latency:
        session = onnx_session(path,
                               threads=threads or torch.get_num_threads())
        feeds = onnx_feeds(session, x, edge_index, batch)
        latency = measure_latency(lambda: session.run(None, feeds),
                                  budget_s=budget_s, **kwargs)
        latency.threads = session_threads(session)
        return latency

    latency = measure(kwargs.pop('budget_s')) if 'budget_s' in kwargs \
        else report_figure(measure)
    latency.runtime, latency.device = 'onnxruntime', 'cpu'
    return latency


def session_threads(session: Any) -> int | None:
    """The intra-op threads an onnxruntime session runs with (``None``:
    onnxruntime's own default)."""
    return session.get_session_options().intra_op_num_threads or None


def exported_latency(model: nn.Module, x: Tensor, edge_index: Tensor,
                     batch: Tensor | None = None, uses_graph: bool = True,
                     **kwargs: Any) -> Latency:
    """``model`` exported to ONNX (checked like every export) in a
    temporary folder and timed there by :func:`onnx_latency`: a teacher's
    latency in the runtime its student ships in."""
    import tempfile

    from gnncompress.outputs.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix='gnncompress-') as folder:
        path = Path(folder) / 'model.onnx'
        export_onnx(model.cpu(), x.cpu(), edge_index.cpu(), path,
                    uses_graph=uses_graph,
                    batch=batch.cpu() if batch is not None else None)
        return onnx_latency(path, x.cpu(), edge_index.cpu(),
                            batch.cpu() if batch is not None else None,
                            **kwargs)
