"""``gnncompress amalgamate``: several frozen teachers, each expert on its own
task, merged into one slimmable student without any ground-truth label
(TAM, METHODS.md).

The command (:func:`amalgamate`) and its outputs; the tasks in
:mod:`~gnncompress.workflows.amalgamate.tasks`, the training regimes in
:mod:`~gnncompress.workflows.amalgamate.regimes` (sampled subgraphs in
:mod:`gnncompress.workflows.amalgamate.sampled`), the report in
:mod:`~gnncompress.workflows.amalgamate.report`."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gnncompress.checkpoints.cards import card_path
from gnncompress.checkpoints.students import save_slimmable
from gnncompress.checkpoints.teachers import Checkpoint, load_checkpoint
from gnncompress.core import out_folder as outputs
from gnncompress.core.errors import (
    ArchitectureError,
    GnnCompressError,
    TrainingError,
)
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import micro_f1
from gnncompress.core.options import (
    check_checkpointing,
    check_out,
    check_rate,
    check_training,
)
from gnncompress.methods.tam import TAM, TeacherTask
from gnncompress.models import count_parameters
from gnncompress.models.slimmable import (
    SlimmableGNN,
    SlimmableSpec,
    TaskSlice,
)
from gnncompress.outputs import plots
from gnncompress.outputs.latency import measuring, onnx_latency, torch_figures
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.report import ModelEntry
from gnncompress.training import ranks as process_ranks
from gnncompress.workflows.amalgamate.regimes import (
    Amalgamation,
    GraphBatches,
    Logits,
    WholeGraphs,
    agreement,
    report_nodes,
    train_student,
)
from gnncompress.workflows.amalgamate.report import AmalgamationReport
from gnncompress.workflows.amalgamate.tasks import (
    Task,
    check_graphs,
    check_teacher,
    dataset_names,
    resolve_tasks,
    task_accuracy,
    tasks_text,
)
from gnncompress.workflows.distill_sampled import check_minibatch
from gnncompress.workflows.distributed import (
    check_batches,
    launch,
    one_at_a_time,
    under_torchrun,
)
from gnncompress.workflows.inputs import data_root_of, with_resolved
from gnncompress.workflows.results import accuracy_gates, report_files
from gnncompress.workflows.runs import (
    check_writable,
    finish_checkpoint,
    interruptible,
    keep_best_student,
    resolve_device,
    run_inputs,
    seed_everything,
    staged_output,
    training_checkpoint,
    versions,
)
from gnncompress.workflows.settings import AmalgamateSettings
from gnncompress.workflows.students import STUDENT_DROPOUT

SELECTION = ('agreement with the teachers\' predicted classes on all nodes, '
             'averaged over tasks and widths (no label is read)')
SELECTION_GRAPHS = ('agreement with the teachers\' predictions on the '
                    'validation graphs\' nodes (micro-F1 against their '
                    'predicted labels for multi-label tasks), averaged over '
                    'tasks and widths (no label is read)')



def _parse_widths(widths: str | Sequence[float]) -> list[float]:
    if isinstance(widths, str):
        try:
            return [float(w) for w in widths.split(',')]
        except ValueError:
            raise ArchitectureError(f"Widths are numbers separated by commas, "
                                    f"e.g. 0.25,0.5,1 (got '{widths}')") \
                from None
    return [float(w) for w in widths]



@AmalgamateSettings.signed('AmalgamationReport | None')
def amalgamate(teachers: Sequence[str | Path] | AmalgamateSettings,
               **options: Any) -> AmalgamationReport | None:
    """Amalgamate ``teachers`` (one per task) into one slimmable student and
    write ``student.safetensors`` (all widths and heads + spec),
    ``onnx/<task>-w<width>.onnx`` (one per task and exported width, each
    checked against PyTorch), ``report.json`` and ``report.md`` to ``out``.

    ``weight`` is the topology loss weight lambda (default 0.1 for TAM, 100
    for LSP); ``lr`` 0.01 (our choice, as ``distill``: the authors' 1e-4
    needs far more full-graph epochs) and ``weight_decay`` 4e-6 (the
    authors' code). ``export_widths`` (``--width``) picks the widths that
    get an ONNX file (default: all). The gates ``min_accuracy`` (percent)
    and ``max_accuracy_drop`` (points below the task's teacher) apply to
    every task at every exported width; failures are in
    ``report.gates``.

    ``batch_size`` B trains on sampled subgraphs of B seed nodes per graph
    with ``fanout`` neighbours per hop (``'15,10'``; default 15, 10, then
    5), the teachers cached once layer-wise
    (:mod:`gnncompress.workflows.amalgamate.sampled`).

    Several-graph datasets train on batches of whole training graphs
    (:class:`GraphBatches`); on multi-label data the tasks are label
    columns, scores and agreement micro-F1.

    ``checkpoint_every`` K saves the training every K epochs to
    ``checkpoint_dir`` (default ``out/.gnncompress-checkpoint``, removed
    when the run succeeds); ``resume`` (that folder, or ``out``) continues
    an interrupted run with the same options, ending with the student an
    uninterrupted run gives. When the loss stops being finite, the run
    stops with a :class:`~gnncompress.core.errors.TrainingError` and ``model``
    is back at its best epoch.

    ``nproc`` N (with ``batch_size`` on single graphs; several-graph
    data have a default batch) trains in N processes with data
    parallelism, as does running under ``torchrun``
    (:mod:`gnncompress.workflows.distributed`); rank 0 writes the outputs
    and the other torchrun ranks return None.

    The options may also come as one
    :class:`~gnncompress.workflows.settings.AmalgamateSettings` passed
    alone, as ``teachers``; an unknown keyword is a one-line
    :class:`GnnCompressError`."""
    return run_amalgamate(AmalgamateSettings.given(teachers, options))


@outputs.one_run
def run_amalgamate(settings: AmalgamateSettings
                   ) -> AmalgamationReport | None:
    """:func:`amalgamate` on its settings, resolved on the way (output
    folder, command) and handed to :func:`_write_outputs`."""
    s, batching = settings, settings.batching
    teachers = s.teachers
    if batching.nproc is not None or under_torchrun():
        return launch(run_amalgamate, s)
    tr, shape, c = s.training, s.model, s.checkpointing
    batch_size, fanout = batching.batch_size, batching.fanout
    check_training(lr=tr.lr, weight_decay=tr.weight_decay, seed=tr.seed)
    check_checkpointing(c.checkpoint_every, c.checkpoint_dir, c.resume)
    check_rate('lambda', s.weight)
    if len(teachers) < 2:
        raise GnnCompressError('Amalgamation needs at least two teachers '
                               f'(got {len(teachers)})')
    try:
        tam = TAM(weight=s.weight, soft=s.soft, topology=s.topology)
    except ValueError as e:
        raise GnnCompressError(str(e)) from None
    widths = _parse_widths(shape.widths)
    export_widths = sorted(set(_parse_widths(shape.export_widths))) \
        if shape.export_widths is not None else None
    check_out(s.outputs.out)
    out = Path(s.outputs.out) if s.outputs.out is not None else \
        Path('gnncompress-out') / 'amalgamate'
    s = s.with_options(out=out, command=s.outputs.command or
                       'gnncompress amalgamate ' +
                       ' '.join(map(str, teachers)))
    dev = resolve_device(s.device)
    check_writable(out)
    outputs.claim(out, run_inputs(
        *teachers, *[card_path(Path(t)) for t in teachers],
        *([s.data] if isinstance(s.data, (str, Path)) else s.data or [])))
    ckpts = [load_checkpoint(t) for t in teachers]
    with one_at_a_time():
        task_list = resolve_tasks(ckpts, s.data, s.tasks, s.data_root,
                                  tr.seed)
    # What the data are first: on several graphs, --fanout is the mistake
    # (not its number of hops).
    several = check_graphs(task_list, fanout is not None)
    hops = None
    if several:  # --batch-size counts whole graphs per step
        if batch_size is not None and batch_size < 1:
            raise GnnCompressError(f'--batch-size must be at least 1 graph '
                                   f'(got {batch_size})')
    elif batch_size is not None or fanout is not None:
        hops = check_minibatch(None, batch_size, fanout, shape.layers)[1]
    check_batches([t.graph for t in task_list], batch_size)
    for ckpt, task in zip(ckpts, task_list):
        check_teacher(ckpt, task)
    if hops is not None:
        from gnncompress.workflows.amalgamate import (
            sampled as amalgamation_minibatch,
        )
        amalgamation_minibatch.check_teachers(ckpts, tam)
    setting = 'label-subsets' if task_list[0].classes is not None \
        else 'datasets'
    heads_out = [task_list[-1].stop] if setting == 'label-subsets' else \
        [t.num_classes for t in task_list]
    spec = SlimmableSpec(arch=shape.student,
                         in_channels=[t.graph.num_features
                                      for t in task_list],
                         hidden_channels=shape.hidden,
                         num_layers=shape.layers, out_channels=heads_out,
                         widths=widths, heads=shape.heads,
                         dropout=STUDENT_DROPOUT)
    if export_widths is not None:
        unknown = [w for w in export_widths if w not in spec.widths]
        if unknown:
            raise ArchitectureError(
                f"--width {', '.join(f'{w:g}' for w in unknown)} was not "
                f"trained (widths: {', '.join(f'{w:g}' for w in spec.widths)})")
    else:
        export_widths = spec.widths
    s = s.with_options(config=_resolved(
        s.outputs.config, task_list, ckpts, s.data, s.data_root, setting,
        export_widths=export_widths, tam=tam, hops=hops, dev=dev, out=out))

    saver = training_checkpoint(
        out, c.checkpoint_every, c.checkpoint_dir, c.resume,
        teachers=[str(Path(t).resolve()) for t in teachers],
        teacher_bytes=[Path(t).stat().st_size for t in teachers],
        tasks=[_task_dict(t) for t in task_list], student=asdict(spec),
        loss={'soft': tam.soft, 'topology': tam.topology,
              'lambda': tam.weight},
        epochs=tr.epochs, lr=tr.lr, weight_decay=tr.weight_decay,
        patience=tr.patience, batch_size=batch_size, fanout=hops,
        seed=tr.seed, device=dev.type)
    if hops is None:
        moved: dict[int, Graph] = {}
        for task in task_list:
            key = id(task.graph)
            moved.setdefault(key, task.graph.to(dev))
            task.graph = moved[key]
    teacher_models = [c.build().to(dev) for c in ckpts]
    sampled = None
    if hops is None:
        teacher_tasks = [tam.prepare(m, t.graph.x, t.graph.edge_index,
                                     slice(None), t.graph.multilabel)
                         for m, t in zip(teacher_models, task_list)]
        graphs: Amalgamation = \
            GraphBatches(task_list, teacher_tasks, tam,
                         batch_size=batch_size, seed=tr.seed) \
            if several else WholeGraphs(task_list, teacher_tasks, tam)
    else:  # graphs stay on the CPU; batches move to the device
        sampled = amalgamation_minibatch.SampledGraphs(
            task_list, teacher_models, tam, batch_size=batch_size,
            fanout=hops, seed=tr.seed, device=dev)
        graphs, teacher_tasks = sampled, sampled.teacher_tasks
    ranks = process_ranks.current()
    try:
        seed_everything(tr.seed)
        model = SlimmableGNN(spec).to(dev)
        try:
            with interruptible(saver):
                fitted = train_student(
                    model, task_list, teacher_tasks, tam, epochs=tr.epochs,
                    lr=tr.lr, weight_decay=tr.weight_decay,
                    patience=tr.patience, progress=tr.progress,
                    graphs=graphs, checkpoint=saver)
        except TrainingError as e:
            if ranks.rank != 0:
                raise
            raise keep_best_student(
                e, out, 'agreement with the teachers',
                lambda path, stopped: _save_student(model, task_list, path,
                                                    stopped)) from None
        if ranks.rank != 0:
            return None  # rank 0 writes the outputs
        training = {'epochs': tr.epochs, 'epochs_run': fitted.epochs_run,
                    'best_epoch': fitted.best_epoch,
                    'best_agreement': fitted.val_accuracy,
                    'seconds': fitted.seconds,
                    'seconds_per_epoch':
                    fitted.seconds / max(1, fitted.epochs_run),
                    'lr': tr.lr, 'weight_decay': tr.weight_decay,
                    'patience': tr.patience, **ranks.described()}
        if not isinstance(graphs, WholeGraphs):
            training.update(graphs.describe())
        report = _write_outputs(
            model, spec, task_list, ckpts, teacher_models, teacher_tasks,
            graphs, s, tam=tam, setting=setting, training=training,
            selection=SELECTION_GRAPHS if several else SELECTION,
            export_widths=export_widths, dev=dev)
        finish_checkpoint(saver, out)
        return report
    finally:
        if sampled is not None:
            sampled.close()


def _resolved(config: dict[str, Any] | None, task_list: list[Task],
              ckpts: list[Checkpoint], data: str | Sequence[str] | None,
              data_root: str | Path | None, setting: str, *,
              export_widths: list[float], tam: TAM,
              hops: list[int] | None, dev: torch.device, out: Path
              ) -> dict[str, Any] | None:
    """report.json's ``config`` with what the run resolved: the datasets
    and their folder, the label subsets, the exported widths, lambda..."""
    names = dataset_names(data)
    if setting == 'label-subsets':
        given = [(names[0] if names else None, ckpts[0])]
        datasets = task_list[0].graph.name
    else:
        given = list(zip(names or [None] * len(ckpts), ckpts))
        datasets = ','.join(t.graph.name for t in task_list)
    roots = list(dict.fromkeys(data_root_of(name, data_root, ckpt)
                               for name, ckpt in given))
    return with_resolved(config, {
        'data': datasets, 'tasks': tasks_text(task_list),
        'data_root': roots[0] if len(roots) == 1 else roots,
        'width': ','.join(f'{w:g}' for w in export_widths),
        'lambda_': tam.weight,
        'fanout': None if hops is None else ','.join(map(str, hops)),
        'device': dev.type, 'out': str(out)})


def _write_outputs(model: SlimmableGNN, spec: SlimmableSpec,
                   task_list: list[Task], ckpts: list[Checkpoint],
                   teacher_models: list[Any],
                   teacher_tasks: list[TeacherTask],
                   graphs: Amalgamation, settings: AmalgamateSettings, *,
                   tam: TAM, setting: str, training: dict[str, Any],
                   selection: str, export_widths: list[float],
                   dev: torch.device) -> AmalgamationReport:
    """Score, time and export the trained student next to its teachers;
    write the files and the report, as the resolved ``settings`` say.
    ``graphs`` gives the student's logits on each whole graph and the
    graph latency and the ONNX check run on."""
    out, export = Path(settings.outputs.out), settings.outputs.export
    latency = settings.outputs.latency and measuring()
    with staged_output(out) as stage:
        files: dict[str, Any] = {}
        teacher_entries = []
        for ckpt, m, t, tt in zip(ckpts, teacher_models, task_list,
                                  teacher_tasks):
            entry = ModelEntry(
                role='teacher', spec=ckpt.spec.to_dict(),
                parameters=count_parameters(m),
                test_accuracy=task_accuracy(tt.output.logits, t),
                file=str(ckpt.path), file_bytes=ckpt.path.stat().st_size)
            if latency:
                x, edge_index = graphs.measured_on(t.graph)
                entry.latency.update(torch_figures(m, x.to(dev),
                                                   edge_index.to(dev)))
            teacher_entries.append(entry)
        results = []
        onnx_files = []
        model.eval()
        for width in spec.widths:
            for task, tt in zip(task_list, teacher_tasks):
                g = task.graph
                with torch.no_grad():
                    logits = graphs.logits(model, g, task.head,
                                           width)[:, task.columns]
                plain = TaskSlice(model.submodel(g.num_features, task.head,
                                                 width),
                                  task.start, task.stop)
                row: dict[str, Any] = {
                    'task': task.name, 'width': width,
                    'hidden': spec.hidden_at(width),
                    'parameters': count_parameters(plain),
                    'test_accuracy': task_accuracy(logits, task),
                    'agreement': agreement(logits, tt.target,
                                           report_nodes(g)),
                    'latency': {}, 'onnx': None, 'onnx_max_abs_diff': None,
                    'onnx_parity': {}}
                x, edge_index = graphs.measured_on(g)
                if latency:
                    row['latency'].update(torch_figures(
                        plain.to(dev), x.to(dev), edge_index.to(dev)))
                if export and width in export_widths:
                    onnx_dir = stage / 'onnx'
                    onnx_dir.mkdir(exist_ok=True)
                    name = f'{task.name}-w{width:g}.onnx'
                    parity = export_onnx(plain, x, edge_index,
                                         onnx_dir / name)
                    row['onnx'] = str(out / 'onnx' / name)
                    row['onnx_max_abs_diff'] = parity.max_abs_diff
                    row['onnx_parity'] = parity.cases
                    onnx_files.append(row['onnx'])
                    if latency:
                        row['latency']['onnxruntime-cpu'] = onnx_latency(
                            onnx_dir / name, x, edge_index).to_dict()
                results.append(row)
        union = _union_accuracy(model, task_list, graphs.logits) \
            if setting == 'label-subsets' else []
        if export:
            _save_student(model, task_list, stage / 'student.safetensors')
            files['safetensors'] = str(out / 'student.safetensors')
            files['onnx'] = onnx_files
        files['report_json'] = str(out / 'report.json')
        files['report_md'] = str(out / 'report.md')
        report = AmalgamationReport(
            command=settings.outputs.command,
            setting=setting, tasks=[_task_dict(t) for t in task_list],
            teachers=teacher_entries,
            student={'spec': asdict(spec), 'widths': spec.widths,
                     'parameters': count_parameters(model)},
            results=results, union=union,
            loss={'soft': tam.soft, 'topology': tam.topology,
                  'lambda': tam.weight},
            selection=selection, training=training,
            seed=settings.training.seed, device=str(dev),
            versions=versions(), files=files,
            config=settings.outputs.config or {},
            gates=accuracy_gates(
                [(f"{r['task']} w{r['width']:g}", r['test_accuracy'],
                  teacher.test_accuracy)
                 for r in results
                 for task, teacher in zip(task_list, teacher_entries)
                 if task.name == r['task'] and (export_widths is None or
                                                r['width'] in export_widths)],
                settings.gates.min_accuracy,
                settings.gates.max_accuracy_drop))
        report_files(report, stage, out, files, 'widths.png',
                     plots.amalgamation_widths)
    return report


def _save_student(model: SlimmableGNN, tasks: list[Task], path: Path,
                  extra: dict[str, str] | None = None) -> None:
    """``student.safetensors``: every width and head, the spec and the
    tasks (and ``extra`` metadata)."""
    save_slimmable(model, path, extra={'gnncompress.tasks': json.dumps(
        [_task_dict(t) for t in tasks]), **(extra or {})})


def _task_dict(task: Task) -> dict[str, Any]:
    g = task.graph
    return {'name': task.name, 'data': g.name, 'classes': task.classes,
            'head': task.head, 'columns': [task.start, task.stop],
            'nodes': g.num_nodes, 'edges': int(g.edge_index.size(1)),
            'features': g.num_features, 'split': g.split}


@torch.no_grad()
def _union_accuracy(model: SlimmableGNN, tasks: Sequence[Task],
                    logits_of: Logits) -> list[dict[str, Any]]:
    """Label subsets: the union head's argmax over all tasks' classes, on
    the test nodes whose label is in one of them; multi-label: the union
    head's micro-F1 over all tasks' label columns on the test nodes."""
    graph = tasks[0].graph
    labels = torch.tensor([c for t in tasks for c in t.classes],
                          device=graph.y.device)
    if graph.multilabel:
        return [{'width': width, 'test_accuracy': micro_f1(
            logits_of(model, graph, 0, width), graph.y[:, labels],
            graph.test_mask)} for width in model.spec.widths]
    mask = graph.test_mask & torch.isin(graph.y, labels)
    rows = []
    for width in model.spec.widths:
        logits = logits_of(model, graph, 0, width)
        predicted = labels[logits.argmax(-1)]
        acc = float((predicted[mask] == graph.y[mask]).float().mean()) \
            if int(mask.sum()) else float('nan')
        rows.append({'width': width, 'test_accuracy': acc})
    return rows
