"""One Report object per run, rendered as a terminal table, JSON and
Markdown. The JSON keys are stable: CI pipelines read them."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tabulate import tabulate

from gnncompress.core.errors import plural
from gnncompress.outputs.floors import floors_text
from gnncompress.outputs.latency import describe, speedup


@dataclass
class ModelEntry:
    """One model in the report."""
    role: str                        # teacher | student | student-alone
    spec: dict[str, Any]
    parameters: int
    test_accuracy: float
    val_accuracy: float | None = None
    file: str | None = None
    file_bytes: int | None = None
    # runtime-device -> {median_ms, p95_ms, mean_ms, runs, runtime, device,
    # threads}
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Shape classification: the mean over classes of each class's recall.
    mean_class_accuracy: float | None = None


@dataclass
class Gate:
    """A CI gate: ``name`` with its limit, and what failed it."""
    name: str
    limit: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'limit': self.limit,
                'passed': self.passed, 'failures': self.failures}


def parity_line(max_abs: float, cases: dict[str, float],
                relative: dict[str, float]) -> str:
    """The report's line on the ONNX check: the largest difference over
    the output's scale (what the tolerance bounds) and the absolute one."""
    graphs = f'over {len(cases)} check graphs'
    if not relative:
        return f'ONNX max abs difference: {max_abs:.2e} ({graphs})'
    return (f'ONNX max difference: {max(relative.values()):.2e} of the '
            f"output's scale (absolute {max_abs:.2e}; {graphs})")


class RunReport:
    """What every command's report shares: JSON from ``to_dict()`` (stable
    keys, sorted) and the terminal text, the table of ``rows()`` followed
    by ``summary_lines()``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def rows(self) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def summary_lines(self) -> list[str]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        headers, rows = self.rows()
        return '\n'.join([tabulate(rows, headers=headers), '',
                          *self.summary_lines()])


@dataclass
class Report(RunReport):
    """Everything a distillation run measured."""
    command: str
    method: str
    method_options: dict[str, Any]
    data: dict[str, Any]
    teacher: ModelEntry
    student: ModelEntry
    compression_ratio: float
    onnx_max_abs_diff: float
    onnx_parity: dict[str, float]
    training: dict[str, Any]
    seed: int
    device: str
    versions: dict[str, str]
    teacher_spec_sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    student_alone: ModelEntry | None = None
    files: dict[str, str] = field(default_factory=dict)
    # The settings the run resolved (config file, then command line).
    config: dict[str, Any] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    # The student's speed-up over the teacher per runtime and device
    # (student_speedups).
    speedups: list[dict[str, Any]] = field(default_factory=list)
    # Each check graph's difference over its output's scale max(1, max|y|):
    # what the export's tolerance applies to.
    onnx_parity_relative: dict[str, float] = field(default_factory=dict)
    # Seconds per phase of the run (load, teacher, train, export, check,
    # measure, other, total), up to the report's writing.
    timings: dict[str, float] = field(default_factory=dict)
    # With --baseline, which student the files hold (export_choice):
    # {model: distilled | baseline, reason, distilled_val_accuracy,
    # baseline_val_accuracy}; None without a baseline.
    exported: dict[str, Any] | None = None
    # With --method auto, every candidate tried (method, val_accuracy,
    # seconds, epochs_run, status), the one chosen and the time budget;
    # None otherwise.
    auto: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {'schema': 1, **asdict(self)}
        out['gates'] = [g.to_dict() for g in self.gates]
        return out

    def entries(self) -> list[ModelEntry]:
        return [e for e in (self.teacher, self.student_alone, self.student)
                if e is not None]

    def rows(self) -> tuple[list[str], list[list[str]]]:
        runtimes = sorted({k for e in self.entries() for k in e.latency})
        mean_class = any(e.mean_class_accuracy is not None
                         for e in self.entries())
        metric = 'test micro-F1' if self.data.get('split', {}).get(
            'metric') == 'micro-F1' else 'test acc'
        labels = latency_labels([e.latency for e in self.entries()],
                                runtimes)
        headers = ['model', 'architecture', 'parameters', 'file size',
                   metric] + (['mean class acc'] if mean_class else []) \
            + [f'{labels[r]} p50 / p95 ms' for r in runtimes]
        rows = []
        for e in self.entries():
            row = [e.role, _arch(e.spec), f'{e.parameters:,}',
                   _size(e.file_bytes), f'{100 * e.test_accuracy:.2f}%']
            if mean_class:
                row.append('-' if e.mean_class_accuracy is None else
                           f'{100 * e.mean_class_accuracy:.2f}%')
            rows.append(row + _latency_cells(e.latency, runtimes, labels))
        return headers, rows

    def summary_lines(self) -> list[str]:
        size = f"{self.data['clouds']:,} clouds of " \
            f"{self.data['points']:,} points" if 'clouds' in self.data else \
            f"{self.data['nodes']:,} nodes, {self.data['edges']:,} edges"
        lines = [
            f"data: {self.data['name']} ({size}), split: "
            f'{_split(self.data)}',
            f'method: {self.method} {_options(self.method_options)}'.rstrip(),
            f'compression: {self.compression_ratio:.1f}x fewer parameters',
            parity_line(self.onnx_max_abs_diff, self.onnx_parity,
                        self.onnx_parity_relative),
            f"training: {plural(self.training['epochs_run'], 'epoch')} in "
            f"{self.training['seconds']:.1f} s, best epoch "
            f"{self.training['best_epoch']}, device {self.device}, seed "
            f'{self.seed}',
        ]
        if self.speedups:
            lines.append('student speed-up over the teacher: ' + '; '.join(
                _speedup_text(s) for s in self.speedups))
        if self.exported:
            lines.append(f"exported: {self.exported['reason']}")
        if self.timings:
            lines.append(timings_line(self.timings))
        return lines + [f'note: {n}' for n in
                        [*self.notes, *latency_notes(self.entries())]]

    def to_markdown(self) -> str:
        headers, rows = self.rows()
        files = ''.join(f'- {k}: `{v}`\n' for k, v in self.files.items())
        return '\n'.join([
            '# gnncompress distill report', '',
            f'`{self.command}`', '',
            tabulate(rows, headers=headers, tablefmt='github'), '',
            *[f'- {line}' for line in self.summary_lines()], '',
            *([f'- gate {g.name} {g.limit:g}: '
               + ('passed' if g.passed else 'FAILED: ' + '; '.join(g.failures))
               for g in self.gates] + [''] if self.gates else []),
            '## Files', '', files,
            '## Versions', '',
            ', '.join(f'{k} {v}' for k, v in self.versions.items()), ''])


def export_choice(distilled: ModelEntry,
                  alone: ModelEntry) -> dict[str, Any]:
    """Which student ``--baseline`` exports: the one trained alone when the
    distilled one scored below it on validation, else the distilled one
    (on a tie too); the report's ``exported`` record."""
    d_val, a_val = distilled.val_accuracy or 0.0, alone.val_accuracy or 0.0
    scores = (f'{100 * d_val:.1f}% distilled against {100 * a_val:.1f}% '
              f'alone on the validation nodes')
    if a_val > d_val:
        model, reason = 'baseline', (
            f'the student trained alone, not the distilled one, which '
            f'scored below it ({scores})')
    else:
        model, reason = 'distilled', f'the distilled student ({scores})'
    return {'model': model, 'reason': reason,
            'distilled_val_accuracy': d_val, 'baseline_val_accuracy': a_val}


def latency_notes(entries: list[Any]) -> list[str]:
    """What the latency figures of ``entries`` say of themselves (on a
    GPU: why a forward was not captured as a CUDA graph), one line per
    model and note."""
    return [f'{e.role}: {note}' for e in entries
            for note in dict.fromkeys(lat.get('note') for lat in
                                      e.latency.values())
            if note]


def latency_labels(latencies: list[dict[str, dict[str, Any]]],
                   keys: list[str]) -> dict[str, str]:
    """A column label per latency key naming runtime, device and threads
    (``'onnxruntime cpu x2'``); where the rows of a column ran with
    different threads the label leaves them out and each cell names its
    own (:func:`latency_cell`)."""
    labels = {}
    for key in keys:
        figures = [lat[key] for lat in latencies if key in lat]
        named = describe(figures[0]) if figures else ''
        if len({f.get('threads') for f in figures}) > 1:
            named = describe({**figures[0], 'threads': None})
        labels[key] = named or key
    return labels


def latency_cell(latency: dict[str, Any] | None, label: str,
                 text: str) -> str:
    """``text`` (the figure), followed by the threads it ran with when the
    column ``label`` does not name them."""
    if latency is None:
        return '-'
    threads = latency.get('threads')
    if threads and not label.endswith(f' x{threads}'):
        return f'{text} (x{threads})'
    return text


def _latency_cells(latency: dict[str, dict[str, Any]], runtimes: list[str],
                   labels: dict[str, str]) -> list[str]:
    """``median / p95`` per runtime, ``-`` where it was not measured."""
    return [latency_cell(lat, labels[r],
                         f"{lat['median_ms']:.2f} / {lat['p95_ms']:.2f}"
                         + (f' ({floors})' if (floors := floors_text(
                             lat.get('floors'))) else ''))
            if (lat := latency.get(r)) else '-' for r in runtimes]


def timings_line(timings: dict[str, float]) -> str:
    """``time: 12.3 s (load 1.0, train 8.2, ...)``: where a run went."""
    parts = ', '.join(f'{name} {seconds:.1f}'
                      for name, seconds in timings.items()
                      if name != 'total')
    return f"time: {timings.get('total', 0.0):.1f} s ({parts})"


def student_speedups(teacher: ModelEntry,
                     student: ModelEntry) -> list[dict[str, Any]]:
    """The teacher's median latency over the student's, per runtime and
    device both were timed in (onnxruntime first: the student ships as
    ONNX); ``speedup`` is ``None`` where they ran with different
    threads."""
    out = []
    for key in sorted(student.latency, key=lambda k: 'onnx' not in k):
        if key not in teacher.latency:
            continue
        slow, fast = teacher.latency[key], student.latency[key]
        out.append({'runtime': fast.get('runtime', key),
                    'device': fast.get('device'),
                    'teacher_threads': slow.get('threads'),
                    'student_threads': fast.get('threads'),
                    'teacher_median_ms': slow['median_ms'],
                    'student_median_ms': fast['median_ms'],
                    'speedup': speedup(slow, fast)})
    return out


def _speedup_text(s: dict[str, Any]) -> str:
    where = describe({'runtime': s['runtime'], 'device': s['device'],
                      'threads': s['student_threads']})
    if s['speedup'] is None:
        return (f"none in {s['runtime']} {s['device']} (the teacher ran "
                f"with {s['teacher_threads']} threads, the student with "
                f"{s['student_threads']})")
    return (f"{s['speedup']:.2f}x in {where} ({s['teacher_median_ms']:.2f}"
            f" -> {s['student_median_ms']:.2f} ms)")


def _arch(spec: dict[str, Any]) -> str:
    if spec['arch'] == 'dgcnn':
        return f"dgcnn {','.join(map(str, spec['widths']))} k={spec['k']}"
    heads = f"x{spec['heads']}h" if spec['arch'] in ('gat', 'gatv2') else ''
    return f"{spec['arch']} {spec['num_layers']}x{spec['hidden_channels']}" \
        f'{heads}'


def _size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return '-'
    if num_bytes >= 1 << 20:
        return f'{num_bytes / (1 << 20):.2f} MiB'
    return f'{num_bytes / 1024:.1f} KiB'


def _split(data: dict[str, Any]) -> str:
    split = data['split']
    counts = f"{split['train']}/{split['val']}/{split['test']}"
    if split['kind'] == 'graphs':
        tail = f", fold {split['fold']}" if 'fold' in split else ''
        return (f"{split['scheme']} of the graphs{tail}, seed "
                f"{split['seed']} ({counts})")
    if split['kind'] == 'clouds':
        return f"{split['scheme']}, seed {split['seed']} ({counts})"
    if split['kind'] == 'glnn':
        return (f"GLNN's, {split['train_per_class']}/"
                f"{split['val_per_class']} per class in the largest connected "
                f"component, seed {split['seed']} ({counts})")
    if split['kind'] == 'stratified':
        return (f"stratified {split['train_per_class']}/"
                f"{split['val_per_class']} per class, seed {split['seed']} "
                f'({counts})')
    return f'given ({counts})'


def _options(options: dict[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in options.items())


@dataclass
class CotrainReport(RunReport):
    """Everything an online (``cotrain``) run measured: every student, the
    one exported (best validation accuracy) and, with cross-validation, each
    fold."""
    command: str
    method: str
    method_options: dict[str, Any]
    data: dict[str, Any]
    students: list[ModelEntry]
    best_student: int                 # 1-based, the exported one
    test_accuracy_mean: float         # of the selected student, over folds
    test_accuracy_std: float
    onnx_max_abs_diff: float
    onnx_parity: dict[str, float]
    training: dict[str, Any]
    seed: int
    device: str
    versions: dict[str, str]
    folds: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    # The settings the run resolved (config file, then command line).
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    onnx_parity_relative: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {'schema': 1, 'kind': 'cotrain', **asdict(self)}

    def rows(self) -> tuple[list[str], list[list[str]]]:
        runtimes = sorted({k for e in self.students for k in e.latency})
        metric = 'micro-F1' if self.data.get('split', {}).get(
            'metric') == 'micro-F1' else 'acc'
        labels = latency_labels([e.latency for e in self.students],
                                runtimes)
        headers = ['model', 'architecture', 'parameters', 'file size',
                   f'val {metric}', f'test {metric}'] + \
            [f'{labels[r]} p50 / p95 ms' for r in runtimes]
        rows = []
        for k, e in enumerate(self.students, 1):
            mark = ' (exported)' if k == self.best_student else ''
            val = '-' if e.val_accuracy is None or \
                e.val_accuracy != e.val_accuracy \
                else f'{100 * e.val_accuracy:.2f}%'
            row = [e.role + mark, _arch(e.spec), f'{e.parameters:,}',
                   _size(e.file_bytes), val, f'{100 * e.test_accuracy:.2f}%']
            rows.append(row + _latency_cells(e.latency, runtimes, labels))
        return headers, rows

    def summary_lines(self) -> list[str]:
        data = self.data
        size = f"{data['graphs']:,} graphs, " if 'graphs' in data else ''
        lines = [
            f"data: {data['name']} ({size}{data['nodes']:,} nodes, "
            f"{data['edges']:,} edges), split: {_split(data)}",
            f'method: {self.method} {_options(self.method_options)}'.rstrip(),
        ]
        if self.folds:
            lines.append(
                f'cross-validation: {len(self.folds)} folds, test accuracy '
                f'of the best student by validation '
                f'{100 * self.test_accuracy_mean:.2f} ± '
                f'{100 * self.test_accuracy_std:.2f}% (table: fold 0)')
        if self.onnx_parity:
            lines.append(parity_line(self.onnx_max_abs_diff,
                                     self.onnx_parity,
                                     self.onnx_parity_relative))
        t = self.training
        lines.append(f"training: {len(self.students)} students, "
                     f"{plural(t['epochs_run'], 'epoch')} in "
                     f"{t['seconds']:.1f} s "
                     f"({t['seconds_per_epoch'] * 1e3:.1f} ms per epoch), "
                     f'device {self.device}, seed {self.seed}')
        if t.get('fanout'):
            lines.append(f"mini-batch: {t['batch_size']:,} seed nodes per "
                         f"step, fanout {','.join(map(str, t['fanout']))}; "
                         f'validation and test layer-wise over all nodes')
        return lines + [f'note: {n}' for n in
                        [*self.notes, *latency_notes(self.students)]]

    def to_markdown(self) -> str:
        headers, rows = self.rows()
        files = ''.join(f'- {k}: `{v}`\n' for k, v in self.files.items())
        folds = ''
        if self.folds:
            fold_rows = [[f['fold'], f['best_student'],
                          *[f'{100 * a:.2f}%' for a in f['test_accuracy']]]
                         for f in self.folds]
            folds = tabulate(fold_rows, tablefmt='github', headers=[
                'fold', 'best student',
                *[f'student {k + 1} test' for k in
                  range(len(self.students))]]) + '\n'
        return '\n'.join([
            '# gnncompress cotrain report', '',
            f'`{self.command}`', '',
            tabulate(rows, headers=headers, tablefmt='github'), '',
            *[f'- {line}' for line in self.summary_lines()], '',
            *(['## Folds', '', folds] if folds else []),
            '## Files', '', files,
            '## Versions', '',
            ', '.join(f'{k} {v}' for k, v in self.versions.items()), ''])
