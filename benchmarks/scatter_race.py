"""Three ways to export a neighbourhood sum, run in onnxruntime at several
intra-op thread counts: error against a float64 sum, whether repeated runs
agree, and the median time (docs/export.md, "Why the aggregation is a
segment sum").

- ``index_add`` exports as ``ScatterND(add)``;
- ``scatter_add`` on an ``[E, F]`` index as ``ScatterElements(add)``;
- gnncompress.models.segment.neighbour_sum as a sort (``TopK``), a
  float64 gather, ``CumSum`` and two ``[N, F]`` gathers.

The graph has the arxiv-sized counts (169,343 nodes, 1,166,243 edges) with
power-law in-degrees (Pareto destinations) at width 32.

    python benchmarks/scatter_race.py            # a few minutes on 2 cores
    python benchmarks/scatter_race.py --stress-session

``--stress-session`` runs the ``ScatterND`` export on the parity check's
repeated-destinations graph (gnncompress.outputs.parity) in the check's
8-thread session with its idle threads spinning (onnxruntime's default)
and sleeping (what the check uses), 20 runs each: how many runs lose an
addition, and the median time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, machine, write_json
from torch import Tensor, nn

from gnncompress.models.segment import neighbour_sum, segments
from gnncompress.outputs.onnx import run_export
from gnncompress.outputs.parity import onnx_session

OUT = RESULTS / 'scatter_race'
NODES, EDGES, WIDTH = 169_343, 1_166_243, 32
THREADS: list[int | None] = [1, 2, 8, None]  # None: onnxruntime's default


class _IndexAdd(nn.Module):
    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        return h.new_zeros(h.shape).index_add(
            0, edge_index[1], h.index_select(0, edge_index[0]))


class _ScatterAdd(nn.Module):
    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        rows = h.index_select(0, edge_index[0])
        index = edge_index[1][:, None].expand_as(rows)
        return h.new_zeros(h.shape).scatter_add(0, index, rows)


class _Segment(nn.Module):
    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        return neighbour_sum(h, segments(edge_index, h.size(0)))


def graph(nodes: int, edges: int) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(0)
    dst = (rng.pareto(1.2, edges) * 50).astype(np.int64) % nodes
    src = rng.integers(0, nodes, edges)
    h = rng.standard_normal((nodes, WIDTH)).astype(np.float32)
    return torch.from_numpy(h), torch.from_numpy(np.stack([src, dst]))


def run(quick: bool) -> dict:
    nodes, edges = (10_000, 70_000) if quick else (NODES, EDGES)
    h, edge_index = graph(nodes, edges)
    exact = np.zeros((nodes, WIDTH))
    np.add.at(exact, edge_index[1].numpy(),
              h[edge_index[0]].numpy().astype(np.float64))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in (('ScatterND (index_add)', _IndexAdd()),
                             ('ScatterElements (scatter_add)', _ScatterAdd()),
                             ('segment sum', _Segment())):
            path = Path(tmp) / 'm.onnx'
            sample = graph(50, 200)
            run_export(module, sample, path, ['h', 'edge_index'],
                       {'h': {0: torch.export.Dim('n', min=2)},
                        'edge_index': {1: torch.export.Dim('e')}})
            for threads in THREADS:
                session = onnx_session(path, threads)
                feeds = {'h': h.numpy(), 'edge_index': edge_index.numpy()}
                times, errors = [], []
                for _ in range(5):
                    start = time.perf_counter()
                    got = session.run(None, feeds)[0]
                    times.append(1e3 * (time.perf_counter() - start))
                    errors.append(float(np.abs(got - exact).max()))
                rows.append({'aggregation': name, 'threads': threads,
                             'median_ms': statistics.median(times[1:]),
                             'max_error': max(errors),
                             'runs_agree': len(set(errors)) == 1})
    return {'nodes': nodes, 'edges': edges, 'width': WIDTH, 'rows': rows,
            'machine': machine()}


def stress_session(runs: int = 20) -> dict:
    """The check's 8-thread session, spinning and sleeping, on the racing
    export (see the module's docstring)."""
    from gnncompress.outputs.parity import (
        CHECK_THREADS,
        repeated_destinations,
    )
    h, edge_index = repeated_destinations(WIDTH)
    exact = np.zeros(tuple(h.shape))
    np.add.at(exact, edge_index[1].numpy(),
              h[edge_index[0]].numpy().astype(np.float64))
    feeds = {'h': h.numpy(), 'edge_index': edge_index.numpy()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'm.onnx'
        run_export(_IndexAdd(), graph(50, 200), path, ['h', 'edge_index'],
                   {'h': {0: torch.export.Dim('n', min=2)},
                    'edge_index': {1: torch.export.Dim('e')}})
        for spinning in (True, False):
            session = onnx_session(path, CHECK_THREADS, spinning=spinning)
            times, errors = [], []
            for _ in range(runs):
                start = time.perf_counter()
                got = session.run(None, feeds)[0]
                times.append(1e3 * (time.perf_counter() - start))
                errors.append(float(np.abs(got - exact).max()))
            rows.append({'spinning': spinning, 'runs': runs,
                         'runs_losing_an_addition':
                             sum(e > 1e-3 for e in errors),
                         'max_error': max(errors),
                         'median_ms': statistics.median(times)})
    return {'threads': CHECK_THREADS, 'nodes': int(h.size(0)),
            'edges': int(edge_index.size(1)), 'width': WIDTH,
            'rows': rows, 'machine': machine()}


def report_stress(data: dict) -> str:
    lines = [f"ScatterND (index_add) export on the parity check's repeated-"
             f"destinations graph ({data['nodes']:,} nodes, "
             f"{data['edges']:,} edges, width {data['width']}), "
             f"{data['threads']} intra-op threads:", '',
             '| idle threads | runs | runs losing an addition | max error '
             '| median ms |', '|---|---|---|---|---|']
    for r in data['rows']:
        lines.append(f"| {'spin' if r['spinning'] else 'sleep'} | "
                     f"{r['runs']} | {r['runs_losing_an_addition']} | "
                     f"{r['max_error']:.1e} | {r['median_ms']:.1f} |")
    return '\n'.join(lines + ['', f"Machine: {data['machine']}."])


def report(data: dict) -> str:
    lines = [f"{data['nodes']:,} nodes, {data['edges']:,} edges (power-law "
             f"destinations), width {data['width']}; 5 runs each.", '',
             '| aggregation | threads | median ms | max error | runs agree |',
             '|---|---|---|---|---|']
    for r in data['rows']:
        threads = r['threads'] or 'default'
        lines.append(f"| {r['aggregation']} | {threads} | "
                     f"{r['median_ms']:.0f} | {r['max_error']:.1e} | "
                     f"{'yes' if r['runs_agree'] else 'no'} |")
    return '\n'.join(lines + ['', f"Machine: {data['machine']}."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--stress-session', action='store_true')
    args = parser.parse_args(argv)
    if args.stress_session:
        path = OUT / 'stress-session.json'
        write_json(path, stress_session())
        print(report_stress(json.loads(path.read_text())))
        return
    path = OUT / ('quick.json' if args.quick else 'arxiv-size.json')
    write_json(path, run(args.quick))
    print(report(json.loads(path.read_text())))


if __name__ == '__main__':
    main()
