"""Which ``quantize_dynamic`` setting ``export --quantize int8`` uses: each
candidate on the quick start's student (the bundled GAT teacher distilled
into a GCN on Cora, seed 0) and on the small GCN of
tests/workflows/test_bench.py, against the float model.

Per candidate: file size; the largest difference to PyTorch over the
largest float output, and the agreement of predicted classes, on the
check graphs of every export (random features) and on Cora (its own
features; test accuracy too); whether onnxruntime computed the int8 graph
exactly (its output against onnx's reference evaluator, which multiplies
the integers without saturating); and onnxruntime's median latency on
Cora at 1 and 2 threads. The machine's CPU flags decide what the exactness
column shows: without VNNI, int8 weights saturate (see
gnncompress.outputs.int8.quantize_int8).

    python benchmarks/quantize.py            # under a minute on 2 cores
    python benchmarks/quantize.py --report   # rewrite the doc section only
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, machine, publish, write_json

from gnncompress import api
from gnncompress.models import ArchSpec, build_model, forward_logits
from gnncompress.outputs.int8 import quantize_int8
from gnncompress.outputs.onnx import INT8_SETTINGS, export_onnx
from gnncompress.outputs.parity import onnx_feeds, onnx_session
from gnncompress.tasks.datasets import load_graph

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / 'samples'
OUT = RESULTS / 'quantize'
CANDIDATES = {
    'QInt8 (onnxruntime default)': {'weight_type': 'QInt8'},
    'QInt8, reduce_range': {'weight_type': 'QInt8', 'reduce_range': True},
    'QUInt8': {'weight_type': 'QUInt8'},
    'QInt8, reduce_range, per channel': {
        'weight_type': 'QInt8', 'reduce_range': True, 'per_channel': True},
    'QUInt8, per channel': {'weight_type': 'QUInt8', 'per_channel': True},
}
REPEAT = 50


def cpu_flags() -> list[str]:
    wanted = ('avx2', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni',
              'amx_int8')
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                have = set(line.split(':', 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def median_ms(session, feeds: dict) -> float:
    for _ in range(5):
        session.run(None, feeds)
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def exact_gap(path: Path, x: torch.Tensor, edge_index: torch.Tensor) -> float:
    """onnxruntime's output against onnx's reference evaluator (exact
    integer products) on the export graph, over the output's size."""
    from onnx.reference import ReferenceEvaluator

    session = onnx_session(path, threads=1)
    feeds = onnx_feeds(session, x, edge_index)
    got = session.run(None, feeds)[0]
    exact = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    return float(np.abs(got - exact).max() / np.abs(exact).max())


def on_graph(path: Path, model, graph) -> dict:
    """Difference, agreement and test accuracy on a labelled graph."""
    session = onnx_session(path, threads=1)
    feeds = onnx_feeds(session, graph.x, graph.edge_index)
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        expected = forward_logits(model, graph.x, graph.edge_index).numpy()
    mask, y = graph.test_mask.numpy(), graph.y.numpy()
    out = {'relative_diff': float(np.abs(got - expected).max()
                                  / np.abs(expected).max()),
           'agreement': float((got.argmax(1) == expected.argmax(1)).mean()),
           'test_accuracy': float((got[mask].argmax(1) == y[mask]).mean()),
           'float_test_accuracy': float(
               (expected[mask].argmax(1) == y[mask]).mean())}
    for threads in (1, 2):
        timed = onnx_session(path, threads=threads)
        out[f'median_ms_{threads}'] = median_ms(timed, feeds)
        # what the session really ran with
        out[f'threads_{threads}'] = \
            timed.get_session_options().intra_op_num_threads
    return out


def models(folder: Path) -> dict:
    """The quick start's student (distilled here) and the test's GCN."""
    report = api.distill(SAMPLES / 'cora_gat.pt', out=folder / 'qs',
                         progress=False, device='cpu')
    from gnncompress.checkpoints.teachers import load_checkpoint
    ckpt = load_checkpoint(report.files['safetensors'])
    torch.manual_seed(0)  # as tests/workflows/test_bench.py builds it
    test_gcn = build_model(ArchSpec('gcn', 6, 8, 2, 3)).eval()
    return {'quick-start student': (ckpt.build().eval(),
                                    ckpt.spec.in_channels),
            'test GCN': (test_gcn, 6)}


def run() -> dict:
    cora = load_graph('Cora', SAMPLES, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (model, width) in models(folder).items():
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(64, width, generator=gen)
            edge_index = torch.randint(0, 64, (2, 256), generator=gen)
            fp32 = folder / f'{name}.onnx'
            export_onnx(model, x, edge_index, fp32)
            base = {'model': name, 'float_bytes': fp32.stat().st_size}
            for label, settings in CANDIDATES.items():
                path = folder / f'{name} {label}.onnx'
                check = quantize_int8(model, fp32, path, x, edge_index,
                                      settings=settings)
                row = {**base, 'setting': label, 'settings': settings,
                       'bytes': path.stat().st_size,
                       'check_relative_diff': check.relative_diff,
                       'check_max_abs_diff': check.max_abs_diff,
                       'check_scale': max(check.scale.values()),
                       'check_agreement': check.min_agreement,
                       'exact_gap': exact_gap(path, x, edge_index)}
                if width == cora.num_features:
                    row['cora'] = on_graph(path, model, cora)
                rows.append(row)
    return {'machine': machine(), 'cpu_flags': cpu_flags(),
            'chosen': INT8_SETTINGS, 'rows': rows,
            'time': time.strftime('%Y-%m-%dT%H:%M:%S')}


def report(result: dict) -> str:
    flags = ', '.join(result['cpu_flags']) or 'none of note'
    lines = [
        f"CPU flags: {flags}. Chosen: `{result['chosen']}`.", '',
        '| model | weights | file KiB | check graphs: max diff / max out '
        '| check graphs: class agreement | onnxruntime vs exact '
        '| Cora: max diff / max out | Cora: agreement | Cora: test acc '
        '(float) | Cora ms, onnxruntime x1 | Cora ms, onnxruntime x2 |',
        '|' + '---|' * 11]
    for r in result['rows']:
        c = r.get('cora')
        cora = [f"{c['relative_diff']:.4f}", f"{100 * c['agreement']:.1f}%",
                f"{100 * c['test_accuracy']:.1f}% "
                f"({100 * c['float_test_accuracy']:.1f}%)",
                f"{c['median_ms_1']:.2f} (x{c['threads_1']})",
                f"{c['median_ms_2']:.2f} (x{c['threads_2']})"] \
            if c else ['-'] * 5
        lines.append('| ' + ' | '.join([
            r['model'], r['setting'], f"{r['bytes'] / 1024:.1f}",
            f"{r['check_relative_diff']:.4f} ({r['check_max_abs_diff']:.3f}"
            f" / {r['check_scale']:.2f})",
            f"{100 * r['check_agreement']:.1f}%",
            f"{r['exact_gap']:.1e}", *cora]) + ' |')
    floats = {r['model']: r['float_bytes'] for r in result['rows']}
    lines += ['', 'Float files: ' + ', '.join(
        f'{k} {v / 1024:.1f} KiB' for k, v in floats.items()) + '.', '',
        f"Machine: {result['machine']}."]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args(argv)
    path = OUT / 'candidates.json'
    if not args.report:
        write_json(path, run())
    publish(path, 'int8', report)


if __name__ == '__main__':
    main()
