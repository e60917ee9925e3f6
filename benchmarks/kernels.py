"""The per-step cost of the structure losses' kernels and of message
passing, old formulation against new, on the sizes where they matter;
forward and backward, in interleaved rounds so that a change of load on the
machine hits both alike.

- LSP's per-edge kernel on a Photo-sized graph (7,650 nodes, 238,162 random
  edges) at widths 10 (a student) and 128 (Alignahead's students): gathering
  both ends of every edge (``edge_scores``) against the sparse sampled
  product (``LSP.edge_kernel``).
- GSP's cosine kernel on 2,048 sampled nodes, student width 10, teacher
  width 256 (Cora with the default ``max_samples``): the two n x n kernel
  matrices against the factored form.
- Message passing in training: a GCN 3 x 256 and a GraphSAGE 3 x 128 on a
  graph the size of synthetic PPI's training graphs, PyG's layers given
  ``edge_index`` against the cached sparse products of ``run_model``
  (models/propagation.py).
- A first layer's product on Physics' word features, dense against the
  registered sparse form (models/sparse_input.py).
- The sparse product itself: Physics' GCN matrix times a width-128 matrix
  and its transpose times the gradient, ``torch.sparse.mm`` against
  ``models.spmm`` (a row-bag sum), one thread.
- One mini-batch step of ``distill --batch-size``: a GCN 2 x 32 on one
  sampled batch (4,096 seeds, fanout 15,10) of a 1M-node random graph,
  every layer over the whole subgraph against the trimmed layers
  (training/regimes/sampled.py: trimmed_output).

- TAM's student map: a slimmable GCN 2 x 64 on an Amazon-Computers-sized
  random graph (13,752 nodes, 491,722 edges, 767 features), the map
  through PyG's explain masks against the sparse products
  (propagation.EdgeProbe), with the MSE to a fixed map backwards.
- A DGCNN training step (the point-cloud benchmark's teacher: EdgeConv
  64, 64, 128, 256, k = 20, embedding 512; 32 clouds of 128 points):
  batch norm on every edge against the per-point statistics of
  ``EdgeConvLayer`` (models/dgcnn.py).

One result file; ``--report`` only rewrites docs/BENCHMARKS.md.

    python benchmarks/kernels.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, SHARED, machine, update_doc, write_json

from gnncompress.methods.gsp import GSP
from gnncompress.methods.lsp import LSP, edge_scores, segment_log_softmax
from gnncompress.models import ArchSpec, build_model, sparse_input
from gnncompress.models.build import run_model

OUT = RESULTS / 'kernels.json'
ROUNDS = 7


def _timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn().backward()
    return 1e3 * (time.perf_counter() - start)


def _compare(old: Callable[[], torch.Tensor],
             new: Callable[[], torch.Tensor]) -> dict[str, float]:
    old(), new()  # warm-up
    times: dict[str, list[float]] = {'old': [], 'new': []}
    for _ in range(ROUNDS):
        times['old'].append(_timed(old))
        times['new'].append(_timed(new))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {'old_ms': med['old'], 'new_ms': med['new'],
            'speedup': med['old'] / med['new']}


def message_passing_rows() -> list[dict]:
    """A whole model's forward and backward, PyG's layers (``model(x,
    edge_index)``) against the cached sparse products of
    ``run_model`` (models/propagation.py), on a graph the size of synthetic
    PPI's training graphs (40,000 nodes, 560,000 random edges, 50
    features)."""
    gen = torch.Generator().manual_seed(0)
    nodes, edges, features = 40_000, 560_000, 50
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    x = torch.randn(nodes, features, generator=gen)
    rows = []
    for arch, hidden, layers in (('gcn', 256, 3), ('sage', 128, 3)):
        torch.manual_seed(0)
        model = build_model(ArchSpec(arch, features, hidden, layers, 100))

        def old() -> torch.Tensor:
            return model(x, edge_index).square().mean()

        def new() -> torch.Tensor:
            return run_model(model, x, edge_index).logits.square().mean()

        rows.append({'loss': f'{arch} {layers} x {hidden} forward',
                     'setting': '40,000 nodes, 560,000 edges',
                     **_compare(old, new)})
    return rows


def sparse_feature_row(data_root: Path = SHARED) -> dict:
    """A first layer's product on Physics' 8,415 word features (0.4%
    non-zero), width 256: the dense matrix against its registered sparse
    form (models/sparse_input.py)."""
    from gnncompress.tasks.datasets import load_graph
    x = load_graph('Physics', data_root).x
    dense = x.clone()  # never registered
    assert sparse_input.register(x)
    weight = torch.randn(256, x.size(1), requires_grad=True,
                         generator=torch.Generator().manual_seed(0))
    return {'loss': 'first layer x @ W.T',
            'setting': 'Physics features (34,493 x 8,415), width 256',
            **_compare(lambda: F.linear(dense, weight).square().mean(),
                       lambda: sparse_input.linear(x, weight).square()
                       .mean())}


class _TorchProduct(torch.autograd.Function):
    """``matrix @ v`` by ``torch.sparse.mm``, backward likewise."""

    @staticmethod
    def forward(ctx, matrix, transposed, v):  # type: ignore[override]
        ctx.transposed = transposed
        return torch.sparse.mm(matrix, v)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.transposed, grad)


def spmm_row(data_root: Path = SHARED) -> dict:
    """One aggregation of a GCN layer on Physics at width 128, forward and
    backward, one thread: ``torch.sparse.mm`` against ``models.spmm``."""
    from gnncompress.models import propagation
    from gnncompress.tasks.datasets import load_graph
    graph = load_graph('Physics', data_root)
    n = graph.x.size(0)
    matrix = propagation.aggregation_matrix(graph.edge_index, n, 'gcn',
                                            torch.float32)
    transposed = propagation._transposed(matrix)
    v = torch.randn(n, 128, requires_grad=True,
                    generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = {'loss': 'csr product A @ v',
               'setting': f'Physics GCN matrix ({matrix.values().numel():,}'
                          f' entries), width 128',
               'threads': 1,
               **_compare(lambda: _TorchProduct.apply(matrix, transposed, v)
                          .square().mean(),
                          lambda: propagation._aggregate(matrix, v, None)
                          .square().mean())}
    finally:
        torch.set_num_threads(threads)
    return row


def minibatch_row() -> dict:
    """Forward and backward of a GCN 2 x 32 on one sampled batch of a
    random graph of 1M nodes and 16M edges (32 features, 4,096 seeds,
    fanout 15,10, the scale benchmark's setting): whole subgraph against
    trimmed layers."""
    from gnncompress.training.regimes.sampled import trimmed_output
    from gnncompress.training.sampling import CSR, NeighborSampler

    gen = torch.Generator().manual_seed(0)
    nodes, edges = 1_000_000, 16_000_000
    csr = CSR.from_edges(torch.randint(0, nodes, (2, edges), generator=gen),
                         nodes)
    batch = NeighborSampler(csr, [15, 10], 4096, gen).sample(
        torch.randperm(nodes, generator=gen)[:4096])
    x = torch.randn(batch.n_id.numel(), 32, generator=gen)
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', 32, 32, 2, 10))

    def old() -> torch.Tensor:
        return run_model(model, x, batch.edge_index).logits[:4096] \
            .square().mean()

    def new() -> torch.Tensor:
        return trimmed_output(model, x, batch.edge_index, batch).logits \
            .square().mean()

    return {'loss': 'mini-batch step, gcn 2 x 32',
            'setting': f'1M nodes, 4,096 seeds, fanout 15,10: '
                       f'{batch.n_id.numel():,} nodes, '
                       f'{batch.edge_index.size(1):,} edges',
            'threads': torch.get_num_threads(), **_compare(old, new)}


def tam_row() -> dict:
    """TAM's student map and its loss, forward and backward: explain
    masks against the sparse products."""
    from gnncompress.methods.tam import attribution
    from gnncompress.models.slimmable import SlimmableGNN, SlimmableSpec

    gen = torch.Generator().manual_seed(0)
    nodes, edges, features = 13_752, 491_722, 767
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    x = torch.randn(nodes, features, generator=gen)
    target = torch.randint(0, 10, (nodes,), generator=gen)
    goal = torch.randn(edge_index.size(1), generator=gen)
    torch.manual_seed(0)
    student = SlimmableGNN(SlimmableSpec('gcn', [features], 64, 2, [10]))

    def loss(weight) -> torch.Tensor:
        out = student.forward_output(x, edge_index, edge_mask=weight)
        return F.mse_loss(attribution(out.logits, weight, target, True),
                          goal)

    return {'loss': 'tam student map', 'setting': f'gcn 2 x 64, {nodes:,} '
            f'nodes, {edge_index.size(1):,} edges',
            'threads': torch.get_num_threads(),
            **_compare(lambda: loss(torch.ones(edge_index.size(1),
                                               requires_grad=True)),
                       lambda: loss(student.unit_edge_weights(
                           x, edge_index)))}


def dgcnn_row() -> dict:
    """A DGCNN teacher's training step: batch norm on every edge against
    the per-point statistics (models/dgcnn.py)."""
    from gnncompress.models.dgcnn import DGCNN, EdgeConvLayer

    torch.manual_seed(0)
    model = DGCNN(3, [64, 64, 128, 256], 10, k=20, emb_channels=512,
                  head=[256]).train()
    pos = torch.randn(32, 128, 3, generator=torch.Generator().manual_seed(0))

    def step(fast: bool) -> torch.Tensor:
        for conv in model.convs:
            assert isinstance(conv, EdgeConvLayer)
            conv.fast_training = fast
        return model(pos).square().mean()

    return {'loss': 'dgcnn training step', 'setting': '32 clouds x 128 '
            'points, EdgeConv 64,64,128,256, k 20',
            'threads': torch.get_num_threads(),
            **_compare(lambda: step(False), lambda: step(True))}


def run() -> dict:
    gen = torch.Generator().manual_seed(0)
    rows = []
    nodes, edges = 7_650, 238_162
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    for width in (10, 128):
        h = torch.randn(nodes, width, generator=gen, requires_grad=True)
        lsp = LSP(kernel='rbf')

        def old() -> torch.Tensor:
            score = edge_scores(h, edge_index[0], edge_index[1],
                                lsp.kernel_fn())
            return segment_log_softmax(score, edge_index[1], nodes).sum()

        def new() -> torch.Tensor:
            return lsp.local_structure(h, edge_index).sum()

        rows.append({'loss': 'lsp', 'setting': f'Photo-sized, width {width}',
                     **_compare(old, new)})
    n = 2_048
    h_s = torch.randn(n, 10, generator=gen, requires_grad=True)
    h_t = torch.randn(n, 256, generator=gen)
    gsp = GSP(kernel='cosine')
    teacher = gsp._teacher_side(h_t)

    def gsp_old() -> torch.Tensor:
        return F.mse_loss(gsp.kernel_matrix(h_s), gsp.kernel_matrix(h_t))

    def gsp_new() -> torch.Tensor:
        return gsp.pair_loss(h_s, gsp._teacher_side(h_t))

    assert torch.allclose(gsp_old(), gsp.pair_loss(h_s, teacher).float(),
                          rtol=1e-4)
    rows.append({'loss': 'gsp', 'setting': '2,048 nodes, widths 10 / 256',
                 **_compare(gsp_old, gsp_new)})
    rows += message_passing_rows()
    rows.append(sparse_feature_row())
    rows += [minibatch_row(), tam_row(), dgcnn_row(), spmm_row()]
    return {'rows': rows, 'rounds': ROUNDS, 'machine': machine()}


def report(data: dict) -> str:
    lines = ['| loss | setting | before (ms) | now (ms) | speed-up |',
             '|---|---|---|---|---|']
    for r in data['rows']:
        setting = r['setting'] + (f" ({r['threads']} thread)"
                                  if 'threads' in r else '')
        lines.append(f"| {r['loss']} | {setting} | {r['old_ms']:.1f} | "
                     f"{r['new_ms']:.1f} | {r['speedup']:.1f}x |")
    return '\n'.join(lines + ['', f"Median of {data['rounds']} interleaved "
                              'rounds, forward and backward. Machine: '
                              f"{data['machine']}; rows with a thread count "
                              'ran at that count.'])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args(argv)
    if not args.report and not OUT.exists():
        write_json(OUT, run())
    data = json.loads(OUT.read_text()) if OUT.exists() else None
    if not args.report and data is not None:
        # Rows added after the first ones were measured: only these run.
        names = {r['loss'] for r in data['rows']}
        if not any(n.endswith('forward') for n in names):
            data['rows'] += message_passing_rows()
        if 'first layer x @ W.T' not in names:
            data['rows'].append(sparse_feature_row())
        if not any(n.startswith('mini-batch') for n in names):
            data['rows'].append(minibatch_row())
        if 'tam student map' not in names:
            data['rows'].append(tam_row())
        if 'dgcnn training step' not in names:
            data['rows'].append(dgcnn_row())
        if 'csr product A @ v' not in names:
            data['rows'].append(spmm_row())
        write_json(OUT, data)
    if not OUT.exists():
        sys.exit(f'{OUT} missing: run without --report first')
    body = report(json.loads(OUT.read_text()))
    print(body)
    update_doc('kernels', body)


if __name__ == '__main__':
    main()
