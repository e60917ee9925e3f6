"""The memory-bound floor of one GPU forward of a GCN student over a whole
graph (issue 23, part 2), computed without a GPU: the bytes the forward
must move at least (gnncompress.outputs.floors.bytes_moved: parameters
and inputs read once, logits written once) over a GPU's peak memory
bandwidth.

It is worked out for the two ways the student can take its features:
dense ``x`` (the default export) and ``x`` as CSR (``--sparse-features``:
``indptr`` and ``indices`` int64, ``values`` float32), the graph's
``edge_index`` (int64) in both.

    python benchmarks/gpu_floor.py                       # Physics, GCN 2 x 6
    python benchmarks/gpu_floor.py --dataset Cora --hidden 16

One result file per dataset x hidden (results/gpu_floor/), rewritten
each run (it takes seconds); ``--report`` only rewrites the docs section.
"""
from __future__ import annotations

import argparse

import common
import torch
from common import RESULTS, SHARED

from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.floors import bytes_moved, memory_floor_ms
from gnncompress.tasks.datasets import load_graph

OUT = RESULTS / 'gpu_floor'
# Peak memory bandwidth (bytes/s). H100 SXM: what floors.peak_bandwidth
# computes from the properties it reports (2,619 MHz memory clock,
# 5,120-bit bus; NVIDIA's data sheet says 3.35 TB/s). H200: NVIDIA's data
# sheet, 4.8 TB/s.
BANDWIDTHS = {'H100 SXM': 2 * 2_619_000e3 * 5120 / 8, 'H200': 4.8e12}


def figures(dataset: str, hidden: int) -> dict:
    graph = load_graph(dataset, root=SHARED)
    model = build_model(ArchSpec('gcn', graph.num_features, hidden, 2,
                                 graph.num_classes)).eval()
    with torch.no_grad():
        logits = model(graph.x, graph.edge_index)
    nnz = int(torch.count_nonzero(graph.x))
    n = graph.x.size(0)
    csr = [torch.empty(n + 1, dtype=torch.long),
           torch.empty(nnz, dtype=torch.long),
           torch.empty(nnz, dtype=graph.x.dtype)]
    moved = {'dense x': bytes_moved(model, (graph.x, graph.edge_index),
                                    logits),
             'CSR x': bytes_moved(model, (*csr, graph.edge_index), logits)}
    return {
        'dataset': dataset, 'hidden': hidden, 'nodes': n,
        'features': graph.num_features,
        'edges': int(graph.edge_index.size(1)), 'nonzero_features': nnz,
        'parameters': sum(p.numel() for p in model.parameters()),
        'bytes': moved,
        'floor_ms': {inputs: {gpu: memory_floor_ms(b, bw)
                              for gpu, bw in BANDWIDTHS.items()}
                     for inputs, b in moved.items()},
        'machine': common.machine()}


def report() -> str:
    rows = common.read_rows(OUT)
    gpus = list(BANDWIDTHS)
    lines = [
        'Memory-bound floor of one forward of a GCN 2 x hidden student over '
        'the whole graph: its parameters and inputs read once and its '
        'logits written once (`gnncompress.outputs.floors.bytes_moved`), '
        'at the peak bandwidth of each GPU (H100 SXM: 3.35 TB/s, from the '
        'memory clock and bus width it reports; H200: 4.8 TB/s, NVIDIA\'s '
        'data sheet). Computed, not measured: no GPU ran it. Command: '
        '`python benchmarks/gpu_floor.py`.', '',
        '| dataset | hidden | features | inputs | MB moved | ' +
        ' | '.join(f'floor on {g} (ms)' for g in gpus) + ' |',
        '|---|---|---|---|---|' + '---|' * len(gpus)]
    for r in rows:
        for inputs, nbytes in r['bytes'].items():
            density = (f" ({r['nonzero_features'] / r['nodes']:.0f} "
                       'non-zero per node)' if inputs == 'CSR x' else '')
            lines.append(
                f"| {r['dataset']} | {r['hidden']} | {r['features']:,} | "
                f'{inputs}{density} | {nbytes / 1e6:,.1f} | ' +
                ' | '.join(f"{r['floor_ms'][inputs][g]:.4f}" for g in gpus)
                + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', default='Physics')
    parser.add_argument('--hidden', type=int, default=6)
    parser.add_argument('--report', action='store_true',
                        help='only rewrite the section of docs/BENCHMARKS.md')
    args = parser.parse_args()
    if not args.report:
        row = figures(args.dataset, args.hidden)
        common.write_json(OUT / f'{args.dataset}-gcn{args.hidden}.json', row)
        print(row)
    common.publish_folder(OUT, 'gpu-floor', report)


if __name__ == '__main__':
    main()
