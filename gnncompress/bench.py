"""Latency of PyTorch models and ONNX files."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.models import forward_logits

WARMUP = 3
REPEAT = 20
# Reports (distill, amalgamate, cotrain) spend about this long per latency
# figure: a forward over a large graph runs fewer times, never under
# MIN_REPEAT. `gnncompress bench` times exactly what it is asked.
REPORT_BUDGET_S = 5.0
MIN_REPEAT = 5


@dataclass
class Latency:
    """Wall-clock latency of one forward pass over the whole graph."""
    median_ms: float
    p95_ms: float
    mean_ms: float
    runs: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_latency(fn: Callable[[], object], warmup: int = WARMUP,
                    repeat: int = REPEAT,
                    sync: Callable[[], None] | None = None,
                    budget_s: float | None = None) -> Latency:
    """``warmup`` untimed calls of ``fn``, then ``repeat`` timed ones; with
    ``budget_s``, fewer of both (one warm-up, at least MIN_REPEAT timed)
    when the first call shows they would take longer than that."""
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        if i == 0 and budget_s is not None:
            first = time.perf_counter() - start
            if first * (warmup - 1 + repeat) > budget_s:
                repeat = min(repeat, max(MIN_REPEAT,
                                         int(budget_s / max(first, 1e-9))))
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

    kwargs.setdefault('budget_s', REPORT_BUDGET_S)
    return measure_latency(run, sync=sync, **kwargs)


def onnx_latency(path: Path, x: Tensor, edge_index: Tensor,
                 batch: Tensor | None = None, **kwargs: Any) -> Latency:
    from gnncompress.export import onnx_feeds, onnx_session

    # The threads PyTorch runs on, so both runtimes' rows compare.
    session = onnx_session(path, threads=torch.get_num_threads())
    feeds = onnx_feeds(session, x, edge_index, batch)
    kwargs.setdefault('budget_s', REPORT_BUDGET_S)
    return measure_latency(lambda: session.run(None, feeds), **kwargs)
