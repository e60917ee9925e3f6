"""The pictures: what each draws (checked on the figure before it is
saved) and that a failure to draw never fails a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from gnncompress.outputs import plots
from gnncompress.outputs.latency import Latency
from gnncompress.workflows.bench_plots import bar_notes, plot
from gnncompress.workflows.bench_table import (
    BenchResult,
    BenchRow,
    compare_to_baseline,
)
from tests.core.test_atomic_outputs import _distill
from tests.training.test_resume import _quick, files  # noqa: F401 -- shared fixtures


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


def _row(model: str, runtime: str, threads: int, ms: float) -> BenchRow:
    return BenchRow(model, runtime, 'cpu', threads, latency=Latency(
        ms, 1.2 * ms, ms, 5, runtime, 'cpu', threads))


def _bench_result(baseline: str | None) -> BenchResult:
    rows = [_row('teacher.pt', 'eager', 1, 40.0),
            _row('student.safetensors', 'eager', 1, 4.0),
            _row('student.onnx', 'onnxruntime', 1, 2.0)]
    if baseline:
        compare_to_baseline(rows, baseline)
    return BenchResult(graph={'name': 'g', 'num_nodes': 10,
                                  'num_edges': 20},
                           models=[], rows=rows, baseline=baseline)


def test_bench_notes_mark_baseline_and_speedups():
    result = _bench_result('teacher.pt')
    # The ONNX file ran in onnxruntime only, where the baseline did not.
    assert bar_notes(result, result.rows) == [
        'baseline', '10.00x', 'no baseline run']
    plain = _bench_result(None)
    assert bar_notes(plain, plain.rows) == ['', '', '']


def test_bench_plot_has_legend_notes_and_hatched_baseline(figures):
    plot(_bench_result('teacher.pt'), Path('unused.png'))
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
    plot(_bench_result('teacher.pt'), tmp_path / 'bench.png')
    assert is_png(tmp_path / 'bench.png')
    assert [p.name for p in tmp_path.iterdir()] == ['bench.png']


def test_a_failed_picture_is_a_note_not_a_failure(tmp_path, capsys):
    empty = BenchResult(graph={}, models=[], rows=[])
    assert plots.drawn('bench.png', plot, empty,
                       tmp_path / 'bench.png') is False
    err = capsys.readouterr().err
    assert err == ('Note: bench.png was not drawn (ValueError: no model ran, '
                   'so there is no latency to draw); the other outputs are '
                   'complete\n')
    assert not list(tmp_path.iterdir())


# distill ---------------------------------------------------------------------

def _distill_report(history, best_epoch, method='kd', weight=1.0):
    return {'method': method,
            'method_options': {'weight': weight, 'label_weight': 1.0},
            'data': {'name': 'toy', 'split': {}},
            'student': {'spec': {'arch': 'gcn', 'num_layers': 2,
                                 'hidden_channels': 8}},
            'training': {'history': history, 'best_epoch': best_epoch}}


HISTORY = [{'epoch': e, 'loss': 2.0 / e, 'val': v, 'loss_ce': 1.5 / e,
            'loss_kd': 0.5 / e}
           for e, v in [(1, 0.30), (2, 0.55), (3, 0.70), (4, 0.65)]]


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_training_curves_plot_the_history_and_mark_the_best(figures):
    plots.distill_training(_distill_report(HISTORY, 3), Path('unused.png'))
    loss_ax, val_ax = figures[0].axes
    loss = _lines(loss_ax)
    assert list(loss) == ['total', 'ce (weight 1)', 'kd (weight 1)']
    assert list(loss['total'].get_xdata()) == [1, 2, 3, 4]
    assert list(loss['kd (weight 1)'].get_ydata()) == pytest.approx(
        [0.5, 0.25, 0.5 / 3, 0.125])
    val = _lines(val_ax)
    assert list(val['validation accuracy'].get_ydata()) == pytest.approx(
        [30, 55, 70, 65])
    [best] = [line for name, line in val.items() if name.startswith('best')]
    assert best.get_label() == 'best: epoch 3, 70.0%'
    assert list(best.get_xdata()) == [3]
    assert list(best.get_ydata()) == pytest.approx([70])
    assert val_ax.get_ylabel() == 'validation accuracy (%)'
    assert loss_ax.get_xlabel() == val_ax.get_xlabel() == 'epoch'
    assert loss_ax.get_yscale() == 'linear'
    assert figures[0].texts[0].get_text() == \
        'distill kd on toy -> gcn 2x8 student'


def test_training_curves_log_scale_for_a_small_term(figures):
    history = [{'epoch': h['epoch'], 'loss': h['loss'], 'val': h['val'],
                'loss_ce': h['loss_ce'], 'loss_lsp': h['loss_kd'] / 1000}
               for h in HISTORY]
    plots.distill_training(_distill_report(history, 3, 'lsp', 100.0),
                           Path('unused.png'))
    loss_ax = figures[0].axes[0]
    assert loss_ax.get_yscale() == 'log'
    assert 'lsp (weight 100)' in _lines(loss_ax)


def test_training_curves_of_a_history_without_terms(figures):
    # A run resumed from an older checkpoint, or a loop that records no
    # terms: the total alone.
    history = [{k: h[k] for k in ('epoch', 'loss', 'val')} for h in HISTORY]
    assert plots.term_names(history) == []
    plots.distill_training(_distill_report(history, 2), Path('unused.png'))
    assert list(_lines(figures[0].axes[0])) == ['total']


def test_training_curves_need_a_history():
    with pytest.raises(ValueError, match='no training history'):
        plots.distill_training(_distill_report([], 0), Path('unused.png'))


def test_a_failed_picture_does_not_fail_distill(files, monkeypatch,
                                                tmp_path, capsys):
    def broken(report, path):
        raise RuntimeError('no display\nat all')

    monkeypatch.setattr(plots, 'distill_training', broken)
    report = _distill(files, tmp_path / 'out', epochs=2)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'report.json', 'report.md']
    assert 'training_png' not in report.files
    assert capsys.readouterr().err.count(
        'Note: training.png was not drawn (RuntimeError: no display at '
        'all); the other outputs are complete\n') == 1


def test_distill_writes_training_png(files, tmp_path):
    report = _distill(files, tmp_path / 'out', epochs=2)
    assert is_png(tmp_path / 'out' / 'training.png')
    assert report.files['training_png'] == str(tmp_path / 'out' /
                                               'training.png')
    assert [h['epoch'] for h in report.training['history']] == [1, 2]


# cotrain ---------------------------------------------------------------------

def test_cotrain_curves_mark_each_best_and_the_exported(figures):
    spec = {'arch': 'gcn', 'num_layers': 2, 'hidden_channels': 16}
    histories = [[{'epoch': e, 'loss': 1.0 / e, 'val': v}
                  for e, v in enumerate(vals, 1)]
                 for vals in ([0.2, 0.6, 0.5], [0.3, 0.4, 0.7])]
    report = {'method': 'mutual', 'data': {'name': 'toy'},
              'students': [{'spec': spec}, {'spec': spec}],
              'best_student': 2,
              'training': {'histories': histories, 'best_epochs': [2, 3]}}
    plots.cotrain_training(report, Path('unused.png'))
    loss_ax, val_ax = figures[0].axes
    names = ['1: gcn 2x16', '2: gcn 2x16 (exported)']
    assert list(_lines(loss_ax)) == names
    assert _lines(loss_ax)[names[1]].get_linewidth() > \
        _lines(loss_ax)[names[0]].get_linewidth()
    stars = [line for line in val_ax.get_lines()
             if line.get_marker() == '*']
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [
        ([2], [pytest.approx(60)]), ([3], [pytest.approx(70)])]


def test_cotrain_writes_training_png(files, tmp_path):
    from gnncompress.workflows.cotrain import cotrain

    report = cotrain(files[1], students=2, hidden=8, epochs=2,
                     out=tmp_path / 'out', progress=False, export=False)
    assert is_png(tmp_path / 'out' / 'training.png')
    assert report.files['training_png'] == str(tmp_path / 'out' /
                                               'training.png')
    assert [[h['epoch'] for h in history]
            for history in report.training['histories']] == [[1, 2], [1, 2]]


# amalgamate ------------------------------------------------------------------

def _width_rows(task, accs, ms):
    return [{'task': task, 'width': w, 'test_accuracy': a,
             'latency': {'pytorch-cpu': {'median_ms': m}} if m else {}}
            for w, a, m in zip([0.5, 1.0], accs, ms)]


def _amalgamation_report(latency=True):
    teacher = {'test_accuracy': 0.8,
               'latency': {'pytorch-cpu': {'median_ms': 9.0}}
               if latency else {}}
    return {'setting': 'datasets', 'tasks': [{'name': 'a'}, {'name': 'b'}],
            'teachers': [teacher, dict(teacher, test_accuracy=0.6)],
            'results': _width_rows('a', [0.7, 0.75],
                                   [1.0, 2.0] if latency else [None] * 2)
            + _width_rows('b', [0.5, 0.55],
                          [1.5, 3.0] if latency else [None] * 2)}


def test_widths_plot_each_task_beside_its_teacher(figures):
    plots.amalgamation_widths(_amalgamation_report(), Path('unused.png'))
    acc_ax, lat_ax = figures[0].axes
    acc = _lines(acc_ax)
    assert list(acc['a'].get_xdata()) == [0.5, 1.0]
    assert list(acc['a'].get_ydata()) == pytest.approx([70, 75])
    assert list(acc['b'].get_ydata()) == pytest.approx([50, 55])
    # The teachers: dashed lines at their accuracy and latency, in their
    # task's colour.
    dashed = [line for line in acc_ax.get_lines()
              if line.get_linestyle() == '--']
    assert [line.get_ydata()[0] for line in dashed] == pytest.approx([80, 60])
    assert [line.get_color() for line in dashed] == \
        [acc['a'].get_color(), acc['b'].get_color()]
    lat = _lines(lat_ax)
    assert list(lat['b'].get_ydata()) == [1.5, 3.0]
    assert lat_ax.get_ylabel() == 'latency (ms, median, pytorch-cpu)'
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert legend == ['a', 'b', 'teacher']


def test_widths_plot_without_latency(figures):
    report = _amalgamation_report(latency=False)
    assert plots.width_runtime(report) is None
    plots.amalgamation_widths(report, Path('unused.png'))
    assert [t.get_text() for t in figures[0].axes[1].texts] == [
        'latency not measured']


def test_one_epoch_reads_in_whole_epochs(figures):
    # One epoch used to span 0.945 to 1.055, its tick labels overlapping
    # ("0.9450.9600.975..."); now half an epoch either side, one tick.
    plots.distill_training(_distill_report(HISTORY[:1], 1),
                           Path('unused.png'))
    for ax in figures[0].axes:
        assert ax.get_xlim() == pytest.approx((0.5, 1.5))
        ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 1.5]
        assert ticks == [1]
    plots.cotrain_training(
        {'method': 'mutual', 'data': {'name': 'toy'},
         'students': [{'spec': {}}, {'spec': {}}], 'best_student': 1,
         'training': {'histories': [HISTORY[:2], HISTORY[:2]],
                      'best_epochs': [2, 1]}}, Path('unused.png'))
    for ax in figures[1].axes:
        assert ax.get_xlim() == pytest.approx((0.5, 2.5))
    # A long run keeps matplotlib's limits.
    long = [dict(HISTORY[0], epoch=e) for e in range(1, 31)]
    plots.distill_training(_distill_report(long, 1), Path('unused.png'))
    assert figures[2].axes[0].get_xlim()[0] < 1 and \
        figures[2].axes[0].get_xlim()[1] > 30


def test_training_title_names_a_dgcnn_students_widths(figures):
    report = _distill_report(HISTORY, 3)
    report['student']['spec'] = {'arch': 'dgcnn', 'num_layers': 3,
                                 'hidden_channels': 8, 'widths': [4, 4, 8]}
    plots.distill_training(report, Path('unused.png'))
    assert figures[0].texts[0].get_text() == \
        'distill kd on toy -> dgcnn 4,4,8 student'
