"""What a run writes: the student files, the ONNX export and its failure
report, latency figures, report.json and report.md, the gates and the
end-of-run summary."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gnncompress.checkpoints.students import (
    POSITION_KEY,
    save_safetensors,
    write_safetensors,
)
from gnncompress.checkpoints.teachers import Checkpoint
from gnncompress.core.errors import ExportError
from gnncompress.core.graph import Graph
from gnncompress.core.timing import breakdown
from gnncompress.methods import DistillMethod
from gnncompress.models import ArchSpec, build_model, count_parameters
from gnncompress.outputs import plots
from gnncompress.outputs.latency import (
    exported_latency,
    measuring,
    onnx_latency,
    torch_figures,
)
from gnncompress.outputs.onnx import export_onnx, sparse_features_hint
from gnncompress.outputs.parity import onnx_signature
from gnncompress.outputs.report import (
    Gate,
    ModelEntry,
    Report,
    export_choice,
    student_speedups,
)
from gnncompress.workflows.runs import (
    OVERFLOW,
    seed_everything,
    staged_output,
    versions,
    write_failure,
)
from gnncompress.workflows.settings import DistillSettings


def file_bytes(teacher: Path) -> int:
    """The teacher file's size (0 for an in-memory teacher)."""
    return teacher.stat().st_size if teacher.is_file() else 0


def distill_outputs(settings: DistillSettings, *, teacher: Path,
                    ckpt: Checkpoint, teacher_model: torch.nn.Module,
                    teacher_acc: float, model: torch.nn.Module,
                    s_spec: ArchSpec, distiller: DistillMethod,
                    graph: Graph, result: Any,
                    alone_entry: ModelEntry | None,
                    inputs: tuple[Tensor, Tensor, Tensor | None],
                    training: dict[str, Any], notes: list[str],
                    dev: torch.device,
                    alone_model: torch.nn.Module | None = None,
                    auto: Any = None,
                    position: Tensor | None = None) -> Report:
    """What ``distill`` writes once the student is trained (full-graph or
    mini-batch): latency of teacher and student and the ONNX parity check
    on ``inputs`` (x, edge_index, batch: the whole graph, or a sampled
    subgraph when it is too large), the student's files and the report,
    all staged and moved into ``settings.outputs.out`` at once (the
    ``settings`` as the run resolved them: output folder, loss weights,
    config). ``notes`` come after the
    teacher card's and the collapse warning. Teacher and student are timed
    in PyTorch with the same threads; ``teacher_onnx`` also exports the
    teacher and times it in onnxruntime with the student's threads.
    With ``--baseline`` (``alone_entry`` and ``alone_model``, the student
    trained alone), the files hold whichever of the two students scored
    better on validation (:func:`exported_student`). ``auto`` (a
    :class:`gnncompress.workflows.auto.Choice`) names the method by the
    candidate ``--method auto`` chose and records every candidate.
    ``position`` (NOSMOG's position features, one row per node of ``x``)
    is the student's second input: it reads ``[x, position]``, its ONNX
    file takes ``position`` apart and ``positions.safetensors`` holds the
    rows (:func:`save_positions`)."""
    out, options = Path(settings.outputs.out), settings.outputs
    weight = settings.weight
    label_weight = settings.label_weight
    x, edge_index, batch = inputs
    student_x = x if position is None else \
        torch.cat([x, position.to(x.device)], 1)
    position_dim = 0 if position is None else position.size(1)
    method_name = distiller.name if auto is None else f'auto: {auto.method}'
    used_weight = distiller.default_weight if weight is None else weight
    collapsed = collapse_note(result.val_accuracy, graph)
    notes = [*ckpt.notes.values(), *([collapsed] if collapsed else []),
             *notes]
    with staged_output(out) as stage:
        files: dict[str, str] = {}
        parity_cases: dict[str, float] = {}
        parity_relative: dict[str, float] = {}
        student_entry = ModelEntry(
            role='student', spec=s_spec.to_dict(),
            parameters=count_parameters(model),
            test_accuracy=result.test_accuracy,
            val_accuracy=result.val_accuracy)
        teacher_entry = ModelEntry(
            role='teacher', spec=ckpt.spec.to_dict(),
            parameters=count_parameters(teacher_model),
            test_accuracy=teacher_acc, file=str(teacher),
            file_bytes=file_bytes(teacher))
        chosen, chosen_entry, exported = exported_student(
            model, student_entry, alone_model, alone_entry)
        edges_dev = edge_index.to(dev)
        batch_dev = batch.to(dev) if batch is not None else None
        for entry, m, features in ((teacher_entry, teacher_model, x),
                                   (student_entry, model, student_x)):
            if measuring():
                entry.latency.update(torch_figures(
                    m, features.to(dev), edges_dev, batch_dev))
        failure = None
        if options.export:
            save_student(chosen, s_spec, stage, out, method_name
                         if chosen is model else 'none (trained alone)',
                         graph.name, chosen_entry, files, position)
            onnx_path = stage / 'student.onnx'
            x_cpu, edges_cpu = x.cpu(), edge_index.cpu()
            student_x_cpu = student_x.cpu()
            batch_cpu = batch.cpu() if batch is not None else None
            try:
                parity = export_onnx(chosen, student_x_cpu, edges_cpu,
                                     onnx_path, uses_graph=s_spec.uses_graph,
                                     batch=batch_cpu,
                                     position_dim=position_dim)
                parity_cases = parity.cases
                parity_relative = parity.relative_cases()
                hint = (sparse_features_hint(
                    model, x_cpu, out / 'student.safetensors')
                    if batch_cpu is None and s_spec.uses_graph else None)
                notes += [hint] if hint else []
            except ExportError as e:
                failure = export_failure(e, chosen, (student_x_cpu, edges_cpu,
                                                     batch_cpu), out)
                write_failure(stage, out, failure, ['student.safetensors'],
                              test_accuracy=chosen_entry.test_accuracy)
        if options.export and failure is None and not measuring():
            files['onnx'] = str(out / 'student.onnx')
        elif options.export and failure is None:
            files['onnx'] = str(out / 'student.onnx')
            student_entry.latency['onnxruntime-cpu'] = onnx_latency(
                onnx_path, student_x_cpu, edges_cpu, batch_cpu).to_dict()
            if settings.teacher_onnx:
                notes += teacher_onnx_latency(
                    teacher_entry, teacher_model, ckpt.spec.uses_graph,
                    (x_cpu, edges_cpu, batch_cpu),
                    student_entry.latency['onnxruntime-cpu']['threads'])
        model.to(dev)
        chosen.to(dev)
        if position is not None:
            notes.append(position_note(x.size(1), position_dim, out))
        if failure is None:
            report = write_report(
                stage, out,
                command=options.command or
                f'gnncompress distill {teacher}',
                method=method_name,
                auto=None if auto is None else auto.summary(),
                method_options={**(settings.method_options or {}),
                                'weight': used_weight,
                                'label_weight': label_weight},
                data=describe_graph(graph),
                teacher=teacher_entry, student=student_entry,
                student_alone=alone_entry, parity_cases=parity_cases,
                onnx_parity_relative=parity_relative,
                training=training, seed=settings.training.seed,
                device=dev, ckpt=ckpt, files=files, config=options.config,
                **dataclasses.asdict(settings.gates), notes=notes,
                exported=exported)
    if failure is not None:
        raise failure
    return report


def exported_student(model: torch.nn.Module, entry: ModelEntry,
                     alone: torch.nn.Module | None,
                     alone_entry: ModelEntry | None
                     ) -> tuple[torch.nn.Module, ModelEntry,
                                dict[str, Any] | None]:
    """The student the files hold, its report entry and the report's
    ``exported`` record: with a baseline, the better of the distilled
    student and the one trained alone by validation score
    (:func:`~gnncompress.outputs.report.export_choice`); else the distilled one
    and
    None."""
    if alone is None or alone_entry is None:
        return model, entry, None
    exported = export_choice(entry, alone_entry)
    if exported['model'] == 'baseline':
        return alone, alone_entry, exported
    return model, entry, exported


def export_failure(error: ExportError, model: torch.nn.Module,
                   inputs: tuple[Tensor, Tensor, Tensor | None],
                   out: Path) -> ExportError:
    """The error of a student whose ONNX export failed, kept in
    ``out/student.safetensors``: why, when its numbers are too large for
    float32 (a learning rate far too high leaves finite but huge weights,
    whose outputs PyTorch and ONNX Runtime round apart or overflow)."""
    from gnncompress.models import forward_logits

    model = model.cpu().eval()
    with torch.no_grad():
        logits = forward_logits(model, *inputs).float()
    weight = max((float(p.detach().abs().max()) for p in model.parameters()
                  if p.numel()), default=0.0)
    finite = logits[torch.isfinite(logits)]
    output = float(finite.abs().max()) if finite.numel() else math.inf
    kept = f"the student is kept in {out / 'student.safetensors'}"
    infinite = finite.numel() < logits.numel()
    if infinite or max(output, weight) > OVERFLOW:
        shown = 'some outputs infinite' if infinite else \
            f'largest output {output:.3g}'
        return ExportError(
            f'The student cannot be exported: its values overflow float32 '
            f'(largest weight {weight:.3g}, {shown}), so PyTorch and ONNX '
            f'Runtime cannot agree; lower --lr; {kept}')
    return ExportError(f'{error}; {kept}')


def teacher_onnx_latency(entry: ModelEntry, teacher: torch.nn.Module,
                         uses_graph: bool,
                         inputs: tuple[Tensor, Tensor, Tensor | None],
                         threads: int | None) -> list[str]:
    """The teacher exported to ONNX and timed in onnxruntime with the
    ``threads`` the student's session ran with, into ``entry``: the
    student's speed-up in the runtime it ships in. A teacher that does not
    export gets none, and a note."""
    try:
        entry.latency['onnxruntime-cpu'] = exported_latency(
            teacher, *inputs, uses_graph=uses_graph,
            threads=threads).to_dict()
    except ExportError as e:
        return [f'no onnxruntime speed-up: the teacher does not export to '
                f'ONNX ({e})']
    return []


def describe_graph(graph: Graph) -> dict[str, Any]:
    """The report's ``data`` entry."""
    return {'name': graph.name, 'nodes': graph.num_nodes,
            'edges': int(graph.edge_index.size(1)),
            'features': graph.num_features, 'classes': graph.num_classes,
            'split': graph.split, 'feature_norm': graph.feature_norm}


def describe_training(result: Any, **settings: Any) -> dict[str, Any]:
    """The report's ``training`` entry: the settings, then what the run
    did."""
    return {**settings, 'epochs_run': result.epochs_run,
            'best_epoch': result.best_epoch, 'seconds': result.seconds,
            'val_accuracy': result.val_accuracy, 'history': result.history}


def save_student(model: torch.nn.Module, spec: ArchSpec, stage: Path,
                 out: Path, method: str, data: str, entry: ModelEntry,
                 files: dict[str, str], position: Tensor | None = None
                 ) -> None:
    """``student.safetensors`` into the staged folder, recorded in the
    student's report entry and the list of files; with ``position``
    (the student's second input), its width in the metadata
    (:data:`POSITION_KEY`) and its rows in ``positions.safetensors``."""
    extra = {'gnncompress.method': method, 'gnncompress.data': data}
    if position is not None:
        extra[POSITION_KEY] = str(position.size(1))
        write_safetensors({'position': position}, {
            'gnncompress.rows': f'the nodes of {data}, in order'},
            stage / 'positions.safetensors')
        files['positions'] = str(out / 'positions.safetensors')
    path = save_safetensors(model, spec, stage / 'student.safetensors',
                            extra=extra)
    entry.file = str(out / 'student.safetensors')
    entry.file_bytes = path.stat().st_size
    files['safetensors'] = entry.file


def position_note(features: int, dim: int, out: Path) -> str:
    """What the report says about a student with position features: its
    two inputs and how to get a node's position."""
    return (f'the student reads x [N, {features}] and position [N, {dim}] '
            f"(NOSMOG's DeepWalk position features): the training graph's "
            f"rows are in {out / 'positions.safetensors'} (tensor "
            f"'position'); for a node that graph did not have, feed the "
            f'mean of its neighbours\' rows (zeros without any; '
            f'gnncompress.methods.position.positions_for_new_nodes)')


def write_report(stage: Path, out: Path, *, teacher: ModelEntry,
                 student: ModelEntry, parity_cases: dict[str, float],
                 device: torch.device, ckpt: Checkpoint,
                 files: dict[str, str], config: dict[str, Any] | None,
                 min_accuracy: float | None,
                 max_accuracy_drop: float | None,
                 notes: list[str] | None = None, **fields: Any) -> Report:
    """The distill Report (gates on the student's test accuracy against
    the teacher's) written as ``report.json`` and ``report.md`` into the
    staged folder; ``fields`` are the Report's own (command, method,
    method_options, data, student_alone, training, seed, exported). The
    gates apply to the student the files hold."""
    files['report_json'] = str(out / 'report.json')
    gated, name = student, 'student'
    if (fields.get('exported') or {}).get('model') == 'baseline':
        gated, name = fields['student_alone'], 'student alone (exported)'
    files['report_md'] = str(out / 'report.md')
    report = Report(
        teacher=teacher, student=student,
        compression_ratio=teacher.parameters / student.parameters,
        onnx_max_abs_diff=max(parity_cases.values(), default=float('nan')),
        onnx_parity=parity_cases, device=str(device), versions=versions(),
        teacher_spec_sources=ckpt.sources,
        notes=list(ckpt.notes.values()) if notes is None else notes,
        files=files, config=config or {},
        speedups=student_speedups(teacher, student), timings=breakdown(),
        gates=accuracy_gates(
            [(name, gated.test_accuracy, teacher.test_accuracy)],
            min_accuracy, max_accuracy_drop), **fields)
    report_files(report, stage, out, files, 'training.png',
                 plots.distill_training)
    return report


def collapse_note(val_accuracy: float, graph: Graph) -> str | None:
    """A warning when the student's best validation accuracy is no better
    than always predicting the most common validation class: training
    collapsed (e.g. every ReLU dead after a few large steps)."""
    if graph.batch is not None or not bool(graph.val_mask.any()):
        return None
    labels = graph.y[graph.val_mask]
    if labels.dim() != 1:
        return None
    majority = float(torch.bincount(labels).max()) / labels.numel()
    if val_accuracy > majority + 0.01:
        return None
    return (f'the student collapsed: its best validation accuracy '
            f'({100 * val_accuracy:.1f}%) is no better than always '
            f'predicting the most common class ({100 * majority:.1f}%); '
            f'lower --lr (e.g. 0.001) or the method weight (--weight)')


def accuracy_gates(models: list[tuple[str, float, float]],
                   min_accuracy: float | None,
                   max_accuracy_drop: float | None) -> list[Gate]:
    """The accuracy gates of distill and amalgamate: ``models`` holds
    (name, accuracy, its teacher's accuracy); limits in percent and
    points."""
    gates = []
    if min_accuracy is not None:
        gate = Gate('min-accuracy', min_accuracy)
        gate.failures = [f'{name} {100 * acc:.2f}%'
                         for name, acc, _ in models
                         if not 100 * acc >= min_accuracy]
        gates.append(gate)
    if max_accuracy_drop is not None:
        gate = Gate('max-accuracy-drop', max_accuracy_drop)
        gate.failures = [f'{name} {100 * (ref - acc):.2f} points below its '
                         f'teacher' for name, acc, ref in models
                         if not 100 * (ref - acc) <= max_accuracy_drop]
        gates.append(gate)
    return gates


def run_summary(report: Any) -> list[str]:
    """What to do next with a run's files, in two to four lines: how to
    load the ONNX student (its inputs), its speed-up against the teacher(s)
    and whether a gate failed (distill, amalgamate, cotrain reports)."""
    lines = []
    onnx = report.files.get('onnx')
    first = onnx[0] if isinstance(onnx, list) and onnx else onnx
    if first:
        where = f' (one per task and width in {Path(first).parent}/)' \
            if isinstance(onnx, list) else ''
        lines.append(f'Load {first}{where} with onnxruntime: inputs '
                     f'{onnx_signature(first)}.')
    if hasattr(report, 'speedups'):
        lines.append(_distill_speedup_line(report))
    elif hasattr(report, 'teachers'):
        lines.append(_amalgamate_speedup_line(report))
    elif first:
        lines.append(f'No teacher to compare with: time it with gnncompress '
                     f"bench {first} --data {report.data['name']}.")
    gates = getattr(report, 'gates', None)
    if gates is not None:
        failed = [g.name for g in gates if not g.passed]
        names = ', '.join(g.name for g in gates)
        lines.append('Gates: none set.' if not gates else
                     f"Gate failed: {', '.join(failed)} (exit code 3)."
                     if failed else f'Gates passed: {names}.')
    return lines


_NOT_TIMED = ('not measured (--no-latency); gnncompress bench TEACHER '
              'STUDENT.onnx --baseline TEACHER times both')


def _distill_speedup_line(report: Report) -> str:
    from gnncompress.outputs.latency import describe

    for s in report.speedups:
        if s['speedup'] is not None:
            where = describe({'runtime': s['runtime'], 'device': s['device'],
                              'threads': s['student_threads']})
            return f"Speed-up over the teacher: {s['speedup']:.1f}x " \
                f'({where}).'
    return f'Speed-up over the teacher: {_NOT_TIMED}.'


def _amalgamate_speedup_line(report: Any) -> str:
    from gnncompress.outputs.latency import describe, speedup

    teachers = {t['name']: e for t, e in zip(report.tasks, report.teachers)}
    found: dict[str, list[float]] = {}
    for r in report.results:
        teacher = teachers.get(r['task'])
        for key, fast in r['latency'].items():
            slow = teacher.latency.get(key) if teacher else None
            value = speedup(slow, fast) if slow else None
            if value is not None:
                found.setdefault(describe(fast), []).append(value)
    if not found:
        return f'Speed-up over the teachers: {_NOT_TIMED}.'
    where, values = next(iter(sorted(found.items())))
    return (f'Speed-up over the teachers: {min(values):.1f}x to '
            f'{max(values):.1f}x across tasks and widths ({where}).')


def trained_alone(s_spec: ArchSpec, seed: int, dev: torch.device,
                  train: Callable[[torch.nn.Module], Any], **scores: Any
                  ) -> tuple[ModelEntry, torch.nn.Module]:
    """``--baseline``: the student built from the run's seed and trained
    alone by ``train(model) -> fit result``, with its report entry
    (``scores(model) -> dict`` adds task-specific fields, e.g. point
    clouds' mean class accuracy)."""
    seed_everything(seed)
    alone = build_model(s_spec).to(dev)
    result = train(alone)
    extra = {k: f(alone) for k, f in scores.items()}
    return ModelEntry(role='student-alone', spec=s_spec.to_dict(),
                      parameters=count_parameters(alone),
                      test_accuracy=result.test_accuracy,
                      val_accuracy=result.val_accuracy, **extra), alone


def report_files(report: Any, stage: Path, out: Path, files: dict[str, str],
                 picture: str, draw: Callable[..., Any]) -> None:
    """A run's picture (``draw(report dict, path)``; listed in ``files``
    under e.g. ``training_png`` when drawn), ``report.json`` and
    ``report.md``, written into the staged folder that becomes ``out``."""
    if plots.drawn(picture, draw, report.to_dict(), stage / picture):
        files[picture.replace('.', '_')] = str(out / picture)
    (stage / 'report.json').write_text(report.to_json() + '\n')
    (stage / 'report.md').write_text(report.to_markdown())
