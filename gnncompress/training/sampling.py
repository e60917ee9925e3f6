"""Graphs too large for one full-batch pass: neighbour sampling over a CSR
built once, layer-wise inference over all nodes in node chunks, and a store
that keeps large per-node tensors in memory-mapped files."""
from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn.conv import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.models import MLP
from torch_geometric.nn.models.basic_gnn import BasicGNN
from torch_geometric.nn.norm import BatchNorm

from gnncompress.core.errors import ArchitectureError, GnnCompressError
from gnncompress.models import ModelOutput
from gnncompress.models.build import _norm_and_act
from gnncompress.models.gcnii import GCNII

# Destination nodes per chunk of layer-wise inference.
CHUNK_NODES = 16384
# Per-node tensors larger than this many bytes go to memory-mapped files.
MEMMAP_BYTES = 1 << 30


def parse_fanout(text: str | Sequence[int]) -> list[int]:
    """``'15,10'`` -> ``[15, 10]``: neighbours sampled per node at each hop
    from the seeds (``-1``: all of them)."""
    if isinstance(text, str):
        try:
            values = [int(v) for v in text.split(',')]
        except ValueError:
            raise GnnCompressError(
                f"--fanout takes comma-separated integers, one per layer, "
                f"e.g. 15,10 (got '{text}')") from None
    else:
        values = [int(v) for v in text]
    if not values or any(v == 0 or v < -1 for v in values):
        raise GnnCompressError(
            f'--fanout needs one positive count (or -1 for all neighbours) '
            f'per student layer, e.g. 15,10 (got {text})')
    return values


@dataclass
class CSR:
    """In-edges of every node: ``col[rowptr[i]:rowptr[i + 1]]`` are the
    sources of the edges into node ``i``; ``weight`` (optional) follows
    the same order."""
    rowptr: Tensor   # [N + 1]
    col: Tensor      # [E]
    weight: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return self.rowptr.numel() - 1

    @classmethod
    def from_edges(cls, edge_index: Tensor, num_nodes: int,
                   weight: Tensor | None = None) -> CSR:
        src, dst = edge_index
        perm = torch.argsort(dst, stable=True)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long,
                             device=dst.device)
        rowptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        return cls(rowptr, src[perm],
                   None if weight is None else weight[perm])

    def in_edges(self, start: int, stop: int) -> tuple[Tensor, Tensor,
                                                       Tensor | None]:
        """Sources, destinations and weights of the edges into nodes
        ``start..stop-1``."""
        lo, hi = int(self.rowptr[start]), int(self.rowptr[stop])
        counts = self.rowptr[start + 1:stop + 1] - self.rowptr[start:stop]
        dst = torch.repeat_interleave(
            torch.arange(start, stop, device=counts.device), counts)
        weight = None if self.weight is None else self.weight[lo:hi]
        return self.col[lo:hi], dst, weight


@dataclass
class Batch:
    """One sampled subgraph: ``n_id`` (global ids, the ``batch_size`` seeds
    first) and its edges in local ids, source to destination."""
    n_id: Tensor        # [n]
    edge_index: Tensor  # [2, e]
    batch_size: int
    # Nodes within j hops of the seeds, and edges into them, for j = 0, 1,
    # ... (nodes and edges come hop by hop): what a layer still needs
    # (training.regimes.sampled.trimmed_output). Empty: not recorded.
    hop_nodes: tuple[int, ...] = ()
    hop_edges: tuple[int, ...] = ()


class NeighborSampler:
    """Samples, for every seed node, up to ``fanout[0]`` of its in-neighbours
    without replacement, then up to ``fanout[1]`` of theirs, and so on (the
    scheme of GraphSAGE and PyG's ``NeighborLoader``, which needs pyg-lib or
    torch-sparse). Vectorised over all nodes of a hop: random keys sorted
    within each node's edges keep the first ``fanout`` of them.

    It samples on the device holding ``csr`` (a CUDA CSR: no batch
    crosses to the host), drawing its random numbers with ``generator``
    on the generator's own device.

    Args:
        csr (CSR): The graph's in-edges, built once.
        fanout (list[int]): Neighbours per node at each hop (``-1``: all).
        batch_size (int): Seed nodes per batch.
        generator (torch.Generator, optional): Randomness of the shuffling
            and the sampling (seeded: the same batches every run).
    """

    def __init__(self, csr: CSR, fanout: Sequence[int], batch_size: int,
                 generator: torch.Generator | None = None) -> None:
        if batch_size < 1:
            raise GnnCompressError(f'--batch-size must be at least 1 (got '
                                   f'{batch_size})')
        self.csr, self.fanout = csr, list(fanout)
        self.batch_size = batch_size
        self.generator = generator
        self.device = csr.rowptr.device
        # Global id -> local id of the batch being built (-1: not in it).
        self._local = torch.full((csr.num_nodes,), -1, dtype=torch.long,
                                 device=self.device)

    def batches(self, seeds: Tensor, shuffle: bool = True) -> Iterator[Batch]:
        if shuffle:
            gen = self.generator
            order = torch.randperm(seeds.numel(), generator=gen,
                                   device=gen.device if gen is not None
                                   else seeds.device)
            seeds = seeds[order.to(seeds.device)]
        for start in range(0, seeds.numel(), self.batch_size):
            yield self.sample(seeds[start:start + self.batch_size])

    def __len__(self) -> int:
        return math.ceil(self.csr.num_nodes / self.batch_size)

    def sample(self, seeds: Tensor,
               generator: torch.Generator | None = None) -> Batch:
        """The subgraph of ``seeds``, sampled with ``generator`` if given
        (e.g. a probe's own, so that drawing it leaves the batches of the
        run unchanged), else with the sampler's."""
        generator = self.generator if generator is None else generator
        local, dev = self._local, self.device
        seeds = seeds.to(dev)
        nodes = [seeds]
        local[seeds] = torch.arange(seeds.numel(), device=dev)
        count = seeds.numel()
        frontier = seeds
        srcs, dsts = [], []
        for k in self.fanout:
            src, dst = self._sample_hop(frontier, k, generator)
            fresh = torch.unique(src[local[src] < 0])
            local[fresh] = torch.arange(count, count + fresh.numel(),
                                        device=dev)
            count += fresh.numel()
            nodes.append(fresh)
            srcs.append(local[src])
            dsts.append(local[dst])
            frontier = fresh
        n_id = torch.cat(nodes)
        local[n_id] = -1  # ready for the next batch
        edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])
        # Edges sampled at hop j + 1 go into the nodes first reached at
        # hop j; the last hop's nodes have none sampled.
        sizes = [len(s) for s in srcs] + [0]
        hop_nodes = tuple(itertools.accumulate(n.numel() for n in nodes))
        hop_edges = tuple(itertools.accumulate(sizes))
        return Batch(n_id, edge_index, seeds.numel(), hop_nodes, hop_edges)

    def _sample_hop(self, nodes: Tensor, k: int,
                    generator: torch.Generator | None
                    ) -> tuple[Tensor, Tensor]:
        """Up to ``k`` in-edges of each of ``nodes``, as global (src, dst)."""
        rowptr, dev = self.csr.rowptr, self.device
        begin = rowptr[nodes]
        degree = rowptr[nodes + 1] - begin                       # [n]
        owner = torch.repeat_interleave(
            torch.arange(nodes.numel(), device=dev), degree)
        first = torch.cumsum(degree, 0) - degree                 # [n]
        rank = torch.arange(owner.numel(), device=dev) - first[owner]
        if k >= 0:
            crowded = degree[owner] > k
            if bool(crowded.any()):
                # Shuffle each crowded node's edges: sort by owner + a
                # random fraction, then keep the first k of each.
                key = owner.double() + _uniform(owner.numel(), generator,
                                                dev)
                order = torch.argsort(key)
                rank = torch.empty_like(rank)
                rank[order] = torch.arange(owner.numel(), device=dev) - \
                    first[owner]
            keep = rank < k
            owner, rank = owner[keep], rank[keep]
        edge = begin[owner] + rank
        return self.csr.col[edge], nodes[owner]


def _uniform(n: int, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """``n`` float64 draws in [0, 1) from ``generator``, on its device
    (``device``'s default generator without one), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(n, dtype=torch.float64, generator=generator,
                      device=where).to(device)


class TensorStore:
    """Per-node tensors, in memory or, above ``memmap_bytes``, in
    memory-mapped files in ``folder`` (a private temporary folder by
    default, removed by :meth:`close`)."""

    def __init__(self, memmap_bytes: int = MEMMAP_BYTES,
                 folder: str | Path | None = None) -> None:
        self.memmap_bytes = memmap_bytes
        self._folder = Path(folder) if folder is not None else None
        self._own: Path | None = None
        self._count = 0
        self.files: list[Path] = []

    def empty(self, rows: int, cols: int) -> Tensor:
        if rows * cols * 4 <= self.memmap_bytes:
            return torch.empty(rows, cols)
        if self._own is None:
            self._own = Path(tempfile.mkdtemp(prefix='gnncompress-cache-',
                                              dir=self._folder))
        path = self._own / f'tensor{self._count}.f32'
        self._count += 1
        array = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32,
                                          shape=(rows, cols))
        self.files.append(path)
        return torch.from_numpy(array)

    def close(self) -> None:
        if self._own is not None:
            shutil.rmtree(self._own, ignore_errors=True)
            self._own = None


def load_stored(path: str | Path) -> Tensor:
    """A tensor :class:`TensorStore` wrote, mapped copy-on-write (changes
    stay in memory)."""
    return torch.from_numpy(np.load(path, mmap_mode='c'))


def check_layerwise(model: nn.Module) -> None:
    """Raise unless :func:`layerwise_inference` can run ``model``: PyG's
    GCN, GraphSAGE, GAT (v1, v2), GIN, MLP and GCNII, without norms that
    see the whole graph."""
    if isinstance(model, (MLP, GCNII)):
        return
    if not isinstance(model, BasicGNN) or not hasattr(model, 'convs'):
        raise ArchitectureError(
            f'Mini-batch training supports GCN, GraphSAGE, GAT, GIN, GCNII '
            f'and MLP models (got {type(model).__name__}): drop '
            f'--batch-size')
    for norm in model.norms:
        if not isinstance(norm, (nn.Identity, BatchNorm)):
            raise ArchitectureError(
                f'Layer-wise inference cannot split {type(norm).__name__} '
                f'(it normalises over the whole graph): drop --batch-size')


@torch.no_grad()
def layerwise_inference(model: nn.Module, x: Tensor, csr: CSR, *,
                        keep_hiddens: bool = True,
                        store: TensorStore | None = None,
                        chunk: int = CHUNK_NODES) -> ModelOutput:
    """The model's output on every node, one layer at a time over all nodes
    and each layer in chunks of ``chunk`` destination nodes: a chunk runs
    the layer on its nodes and their in-neighbours only, so memory holds one
    layer's output plus one chunk's edges. Equal to the full forward
    (:func:`gnncompress.models.run_model`) for PyG's GCN, GraphSAGE, GAT and
    GIN (GCN's normalisation is computed once on the whole graph) and MLPs.
    ``keep_hiddens=False`` drops the hidden layers once used."""
    store = store or TensorStore()
    check_layerwise(model)
    model.eval()
    if isinstance(model, MLP):
        return _chunked_mlp(model, x, store, chunk, keep_hiddens)
    if isinstance(model, GCNII):
        return _layerwise_gcnii(model, x, csr, store, chunk, keep_hiddens)
    num_nodes, dev = csr.num_nodes, _device_of(model)
    gcn_csr: dict[tuple[bool, bool], CSR] = {}
    hiddens: list[Tensor] = []
    xs: list[Tensor] = []
    for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
        out = _conv_all(conv, x, _gcn_csr(conv, csr, gcn_csr), store, chunk)
        x = out
        if i < model.num_layers - 1 or model.jk_mode is not None:
            if keep_hiddens:
                hiddens.append(out)
            # Norms in eval mode act per node (BatchNorm, LayerNorm's node
            # mode); graph-wide ones see one chunk only.
            x = _per_node(lambda t, norm=norm: _norm_and_act(model, norm, t),
                          out, store, chunk, dev)
            if hasattr(model, 'jk'):
                xs.append(x)
    if hasattr(model, 'jk') or hasattr(model, 'lin'):
        logits = None
        for start in range(0, num_nodes, chunk):
            stop = min(start + chunk, num_nodes)
            y = model.jk([t[start:stop].to(dev) for t in xs]) \
                if hasattr(model, 'jk') else x[start:stop].to(dev)
            y = (model.lin(y) if hasattr(model, 'lin') else y).cpu()
            if logits is None:
                logits = store.empty(num_nodes, y.size(1))
            logits[start:stop] = y
        x = logits
    return ModelOutput(logits=x, hiddens=hiddens)


def _normalised_csr(csr: CSR, improved: bool = False,
                    add_self_loops: bool = True,
                    flow: str = 'source_to_target') -> CSR:
    """The edges with GCN's symmetric normalisation (self-loops added) as
    their own CSR: the weights need the degrees of the whole graph."""
    num_nodes = csr.num_nodes
    counts = csr.rowptr[1:] - csr.rowptr[:-1]
    dst = torch.repeat_interleave(torch.arange(num_nodes), counts)
    edge_index, weight = gcn_norm(
        torch.stack([csr.col, dst]), None, num_nodes, improved=improved,
        add_self_loops=add_self_loops, flow=flow)
    return CSR.from_edges(edge_index, num_nodes, weight)


def _gcn_csr(conv: nn.Module, csr: CSR,
             known: dict[tuple[bool, bool], CSR]) -> CSR:
    """:func:`_normalised_csr` for a normalising GCN layer (built once per
    variant), else the graph's own."""
    if not isinstance(conv, GCNConv) or not conv.normalize:
        return csr
    key = (conv.improved, conv.add_self_loops)
    if key not in known:
        known[key] = _normalised_csr(csr, *key, flow=conv.flow)
    return known[key]


def _conv_chunk(conv: nn.Module, x: Tensor, csr: CSR, start: int,
                stop: int, x_0: Tensor | None = None) -> Tensor:
    """One layer's output on nodes ``start..stop-1`` from the subgraph of
    their in-edges (the chunk's nodes first, then the other sources).
    ``x_0``: GCNII's initial features, whose edges come normalised."""
    src, dst, weight = csr.in_edges(start, stop)
    outside = (src < start) | (src >= stop)
    others = torch.unique(src[outside])
    local = src - start
    local[outside] = (stop - start) + torch.searchsorted(others, src[outside])
    n_id = torch.cat([torch.arange(start, stop), others])
    dev = _device_of(conv)
    edge_index = torch.stack([local, dst - start]).to(dev)
    x_sub = x[n_id].to(dev)
    if x_0 is not None:
        out = conv(x_sub, x_0[n_id].to(dev), edge_index, weight.to(dev))
    elif weight is not None:  # normalised GCN edges
        conv.normalize = False
        try:
            out = conv(x_sub, edge_index, weight.to(dev))
        finally:
            conv.normalize = True
    else:
        out = conv(x_sub, edge_index)
    return out[:stop - start].cpu()


def _conv_all(conv: nn.Module, h: Tensor, csr: CSR, store: TensorStore,
              chunk: int, x_0: Tensor | None = None) -> Tensor:
    """One layer's output on every node, in chunks of destination nodes
    (:func:`_conv_chunk`)."""
    num_nodes, out = csr.num_nodes, None
    for start in range(0, num_nodes, chunk):
        stop = min(start + chunk, num_nodes)
        part = _conv_chunk(conv, h, csr, start, stop, x_0)
        if out is None:
            out = store.empty(num_nodes, part.size(1))
        out[start:stop] = part
    assert out is not None
    return out


def _per_node(fn, x: Tensor, store: TensorStore, chunk: int,
              dev: torch.device) -> Tensor:
    """``fn`` (a function of each node's own row) over all nodes in
    chunks."""
    out = None
    for start in range(0, x.size(0), chunk):
        part = fn(x[start:start + chunk].to(dev)).cpu()
        if out is None:
            out = store.empty(x.size(0), part.size(1))
        out[start:start + chunk] = part
    assert out is not None
    return out


def _layerwise_gcnii(model: GCNII, x: Tensor, csr: CSR, store: TensorStore,
                     chunk: int, keep_hiddens: bool) -> ModelOutput:
    """:func:`layerwise_inference` for GCNII: the input layer per node, then
    every GCN2Conv from the previous layer and the initial features
    (normalised edges built once), then the output layer per node."""
    dev = _device_of(model)
    edges = _normalised_csr(csr)
    x_0 = _per_node(lambda t: model.act(model.lins[0](t)), x, store, chunk,
                    dev)
    h, hiddens = x_0, []
    for conv in model.convs:
        out = _conv_all(conv, h, edges, store, chunk, x_0)
        if keep_hiddens:
            hiddens.append(out)
        h = _per_node(model.act, out, store, chunk, dev)
    logits = _per_node(model.lins[1], h, store, chunk, dev)
    return ModelOutput(logits=logits, hiddens=hiddens)


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def _chunked_mlp(model: MLP, x: Tensor, store: TensorStore, chunk: int,
                 keep_hiddens: bool) -> ModelOutput:
    from gnncompress.models.build import _mlp_output

    num_nodes, dev = x.size(0), _device_of(model)
    logits, hiddens = None, []
    for start in range(0, num_nodes, chunk):
        part = _mlp_output(model, x[start:start + chunk].to(dev))
        if logits is None:
            logits = store.empty(num_nodes, part.logits.size(1))
            if keep_hiddens:
                hiddens = [store.empty(num_nodes, h.size(1))
                           for h in part.hiddens]
        logits[start:start + chunk] = part.logits.cpu()
        for whole, h in zip(hiddens, part.hiddens):
            whole[start:start + chunk] = h.cpu()
    return ModelOutput(logits=logits, hiddens=hiddens)
