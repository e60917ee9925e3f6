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
segment of the edges sorted by destination (:func:`segment_sum`): running
sums over the gathered rows, read at each node's segment end and start and
subtracted. Every operator there is element-wise or a gather,
deterministic under any threading. The running sum is split in two so that
the edge-sized work stays in float32: a float32 running sum inside blocks
of :data:`BLOCK` rows (its values stay within ``BLOCK`` rows' size, so the
subtraction loses nothing that matters) and a float64 running sum over the
blocks' totals, one row per block. The only scatters left are
``ScatterElements`` of ``[E]`` columns (in-degrees; GCN also counts
self-loops), which onnxruntime runs serially.

:func:`csr_linear` multiplies node features given as a CSR matrix (the
sparse-feature export, docs/export.md) with the same segment sum: a row's
product is the sum of the weight rows of its non-zero columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Rows per block of the float32 running sum: its rounding error is about
# BLOCK x float32 epsilon of the largest row, 4e-6 relative.
BLOCK = 32


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


def in_blocks(index: Tensor) -> Tensor:
    """``index`` ``[M]`` with a 0 in front and 0s behind, up to a whole
    number of blocks of :data:`BLOCK` entries (concatenated, not gathered:
    onnxruntime gathers 1-D tensors element by element)."""
    length = index.size(0)
    blocks = (length + BLOCK) // BLOCK
    return torch.cat([index.new_zeros(1), index,
                      index.new_zeros(blocks * BLOCK - length - 1)])


def segment_sum(picked: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
    """``out_i = picked[starts_i + 1] + ... + picked[ends_i]`` for the
    ``[K * BLOCK, F]`` float32 rows of a gather through
    :func:`in_blocks` (row 0 and the padding are zero)."""
    width = picked.size(1)
    blocks = picked.size(0) // BLOCK
    local = torch.cumsum(picked.view(blocks, BLOCK, width), 1)
    totals = torch.cumsum(local[:, BLOCK - 1].double(), 0)  # [K, F]
    before = torch.cat([totals.new_zeros(1, width), totals])  # [K + 1, F]
    local = local.view(blocks * BLOCK, width)
    far = before.index_select(0, ends // BLOCK) - \
        before.index_select(0, starts // BLOCK)
    near = local.index_select(0, ends) - local.index_select(0, starts)
    return far.to(picked.dtype) + near


def neighbour_sum(h: Tensor, seg: Segments) -> Tensor:
    """``out_i = sum_{j -> i} h_j`` ``[N, F]``, race-free in any runtime."""
    rows = torch.cat([h.new_zeros(1, h.size(1)), h])  # [N+1, F]
    picked = rows.index_select(0, in_blocks(seg.src + 1))
    return segment_sum(picked, seg.starts, seg.ends)


def csr_linear(indptr: Tensor, indices: Tensor, values: Tensor,
               weight: Tensor) -> Tensor:
    """``x @ weight.T`` ``[N, out]`` for ``x`` given as a CSR matrix
    (``indptr [N+1]``, column ``indices [nnz]``, ``values [nnz]``), as
    the sum of ``weight``'s columns at each row's non-zeros."""
    columns = torch.cat([weight.new_zeros(1, weight.size(0)),
                         weight.t()])  # [F+1, out]
    scale = in_blocks(values)
    picked = columns.index_select(0, in_blocks(indices + 1))
    # Bag-of-words values are all 1 (or 0, the padding): no product then,
    # which would cost more than the gather (onnxruntime broadcasts a
    # [nnz, 1] factor row by row). Each branch ends in the segment sum, so
    # that neither copies its input.
    binary = ((scale == 1) | (scale == 0)).all()
    return torch.cond(binary, _sum_rows, _sum_scaled_rows,
                      (picked, scale, indptr))


def _sum_rows(picked: Tensor, scale: Tensor, indptr: Tensor) -> Tensor:
    return segment_sum(picked, indptr[:-1], indptr[1:])


def _sum_scaled_rows(picked: Tensor, scale: Tensor,
                     indptr: Tensor) -> Tensor:
    return segment_sum(picked * scale[:, None], indptr[:-1], indptr[1:])
