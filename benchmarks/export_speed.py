"""How fast the exported students run: a GCN 2x32 and an MLP 2x32 student
(128 features, 40 classes, random weights: latency does not depend on
them) on the arxiv-sized synthetic graph of ../EXPORT.md (169,343 nodes,
1,166,243 edges) at 2 threads, through ``gnncompress bench``: PyTorch eager,
the ONNX file ``gnncompress`` exports (for a GCN, the folded form of
gnncompress/models/fast_gcn.py) and, for comparison, the GCN exported as
PyG computes it (``export_onnx(fast=False)``).

Each figure sits beside its lower bound: the GCN's whole forward near 6 ms
(EXPORT.md: one CSR aggregation pass of width 32 at about 1.6 ms, two of
them plus the dense products), the MLP's the time to read ``x`` once at the
machine's copy bandwidth (about 38 GB/s, EXPORT.md).

One result file; ``--report`` only rewrites docs/BENCHMARKS.md.

    python benchmarks/export_speed.py            # about 5 minutes on 2 cores
    python benchmarks/export_speed.py --quick    # a 10,000-node graph
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from common import RESULTS, machine, update_doc, write_json

from gnncompress import api
from gnncompress.comparison import synthetic_graph
from gnncompress.export import export_onnx, save_safetensors
from gnncompress.models import ArchSpec, build_model

OUT = RESULTS / 'export_speed'
NODES, EDGES, FEATURES, CLASSES = 169_343, 1_166_243, 128, 40
BANDWIDTH = 38e9  # bytes per second, EXPORT.md
GCN_BOUND_MS = 6.0  # EXPORT.md
THREADS = 2


def run(quick: bool) -> dict:
    nodes, edges = (10_000, 70_000) if quick else (NODES, EDGES)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for arch in ('gcn', 'mlp'):
            spec = ArchSpec(arch, FEATURES, 32, 2, CLASSES)
            model = build_model(spec).eval()
            files.append(save_safetensors(model, spec,
                                          folder / f'{arch}-2x32.safetensors'))
            if arch == 'gcn':
                sample = synthetic_graph(64, 256, FEATURES)
                plain = folder / 'gcn-2x32-pyg-export.onnx'
                export_onnx(model, sample.x, sample.edge_index, plain,
                            fast=False)
                files.append(plain)
        result = api.bench(files, graph_size=f'{nodes}:{edges}:{FEATURES}',
                           runtimes=['eager', 'onnxruntime'],
                           threads=[THREADS], warmup=3, repeat=20, out=None)
    x_bytes = nodes * FEATURES * 4
    bounds = {'gcn-2x32.safetensors': GCN_BOUND_MS * edges / EDGES,
              'gcn-2x32-pyg-export.onnx': GCN_BOUND_MS * edges / EDGES,
              'mlp-2x32.safetensors': 1e3 * x_bytes / BANDWIDTH}
    rows = [{'model': r.model, 'runtime': r.runtime, 'threads': r.threads,
             'threads_asked': r.threads_asked,
             'median_ms': r.latency.median_ms if r.latency else None,
             'p95_ms': r.latency.p95_ms if r.latency else None,
             'bound_ms': bounds[r.model], 'error': r.error}
            for r in result.rows]
    return {'nodes': nodes, 'edges': edges, 'features': FEATURES,
            'rows': rows, 'machine': machine()}


def report(data: dict) -> str:
    lines = [f"Graph: {data['nodes']:,} nodes, {data['edges']:,} edges, "
             f"{data['features']} features; {THREADS} threads asked (an ONNX "
             'graph with ScatterND runs on 1).', '',
             '| student | runtime | threads | median ms | p95 ms | bound ms '
             '| x bound |', '|---|---|---|---|---|---|---|']
    for r in data['rows']:
        if r['median_ms'] is None:
            lines.append(f"| {r['model']} | {r['runtime']} | - | failed: "
                         f"{r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['threads']} | "
            f"{r['median_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['bound_ms']:.1f} | {r['median_ms'] / r['bound_ms']:.0f}x |")
    return '\n'.join(lines + ['', f"Machine: {data['machine']}."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args(argv)
    path = OUT / ('quick.json' if args.quick else 'arxiv-size.json')
    if not args.report and not path.exists():
        write_json(path, run(args.quick))
    if not path.exists():
        sys.exit(f'{path} missing: run without --report first')
    body = report(json.loads(path.read_text()))
    print(body)
    if not args.quick:
        update_doc('export-speed', body)


if __name__ == '__main__':
    main()
