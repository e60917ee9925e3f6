"""A forward captured once as a CUDA graph and replayed: one launch per
forward instead of one per kernel, for a fixed graph on a GPU."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def capture_cuda_graph(forward: Callable[[], Tensor], device: torch.device,
                       warmup: int = 3) -> tuple[Any, Tensor]:
    """``forward()`` captured as one CUDA graph for fixed inputs: a few
    runs on a side stream first (allocations and lazy initialisation
    happen outside the capture), then the capture. Returns the graph and
    the output tensor each ``replay()`` refills; the launch cost of every
    kernel is paid once per replay instead of once per kernel."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            forward()
    torch.cuda.current_stream(device).wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        out = forward()
    return cuda_graph, out


def replayed(forward: Callable[[], Tensor], device: torch.device
             ) -> tuple[Callable[[], Tensor] | None, str | None]:
    """``forward`` as the replay of a captured CUDA graph, or ``(None,
    why)`` when it cannot be captured (an operation that waits for the
    CPU, such as a mask whose size depends on the data)."""
    try:
        graph, out = capture_cuda_graph(forward, device)
    except Exception as e:  # the eager forward is timed instead
        torch.cuda.synchronize(device)
        why = ' '.join(f'{type(e).__name__}: {e}'.split())
        return None, f'not capturable as a CUDA graph ({why[:160]})'

    def replay() -> Tensor:
        graph.replay()
        return out
    return replay, None
