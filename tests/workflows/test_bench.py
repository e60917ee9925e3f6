"""gnncompress bench: rows per runtime and thread count, accuracy from each
runtime's own output, baseline columns, CI gates (exit code 3) and bad
input (exit code 1)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.checkpoints.students import save_safetensors
from gnncompress.cli import app
from gnncompress.core.errors import DataError
from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.latency import Latency
from gnncompress.outputs.onnx import export_onnx
from gnncompress.workflows.bench_rows import PeakMemory, parse_graph_size
from gnncompress.workflows.bench_table import (
    BenchRow,
    check_gates,
    compare_to_baseline,
)

runner = CliRunner()
FEATURES = 6


def _row(model: str, runtime: str, median: float, accuracy: float | None,
         threads: int | None = 1, device: str = 'cpu') -> BenchRow:
    return BenchRow(model, runtime, device, threads,
                    latency=Latency(median, median, median, 1),
                    accuracy=accuracy)


# baseline columns and gates, on hand-made rows ------------------------------

def test_speedup_and_accuracy_drop_against_the_baseline():
    rows = [_row('T', 'eager', 40.0, 0.80),
            _row('T', 'onnxruntime', 50.0, 0.80),
            _row('S', 'eager', 10.0, 0.78),
            _row('S', 'onnxruntime', 5.0, 0.77),
            _row('S', 'compile', 8.0, 0.78)]  # T has no compile row
    compare_to_baseline(rows, 'T')

    s_eager, s_ort, s_compile = rows[2], rows[3], rows[4]
    assert s_eager.speedup == pytest.approx(4.0)  # 40 / 10
    assert s_ort.speedup == pytest.approx(10.0)  # same runtime: 50 / 5
    # T has no compile run: no speed-up across runtimes.
    assert s_compile.speedup is None
    assert s_eager.accuracy_drop == pytest.approx(2.0)
    assert s_ort.accuracy_drop == pytest.approx(3.0)
    assert rows[0].speedup == pytest.approx(1.0)


def test_gates_name_every_failing_row_and_skip_the_baseline():
    rows = [_row('T', 'eager', 40.0, 0.80), _row('S', 'eager', 10.0, 0.70),
            _row('T', 'onnxruntime', 40.0, 0.80),
            _row('S', 'onnxruntime', 30.0, 0.79),
            BenchRow('S', 'compile', 'cpu', 1, error='no compiler')]
    compare_to_baseline(rows, 'T')
    gates = {g.name: g for g in check_gates(
        rows, 'T', max_latency_ms=20.0, min_speedup=2.0,
        max_accuracy_drop=5.0)}

    assert gates['max-latency-ms'].failures == [
        'S onnxruntime cpu x1: 30.00 ms', 'S compile cpu x1: no value']
    # 40 / 30 = 1.33x
    assert gates['min-speedup'].failures == [
        'S onnxruntime cpu x1: 1.33x', 'S compile cpu x1: no value']
    assert gates['max-accuracy-drop'].failures == [
        'S eager cpu x1: 10.0 points', 'S compile cpu x1: no value']
    passing = check_gates(rows[:3], 'T', max_latency_ms=20.0)
    assert passing[0].passed


def test_no_gate_no_check():
    assert check_gates([_row('S', 'eager', 1e9, None)], None) == []


@pytest.mark.parametrize('text', ['100:200', 'a:b:c', '1:5:3', '10:-1:3',
                                  '10:5:0'])
def test_bad_graph_size(text):
    with pytest.raises(DataError, match='NODES:EDGES:FEATURES'):
        parse_graph_size(text)


def test_graph_size():
    assert parse_graph_size('169343:1166243:128') == (169343, 1166243, 128)


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device('cpu')) as memory:
        block = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        float(block.sum())
        # Hold it until the sampling thread has run once more: on a busy
        # machine the thread may not be scheduled within the block's life.
        deadline = time.monotonic() + 10
        while memory._peak - memory._start < 48 * 2 ** 20 and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        del block
    assert memory.peak_mb > 48


# end to end -----------------------------------------------------------------

@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, Path]:
    """A GCN and an MLP student (safetensors), the MLP's ONNX export and a
    small labelled graph."""
    folder = tmp_path_factory.mktemp('bench')
    gen = torch.Generator().manual_seed(0)
    num_nodes = 90
    y = torch.arange(num_nodes) % 3
    x = torch.randn(num_nodes, FEATURES, generator=gen) + y[:, None]
    edge_index = torch.randint(0, num_nodes, (2, 300), generator=gen)
    torch.save(Data(x=x, edge_index=edge_index, y=y), folder / 'graph.pt')
    paths = {'graph': folder / 'graph.pt'}
    torch.manual_seed(0)
    for arch in ('gcn', 'mlp'):
        spec = ArchSpec(arch, FEATURES, 8, 2, 3)
        model = build_model(spec).eval()
        paths[arch] = save_safetensors(model, spec,
                                       folder / f'{arch}.safetensors')
        if arch == 'mlp':
            paths['mlp_onnx'] = folder / 'mlp.onnx'
            export_onnx(model, x, edge_index, paths['mlp_onnx'],
                        uses_graph=False)
    return paths


def _bench(files, out: Path, *extra: str):
    return runner.invoke(app, [
        'bench', str(files['gcn']), str(files['mlp']), str(files['mlp_onnx']),
        '--data', str(files['graph']), '--runtimes', 'eager,onnxruntime',
        '--threads', '1,2', '--device', 'cpu', '--warmup', '1', '--repeat',
        '2', '--out', str(out), *extra])


def test_bench_rows_files_and_accuracy(files, tmp_path):
    result = _bench(files, tmp_path / 'out', '--baseline', str(files['gcn']))
    assert result.exit_code == 0, result.output

    report = json.loads((tmp_path / 'out' / 'bench.json').read_text())
    assert report['schema'] == 1
    assert report['baseline'] == 'gcn.safetensors'
    assert report['graph']['num_nodes'] == 90
    keys = [(r['model'], r['runtime'], r['threads']) for r in report['rows']]
    # Each PyTorch model: eager and onnxruntime (exported on the fly) at 1
    # and 2 threads (every export is right on any thread count); the ONNX
    # file: onnxruntime only.
    assert keys == \
        [(m, rt, n) for m in ('gcn.safetensors', 'mlp.safetensors')
         for rt in ('eager', 'onnxruntime') for n in (1, 2)] + \
        [('mlp.onnx', 'onnxruntime', 1), ('mlp.onnx', 'onnxruntime', 2)]
    by_key = {(r['model'], r['runtime'], r['threads']): r
              for r in report['rows']}
    for row in report['rows']:
        assert row['error'] is None
        lat = row['latency']
        assert 0 < lat['median_ms'] <= lat['p95_ms']
        assert row['nodes_per_second'] == pytest.approx(
            90 / (lat['median_ms'] / 1e3))
    # The same weights give the same test accuracy in every runtime.
    mlp = {r['accuracy'] for k, r in by_key.items()
           if k[0] != 'gcn.safetensors'}
    assert len(mlp) == 1 and 0 <= mlp.pop() <= 1
    gcn_eager = by_key[('gcn.safetensors', 'eager', 1)]
    assert gcn_eager['speedup'] == pytest.approx(1.0)
    assert gcn_eager['accuracy_drop'] == pytest.approx(0.0)
    assert gcn_eager['agreement'] == pytest.approx(1.0)
    # A speed-up exactly where the baseline ran in the same runtime with
    # the same threads, and it is the ratio of the medians.
    for (model, runtime, threads), row in by_key.items():
        base = by_key.get(('gcn.safetensors', runtime, threads))
        if base is None:
            assert row['speedup'] is None
        else:
            assert row['speedup'] == pytest.approx(
                base['latency']['median_ms'] / row['latency']['median_ms'])
        assert 0 <= row['agreement'] <= 1
    assert (tmp_path / 'out' / 'bench.png').read_bytes()[:4] == b'\x89PNG'
    markdown = (tmp_path / 'out' / 'bench.md').read_text()
    assert 'speed-up' in markdown and 'agrees with baseline' in markdown


def test_failed_gate_exits_3_and_still_writes(files, tmp_path):
    result = _bench(files, tmp_path / 'out', '--max-latency-ms', '1e-9')
    assert result.exit_code == 3
    assert 'gate max-latency-ms 1e-09 failed' in result.output
    report = json.loads((tmp_path / 'out' / 'bench.json').read_text())
    assert report['gates'][0]['passed'] is False


def test_synthetic_graph_has_no_accuracy(files, tmp_path):
    result = runner.invoke(app, [
        'bench', str(files['mlp']), '--graph-size', f'500:2000:{FEATURES}',
        '--runtimes', 'eager', '--threads', '1', '--repeat', '1', '--out',
        str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / 'out' / 'bench.json').read_text())['rows'][0]
    assert row['accuracy'] is None and row['latency']['runs'] == 1


@pytest.mark.parametrize('args, message', [
    (['--graph-size', '10:20'], 'NODES:EDGES:FEATURES'),
    (['--graph-size', '50:100:99'], 'takes 6 input features'),
    ([], 'exactly one of --data'),
    (['--graph-size', '50:100:6', '--runtimes', 'tvm'],
     "Unknown runtime 'tvm'"),
    (['--graph-size', '50:100:6', '--min-speedup', '2'], 'needs --baseline'),
    (['--graph-size', '50:100:6', '--threads', 'two'], 'comma-separated'),
    (['--graph-size', '50:100:6', '--sizes', '1,10'], 'at least 2'),
])
def test_bad_input_exits_1(files, tmp_path, args, message):
    out = tmp_path / 'out'
    result = runner.invoke(app, ['bench', str(files['gcn']), '--out',
                                 str(out), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert 'Traceback' not in result.output
    assert not out.exists()


def test_missing_and_corrupt_model_files(files, tmp_path):
    result = runner.invoke(app, ['bench', str(tmp_path / 'nope.pt'),
                                 '--graph-size', '50:100:6'])
    assert result.exit_code == 1 and 'not found' in result.output
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x00garbage')
    result = runner.invoke(app, ['bench', str(bad), '--graph-size',
                                 '50:100:6', '--out', str(tmp_path / 'o')])
    assert result.exit_code == 1 and 'not a valid ONNX model' in result.output


def test_onnx_baseline_gives_accuracy_drop():
    # An ONNX baseline has no eager run: its onnxruntime accuracy counts.
    rows = [_row('T.onnx', 'onnxruntime', 10.0, 0.813),
            _row('T8.onnx', 'onnxruntime', 8.0, 0.812)]
    compare_to_baseline(rows, 'T.onnx')
    assert rows[1].accuracy_drop == pytest.approx(0.1)
    assert rows[1].speedup == pytest.approx(1.25)


def test_int8_export_is_smaller_and_close(files, tmp_path):
    # Weights quantised to int8: a smaller file whose outputs stay near
    # PyTorch's but are not bit-faithful.
    fp32, int8 = tmp_path / 'm.onnx', tmp_path / 'm8.onnx'
    assert runner.invoke(app, ['export', str(files['gcn']), '--out',
                               str(fp32)]).exit_code == 0
    result = runner.invoke(app, ['export', str(files['gcn']), '--out',
                                 str(int8), '--quantize', 'int8'])
    assert result.exit_code == 0, result.output
    import onnx
    from onnx.numpy_helper import to_array
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert 'DynamicQuantizeLinear' in ops
    # Smaller weights; not a smaller file at this size (8 hidden channels),
    # where the quantiser's added nodes and shapes outweigh them.

    def weight_bytes(path: Path) -> int:
        return sum(to_array(t).nbytes
                   for t in onnx.load(str(path)).graph.initializer)

    assert weight_bytes(int8) < weight_bytes(fp32)
    # The difference, against the size of the outputs it is measured on
    # (the bound of tests/outputs/test_int8.py: 8 quantisation steps), and the
    # agreement of predicted classes.
    found = re.search(r'PyTorch ([0-9.e+-]+) on outputs up to ([0-9.e+-]+) '
                      r'\(([0-9.]+)%\), predicted classes agree on '
                      r'([0-9.]+)%', result.output)
    diff, scale, percent, agree = map(float, found.groups())
    assert 0 < diff <= 8 / 255 * scale
    assert percent == pytest.approx(100 * diff / scale, abs=0.01)
    assert 95 <= agree <= 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx', 'm8.onnx']
    # bench against the float file: the int8 model's accuracy and its
    # agreement with the float model's predicted classes.
    result = runner.invoke(app, [
        'bench', str(fp32), str(int8), '--baseline', str(fp32), '--data',
        str(files['graph']), '--threads', '1', '--repeat', '1', '--warmup',
        '0', '--out', str(tmp_path / 'b')])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / 'b' / 'bench.json').read_text())['rows']
    float_row, int8_row = rows
    assert float_row['agreement'] == 1.0
    assert 0.95 <= int8_row['agreement'] <= 1.0
    assert int8_row['accuracy_drop'] == pytest.approx(
        100 * (float_row['accuracy'] - int8_row['accuracy']))
    bad = runner.invoke(app, ['export', str(files['gcn']), '--out',
                              str(tmp_path / 'x.onnx'), '--quantize', 'int4'])
    assert bad.exit_code == 1 and "Unknown quantisation 'int4'" in bad.output


def test_sizes_time_every_model_on_each_synthetic_graph(files, tmp_path):
    result = runner.invoke(app, [
        'bench', str(files['gcn']), str(files['mlp_onnx']), '--graph-size',
        f'40:120:{FEATURES}', '--sizes', '100,300', '--runtimes',
        'eager,onnxruntime', '--threads', '1', '--repeat', '1', '--warmup',
        '0', '--out', str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / 'out' / 'bench.json').read_text())
    assert report['settings']['degree'] == pytest.approx(3.0)  # 120 / 40
    assert [s['num_nodes'] for s in report['scaling']] == [100, 300]
    for size in report['scaling']:
        assert [(r['model'], r['runtime']) for r in size['rows']] == [
            ('gcn.safetensors', 'eager'), ('gcn.safetensors', 'onnxruntime'),
            ('mlp.onnx', 'onnxruntime')]
        assert all(r['error'] is None for r in size['rows'])
    png = (tmp_path / 'out' / 'bench-sizes.png').read_bytes()
    assert png[:4] == b'\x89PNG'
    assert '| 300 |' in (tmp_path / 'out' / 'bench.md').read_text()


def test_a_speedup_only_between_rows_that_ran_with_equal_threads():
    # The student's graph ran on 1 thread when 2 were asked: against the
    # baseline's 2-thread run it gets no speed-up; against its 1-thread
    # run, the ratio of the medians.
    rows = [_row('T', 'onnxruntime', 30.0, 0.8, threads=2),
            BenchRow('S', 'onnxruntime', 'cpu', 1, threads_asked=2,
                     latency=Latency(10.0, 10.0, 10.0, 1), accuracy=0.8)]
    compare_to_baseline(rows, 'T')
    assert rows[1].speedup is None
    assert rows[1].accuracy_drop == pytest.approx(0.0)
    assert check_gates(rows, 'T', min_speedup=2.0)[0].failures == [
        'S onnxruntime cpu x1: no speed-up (the baseline has no run with '
        'this runtime, device and threads)']
    rows.insert(0, _row('T', 'onnxruntime', 24.0, 0.8, threads=1))
    compare_to_baseline(rows, 'T')
    assert rows[2].speedup == pytest.approx(2.4)  # 24 / 10
    assert check_gates(rows, 'T', min_speedup=2.0)[0].passed


def test_agreement_with_the_baseline_predictions():
    import numpy as np
    rows = [_row('T', 'onnxruntime', 10.0, 0.8),
            _row('T8', 'onnxruntime', 8.0, 0.8),
            _row('T8', 'eager', 8.0, 0.8)]
    rows[0].predictions = np.array([0, 1, 2, 2, 1], np.int32)
    rows[1].predictions = np.array([0, 1, 2, 0, 1], np.int32)
    rows[2].predictions = np.array([0, 1, 1, 0, 1], np.int32)
    compare_to_baseline(rows, 'T')
    assert rows[0].agreement == pytest.approx(1.0)
    assert rows[1].agreement == pytest.approx(0.8)  # 4 of 5 nodes
    # No eager run of T: its only predictions are the reference.
    assert rows[2].agreement == pytest.approx(0.6)
    assert 'predictions' not in rows[1].to_dict()
    assert rows[1].to_dict()['agreement'] == pytest.approx(0.8)


def test_latency_budget_cuts_runs_of_a_slow_forward():
    """A forward that takes 50 ms under a 0.1 s budget: one warm-up and
    the minimum of timed runs, not 3 + 20 calls; a fast one keeps them."""
    import time as _time

    from gnncompress.outputs.latency import MIN_REPEAT, measure_latency
    calls = []

    def slow() -> None:
        calls.append(1)
        _time.sleep(0.05)

    lat = measure_latency(slow, budget_s=0.1)
    assert lat.runs == MIN_REPEAT and len(calls) == 1 + MIN_REPEAT
    calls.clear()
    lat = measure_latency(lambda: calls.append(1), budget_s=0.4)
    assert lat.runs == 20 and len(calls) == 23
    calls.clear()
    # No budget (gnncompress bench): exactly what was asked.
    assert measure_latency(slow, warmup=1, repeat=8).runs == 8
    assert len(calls) == 9


def test_latency_budget_counts_the_warm_up(monkeypatch):
    """A 0.25 s forward under a 1.5 s budget: the warm-up takes 0.25 s of
    it, so 5 timed runs fill the rest (6 would have overrun it); under
    0.3 s the minimum, 3 runs."""
    from gnncompress.outputs import latency
    clock = [0.0]
    monkeypatch.setattr(latency.time, 'perf_counter', lambda: clock[0])

    def forward() -> None:
        clock[0] += 0.25

    assert latency.measure_latency(forward, budget_s=1.5).runs == 5
    assert clock[0] == 0.25 * 6
    assert latency.measure_latency(forward, budget_s=0.3).runs == 3
    assert latency.MIN_REPEAT == 3


def test_bench_times_a_sparse_feature_export(tmp_path):
    # A file exported with --sparse-features takes CSR features; bench
    # feeds them from the graph's x and reports its accuracy like any row.
    torch.manual_seed(0)
    spec = ArchSpec('gcn', 30, 8, 2, 3)
    x = (torch.rand(20, 30) < 0.2).float()
    path = tmp_path / 'csr.onnx'
    export_onnx(build_model(spec).eval(), x, torch.randint(0, 20, (2, 60)),
                path, sparse_features=True)
    result = runner.invoke(app, [
        'bench', str(path), '--graph-size', '40:120:30', '--runtimes',
        'onnxruntime', '--threads', '1', '--repeat', '1', '--warmup', '0',
        '--out', str(tmp_path / 'b')])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / 'b' / 'bench.json').read_text())['rows']
    assert [(r['model'], r['runtime'], r['error']) for r in rows] == [
        ('csr.onnx', 'onnxruntime', None)]
    assert rows[0]['latency']['median_ms'] > 0


@pytest.mark.cuda
def test_cuda_graph_runtime(files, tmp_path, device):
    """On CUDA: the captured graph's replays give eager's accuracy and
    predictions. Elsewhere: one row that says what it needs."""
    result = runner.invoke(app, [
        'bench', str(files['gcn']), str(files['mlp']), '--data',
        str(files['graph']), '--runtimes', 'eager,cuda-graph', '--device',
        device, '--threads', '1', '--warmup', '1', '--repeat', '3',
        '--baseline', str(files['gcn']), '--out', str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / 'out' / 'bench.json').read_text())['rows']
    graph_rows = [r for r in rows if r['runtime'] == 'cuda-graph']
    assert [r['model'] for r in graph_rows] == ['gcn.safetensors',
                                               'mlp.safetensors']
    if device != 'cuda':
        assert all('add --device cuda' in r['error'] for r in graph_rows)
        return
    eager = {r['model']: r for r in rows if r['runtime'] == 'eager'}
    for row in graph_rows:
        assert row['error'] is None and row['latency']['median_ms'] > 0
        assert row['accuracy'] == pytest.approx(
            eager[row['model']]['accuracy'])
        assert row['agreement'] == pytest.approx(1.0) or \
            row['model'] != 'gcn.safetensors'
