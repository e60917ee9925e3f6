"""What an amalgamation run measured (``report.json``, ``report.md`` and
the text the command prints)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tabulate import tabulate

from gnncompress.core.errors import plural
from gnncompress.outputs.report import (
    Gate,
    ModelEntry,
    RunReport,
    latency_cell,
    latency_labels,
)


@dataclass
class AmalgamationReport(RunReport):
    """Everything an amalgamation run measured. JSON keys are stable."""
    command: str
    setting: str                      # datasets | label-subsets
    tasks: list[dict[str, Any]]
    teachers: list[ModelEntry]
    student: dict[str, Any]
    results: list[dict[str, Any]]     # one per task x width
    union: list[dict[str, Any]]       # label subsets: one per width
    loss: dict[str, Any]
    selection: str
    training: dict[str, Any]
    seed: int
    device: str
    versions: dict[str, str]
    files: dict[str, Any] = field(default_factory=dict)
    # The settings the run resolved (config file, then command line).
    config: dict[str, Any] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {'schema': 1, 'kind': 'amalgamation', **asdict(self)}
        out['gates'] = [g.to_dict() for g in self.gates]
        return out

    def rows(self) -> tuple[list[str], list[list[str]]]:
        latencies = [r['latency'] for r in self.results] + \
            [t.latency for t in self.teachers]
        runtimes = sorted({k for lat in latencies for k in lat})
        labels = latency_labels(latencies, runtimes)
        headers = ['task', 'model', 'width', 'parameters', 'test acc',
                   'agrees with teacher'] + \
            [f'{labels[r]} p50 ms' for r in runtimes]
        rows = []
        for task, teacher in zip(self.tasks, self.teachers):
            spec = teacher.spec
            row = [task['name'], f"teacher {spec['arch']} "
                   f"{spec['num_layers']}x{spec['hidden_channels']}", '-',
                   f'{teacher.parameters:,}',
                   f'{100 * teacher.test_accuracy:.2f}%', '-']
            rows.append(row + [_ms(teacher.latency.get(r), labels[r])
                               for r in runtimes])
        for r in self.results:
            row = [r['task'], f"student {self.student['spec']['arch']} "
                   f"{self.student['spec']['num_layers']}x{r['hidden']}",
                   f"{r['width']:g}", f"{r['parameters']:,}",
                   f"{100 * r['test_accuracy']:.2f}%",
                   f"{100 * r['agreement']:.2f}%"]
            rows.append(row + [_ms(r['latency'].get(k), labels[k])
                               for k in runtimes])
        return headers, rows

    def summary_lines(self) -> list[str]:
        loss = self.loss
        lines = [
            f"tasks: {', '.join(t['name'] for t in self.tasks)} "
            f'({self.setting})',
            f"loss: soft {loss['soft']} + {loss['lambda']:g} x topology "
            f"{loss['topology']}; no ground-truth label used",
            f"student: {self.student['parameters']:,} parameters in all "
            f"(widths {', '.join(f'{w:g}' for w in self.student['widths'])})",
            f'selection: {self.selection}',
            f"training: {plural(self.training['epochs_run'], 'epoch')} in "
            f"{self.training['seconds']:.1f} s "
            f"({self.training['seconds_per_epoch']:.3f} s/epoch), best "
            f"epoch {self.training['best_epoch']}, device {self.device}, "
            f'seed {self.seed}',
        ]
        if 'batch_size' in self.training:
            t = self.training
            probes = _probe_sizes(t['measured_on'])
            lines.append(
                f"mini-batch: {t['batch_size']:,} seed nodes of each graph "
                f"per step, fanout {','.join(map(str, t['fanout']))}, "
                f"{t['steps_per_epoch']} steps per epoch; latency and the "
                f'ONNX check on one sampled subgraph per graph ({probes})')
        if 'graphs_per_step' in self.training:
            t = self.training
            per = ', '.join(f'{n} {k} of {t["training_graphs"][n]}'
                            for n, k in t['graphs_per_step'].items())
            probes = _probe_sizes(t['measured_on'])
            lines.append(
                f'several graphs: batches of whole training graphs ({per} '
                f"per step), {t['steps_per_epoch']} steps per epoch; "
                f'latency and the ONNX check on the test graphs ({probes})')
        for u in self.union:
            lines.append(f"union of all tasks at width {u['width']:g}: "
                         f"{100 * u['test_accuracy']:.2f}%")
        parity = [r['onnx_max_abs_diff'] for r in self.results
                  if r.get('onnx_max_abs_diff') is not None]
        if parity:
            lines.append(f'ONNX max abs difference: {max(parity):.2e} '
                         f'(over {len(parity)} files, 4 check graphs each)')
        return lines

    def to_markdown(self) -> str:
        headers, rows = self.rows()
        files = ''.join(f'- {k}: `{v}`\n' for k, v in self.files.items()
                        if k != 'onnx')
        files += ''.join(f'- onnx: `{v}`\n'
                         for v in self.files.get('onnx', []))
        return '\n'.join([
            '# gnncompress amalgamate report', '', f'`{self.command}`', '',
            tabulate(rows, headers=headers, tablefmt='github'), '',
            *[f'- {line}' for line in self.summary_lines()], '',
            '## Files', '', files, '## Versions', '',
            ', '.join(f'{k} {v}' for k, v in self.versions.items()), ''])


def _ms(latency: dict[str, Any] | None, label: str) -> str:
    return latency_cell(latency, label, f"{latency['median_ms']:.2f}") \
        if latency else '-'


def _probe_sizes(measured_on: dict[str, dict[str, int]]) -> str:
    """``'Cora 1,024 nodes, 5,210 edges; ...'``: the graphs latency and the
    ONNX check ran on, for the report's text."""
    return '; '.join(f"{name} {v['nodes']:,} nodes, {v['edges']:,} edges"
                     for name, v in measured_on.items())

