"""The pictures: what each draws (checked on the figure before it is
saved) and that a failure to draw never fails a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from gnncompress import comparison as cmp
from gnncompress import plots
from gnncompress.bench import Latency


def is_png(path: Path, min_bytes: int = 5000) -> bool:
    data = path.read_bytes()
    return data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= min_bytes


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(plots, 'save', lambda fig, path: kept.append(fig))
    yield kept
    for fig in kept:
        plots.pyplot().close(fig)


def _row(model: str, runtime: str, threads: int, ms: float) -> cmp.BenchRow:
    return cmp.BenchRow(model, runtime, 'cpu', threads, latency=Latency(
        ms, 1.2 * ms, ms, 5, runtime, 'cpu', threads))


def _bench_result(baseline: str | None) -> cmp.BenchResult:
    rows = [_row('teacher.pt', 'eager', 1, 40.0),
            _row('student.safetensors', 'eager', 1, 4.0),
            _row('student.onnx', 'onnxruntime', 1, 2.0)]
    if baseline:
        cmp.compare_to_baseline(rows, baseline)
    return cmp.BenchResult(graph={'name': 'g', 'num_nodes': 10,
                                  'num_edges': 20},
                           models=[], rows=rows, baseline=baseline)


def test_bench_notes_mark_baseline_and_speedups():
    result = _bench_result('teacher.pt')
    # The ONNX file ran in onnxruntime only, where the baseline did not.
    assert cmp.bar_notes(result, result.rows) == [
        'baseline', '10.00x', 'no baseline run']
    plain = _bench_result(None)
    assert cmp.bar_notes(plain, plain.rows) == ['', '', '']


def test_bench_plot_has_legend_notes_and_hatched_baseline(figures):
    cmp.plot(_bench_result('teacher.pt'), Path('unused.png'))
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.texts] == [
        'baseline', '10.00x', 'no baseline run']
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ['eager', 'onnxruntime', 'baseline']
    hatches = [bar.get_hatch() for bar in ax.patches[:3]]
    assert hatches == ['//', None, None]
    assert [b.get_width() for b in ax.patches[:3]] == [40.0, 4.0, 2.0]
    assert 'speed-up against teacher.pt' in ax.get_title()


def test_bench_plot_writes_a_png(tmp_path):
    cmp.plot(_bench_result('teacher.pt'), tmp_path / 'bench.png')
    assert is_png(tmp_path / 'bench.png')
    assert [p.name for p in tmp_path.iterdir()] == ['bench.png']


def test_a_failed_picture_is_a_note_not_a_failure(tmp_path, capsys):
    empty = cmp.BenchResult(graph={}, models=[], rows=[])
    assert plots.drawn('bench.png', cmp.plot, empty,
                       tmp_path / 'bench.png') is False
    err = capsys.readouterr().err
    assert err == ('Note: bench.png was not drawn (ValueError: no model ran, '
                   'so there is no latency to draw); the other outputs are '
                   'complete\n')
    assert not list(tmp_path.iterdir())
