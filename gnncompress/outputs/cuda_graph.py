"""A forward captured once as a CUDA graph and replayed: one launch per
forward instead of one per kernel, for a fixed graph on a GPU."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


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


# What PyG's layers with ``cached=True`` keep of the graph's normalisation
# (GCNConv, GCN2Conv, APPNP...): edges and weights, nothing computed from
# the features (SGConv's ``_cached_x`` is not one, and is left alone).
GRAPH_CACHES = ('_cached_edge_index', '_cached_adj_t')


def graph_caching_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that can cache their graph normalisation."""
    return [m for m in model.modules()
            if isinstance(getattr(m, 'cached', None), bool)
            and hasattr(m, GRAPH_CACHES[0])]


@contextmanager
def fixed_graph(model: nn.Module | None) -> Iterator[list[Any]]:
    """For a graph that does not change: ``model``'s layers that can cache
    their normalisation do so inside the block (which yields a list that
    holds the cached tensors when it ends), and are as before after it.
    GCN's normalisation drops self-loops through a mask, whose size the
    CPU must read: no CUDA graph can capture that, but with the cache it
    runs once, in the warm-up, and the capture records the propagation
    alone."""
    layers = graph_caching_layers(model) if model is not None else []
    saved = [m.cached for m in layers]
    kept: list[Any] = []

    def clear() -> None:
        for m in layers:
            for name in GRAPH_CACHES:
                if getattr(m, name, None) is not None:
                    kept.append(getattr(m, name))
                    setattr(m, name, None)

    clear()
    kept.clear()  # a cache from before the block is not the block's
    for m in layers:
        m.cached = True
    try:
        yield kept
    finally:
        clear()
        for m, cached in zip(layers, saved):
            m.cached = cached


def replayed(forward: Callable[[], Tensor], device: torch.device,
             model: nn.Module | None = None
             ) -> tuple[Callable[[], Tensor] | None, str | None]:
    """``forward`` as the replay of a captured CUDA graph, or ``(None,
    why)`` when it cannot be captured (an operation that waits for the
    CPU, such as a mask whose size depends on the data). ``forward`` runs
    ``model``, whose graph normalisation is cached for the capture
    (:func:`fixed_graph`)."""
    stream = torch.cuda.current_stream(device)
    try:
        with fixed_graph(model) as kept:
            graph, out = capture_cuda_graph(forward, device)
    except Exception as e:  # the eager forward is timed instead
        # A capture that ends in an error can leave its side stream
        # current: put the caller's back.
        torch.cuda.set_stream(stream)
        try:
            torch.cuda.synchronize(device)
        except Exception:  # reported with the capture's own error
            pass
        why = ' '.join(f'{type(e).__name__}: {e}'.split())
        return None, f'not capturable as a CUDA graph ({why[:160]})'

    def replay() -> Tensor:
        # The graph reads the cached normalisation's memory: ``kept``
        # holds it for as long as the replay lives.
        assert kept is not None
        graph.replay()
        return out
    return replay, None
