"""How fast the exported students run: a GCN 2x32 and an MLP 2x32 student
(128 features, 40 classes, random weights: latency does not depend on
them) on the arxiv-sized synthetic graph of docs/export.md (169,343 nodes,
1,166,243 edges) at 1 and 2 threads, through ``gnncompress bench``:
PyTorch eager, the ONNX file ``gnncompress`` exports (for a GCN, the
race-free form of gnncompress/models/export_gnn.py) and, for comparison,
the GCN exported as PyG computes it (``export_onnx(fast=False)``, 2 threads
only). A GCN 2x64 student on Coauthor Physics (``--data-root``, default
the cache) is timed the same way; the ONNX / eager ratio per thread count
is the table the issue asks for.

Each figure sits beside its lower bound: the GCN's whole forward near 6 ms
(docs/export.md: one CSR aggregation pass of width 32 at about 1.6 ms, two of
them plus the dense products), the MLP's the time to read ``x`` once at the
machine's copy bandwidth (about 38 GB/s, docs/export.md). Two measured floors
sit beside them, because the bounds assume what this machine cannot do:
the MLP's first matrix product alone (torch, 2 threads), and where the
exported GCN spends its time (onnxruntime's profiler, per operator type).

One result file; ``--report`` only rewrites docs/BENCHMARKS.md.

    python benchmarks/export_speed.py --data-root ../shared/datasets
    python benchmarks/export_speed.py --quick    # 10,000 nodes, no Physics
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, machine, update_doc, write_json

from gnncompress import api
from gnncompress.comparison import synthetic_graph
from gnncompress.export import (
    export_onnx,
    onnx_feeds,
    save_safetensors,
)
from gnncompress.models import ArchSpec, build_model

OUT = RESULTS / 'export_speed'
NODES, EDGES, FEATURES, CLASSES = 169_343, 1_166_243, 128, 40
BANDWIDTH = 38e9  # bytes per second, docs/export.md
GCN_BOUND_MS = 6.0  # docs/export.md
THREADS = 2
THREAD_COUNTS = [1, 2]


def matmul_floor_ms(nodes: int) -> float:
    """Median time of the MLP's first product ``x @ W`` ([N, 128] x
    [128, 32]) at THREADS threads: what the dense work alone costs."""
    torch.set_num_threads(THREADS)
    x = torch.randn(nodes, FEATURES)
    weight = torch.randn(FEATURES, 32)
    times = []
    for _ in range(23):
        start = time.perf_counter()
        x @ weight
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times[3:])


def gcn_profile(onnx_file: Path, graph, runs: int = 5) -> dict[str, float]:
    """Milliseconds per forward by ONNX operator type (onnxruntime's
    profiler) for the exported GCN on ``graph``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_file.with_suffix(''))
    session = ort.InferenceSession(str(onnx_file), options,
                                   providers=['CPUExecutionProvider'])
    feeds = onnx_feeds(session, graph.x, graph.edge_index)
    session.run(None, feeds)
    totals: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    for event in events:
        if event.get('cat') == 'Node' and \
                event['name'].endswith('_kernel_time'):
            totals[event['args']['op_name']] += event['dur']
    # The warm-up run is in the profile too: divide by runs + 1.
    return {op: us / 1e3 / (runs + 1) for op, us in totals.most_common()}


def physics(folder: Path, data_root: str | None) -> list[dict]:
    """Eager and onnxruntime rows of a GCN 2x64 student on Physics."""
    spec = ArchSpec('gcn', 8415, 64, 2, 5)
    model = build_model(spec).eval()
    path = save_safetensors(model, spec,
                            folder / 'physics-gcn-2x64.safetensors')
    result = api.bench([path], data='Physics', data_root=data_root,
                       runtimes=['eager', 'onnxruntime'],
                       threads=THREAD_COUNTS, warmup=3, repeat=20, out=None)
    return [_row(r) for r in result.rows]


def _row(r) -> dict:
    return {'model': r.model, 'runtime': r.runtime, 'threads': r.threads,
            'median_ms': r.latency.median_ms if r.latency else None,
            'p95_ms': r.latency.p95_ms if r.latency else None,
            'error': r.error}


def run(quick: bool, data_root: str | None = None) -> dict:
    nodes, edges = (10_000, 70_000) if quick else (NODES, EDGES)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files: list[Path] = []
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
                fast_file = folder / 'gcn-2x32.onnx'
                export_onnx(model, sample.x, sample.edge_index, fast_file)
        size = f'{nodes}:{edges}:{FEATURES}'
        result = api.bench(files, graph_size=size,
                           runtimes=['eager', 'onnxruntime'],
                           threads=THREAD_COUNTS, warmup=3, repeat=20,
                           out=None)
        pyg = api.bench([plain], graph_size=size, runtimes=['onnxruntime'],
                        threads=[THREADS], warmup=1, repeat=5, out=None)
        profile = gcn_profile(fast_file,
                              synthetic_graph(nodes, edges, FEATURES))
        physics_rows = [] if quick else physics(folder, data_root)
    floor = matmul_floor_ms(nodes)
    x_bytes = nodes * FEATURES * 4
    bounds = {'gcn-2x32.safetensors': GCN_BOUND_MS * edges / EDGES,
              'gcn-2x32-pyg-export.onnx': GCN_BOUND_MS * edges / EDGES,
              'mlp-2x32.safetensors': 1e3 * x_bytes / BANDWIDTH}
    rows = [{**_row(r), 'bound_ms': bounds[r.model]}
            for r in [*result.rows, *pyg.rows]]
    return {'nodes': nodes, 'edges': edges, 'features': FEATURES,
            'rows': rows, 'physics_rows': physics_rows,
            'gcn_onnx_ms_by_op': profile,
            'mlp_first_matmul_ms': floor, 'machine': machine()}


def report(data: dict) -> str:
    lines = ['ONNX / eager per thread count (the exported GCN; under 1 '
             'means onnxruntime is faster):', '',
             '| graph | student | threads | eager ms | onnxruntime ms '
             '| onnx / eager |', '|---|---|---|---|---|---|']
    arxiv = f"arxiv-sized ({data['nodes']:,} nodes)"
    for graph, rows in ((arxiv, data['rows']),
                        ('Physics', data.get('physics_rows', []))):
        lines += _ratio_rows(graph, rows)
    lines += ['', f"Graph: {data['nodes']:,} nodes, {data['edges']:,} "
              f"edges, {data['features']} features.", '',
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
    if 'gcn_onnx_ms_by_op' in data:
        ops = data['gcn_onnx_ms_by_op']
        top = ', '.join(f'{op} {ms:.1f}' for op, ms in list(ops.items())[:4])
        lines += ['', 'Where the exported GCN spends its time (onnxruntime '
                  f'profiler, ms per forward): {top}; all operators '
                  f'{sum(ops.values()):.1f}. The MLP\'s first matrix '
                  f"product alone (torch, {THREADS} threads): "
                  f"{data['mlp_first_matmul_ms']:.1f} ms."]
    return '\n'.join(lines + ['', f"Machine: {data['machine']}."])


def _ratio_rows(graph: str, rows: list[dict]) -> list[str]:
    timed = {(r['model'], r['runtime'], r['threads']): r['median_ms']
             for r in rows if r['median_ms'] is not None}
    out = []
    for (model, runtime, threads), eager in sorted(timed.items()):
        onnx = timed.get((model, 'onnxruntime', threads))
        if runtime != 'eager' or 'gcn' not in model or onnx is None:
            continue
        out.append(f'| {graph} | {model} | {threads} | {eager:.1f} | '
                   f'{onnx:.1f} | {onnx / eager:.2f} |')
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--report', action='store_true')
    parser.add_argument('--data-root', default=None)
    args = parser.parse_args(argv)
    path = OUT / ('quick.json' if args.quick else 'arxiv-size.json')
    if not args.report:
        write_json(path, run(args.quick, args.data_root))
    if not path.exists():
        sys.exit(f'{path} missing: run without --report first')
    body = report(json.loads(path.read_text()))
    print(body)
    if not args.quick:
        update_doc('export-speed', body)


if __name__ == '__main__':
    main()
