"""Neighbourhood sums for export that give the same result on any number
of runtime threads.

``index_add`` exports as ``ScatterND`` (reduction add), which onnxruntime's
CPU kernel splits over the update rows across its intra-op threads: two
edges into one node then add into the same row at once and one addition
is lost. The default ``SessionOptions`` use every core, so such a file is
wrong for a user who loads it plainly (docs/export.md). ``ScatterElements``
(``scatter_add``) runs serially in onnxruntime and is right on any thread
count, but on ``[E, F]`` rows it is about 10x slower than ``ScatterND``
(``benchmarks/scatter_race.py``).

:func:`neighbour_sum` therefore sums the rows of each destination as a
segment of the edges sorted by destination: a float64 running sum
(``CumSum``) over the gathered rows, read at each node's segment end and
start and subtracted. Every operator there is element-wise or a gather,
deterministic under any threading, and float64 keeps the difference of
two long running sums exact to float32 rounding. The only scatters left
are ``ScatterElements`` of ``[E]`` columns (in-degrees; GCN also counts
self-loops), which onnxruntime runs serially.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Segments:
    """The edges of a graph grouped by destination: ``src`` sorted by
    destination, and per node the start and end of its segment."""
    src: Tensor          # [E] sources, sorted by destination
    starts: Tensor       # [N] first sorted position of each node's edges
    ends: Tensor         # [N] one past the last
    in_degree: Tensor    # [N] float, edges into each node
    dst: Tensor          # [E] destinations in the original edge order


def segments(edge_index: Tensor, num_nodes: int,
             dtype: torch.dtype = torch.float32) -> Segments:
    """:class:`Segments` of ``edge_index`` over ``num_nodes`` nodes."""
    src, dst = edge_index[0], edge_index[1]
    order = torch.argsort(dst)
    count = torch.zeros(num_nodes, dtype=torch.long, device=dst.device) \
        .scatter_add(0, dst, torch.ones_like(dst))  # [N], 1-D: serial
    ends = torch.cumsum(count, 0)
    return Segments(src=src.index_select(0, order), starts=ends - count,
                    ends=ends, in_degree=count.to(dtype), dst=dst)


def neighbour_sum(h: Tensor, seg: Segments) -> Tensor:
    """``out_i = sum_{j -> i} h_j`` ``[N, F]``, race-free in any runtime.

    A zero row is put first so that the running sum starts at 0 and an
    empty graph needs no special case; a node's sum is then the running
    sum at its segment end minus the one at its start."""
    rows = torch.cat([h.new_zeros(1, h.size(1)), h]).double()  # [N+1, F]
    picked = rows.index_select(
        0, torch.cat([seg.src.new_zeros(1), seg.src + 1]))  # [E+1, F]
    running = torch.cumsum(picked, 0)  # [E+1, F]
    return (running.index_select(0, seg.ends)
            - running.index_select(0, seg.starts)).to(h.dtype)
