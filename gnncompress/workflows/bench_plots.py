"""The pictures of `gnncompress bench`: bench.png (latency per model, runtime
and threads, with the speed-up against the baseline) and bench-sizes.png
(latency against graph size)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gnncompress.workflows.bench_table import BenchResult, BenchRow, row_label

RUNTIME_COLOURS = {'eager': '#4c72b0', 'compile': '#dd8452',
                   'onnxruntime': '#55a868', 'cuda-graph': '#c44e52'}


def bar_notes(result: BenchResult, rows: Sequence[BenchRow]) -> list[str]:
    """What bench.png writes beside each bar: ``baseline`` on the
    baseline's, else the speed-up against it (``no baseline run`` where the
    baseline has no run with that runtime, device and threads); nothing
    without a baseline."""
    if not result.baseline:
        return [''] * len(rows)
    return ['baseline' if r.model == result.baseline else
            f'{r.speedup:.2f}x' if r.speedup is not None else
            'no baseline run' for r in rows]


def plot(result: BenchResult, path: Path) -> None:
    """Median latency per model and runtime (p95 as the whisker; log scale
    when they span more than 20x), coloured by runtime, the baseline's bars
    hatched and every other bar labelled with its speed-up."""
    from gnncompress.outputs.plots import pyplot, save

    plt = pyplot()
    from matplotlib.patches import Patch

    rows = [r for r in result.rows if r.latency]
    if not rows:
        raise ValueError('no model ran, so there is no latency to draw')
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(4, len(rows)) + 1.6))
    labels = [f'{r.model} · {r.runtime} · {r.device}'
              + (f' x{r.threads}' if r.threads else '') for r in rows]
    medians = [r.latency.median_ms for r in rows]  # type: ignore[union-attr]
    tops = [r.latency.p95_ms for r in rows]  # type: ignore[union-attr]
    is_base = [r.model == result.baseline for r in rows]
    bars = ax.barh(range(len(rows)), medians,
                   xerr=[[0] * len(rows),
                         [t - m for t, m in zip(tops, medians)]],
                   color=[RUNTIME_COLOURS.get(r.runtime, '#888888')
                          for r in rows],
                   edgecolor=['black' if b else 'none' for b in is_base])
    for bar, base in zip(bars, is_base):
        if base:
            bar.set_hatch('//')
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, base in zip(ax.get_yticklabels(), is_base):
        if base:
            tick.set_fontweight('bold')
    ax.invert_yaxis()
    log = max(medians) > 20 * min(medians)
    if log:
        ax.set_xscale('log')
    right = max(max(tops), max(medians))
    # Room on the right for the notes.
    ax.set_xlim(right=right * (4 if log else 1.3))
    for i, (note, top) in enumerate(zip(bar_notes(result, rows), tops)):
        if note:
            ax.text(top * (1.08 if log else 1) + (0 if log else 0.02 * right),
                    i, note, va='center', fontsize=8,
                    fontweight='bold' if is_base[i] else 'normal')
    ax.set_xlabel('latency per forward pass, ms (median; whisker: p95)')
    title = (f"{result.graph['name']}: {result.graph['num_nodes']:,} "
             f"nodes, {result.graph['num_edges']:,} edges")
    if result.baseline:
        title += (f'\nspeed-up against {result.baseline} (hatched) with the '
                  'same runtime, device and threads')
    ax.set_title(title, fontsize=9)
    runtimes = [name for name in RUNTIME_COLOURS
                if any(r.runtime == name for r in rows)]
    handles = [Patch(color=RUNTIME_COLOURS[name], label=name)
               for name in runtimes]
    if any(is_base):
        handles.append(Patch(facecolor='white', edgecolor='black',
                             hatch='//', label='baseline'))
    ax.legend(handles=handles, fontsize=8, loc='upper left',
              bbox_to_anchor=(1.01, 1.0), title='runtime',
              title_fontsize=8)
    fig.tight_layout()
    save(fig, path)


def plot_scaling(result: BenchResult, path: Path) -> None:
    """Median latency against graph size, log-log, one line per model x
    runtime x device x threads."""
    from gnncompress.outputs.plots import pyplot, save

    plt = pyplot()

    series: dict[str, list[tuple[int, float]]] = {}
    for n, rows in result.scaling.items():
        for r in rows:
            if r.latency:
                series.setdefault(row_label(r), []).append(
                    (n, r.latency.median_ms))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker='o', label=label)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('nodes (synthetic graph, '
                  f"{result.settings.get('degree'):g} edges per node)")
    ax.set_ylabel('latency per forward pass, ms (median)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
