"""What `gnncompress bench` measures and reports: the models, the rows (model x
runtime x device x threads), the result with its markdown table, the
comparison with the baseline and the CI gates."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from gnncompress.outputs.latency import Latency
from gnncompress.outputs.report import Gate

RUNTIMES = ('eager', 'compile', 'onnxruntime')
# Runtimes bench takes when asked (--runtimes): the defaults, and the
# student replayed as one captured CUDA graph (CUDA devices only).
KNOWN_RUNTIMES = RUNTIMES + ('cuda-graph',)


BENCH_SCHEMA = 1


@dataclass
class BenchModel:
    """One model to compare: a PyTorch model (from ``.pt`` or
    ``.safetensors``) or an ONNX file, which runs in onnxruntime only."""
    name: str
    path: Path
    model: nn.Module | None = None
    onnx_path: Path | None = None
    uses_graph: bool = True
    in_channels: int | None = None  # None: the ONNX file does not say
    parameters: int | None = None
    file_bytes: int = 0

    @property
    def is_onnx(self) -> bool:
        return self.model is None


@dataclass
class BenchRow:
    """One model x runtime x device x thread count."""
    model: str
    runtime: str
    device: str
    threads: int | None
    latency: Latency | None = None
    nodes_per_second: float | None = None
    peak_memory_mb: float | None = None
    accuracy: float | None = None
    speedup: float | None = None
    accuracy_drop: float | None = None
    error: str | None = None
    # What --threads asked for; `threads` is what ran (the session's own
    # count; every exported graph is right on any number of threads).
    threads_asked: int | None = None
    # The fraction of nodes (multi-label: of node x label cells) whose
    # prediction is the baseline's.
    agreement: float | None = None
    # The predicted classes, for `agreement` (not written out).
    predictions: np.ndarray | None = field(default=None, repr=False)

    def key(self) -> tuple[str, str, int | None]:
        """What a speed-up is computed between: the same runtime, device
        and threads really used."""
        return self.runtime, self.device, self.threads

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(
            replace(self, predictions=None)).items() if k != 'predictions'}
        out['latency'] = self.latency.to_dict() if self.latency else None
        return out


@dataclass
class BenchResult:
    graph: dict[str, Any]
    models: list[dict[str, Any]]
    rows: list[BenchRow]
    baseline: str | None = None
    gates: list[Gate] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    # --sizes: synthetic graph size (nodes) -> its rows
    scaling: dict[int, list[BenchRow]] = field(default_factory=dict)

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': BENCH_SCHEMA, 'graph': self.graph,
            'models': self.models, 'baseline': self.baseline,
            'settings': self.settings,
            'rows': [r.to_dict() for r in self.rows],
            'scaling': [{'num_nodes': n, 'rows': [r.to_dict() for r in rows]}
                        for n, rows in self.scaling.items()],
            'gates': [g.to_dict() for g in self.gates],
        }

    def table_rows(self) -> list[list[str]]:
        rows = []
        for r in self.rows:
            if r.error:
                rows.append([r.model, r.runtime, r.device, _threads(r),
                             'failed: ' + r.error, '', '', '', '', '', ''])
                continue
            assert r.latency is not None
            rows.append([
                r.model, r.runtime, r.device, _threads(r),
                f'{r.latency.median_ms:.2f}', f'{r.latency.p95_ms:.2f}',
                f'{r.latency.mean_ms:.2f}', _rate(r.nodes_per_second),
                _peak_cell(r),
                _num(r.accuracy, '{:.1%}'),
                (_num(r.speedup, '{:.2f}x') + ' / '
                 + _num(r.accuracy_drop, '{:+.1f}'))
                if self.baseline else '',
                _num(r.agreement, '{:.1%}') if self.baseline else ''])
        return rows

    HEADERS = ['model', 'runtime', 'device', 'threads', 'median ms',
               'p95 ms', 'mean ms', 'nodes/s', 'peak MB', 'accuracy',
               'speed-up / acc. drop', 'agrees with baseline']
    BASELINE_COLUMNS = 2

    def headers(self) -> list[str]:
        """The table's columns: the baseline's only with a baseline."""
        return self.HEADERS if self.baseline else \
            self.HEADERS[:-self.BASELINE_COLUMNS]

    def markdown(self) -> str:
        g = self.graph
        lines = ['# gnncompress bench', '',
                 f"Graph: {g['name']} ({g['num_nodes']:,} nodes, "
                 f"{g['num_edges']:,} edges, {g['num_features']:,} "
                 f"features).", '']
        if self.baseline:
            lines += [f'Baseline: {self.baseline} (speed-up = its median '
                      'latency / the row\'s, only against its row with the '
                      'same runtime, device and threads the row really ran '
                      'with, else none; accuracy drop in points; agreement: '
                      'share of nodes with its predicted class).', '']
        headers = self.headers()
        lines += ['| ' + ' | '.join(headers) + ' |',
                  '|' + '---|' * len(headers)]
        for row in self.table_rows():
            lines.append('| ' + ' | '.join(row[:len(headers)]) + ' |')
        if self.gates:
            lines += ['', '## Gates', '']
            for gate in self.gates:
                state = 'passed' if gate.passed else \
                    'FAILED: ' + '; '.join(gate.failures)
                lines.append(f'- {gate.name} {gate.limit:g}: {state}')
        if self.scaling:
            lines += ['', '## Latency against graph size (median ms)', '',
                      f"Synthetic graphs, {self.settings.get('degree'):g} "
                      'edges per node.', '']
            labels = sorted({row_label(r) for rows in self.scaling.values()
                             for r in rows})
            lines += ['| nodes | ' + ' | '.join(labels) + ' |',
                      '|' + '---|' * (len(labels) + 1)]
            for n, rows in self.scaling.items():
                cells = {row_label(r): (f'{r.latency.median_ms:.2f}'
                                     if r.latency else 'failed')
                         for r in rows}
                lines.append(f'| {n:,} | ' + ' | '.join(
                    cells.get(label, '-') for label in labels) + ' |')
        lines += floors_section(self.rows)
        s = self.settings
        lines += ['', f"Latency: median, p95 and mean of {s.get('repeat')} "
                  f"timed runs after {s.get('warmup')} warm-up runs; peak MB "
                  'is the resident (CPU) or allocated (CUDA) memory above '
                  'what the process held before the run.', '']
        return '\n'.join(lines)


def floors_section(rows: list[BenchRow]) -> list[str]:
    """The GPU rows' floors (gnncompress.outputs.floors) beside their
    median, as Markdown lines; none without a GPU row."""
    gpu = [r for r in rows if r.latency and r.latency.floors]
    if not gpu:
        return []
    lines = ['', '## GPU floors', '',
             'What one forward cannot beat on this GPU: its parameters, '
             'inputs and output moved once at the peak memory bandwidth '
             '(memory), and as many near-empty kernels as it launches, '
             'replayed as one CUDA graph (launch).', '',
             '| model | runtime | median ms | memory floor ms | MB moved | '
             'GB/s | launch floor ms | kernels |', '|' + '---|' * 8]
    for r in gpu:
        assert r.latency is not None and r.latency.floors is not None
        f = r.latency.floors
        cells = [r.model, r.runtime, f'{r.latency.median_ms:.3f}',
                 _num(f.get('memory_ms'), '{:.3f}'),
                 f"{f['bytes'] / 1e6:.1f}",
                 _num(f.get('bandwidth_gb_s'), '{:.0f}'),
                 _num(f.get('launch_ms'), '{:.3f}'),
                 str(f.get('kernels') or '-')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def row_label(row: BenchRow) -> str:
    return f'{row.model} {row.runtime} {row.device}' + \
        (f' x{row.threads}' if row.threads else '')


def _threads(row: BenchRow) -> str:
    return '-' if row.threads is None else str(row.threads)


def _peak_cell(row: Any) -> str:
    """Peak memory in MB; ``n/a`` where onnxruntime allocated its arena
    when the session was created, before the measured runs, so the runs
    themselves add nothing measurable."""
    peak = row.peak_memory_mb
    if row.runtime == 'onnxruntime' and (peak is None or peak < 0.5):
        return 'n/a'
    return _num(peak, '{:.0f}')


def _num(value: float | None, fmt: str) -> str:
    return '-' if value is None else fmt.format(value)


def _rate(value: float | None) -> str:
    if value is None:
        return '-'
    for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if value >= scale:
            return f'{value / scale:.1f}{unit}'
    return f'{value:.0f}'


def compare_to_baseline(rows: Sequence[BenchRow], baseline: str) -> None:
    """Speed-up: the baseline's median over the row's, only against the
    baseline's row with the same runtime, device and threads really used
    (none otherwise: a figure across thread counts or runtimes is not a
    speed-up). Accuracy drop in points and agreement of predictions:
    against the baseline's run with the same key, else its eager run, else
    any of its runs."""
    base = {r.key(): r for r in rows if r.model == baseline and r.latency}
    ordered = sorted(base.values(), key=lambda r: r.runtime != 'eager')
    any_accuracy = next((r.accuracy for r in ordered
                         if r.accuracy is not None), None)
    any_predictions = next((r.predictions for r in ordered
                            if r.predictions is not None), None)
    for row in rows:
        if not row.latency:
            continue
        ref = base.get(row.key())
        if ref is not None and ref.latency is not None:
            row.speedup = ref.latency.median_ms / row.latency.median_ms
        reference = ref.accuracy if ref is not None and \
            ref.accuracy is not None else any_accuracy
        if reference is not None and row.accuracy is not None:
            row.accuracy_drop = 100 * (reference - row.accuracy)
        predicted = ref.predictions if ref is not None and \
            ref.predictions is not None else any_predictions
        if predicted is not None and row.predictions is not None and \
                predicted.shape == row.predictions.shape:
            row.agreement = float((predicted == row.predictions).mean())


def check_gates(rows: Sequence[BenchRow], baseline: str | None, *,
                max_latency_ms: float | None = None,
                min_speedup: float | None = None,
                max_accuracy_drop: float | None = None) -> list[Gate]:
    """Every gate applies to every row of every model but the baseline; a
    row that failed to run fails every gate."""
    gates = []
    candidates = [r for r in rows if r.model != baseline]

    specs = [('max-latency-ms', max_latency_ms,
              lambda r: r.latency.median_ms if r.latency else None,
              lambda v, lim: v <= lim, '{:.2f} ms'),
             ('min-speedup', min_speedup, lambda r: r.speedup,
              lambda v, lim: v >= lim, '{:.2f}x'),
             ('max-accuracy-drop', max_accuracy_drop,
              lambda r: r.accuracy_drop, lambda v, lim: v <= lim,
              '{:.1f} points')]
    for name, limit, value_of, ok, fmt in specs:
        if limit is None:
            continue
        gate = Gate(name, limit)
        for row in candidates:
            value = value_of(row)
            if name == 'min-speedup' and value is None and not row.error:
                gate.failures.append(
                    f'{row_label(row)}: no speed-up (the baseline has no run '
                    f'with this runtime, device and threads)')
            elif row.error or value is None:
                gate.failures.append(f'{row_label(row)}: no value')
            elif not ok(value, limit):
                gate.failures.append(f'{row_label(row)}: {fmt.format(value)}')
        gates.append(gate)
    return gates


def timestamp() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%S')
