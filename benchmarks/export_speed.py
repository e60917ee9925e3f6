"""How fast the exported students run: a GCN 2x32 and an MLP 2x32 student
(128 features, 40 classes, random weights: latency does not depend on
them) on the arxiv-sized synthetic graph of docs/export.md (169,343 nodes,
1,166,243 edges) at 1 and 2 threads, through ``gnncompress bench``:
PyTorch eager, the ONNX file ``gnncompress`` exports (for a GCN, the
race-free form of gnncompress/models/export_gnn.py) and, for comparison,
the GCN exported as PyG computes it (``export_onnx(fast=False)``, 2 threads
only). A GCN 2x64 student on Coauthor Physics (``--data-root``, default
the cache; 8,415 bag-of-words features, 0.4% non-zero) is timed the same
way, eager against the ONNX file with a dense ``x`` and against the
sparse-feature export (``export_onnx(sparse_features=True)``: the features
as a CSR matrix, the form eager PyTorch multiplies too,
models/sparse_input.py), in ``--rounds`` rounds (the machine is shared:
each round times all three back to back), with onnxruntime's profile per
operator type of the sparse-feature file. The ONNX / eager ratio per
thread count is the table the issue asks for.

Each figure sits beside its lower bound: the GCN's whole forward near 6 ms
(docs/export.md: one CSR aggregation pass of width 32 at about 1.6 ms, two of
them plus the dense products), the MLP's the time to read ``x`` once at the
machine's copy bandwidth (about 38 GB/s, docs/export.md). Two measured floors
sit beside them, because the bounds assume what this machine cannot do:
the MLP's first matrix product alone (torch, 2 threads), and where the
exported GCN spends its time (onnxruntime's profiler, per operator type).

One result file; ``--report`` only rewrites docs/BENCHMARKS.md.

``--exporters`` times the export itself instead, as ``distill`` pays it on
the README quick start: the Cora student (GCN 2x31, 1,433 features, 7
classes; random weights and a random graph of Cora's size, 2,708 nodes and
10,556 edges: the exporters' work does not depend on the values) exported
once per fresh process, as the command does, through the TorchScript
exporter and through dynamo, in ``--rounds`` rounds alternating the two,
each with its parity check (5 graphs, a default and an 8-thread session)
and the check's time per graph.

    python benchmarks/export_speed.py --exporters --rounds 3

    python benchmarks/export_speed.py --data-root ../shared/datasets
    python benchmarks/export_speed.py --physics-only --data-root ...
    python benchmarks/export_speed.py --arxiv-only --rounds 3
    python benchmarks/export_speed.py --quick    # 10,000 nodes, no Physics
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, machine, update_doc, write_json

from gnncompress import api
from gnncompress.checkpoints.students import save_safetensors
from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.parity import onnx_feeds
from gnncompress.workflows.bench_rows import synthetic_graph

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


def gcn_profile(onnx_file: Path, graph, runs: int = 5,
                threads: int = THREADS) -> dict[str, float]:
    """Milliseconds per forward by ONNX operator type (onnxruntime's
    profiler) for the exported GCN on ``graph``; an ``If`` counts the
    operators inside it too."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
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


GCN_ST = 'gcn-2x32.safetensors'
PHYSICS_ST = 'physics-gcn-2x64.safetensors'
PHYSICS_CSR = 'physics-gcn-2x64-csr.onnx'


def physics(folder: Path, data_root: str | None, rounds: int) -> dict:
    """Eager, dense-``x`` onnxruntime and sparse-feature onnxruntime rows
    of a GCN 2x64 student on Physics, per round, and the profile of the
    sparse-feature file."""
    from gnncompress.tasks.datasets import load_graph

    torch.manual_seed(0)
    spec = ArchSpec('gcn', 8415, 64, 2, 5)
    model = build_model(spec).eval()
    path = save_safetensors(model, spec, folder / PHYSICS_ST)
    graph = load_graph('Physics', data_root)
    # Export on 500 of Physics' own rows (their density), random edges.
    sample = graph.x[:500]
    csr_file = folder / PHYSICS_CSR
    export_onnx(model, sample, torch.randint(0, 500, (2, 3000)), csr_file,
                sparse_features=True)
    rows = []
    load = [os.getloadavg()[0]]
    for i in range(rounds):
        result = api.bench([path, csr_file], data='Physics',
                           data_root=data_root,
                           runtimes=['eager', 'onnxruntime'],
                           threads=THREAD_COUNTS, warmup=3, repeat=20,
                           out=None)
        rows += [{**_row(r), 'round': i} for r in result.rows]
        load.append(os.getloadavg()[0])
    profile = {th: gcn_profile(csr_file, graph, threads=th)
               for th in THREAD_COUNTS}
    return {'rows': rows, 'csr_ms_by_op': profile, 'load_average': load,
            'nnz': int(torch.count_nonzero(graph.x)),
            'nodes': graph.num_nodes, 'edges': graph.edge_index.size(1)}


def _row(r) -> dict:
    return {'model': r.model, 'runtime': r.runtime, 'threads': r.threads,
            'median_ms': r.latency.median_ms if r.latency else None,
            'p95_ms': r.latency.p95_ms if r.latency else None,
            'error': r.error}


def run(quick: bool, rounds: int = 3) -> dict:
    """The arxiv-sized (or, ``quick``, a 10,000-node) synthetic graph; the
    GCN's eager and onnxruntime rows in ``rounds`` rounds."""
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
        gcn_rounds = [{**_row(r), 'round': 0} for r in result.rows
                      if r.model == GCN_ST]
        for i in range(1, rounds):
            again = api.bench(files[:1], graph_size=size,
                              runtimes=['eager', 'onnxruntime'],
                              threads=THREAD_COUNTS, warmup=3, repeat=20,
                              out=None)
            gcn_rounds += [{**_row(r), 'round': i} for r in again.rows]
        pyg = api.bench([plain], graph_size=size, runtimes=['onnxruntime'],
                        threads=[THREADS], warmup=1, repeat=5, out=None)
        profile = gcn_profile(fast_file,
                              synthetic_graph(nodes, edges, FEATURES))
    floor = matmul_floor_ms(nodes)
    x_bytes = nodes * FEATURES * 4
    bounds = {'gcn-2x32.safetensors': GCN_BOUND_MS * edges / EDGES,
              'gcn-2x32-pyg-export.onnx': GCN_BOUND_MS * edges / EDGES,
              'mlp-2x32.safetensors': 1e3 * x_bytes / BANDWIDTH}
    rows = [{**_row(r), 'bound_ms': bounds[r.model]}
            for r in [*result.rows, *pyg.rows]]
    return {'nodes': nodes, 'edges': edges, 'features': FEATURES,
            'rows': rows, 'gcn_rounds': gcn_rounds,
            'gcn_onnx_ms_by_op': profile,
            'mlp_first_matmul_ms': floor, 'machine': machine()}


def report(data: dict | None, phys: dict | None) -> str:
    lines = ['ONNX / eager per thread count (the exported GCN; under 1 '
             'means onnxruntime is faster):', '',
             '| graph | student | threads | eager ms | onnxruntime ms '
             '| onnx / eager | per round |', '|---|---|---|---|---|---|---|']
    if data and 'gcn_rounds' in data:
        lines += _round_rows(
            f"arxiv-sized ({data['nodes']:,} nodes)", data['gcn_rounds'],
            GCN_ST, [(GCN_ST, 'GCN 2x32, ONNX')])
    elif data:
        lines += _ratio_rows(f"arxiv-sized ({data['nodes']:,} nodes)",
                             data['rows'])
    if phys:
        lines += _round_rows('Physics', phys['physics']['rows'], PHYSICS_ST,
                             [(PHYSICS_ST, 'GCN 2x64, ONNX dense x'),
                              (PHYSICS_CSR, 'GCN 2x64, ONNX CSR features')])
    notes = _physics_notes(phys) if phys else []
    if not data:
        return '\n'.join(lines + notes)
    lines += ['', f"Arxiv-sized graph: {data['nodes']:,} nodes, "
              f"{data['edges']:,} edges, {data['features']} features.", '',
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
    return '\n'.join(lines + ['', f"Machine: {data['machine']}."] + notes)


def _ratio_rows(graph: str, rows: list[dict]) -> list[str]:
    timed = {(r['model'], r['runtime'], r['threads']): r['median_ms']
             for r in rows if r['median_ms'] is not None}
    out = []
    for (model, runtime, threads), eager in sorted(timed.items()):
        onnx = timed.get((model, 'onnxruntime', threads))
        if runtime != 'eager' or 'gcn' not in model or onnx is None:
            continue
        out.append(f'| {graph} | {model} | {threads} | {eager:.1f} | '
                   f'{onnx:.1f} | {onnx / eager:.2f} | |')
    return out


def _round_rows(graph: str, rows: list[dict], eager_model: str,
                onnx_models: list[tuple[str, str]]) -> list[str]:
    """Per thread count and ONNX file: medians over the rounds and the
    ratio of each round (eager and ONNX timed back to back)."""
    def ms(model: str, runtime: str, threads: int, round_: int):
        return next((r['median_ms'] for r in rows
                     if (r['model'], r['runtime'], r['threads'],
                         r['round']) == (model, runtime, threads, round_)),
                    None)

    rounds = sorted({r['round'] for r in rows})
    out = []
    for threads in sorted({r['threads'] for r in rows}):
        eager = [ms(eager_model, 'eager', threads, i) for i in rounds]
        for model, what in onnx_models:
            onnx = [ms(model, 'onnxruntime', threads, i) for i in rounds]
            pairs = [(e, o) for e, o in zip(eager, onnx)
                     if e is not None and o is not None]
            if not pairs:
                continue
            ratios = [o / e for e, o in pairs]
            out.append(
                f'| {graph} | {what} | {threads} | '
                f'{statistics.median(e for e, _ in pairs):.1f} | '
                f'{statistics.median(o for _, o in pairs):.1f} | '
                f'{statistics.median(ratios):.2f} | '
                f"{', '.join(f'{r:.2f}' for r in ratios)} |")
    return out


def _physics_notes(phys: dict) -> list[str]:
    p = phys['physics']
    lines = ['', f"Physics: {p['nodes']:,} nodes, {p['edges']:,} edges, "
             f"8,415 features with {p['nnz']:,} non-zeros; "
             f"{len({r['round'] for r in p['rows']})} rounds of "
             'eager, dense-x ONNX and CSR ONNX back to back; 1-minute load '
             'average before and after each round '
             f"{', '.join(f'{x:.1f}' for x in p['load_average'])} "
             '(other jobs share the 2 cores).']
    for threads, ops in sorted(p['csr_ms_by_op'].items(),
                               key=lambda kv: int(kv[0])):
        top = ', '.join(f'{op} {ms:.1f}' for op, ms in list(ops.items())[:5])
        lines.append(f'Where the CSR-feature file spends its time on '
                     f'{threads} thread(s) (onnxruntime profiler, ms per '
                     f'forward; If includes its branch): {top}.')
    return lines + ['', f"Machine (Physics): {phys['machine']}."]


QUICK_START = dict(nodes=2_708, edges=10_556, features=1_433, hidden=31,
                   classes=7)


def one_export(exporter: str) -> dict:
    """Export the quick start's student once through ``exporter`` in this
    (fresh) process and check it: seconds of each step, the imports the
    export added, and the check's seconds per graph."""
    from gnncompress.models import run_model
    from gnncompress.outputs.onnx import _Logits, run_export
    from gnncompress.outputs.parity import (
        STRESS_GRAPHS,
        check_graphs,
        check_parity,
        onnx_session,
        stress_session,
    )

    q = QUICK_START
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', q['features'], q['hidden'], 2,
                                 q['classes'])).eval()
    x = torch.randn(q['nodes'], q['features'])
    edge_index = torch.randint(0, q['nodes'], (2, q['edges']))
    shapes = {'x': {0: torch.export.Dim('num_nodes', min=2)},
              'edge_index': {1: torch.export.Dim('num_edges')}}
    before = set(sys.modules)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / 'student.onnx'
        start = time.perf_counter()
        run_export(_Logits(model), (x, edge_index), path,
                   ['x', 'edge_index'], shapes, exporter=exporter)
        export_s = time.perf_counter() - start
        imported = sorted(m for m in set(sys.modules) - before
                          if m in ('onnx', 'onnxscript', 'onnx_ir'))
        start = time.perf_counter()
        parity = check_parity(model, path, x, edge_index)
        check_s = time.perf_counter() - start
        # The check once more, graph by graph, as check_parity runs it:
        # the references, then the default session on every graph, then
        # the stress session on the stress graphs.
        graphs = check_graphs(x, edge_index)
        per_graph = dict.fromkeys(graphs, 0.0)
        for name, (gx, gei) in graphs.items():
            start = time.perf_counter()
            with torch.no_grad():
                run_model(model, gx, gei)
            per_graph[name] += time.perf_counter() - start
        for session, names in ((onnx_session(path), list(graphs)),
                               (stress_session(path), STRESS_GRAPHS)):
            for name in names:
                gx, gei = graphs[name]
                start = time.perf_counter()
                session.run(None, onnx_feeds(session, gx, gei))
                per_graph[name] += time.perf_counter() - start
    return {'exporter': exporter, 'export_s': export_s, 'check_s': check_s,
            'max_abs_diff': parity.max_abs_diff, 'imported': imported,
            'check_per_graph_s': per_graph}


def exporter_rounds(rounds: int) -> dict:
    """:func:`one_export` for each exporter in a fresh process, alternating,
    ``rounds`` times."""
    import subprocess

    rows = []
    for i in range(rounds):
        for exporter in ('torchscript', 'dynamo'):
            done = subprocess.run(
                [sys.executable, __file__, '--one-export', exporter],
                capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row['round'] = i
            rows.append(row)
            print(f"round {i} {exporter}: export {row['export_s']:.2f} s, "
                  f"check {row['check_s']:.2f} s", file=sys.stderr)
    return {'rows': rows, 'load_average': os.getloadavg()[0],
            'machine': machine(), 'quick_start': QUICK_START}


def exporters_report(data: dict) -> str:
    rows = data['rows']
    lines = ['Export of the quick start\'s student (GCN 2x31, Cora-sized '
             'graph), one per fresh process as `distill` pays it, median '
             f"of {len({r['round'] for r in rows})} rounds "
             '(`python benchmarks/export_speed.py --exporters`):', '',
             '| exporter | export s | check s | max abs diff | '
             'imports added |', '| --- | --- | --- | --- | --- |']
    for exporter in ('torchscript', 'dynamo'):
        mine = [r for r in rows if r['exporter'] == exporter]
        lines.append(
            f"| {exporter} | "
            f"{statistics.median(r['export_s'] for r in mine):.2f} | "
            f"{statistics.median(r['check_s'] for r in mine):.2f} | "
            f"{max(r['max_abs_diff'] for r in mine):.1e} | "
            f"{', '.join(mine[0]['imported']) or 'none'} |")
    ratios = [d['export_s'] / t['export_s'] for t, d in
              zip(rows[0::2], rows[1::2])]
    graphs = rows[0]['check_per_graph_s']
    share = ', '.join(f'{name} {_median_of(rows, name):.2f}'
                      for name in graphs)
    lines += ['', 'dynamo / TorchScript export time per round: '
              f"{', '.join(f'{r:.1f}' for r in ratios)}. The check's "
              f'seconds per graph (PyTorch reference and the sessions that '
              f'run it): '
              f'{share}.', '',
              f"Machine: {data['machine']}; 1-minute load average after "
              f"the rounds {data['load_average']:.1f} (other jobs share "
              f'the cores).']
    return '\n'.join(lines)


def _median_of(rows: list[dict], graph: str) -> float:
    return statistics.median(r['check_per_graph_s'][graph] for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--report', action='store_true')
    parser.add_argument('--physics-only', action='store_true')
    parser.add_argument('--arxiv-only', action='store_true')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--exporters', action='store_true')
    parser.add_argument('--one-export', choices=['torchscript', 'dynamo'])
    args = parser.parse_args(argv)
    if args.one_export:
        print(json.dumps(one_export(args.one_export)))
        return
    if args.exporters:
        times = OUT / 'exporters.json'
        if not args.report:
            write_json(times, exporter_rounds(args.rounds))
        body = exporters_report(json.loads(times.read_text()))
        print(body)
        update_doc('export-time', body)
        return
    path = OUT / ('quick.json' if args.quick else 'arxiv-size.json')
    phys_path = OUT / 'physics.json'
    if not args.report:
        if not args.physics_only:
            write_json(path, run(args.quick, args.rounds))
        if not args.quick and not args.arxiv_only:
            with tempfile.TemporaryDirectory() as tmp:
                write_json(phys_path, {
                    'physics': physics(Path(tmp), args.data_root,
                                       args.rounds),
                    'machine': machine()})
    if not path.exists():
        sys.exit(f'{path} missing: run without --report first')
    phys = None if args.quick or not phys_path.exists() else \
        json.loads(phys_path.read_text())
    body = report(json.loads(path.read_text()), phys)
    print(body)
    if not args.quick:
        update_doc('export-speed', body)


if __name__ == '__main__':
    main()
