"""Every latency figure names its runtime, device and threads, and a
speed-up is only computed between figures that ran in the same runtime on
the same device with the same threads (hand-made timings: no timing is
asserted)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLES
from torch_geometric.nn.models import GCN

import gnncompress.outputs.latency
from gnncompress import api
from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.latency import (
    Latency,
    describe,
    onnx_latency,
    speedup,
    torch_latency,
)
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.parity import onnx_session
from gnncompress.outputs.report import (
    ModelEntry,
    Report,
    latency_labels,
    student_speedups,
)


def _lat(runtime: str, median: float, threads: int | None,
         device: str = 'cpu') -> dict:
    return {'median_ms': median, 'p95_ms': median + 1, 'mean_ms': median,
            'runs': 5, 'runtime': runtime, 'device': device,
            'threads': threads}


def _entry(role: str, **latency: dict) -> ModelEntry:
    spec = {'arch': 'gcn', 'num_layers': 2, 'hidden_channels': 16}
    return ModelEntry(role=role, spec=spec, parameters=100,
                      test_accuracy=0.8, latency=latency)


def _report(teacher: ModelEntry, student: ModelEntry) -> Report:
    return Report(
        command='gnncompress distill T.pt', method='kd', method_options={},
        data={'name': 'Cora', 'nodes': 10, 'edges': 20,
              'split': {'kind': 'given', 'train': 1, 'val': 1, 'test': 1}},
        teacher=teacher, student=student, compression_ratio=10.0,
        onnx_max_abs_diff=0.0, onnx_parity={'export graph': 0.0},
        training={'epochs_run': 1, 'seconds': 1.0, 'best_epoch': 1},
        seed=0, device='cpu', versions={},
        speedups=student_speedups(teacher, student))


def _pair(student_onnx_threads: int) -> Report:
    """Teacher 40 ms (PyTorch) and 30 ms (onnxruntime), student 10 and 5
    ms, all on 2 threads but the student's onnxruntime figure."""
    teacher = _entry('teacher', **{'pytorch-cpu': _lat('pytorch', 40, 2),
                                   'onnxruntime-cpu':
                                   _lat('onnxruntime', 30, 2)})
    student = _entry('student', **{
        'pytorch-cpu': _lat('pytorch', 10, 2),
        'onnxruntime-cpu': _lat('onnxruntime', 5, student_onnx_threads)})
    return _report(teacher, student)


def test_speedup_needs_the_same_runtime_device_and_threads():
    assert speedup(_lat('onnxruntime', 30, 2),
                   _lat('onnxruntime', 10, 2)) == pytest.approx(3.0)
    assert speedup(_lat('onnxruntime', 30, 2),
                   _lat('onnxruntime', 10, 1)) is None
    assert speedup(_lat('pytorch', 30, 2), _lat('onnxruntime', 10, 2)) \
        is None
    assert speedup(_lat('pytorch', 30, None, 'cuda'),
                   _lat('pytorch', 10, 2)) is None
    assert speedup(_lat('pytorch', 30, None, 'cuda'),
                   _lat('pytorch', 6, None, 'cuda')) == pytest.approx(5.0)
    assert describe(_lat('onnxruntime', 1, 2)) == 'onnxruntime cpu x2'
    assert describe(_lat('pytorch', 1, None, 'cuda')) == 'pytorch cuda'


def test_distill_report_speedups_with_equal_threads():
    report = _pair(student_onnx_threads=2)

    # onnxruntime first: the runtime the student ships in.
    assert [(s['runtime'], s['speedup']) for s in report.speedups] == [
        ('onnxruntime', pytest.approx(6.0)), ('pytorch', pytest.approx(4.0))]
    assert report.to_dict()['speedups'][0]['teacher_threads'] == 2
    headers, rows = report.rows()
    assert headers[-2:] == ['onnxruntime cpu x2 p50 / p95 ms',
                            'pytorch cpu x2 p50 / p95 ms']
    assert rows[0][-2:] == ['30.00 / 31.00', '40.00 / 41.00']
    text = report.to_text()
    assert ('student speed-up over the teacher: 6.00x in onnxruntime cpu '
            'x2 (30.00 -> 5.00 ms); 4.00x in pytorch cpu x2 (40.00 -> '
            '10.00 ms)') in text
    assert 'speed-up over the teacher: 6.00x' in report.to_markdown()


def test_no_speedup_across_thread_counts():
    # The teacher's graph ran on 2 threads, the student's on 1 (as
    # onnxruntime once pinned a ScatterND graph): no speed-up printed.
    report = _pair(student_onnx_threads=1)

    ort_speedup, torch_speedup = report.speedups
    assert ort_speedup['speedup'] is None
    assert (ort_speedup['teacher_threads'],
            ort_speedup['student_threads']) == (2, 1)
    assert torch_speedup['speedup'] == pytest.approx(4.0)
    headers, rows = report.rows()
    # The column cannot name one thread count: each cell names its own.
    assert headers[-2] == 'onnxruntime cpu p50 / p95 ms'
    assert rows[0][-2] == '30.00 / 31.00 (x2)'
    assert rows[1][-2] == '5.00 / 6.00 (x1)'
    text = report.to_text()
    assert ('none in onnxruntime cpu (the teacher ran with 2 threads, the '
            'student with 1)') in text
    assert '6.00x' not in text


def test_a_teacher_without_an_onnx_figure_has_no_onnx_speedup():
    teacher = _entry('teacher', **{'pytorch-cpu': _lat('pytorch', 40, 2)})
    student = _entry('student', **{'pytorch-cpu': _lat('pytorch', 10, 2),
                                   'onnxruntime-cpu':
                                   _lat('onnxruntime', 5, 2)})
    assert [s['runtime'] for s in student_speedups(teacher, student)] == [
        'pytorch']


def test_labels_of_older_figures_fall_back_to_their_key():
    old = {'median_ms': 1.0, 'p95_ms': 1.0, 'mean_ms': 1.0, 'runs': 1}
    assert latency_labels([{'pytorch-cpu': old}], ['pytorch-cpu']) == {
        'pytorch-cpu': 'pytorch-cpu'}


def test_measured_figures_name_what_they_ran_on(tmp_path):
    model = build_model(ArchSpec('mlp', 4, 8, 2, 3)).eval()
    x = torch.randn(20, 4)
    edge_index = torch.randint(0, 20, (2, 40))
    lat = torch_latency(model, x, edge_index, warmup=0, repeat=1)
    assert (lat.runtime, lat.device, lat.threads) == (
        'pytorch', 'cpu', torch.get_num_threads())
    path = tmp_path / 'm.onnx'
    export_onnx(model, x, edge_index, path, uses_graph=False)
    lat = onnx_latency(path, x, edge_index, threads=1, warmup=0, repeat=1)
    assert (lat.runtime, lat.device, lat.threads) == ('onnxruntime', 'cpu',
                                                      1)
    # Asked for 2: the figure says what the session really used.
    used = onnx_session(path, threads=2).get_session_options() \
        .intra_op_num_threads
    lat = onnx_latency(path, x, edge_index, threads=2, warmup=0, repeat=1)
    assert lat.threads == used
    assert set(lat.to_dict()) >= {'runtime', 'device', 'threads'}


def test_distill_teacher_onnx_times_the_teacher_with_the_students_threads(
        tmp_path, monkeypatch):
    """--teacher-onnx: the teacher exported and timed in onnxruntime with
    the threads the student's session used; fake timings in call order
    (teacher then student in PyTorch, student then teacher in
    onnxruntime) give speed-ups of exactly 40 / 10 and 30 / 5."""
    teacher = tmp_path / 'teacher.pt'
    torch.manual_seed(0)
    torch.save(GCN(1433, 8, 2, 7).state_dict(), teacher)
    medians = iter([40.0, 10.0, 5.0, 30.0])

    def fake(fn, **kwargs) -> Latency:
        fn()  # the forward still runs once
        median = next(medians)
        return Latency(median, median, median, 1)

    monkeypatch.setattr(gnncompress.outputs.latency, 'measure_latency', fake)
    report = api.distill(teacher, data='Cora', data_root=SAMPLES,
                         epochs=1, hidden=4, out=tmp_path / 'out',
                         progress=False, device='cpu', teacher_onnx=True)
    saved = json.loads((tmp_path / 'out' / 'report.json').read_text())
    t_ort = saved['teacher']['latency']['onnxruntime-cpu']
    s_ort = saved['student']['latency']['onnxruntime-cpu']
    assert (t_ort['runtime'], t_ort['device']) == ('onnxruntime', 'cpu')
    assert t_ort['threads'] == s_ort['threads'] >= 1
    assert [(s['runtime'], s['speedup']) for s in saved['speedups']] == [
        ('onnxruntime', pytest.approx(6.0)), ('pytorch', pytest.approx(4.0))]
    assert 'speed-up over the teacher: 6.00x in onnxruntime cpu x' in \
        report.to_text()
    assert next(medians, None) is None  # no other figure was timed
