"""Pictures of a run, drawn with matplotlib (Agg, imported only when a
picture is drawn, so that the CLI starts fast): the training curves of
``distill`` (``training.png``), the widths of ``amalgamate``
(``widths.png``) and the students of ``cotrain`` (``training.png``).
Each takes what the run's report holds. A picture is a convenience: when
one cannot be drawn, :func:`drawn` prints a one-line note and the run goes
on."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gnncompress.core.errors import clip

# Small enough to open beside a terminal, large enough to read.
FIGSIZE = (6.0, 3.5)
DPI = 120


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG through a temporary file, and
    free it."""
    from gnncompress.core.out_folder import atomic_path

    try:
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format='png', dpi=DPI)
    finally:
        pyplot().close(fig)


def drawn(name: str, draw: Callable[..., Any], *args: Any,
          **kwargs: Any) -> bool:
    """Call ``draw``; on any failure print one line naming the picture and
    why, and return False instead of failing the run."""
    try:
        draw(*args, **kwargs)
    except Exception as e:  # a picture never fails a run
        why = clip(f'{type(e).__name__}: {e}', 200)
        print(f'Note: {name} was not drawn ({why}); the other outputs are '
              f'complete', file=sys.stderr)
        return False
    return True


def _epoch_axis(ax: Any) -> None:
    """Whole epochs on the x axis (called once the curves are drawn). A
    short run gets half an epoch of room either side: one epoch alone
    would otherwise span a hundredth of an epoch, labelled 0.945, 0.960...
    in overlapping ticks."""
    from matplotlib.ticker import MaxNLocator

    first, last = ax.dataLim.intervalx
    if last - first < 4:
        ax.set_xticks(range(math.ceil(first), math.floor(last) + 1))
        ax.set_xlim(first - 0.5, last + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    ax.grid(True, alpha=0.3)


def _log_if_wide(ax: Any, values: list[float]) -> None:
    """Log scale when the values span more than 100x (a small loss term,
    or a fast width beside a slow one, would otherwise lie flat on the
    axis)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 100 * min(finite):
        ax.set_yscale('log')


def _marker(points: int) -> dict[str, Any]:
    """Markers on short curves, where a line alone could be invisible."""
    return {'marker': 'o', 'markersize': 3} if points <= 20 else {}


def _metric(report: Mapping[str, Any]) -> str:
    split = report.get('data', {}).get('split') or {}
    return 'micro-F1' if split.get('metric') == 'micro-F1' else 'accuracy'


def _history(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = report.get('training', {}).get('history') or []
    if not history:
        raise ValueError('the report holds no training history')
    return history


def term_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The loss terms the history records (``loss_ce`` -> ``ce``), in the
    order they first appear."""
    names: dict[str, None] = {}
    for entry in history:
        for key in entry:
            if key.startswith('loss_'):
                names.setdefault(key[len('loss_'):])
    return list(names)


def best_point(history: Sequence[Mapping[str, Any]],
               best_epoch: int) -> tuple[int, float] | None:
    """The best epoch and its validation score (in %), as marked."""
    for entry in history:
        if entry['epoch'] == best_epoch:
            return best_epoch, 100 * entry['val']
    return None


def distill_training(report: Mapping[str, Any], path: Path) -> None:
    """``training.png`` of ``distill``: the training loss per epoch (the
    total and each unweighted term, with its weight) beside the validation
    score, its best epoch marked."""
    history = _history(report)
    plt = pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=FIGSIZE)
    epochs = [h['epoch'] for h in history]
    style = _marker(len(history))
    options = report.get('method_options') or {}
    method = report.get('method', '')
    weights = {method: options.get('weight'),
               'ce': options.get('label_weight'),
               'bce': options.get('label_weight')}
    loss_ax.plot(epochs, [h['loss'] for h in history], color='black',
                 label='total', **style)
    plotted = [h['loss'] for h in history]
    for name in term_names(history):
        points = [(h['epoch'], h[f'loss_{name}']) for h in history
                  if f'loss_{name}' in h]
        weight = weights.get(name)
        label = name if weight is None else f'{name} (weight {weight:g})'
        loss_ax.plot(*zip(*points), linestyle='--', label=label, **style)
        plotted += [v for _, v in points]
    _log_if_wide(loss_ax, plotted)
    _epoch_axis(loss_ax)
    loss_ax.margins(y=0.15)  # room for the legend above the curves
    loss_ax.set_ylabel('training loss')
    loss_ax.set_title('Loss', fontsize=10)
    loss_ax.legend(fontsize=7)
    metric = _metric(report)
    val_ax.plot(epochs, [100 * h['val'] for h in history],
                color='tab:green', label=f'validation {metric}', **style)
    best = best_point(history, report['training'].get('best_epoch', 0))
    if best is not None:
        val_ax.axvline(best[0], color='grey', linestyle=':', linewidth=1)
        val_ax.plot([best[0]], [best[1]], linestyle='none', marker='*',
                    markersize=11, color='tab:red',
                    label=f'best: epoch {best[0]}, {best[1]:.1f}%')
    _epoch_axis(val_ax)
    val_ax.margins(y=0.1)  # room for the star
    val_ax.set_ylabel(f'validation {metric} (%)')
    val_ax.set_title(f'Validation {metric}', fontsize=10)
    val_ax.legend(fontsize=7, loc='best')
    data = report.get('data', {}).get('name', '')
    spec = (report.get('student') or {}).get('spec') or {}
    # A DGCNN's layers have widths of their own: 'dgcnn 4,4,8'.
    shape = ','.join(map(str, spec['widths'])) if spec.get('widths') else \
        f"{spec.get('num_layers', '?')}x{spec.get('hidden_channels', '?')}"
    student = f" -> {spec['arch']} {shape} student" if 'arch' in spec else ''
    fig.suptitle(f'distill {method} on {data}{student}', fontsize=10)
    fig.tight_layout()
    save(fig, path)


def cotrain_training(report: Mapping[str, Any], path: Path) -> None:
    """``training.png`` of ``cotrain``: each student's training loss and
    validation score per epoch (the first fold's), its best epoch marked;
    the exported student drawn thicker."""
    histories = report.get('training', {}).get('histories') or []
    if not any(histories):
        raise ValueError('the report holds no training history')
    plt = pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=FIGSIZE)
    students = report.get('students') or []
    best_epochs = report['training'].get('best_epochs') or []
    exported = report.get('best_student')
    plotted: list[float] = []
    for k, history in enumerate(histories):
        if not history:
            continue
        spec = students[k]['spec'] if k < len(students) else {}
        name = f"{k + 1}: {spec.get('arch', '?')} " \
            f"{spec.get('num_layers', '?')}x{spec.get('hidden_channels', '?')}"
        if k + 1 == exported:
            name += ' (exported)'
        style = dict(_marker(len(history)), color=f'C{k}',
                     linewidth=2.4 if k + 1 == exported else 1.2)
        epochs = [h['epoch'] for h in history]
        loss_ax.plot(epochs, [h['loss'] for h in history], label=name,
                     **style)
        plotted += [h['loss'] for h in history]
        val_ax.plot(epochs, [100 * h['val'] for h in history], label=name,
                    **style)
        best = best_point(history, best_epochs[k]) \
            if k < len(best_epochs) else None
        if best is not None:
            val_ax.plot([best[0]], [best[1]], linestyle='none', marker='*',
                        markersize=10, color=f'C{k}',
                        markeredgecolor='black', markeredgewidth=0.5)
    _log_if_wide(loss_ax, plotted)
    for ax in (loss_ax, val_ax):
        _epoch_axis(ax)
    val_ax.margins(y=0.1)  # room for the stars
    metric = _metric(report)
    loss_ax.set_ylabel('training loss')
    loss_ax.set_title('Loss', fontsize=10)
    val_ax.set_ylabel(f'validation {metric} (%)')
    val_ax.set_title(f'Validation {metric} (star: best)', fontsize=10)
    val_ax.legend(fontsize=7, loc='lower right')
    data = report.get('data', {}).get('name', '')
    fig.suptitle(f"cotrain {report.get('method', '')} on {data}: "
                 f'{len(histories)} students', fontsize=10)
    fig.tight_layout()
    save(fig, path)


def _median_ms(latency: Mapping[str, Any], runtime: str) -> float | None:
    entry = latency.get(runtime)
    return None if not entry else entry.get('median_ms')


def width_runtime(report: Mapping[str, Any]) -> str | None:
    """The runtime whose latency ``widths.png`` plots: one the teachers
    ran in too (PyTorch), else any the widths ran in."""
    rows = report.get('results') or []
    teachers = [t.get('latency') or {} for t in report.get('teachers', [])]
    for runtime in sorted({k for r in rows for k in r.get('latency', {})}):
        if any(runtime in t for t in teachers):
            return runtime
    return next((k for r in rows for k in r.get('latency', {})), None)


def amalgamation_widths(report: Mapping[str, Any], path: Path) -> None:
    """``widths.png`` of ``amalgamate``: each task's test accuracy and
    latency against the student's width, the teacher of the task as a
    dashed line of the same colour."""
    rows = report.get('results') or []
    if not rows:
        raise ValueError('the report holds no results')
    tasks = [t['name'] for t in report.get('tasks', [])] or \
        list(dict.fromkeys(r['task'] for r in rows))
    teachers = dict(zip(tasks, report.get('teachers', [])))
    runtime = width_runtime(report)
    plt = pyplot()
    fig, (acc_ax, lat_ax) = plt.subplots(1, 2, figsize=FIGSIZE)
    widths = sorted({r['width'] for r in rows})
    latencies: list[float] = []
    for k, task in enumerate(tasks):
        mine = sorted((r for r in rows if r['task'] == task),
                      key=lambda r: r['width'])
        colour = f'C{k}'
        acc_ax.plot([r['width'] for r in mine],
                    [100 * r['test_accuracy'] for r in mine], marker='o',
                    color=colour, label=task)
        teacher = teachers.get(task) or {}
        if teacher.get('test_accuracy') is not None:
            acc_ax.axhline(100 * teacher['test_accuracy'], color=colour,
                           linestyle='--', linewidth=1)
        if runtime is None:
            continue
        points = [(r['width'], _median_ms(r.get('latency', {}), runtime))
                  for r in mine]
        points = [p for p in points if p[1] is not None]
        if points:
            lat_ax.plot(*zip(*points), marker='o', color=colour, label=task)
            latencies += [ms for _, ms in points]
        teacher_ms = _median_ms(teacher.get('latency') or {}, runtime)
        if teacher_ms is not None:
            lat_ax.axhline(teacher_ms, color=colour, linestyle='--',
                           linewidth=1)
            latencies.append(teacher_ms)
    from matplotlib.lines import Line2D

    teacher_key = Line2D([], [], color='grey', linestyle='--',
                         label='teacher')
    for ax in (acc_ax, lat_ax):
        ax.set_xticks(widths, [f'{w:g}' for w in widths])
        ax.set_xlabel('student width (share of the widest)', fontsize=9)
        ax.grid(True, alpha=0.3)
    acc_ax.set_ylabel('test accuracy (%)')
    acc_ax.set_title('Test accuracy', fontsize=10)
    handles = acc_ax.get_legend_handles_labels()[0] + [teacher_key]
    acc_ax.legend(handles=handles, fontsize=7, loc='lower right')
    if runtime is None:
        lat_ax.text(0.5, 0.5, 'latency not measured',
                    ha='center', va='center', transform=lat_ax.transAxes)
        lat_ax.set_yticks([])
    else:
        _log_if_wide(lat_ax, latencies)
        if lat_ax.get_yscale() == 'linear':
            lat_ax.set_ylim(bottom=0)
        lat_ax.set_ylabel(f'latency (ms, median, {runtime})')
        lat_ax.legend(handles=lat_ax.get_legend_handles_labels()[0]
                      + [teacher_key], fontsize=7, loc='upper left')
    lat_ax.set_title('Latency per forward pass', fontsize=10)
    fig.suptitle(f"amalgamate ({report.get('setting', '')}): one slimmable "
                 'student, every task and width', fontsize=10)
    fig.tight_layout()
    save(fig, path)
