"""What one forward on a GPU cannot beat, stated next to its latency.

- **Memory-bound floor**: the bytes the forward must move at least (its
  parameters and inputs read once, its output written once) over the
  GPU's peak memory bandwidth. The bandwidth comes from the device's own
  properties: memory clock x bus width x 2 (double data rate). An H100
  SXM reports 2,619 MHz and 5,120 bits: 3.35 TB/s, its data sheet's
  figure.
- **Launch-bound floor**: the forward's kernels, counted by the profiler
  in one run, replayed as one CUDA graph of as many kernels that do
  almost nothing (a one-element add each), timed on the same GPU. A
  captured forward cannot launch its kernels faster than that.

A forward near its memory floor is bound by bandwidth; near its launch
floor, by launches; far above both, by its kernels' own work or by
launches from Python outside a captured graph (docs/BENCHMARKS.md, "GPU").
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.outputs.cuda_graph import capture_cuda_graph, fixed_graph


@dataclass
class Floors:
    """The floors of one forward (milliseconds; ``None``: not known)."""
    memory_ms: float | None
    launch_ms: float | None
    bytes: int
    bandwidth_gb_s: float | None
    kernels: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_bandwidth(props: Any) -> float | None:
    """Peak memory bandwidth in bytes per second from CUDA device
    properties (``memory_clock_rate`` in kHz, ``memory_bus_width`` in
    bits); ``None`` where they are missing or zero."""
    clock_khz = getattr(props, 'memory_clock_rate', 0) or 0
    bus_bits = getattr(props, 'memory_bus_width', 0) or 0
    if clock_khz <= 0 or bus_bits <= 0:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8


def bytes_moved(model: nn.Module, inputs: Iterable[Tensor | None],
                output: Tensor) -> int:
    """The bytes a forward must move at least: every parameter and
    buffer and every input read once, the output written once."""
    tensors = [*model.parameters(), *model.buffers(),
               *(t for t in inputs if t is not None), output]
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_floor_ms(nbytes: int, bandwidth: float | None) -> float | None:
    """``nbytes`` at ``bandwidth`` bytes per second, in milliseconds."""
    if bandwidth is None or bandwidth <= 0:
        return None
    return nbytes / bandwidth * 1e3


def count_kernels(forward: Callable[[], Any]) -> int | None:
    """The GPU operations (kernels, copies, fills) one ``forward()``
    launches, as torch's profiler records them; ``None`` when the
    profiler cannot see the GPU."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward()
            torch.cuda.synchronize()
        count = sum(1 for e in prof.events()
                    if e.device_type == DeviceType.CUDA)
    except Exception:  # no CUPTI: no count, no launch floor
        return None
    return count or None


def launch_floor_ms(kernels: int, device: torch.device,
                    repeat: int = 50) -> float:
    """Median time of replaying one CUDA graph of ``kernels`` one-element
    adds on ``device`` (milliseconds): launching that many kernels, with
    next to no work in them."""
    scratch = torch.zeros(1, device=device)

    def forward() -> Tensor:
        for _ in range(kernels):
            scratch.add_(1.0)
        return scratch

    graph, _ = capture_cuda_graph(forward, device, warmup=1)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_floors(model: nn.Module, inputs: Iterable[Tensor | None],
                   forward: Callable[[], Tensor],
                   device: torch.device) -> Floors:
    """Both floors of ``forward()`` (``model`` on the ``inputs`` it reads)
    on the CUDA ``device``. The kernels are counted as a captured replay
    runs them: with the graph normalisation cached
    (:func:`~gnncompress.outputs.cuda_graph.fixed_graph`), after one
    warm-up call that fills the cache."""
    inputs = list(inputs)
    with fixed_graph(model):
        output = forward()
        kernels = count_kernels(forward)
    nbytes = bytes_moved(model, inputs, output)
    bandwidth = peak_bandwidth(torch.cuda.get_device_properties(device))
    launch = launch_floor_ms(kernels, device) if kernels else None
    return Floors(memory_ms=memory_floor_ms(nbytes, bandwidth),
                  launch_ms=launch, bytes=nbytes,
                  bandwidth_gb_s=None if bandwidth is None
                  else bandwidth / 1e9, kernels=kernels)


def safe_floors(model: nn.Module, inputs: Iterable[Tensor | None],
                forward: Callable[[], Tensor],
                device: torch.device) -> dict[str, Any] | None:
    """:func:`forward_floors` as a dict, or ``None`` when they cannot be
    had (out of memory, no profiler, a capture that fails): a floor never
    fails the figure it stands beside."""
    try:
        return forward_floors(model, inputs, forward, device).to_dict()
    except Exception:
        try:
            torch.cuda.synchronize(device)
        except Exception:  # a sticky CUDA error: nothing more to do here
            pass
        return None


def floors_text(floors: dict[str, Any] | None) -> str:
    """``'floors: memory 0.351, launch 0.012 ms'`` from a
    :meth:`Floors.to_dict`, or ``''`` when there is none."""
    if not floors:
        return ''
    parts = [f'{name} {floors[key]:.3f}'
             for name, key in (('memory', 'memory_ms'),
                               ('launch', 'launch_ms'))
             if floors.get(key) is not None]
    return f"floors: {', '.join(parts)} ms" if parts else ''
