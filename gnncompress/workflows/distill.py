"""`gnncompress distill`: one teacher into a smaller student."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gnncompress.checkpoints.cards import card_path
from gnncompress.checkpoints.teachers import (
    MODULE_PATH,
    load_checkpoint,
    module_checkpoint,
    user_teacher,
)
from gnncompress.core import out_folder as outputs
from gnncompress.core.catalogue import BASIC_GNN_ARCHS
from gnncompress.core.defaults import DEFAULT_RATIO
from gnncompress.core.errors import ArchitectureError, GnnCompressError
from gnncompress.core.metrics import accuracy
from gnncompress.core.options import (
    check_checkpointing,
    check_distill_method,
    check_ratio,
    check_training,
)
from gnncompress.core.timing import phase
from gnncompress.models import build_model
from gnncompress.outputs.report import Report
from gnncompress.tasks.datasets import check_split
from gnncompress.training import ranks as process_ranks
from gnncompress.training.train import fit, forward_frozen, test_score
from gnncompress.workflows.auto import (
    ALONE,
    choose,
    default_method,
    refuse_for_auto,
    train_candidate,
)
from gnncompress.workflows.distributed import (
    check_batches,
    launch,
    one_at_a_time,
    several_processes,
    under_torchrun,
)
from gnncompress.workflows.inputs import (
    check_fits,
    check_task,
    no_cloud_options,
    resolve_data,
    resolved_config,
)
from gnncompress.workflows.results import (
    describe_training,
    distill_outputs,
    file_bytes,
    trained_alone,
)
from gnncompress.workflows.runs import (
    check_writable,
    finish_checkpoint,
    kept_on_failure,
    resolve_device,
    run_inputs,
    seed_everything,
    timed_command,
    training_checkpoint,
)
from gnncompress.workflows.settings import DistillSettings
from gnncompress.workflows.students import (
    build_method,
    flat_teacher_note,
    minibatch_options,
    student_spec,
    with_student_inputs,
)
from gnncompress.workflows.teacher_features import pick_features


@DistillSettings.signed(Report)
def distill(teacher: str | Path | torch.nn.Module | DistillSettings,
            **options: Any) -> Report:
    """Distill ``teacher`` into a smaller student and write
    ``student.safetensors``, ``student.onnx``, ``report.json`` and
    ``report.md`` to ``out``. ``student`` defaults to the method's preferred
    student (an MLP for GLNN) or GCN; ``weight`` and ``label_weight`` to the
    method's own defaults. The gates ``min_accuracy`` (percent) and
    ``max_accuracy_drop`` (points below the teacher) are checked after the
    files are written; failures are in ``report.gates``. ``layers``
    defaults to 2. A DGCNN teacher distills into a DGCNN student on point
    clouds (:func:`gnncompress.workflows.point_clouds.distill`; ``hidden`` may
    list
    one width per layer, ``k``, ``emb``, ``head``, ``points``,
    ``augment`` and ``batch_size`` apply there alone).

    ``checkpoint_every`` K saves the distillation every K epochs to
    ``checkpoint_dir`` (default ``out/.gnncompress-checkpoint``, removed
    when the run succeeds); ``resume`` (that folder, or ``out``) continues
    an interrupted run, which must be given the same options. When the loss
    stops being finite, the best student so far is written to
    ``out/student.safetensors`` before the :class:`TrainingError`.

    On a node-classification graph, ``batch_size`` B trains on sampled
    subgraphs of B seed nodes with ``fanout`` neighbours per hop
    (``'15,10'``; default 15, 10, then 5) and caches the teacher once,
    layer-wise (:func:`gnncompress.workflows.distill_sampled.distill`).

    ``nproc`` N trains in N processes with DistributedDataParallel, as
    does running under ``torchrun``
    (:mod:`gnncompress.workflows.distributed`): on one node-classification
    graph with ``batch_size`` only; batches of whole graphs or clouds
    (default size or ``batch_size``) are shared between the processes.
    Rank 0 writes the outputs and the other torchrun ranks return None.

    ``teacher`` may also be a trained ``torch.nn.Module`` called as
    ``module(x, edge_index)``: the student is sized from its weights, and
    the methods that read hidden features (FitNet, AT, LSP, GSP, G-CRD,
    ABKD) take them from forward hooks on its message-passing layers
    (:mod:`gnncompress.models.hooked`); KD and GLNN need its logits only.
    ``split`` (``'default'`` or ``'glnn'``) defaults to the split on the
    teacher's card (a GLNN split with the teacher's seed).

    ``teacher_class`` (``'mypkg.models:Net'``) with ``teacher_args`` builds
    that module from the user's own class (this imports and runs their
    code) and loads the file ``teacher`` into it, weights-only.

    The report's latency figures take about ``latency_budget_s`` seconds
    in all (at least 3 timed runs each); ``latency=False`` leaves them out.
    ``report.timings`` says where the run's wall time went.

    With no ``method`` (None), ``auto`` runs where it can, and ``kd``
    where it cannot (several processes, sampled subgraphs, training
    checkpoints, point clouds) or where one method's options are given;
    the report's notes say why (:func:`~gnncompress.workflows.auto.
    default_method`).

    ``method='auto'`` trains the candidates of
    :mod:`gnncompress.workflows.auto` (each with its default weights, the
    student alone among them) within ``budget_s`` seconds (default about
    10x the first candidate's training) and keeps the best on validation;
    ``report.auto`` lists every candidate.

    ``teacher`` may also be a
    :class:`~gnncompress.workflows.settings.DistillSettings` that holds
    every option (then no keyword follows); the keywords are its options
    by their flat names, and an unknown one is a one-line
    :class:`GnnCompressError`."""
    return run_distill(DistillSettings.given(teacher, options))



@timed_command
@outputs.one_run
def run_distill(settings: DistillSettings) -> Report | None:
    """:func:`distill` on its settings. Once resolved (the output folder,
    the method's label weight, then report.json's config), the settings
    travel on to the branch that trains: point clouds, sampled subgraphs
    or full graphs."""
    s, batching = settings, settings.batching
    teacher = s.teacher
    method_note = None
    if s.method is None:  # auto where it can run, else kd (and why)
        method, method_note = default_method(
            s.options(), torchrun=several_processes())
        s = s.with_options(method=method)
    if isinstance(teacher, torch.nn.Module) or s.teacher_class is not None:
        if batching.nproc is not None or batching.batch_size is not None \
                or batching.fanout is not None or several_processes():
            raise GnnCompressError(
                'A teacher module or --teacher-class trains full-graph in '
                'one process: drop --batch-size, --fanout and --nproc (or '
                'run it in one process, without torchrun)')
    elif s.method == 'auto' and (batching.nproc is not None
                                 or several_processes()):
        # Each rank would choose within its own time budget, and ranks
        # that choose differently wait forever in each other's collectives.
        raise GnnCompressError(
            '--method auto trains in one process: drop --nproc (or run '
            'it in one process, without torchrun), or pick a method, e.g. '
            '--method kd')
    elif batching.nproc is not None or under_torchrun():
        return launch(run_distill, s)
    t = s.training
    check_training(lr=t.lr, weight_decay=t.weight_decay, seed=t.seed,
                   weight=s.weight, label_weight=s.label_weight,
                   out=s.outputs.out)
    check_ratio(s.model.ratio)
    check_distill_method(s.method)
    auto = s.method == 'auto'
    if auto:
        refuse_for_auto(**s.options())
    elif s.budget_s is not None:
        raise GnnCompressError('--budget-s is the time budget of --method '
                               'auto: drop it, or add --method auto')
    c = s.checkpointing
    check_checkpointing(c.checkpoint_every, c.checkpoint_dir, c.resume)
    if s.split is not None:
        check_split(s.split)
    module = teacher if isinstance(teacher, torch.nn.Module) else None
    if s.teacher_class is not None:
        if module is not None:
            raise GnnCompressError('teacher_class names the class of a '
                                   'checkpoint file: pass the file')
        module = user_teacher(teacher, s.teacher_class, s.teacher_args)
    elif s.teacher_args:
        raise GnnCompressError('--teacher-args are the arguments of the '
                               'class --teacher-class names: add '
                               '--teacher-class module:Class, or drop '
                               '--teacher-args')
    teacher = Path(teacher) if not isinstance(teacher, torch.nn.Module) \
        else MODULE_PATH
    with phase('load'):
        ckpt = module_checkpoint(module, s.overrides, teacher) \
            if module is not None \
            else load_checkpoint(teacher, s.overrides)
    if auto and method_note is None and ckpt.spec.arch == 'dgcnn' \
            and settings.method is None:
        auto = False
        method, method_note = default_method({}, point_cloud=True)
        s = s.with_options(method=method)
    if method_note is not None:
        ckpt.notes['method'] = method_note
    distiller = build_method('kd' if auto else s.method, s.method_options)
    requested_student = s.model.student
    student = requested_student or distiller.preferred_student or 'gcn'
    out = Path(s.outputs.out) if s.outputs.out is not None else \
        Path('gnncompress-out') / \
        f'{teacher.stem}-{"auto" if auto else distiller.name}'
    s = s.with_options(out=out, label_weight=distiller.default_label_weight
                       if s.label_weight is None else s.label_weight)
    t = s.training
    dev = resolve_device(s.device)
    check_writable(out)
    outputs.claim(out, run_inputs(teacher, card_path(teacher), s.data))
    # What identifies the run in a training checkpoint, beside the data and
    # the student.
    identity = dict(teacher=str(teacher.resolve()),
                    teacher_bytes=file_bytes(teacher), method=distiller.name,
                    method_options=s.method_options or {}, weight=s.weight,
                    label_weight=s.label_weight, epochs=t.epochs, lr=t.lr,
                    weight_decay=t.weight_decay, patience=t.patience,
                    seed=t.seed, device=dev.type)
    if ckpt.spec.arch == 'dgcnn':
        from gnncompress.workflows import point_clouds as pointcloud
        if auto:
            raise GnnCompressError('--method auto does not train point '
                                   'clouds yet: pick a method, e.g. '
                                   '--method kd')
        if s.teacher_onnx:
            raise GnnCompressError('--teacher-onnx is not supported for '
                                   'DGCNN teachers yet: drop it')
        if distiller.adds_inputs:
            raise GnnCompressError(f"'{distiller.name}' adds node features "
                                   f'for a node classifier, not for point '
                                   f'clouds: drop it from --method')
        return pointcloud.distill(
            s, teacher=teacher, ckpt=ckpt, distiller=distiller, dev=dev,
            checkpoint=functools.partial(
                training_checkpoint, out, c.checkpoint_every,
                c.checkpoint_dir, c.resume, **identity))
    if isinstance(s.model.hidden, (list, tuple)):
        raise GnnCompressError('--hidden takes one width (per-layer widths '
                               'are for DGCNN students)')
    no_cloud_options(**dataclasses.asdict(s.clouds))
    if student == 'dgcnn':
        raise ArchitectureError('A DGCNN student needs a DGCNN teacher on '
                                'point clouds: pick another --student')
    layers = 2 if s.model.layers is None else s.model.layers
    with one_at_a_time(), phase('load'):
        graph = resolve_data(s.data, s.data_root, ckpt, t.seed,
                             normalize=s.normalize_features, split=s.split)
    check_batches([graph], batching.batch_size)
    # --batch-size: whole graphs per step on a dataset of many graphs, else
    # sampled subgraphs of B seed nodes
    per_step = graphs_per_step(graph, batching.batch_size, batching.fanout)
    hops = None if per_step is not None or (
        batching.batch_size is None and batching.fanout is None) else \
        minibatch_options(distiller, batching.batch_size, batching.fanout,
                          layers)
    check_fits(ckpt.spec, graph, 'teacher')
    check_task(ckpt.spec, graph, distiller)
    if graph.batch is not None and student not in BASIC_GNN_ARCHS:
        chosen = '' if requested_student else \
            f' (the student {distiller.name} prefers)'
        raise ArchitectureError(
            f"A graph-classification student pools message-passing layers "
            f"({', '.join(BASIC_GNN_ARCHS)}); '{student}'{chosen} has none: "
            f'pass --student gin or another of those')
    feature_note = None
    if s.normalize_features is None and not ckpt.card and hops is None:
        with phase('teacher'):
            graph, feature_note = pick_features(ckpt.build(), graph, dev)
    shape = s.model
    # The student's own input: x and the columns the method adds (NOSMOG's
    # position features), computed once; the teacher keeps x.
    student_graph, _ = with_student_inputs(distiller, graph, student, t.seed,
                                           sampled=hops is not None)
    s_spec = student_spec(ckpt.spec, student_graph, arch=student,
                          hidden=shape.hidden, layers=layers,
                          heads=shape.heads, ratio=shape.ratio,
                          readout=ckpt.spec.readout)
    s = s.with_options(config=resolved_config(
        s.outputs.config, ckpt=ckpt, graph=graph, s_spec=s_spec, out=out,
        dev=dev, data=s.data, data_root=s.data_root,
        ratio=shape.ratio if shape.ratio is not None or
        shape.hidden is not None else DEFAULT_RATIO,
        weight=distiller.default_weight if s.weight is None else s.weight,
        label_weight=s.label_weight))
    saver = training_checkpoint(
        out, c.checkpoint_every, c.checkpoint_dir, c.resume, **identity,
        data=graph.name, nodes=graph.num_nodes,
        edges=int(graph.edge_index.size(1)), split=graph.split,
        student=s_spec.to_dict(),
        **({} if hops is None else {'batch_size': batching.batch_size,
                                    'fanout': hops}),
        **({} if per_step is None else {'batch_size': per_step}))
    if hops is not None:
        from gnncompress.workflows import distill_sampled as minibatch
        report = minibatch.distill(
            s, teacher=teacher, ckpt=ckpt, graph=graph, s_spec=s_spec,
            distiller=distiller, fanout=hops, dev=dev, checkpoint=saver)
        finish_checkpoint(saver, out)
        return report
    report = _full_graph(s, teacher=teacher, ckpt=ckpt, graph=graph,
                         student_graph=student_graph, s_spec=s_spec,
                         distiller=distiller, dev=dev, per_step=per_step,
                         saver=saver, feature_note=feature_note)
    if report is not None:  # rank 0 of a process group, or the only one
        finish_checkpoint(saver, out)
    return report


def _full_graph(s: DistillSettings, *, teacher: Path, ckpt: Any,
                graph: Any, student_graph: Any, s_spec: Any, distiller: Any,
                dev: torch.device, per_step: int | None, saver: Any,
                feature_note: str | None) -> Report | None:
    """The full-graph branch of :func:`run_distill` (whole graphs per step
    with ``per_step``): the teacher's outputs computed once on ``graph``,
    the student trained on them with ``student_graph``'s features (``x``,
    then any the method adds), or the candidates of ``--method auto``;
    the outputs written."""
    t, out = s.training, Path(s.outputs.out)
    g = graph.to(dev)
    gs = g if student_graph is graph else student_graph.to(dev)
    ranks = process_ranks.current()  # batches of graphs in a process group
    with phase('teacher'):
        teacher_model = ckpt.build().to(dev)
        teacher_out = forward_frozen(teacher_model, g)  # once for the run
        teacher_acc = accuracy(teacher_out.logits, g.y, g.test_mask)
        flat_note = flat_teacher_note(teacher_out.logits, g.multilabel)
    train_args = dict(epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                      patience=t.patience, progress=t.progress,
                      batch_size=per_step)

    alone_entry, alone = None, None
    if s.baseline:
        with phase('baseline'):
            alone_entry, alone = trained_alone(
                s_spec, t.seed, dev, lambda m: fit(
                    m, gs, label_weight=1.0, desc='student alone',
                    **train_args))

    choice = None
    if s.method == 'auto':
        with phase('train'):
            choice = choose(
                lambda name: train_candidate(name, s_spec, g, teacher_out,
                                             t.seed, dev, train_args),
                budget_s=s.budget_s)
        model = choice.model
        result = replace(choice.result, test_accuracy=test_score(model, gs))
        distiller = build_method('kd' if choice.method == ALONE
                                 else choice.method, None)
        s = s.with_options(weight=0.0, label_weight=1.0) \
            if choice.method == ALONE else \
            s.with_options(weight=None,
                           label_weight=distiller.default_label_weight)
    else:
        seed_everything(t.seed)
        model = build_model(s_spec).to(dev)
        with kept_on_failure(saver, model, s_spec, out, distiller.name,
                             graph.name, ranks.rank), phase('train'):
            result = fit(model, gs, method=distiller,
                         teacher_outputs=[teacher_out],
                         label_weight=s.label_weight, weight=s.weight,
                         desc=f'distill {distiller.name}', checkpoint=saver,
                         **train_args)
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    return distill_outputs(
        s, teacher=teacher, ckpt=ckpt, teacher_model=teacher_model,
        teacher_acc=teacher_acc, model=model, s_spec=s_spec,
        distiller=distiller, graph=graph, result=result,
        alone_entry=alone_entry, alone_model=alone,
        inputs=(g.x, g.edge_index, g.batch),
        position=gs.x[:, g.num_features:] if gs is not g else None,
        training=describe_training(result, epochs=t.epochs, lr=t.lr,
                                   weight_decay=t.weight_decay,
                                   patience=t.patience, **ranks.described()),
        notes=[n for n in (feature_note, choice and choice.note(),
                           flat_note) if n],
        dev=dev, auto=choice)


def graphs_per_step(graph: Any, batch_size: int | None,
                    fanout: str | list[int] | None) -> int | None:
    """On a dataset of many graphs (graph classification, or node
    classification over several graphs), ``--batch-size`` counts whole
    graphs per step; None elsewhere (sampled subgraphs of one graph) or
    when it is not given."""
    if graph.batch is None and graph.node_graph is None:
        return None
    kind = 'graph-classification' if graph.batch is not None \
        else 'several-graph'
    if fanout is not None:
        raise GnnCompressError(
            f'--fanout samples neighbours in one large graph; on a {kind} '
            f'dataset --batch-size counts whole graphs per step: drop '
            f'--fanout')
    if batch_size is not None and batch_size < 1:
        raise GnnCompressError(f'--batch-size must be at least 1 graph '
                               f'(got {batch_size})')
    return batch_size
