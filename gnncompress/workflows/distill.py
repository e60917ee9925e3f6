"""`gnncompress distill`: one teacher into a smaller student."""
from __future__ import annotations

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
    check_distill_method,
    check_ratio,
    check_training,
)
from gnncompress.core.timing import phase
from gnncompress.models import build_model
from gnncompress.outputs.latency import REPORT_BUDGET_S
from gnncompress.outputs.report import Report
from gnncompress.tasks.datasets import check_split
from gnncompress.training import ranks as process_ranks
from gnncompress.training.train import fit, forward_frozen, test_score
from gnncompress.workflows.auto import (
    ALONE,
    choose,
    refuse_for_auto,
    train_candidate,
)
from gnncompress.workflows.distributed import (
    launch,
    one_at_a_time,
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
from gnncompress.workflows.students import (
    build_method,
    minibatch_options,
    student_spec,
)
from gnncompress.workflows.teacher_features import pick_features


@timed_command
@outputs.one_run
def distill(teacher: str | Path | torch.nn.Module, *,
            data: str | Path | None = None,
            data_root: str | Path | None = None, method: str = 'kd',
            method_options: dict[str, Any] | None = None,
            student: str | None = None,
            hidden: int | list[int] | None = None,
            layers: int | None = None, heads: int = 1,
            ratio: float | None = None,
            epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
            label_weight: float | None = None, weight: float | None = None,
            patience: int | None = 100, seed: int = 0, device: str = 'auto',
            out: str | Path | None = None, baseline: bool = False,
            overrides: dict[str, Any] | None = None, export: bool = True,
            min_accuracy: float | None = None,
            max_accuracy_drop: float | None = None,
            progress: bool = True, command: str = '',
            config: dict[str, Any] | None = None,
            checkpoint_every: int | None = None,
            checkpoint_dir: str | Path | None = None,
            resume: str | Path | None = None, k: int | None = None,
            emb: int | None = None, head: list[int] | None = None,
            points: int | None = None,
            augment: str | list[str] | None = None,
            batch_size: int | None = None,
            fanout: str | list[int] | None = None,
            nproc: int | None = None,
            normalize_features: bool | None = None,
            split: str | None = None,
            teacher_onnx: bool = False,
            teacher_class: str | None = None,
            teacher_args: dict[str, Any] | None = None,
            latency: bool = True,
            latency_budget_s: float = REPORT_BUDGET_S,
            budget_s: float | None = None) -> Report:
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

    ``nproc`` N (with ``batch_size``) trains in N processes with
    DistributedDataParallel, as does running under ``torchrun``
    (:mod:`gnncompress.workflows.distributed`); rank 0 writes the outputs and
    the
    other torchrun ranks return None.

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
    in all (at least 5 timed runs each); ``latency=False`` leaves them out.
    ``report.timings`` says where the run's wall time went.

    ``method='auto'`` trains the candidates of
    :mod:`gnncompress.workflows.auto` (each with its default weights, the
    student alone among them) within ``budget_s`` seconds (default about
    10x the first candidate's training) and keeps the best on validation;
    ``report.auto`` lists every candidate."""
    if isinstance(teacher, torch.nn.Module) or teacher_class is not None:
        if nproc is not None or batch_size is not None or \
                fanout is not None or under_torchrun():
            raise GnnCompressError(
                'A teacher module or --teacher-class trains full-graph in '
                'one process: drop --batch-size, --fanout and --nproc')
    elif nproc is not None or under_torchrun():
        return launch(distill, dict(locals()))
    check_training(lr=lr, weight_decay=weight_decay, seed=seed,
                   weight=weight, label_weight=label_weight, out=out)
    check_ratio(ratio)
    check_distill_method(method)
    auto = method == 'auto'
    if auto:
        refuse_for_auto(batch_size=batch_size, fanout=fanout,
                        checkpoint_every=checkpoint_every, resume=resume,
                        method_options=method_options, weight=weight,
                        label_weight=label_weight, budget_s=budget_s)
    elif budget_s is not None:
        raise GnnCompressError('--budget-s is the time budget of --method '
                               'auto: drop it, or add --method auto')
    if split is not None:
        check_split(split)
    module = teacher if isinstance(teacher, torch.nn.Module) else None
    if teacher_class is not None:
        if module is not None:
            raise GnnCompressError('teacher_class names the class of a '
                                   'checkpoint file: pass the file')
        module = user_teacher(teacher, teacher_class, teacher_args)
    teacher = Path(teacher) if not isinstance(teacher, torch.nn.Module) \
        else MODULE_PATH
    distiller = build_method('kd' if auto else method, method_options)
    requested_student = student
    student = student or distiller.preferred_student or 'gcn'
    if label_weight is None:
        label_weight = distiller.default_label_weight
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / \
        f'{teacher.stem}-{"auto" if auto else distiller.name}'
    dev = resolve_device(device)
    check_writable(out)
    outputs.claim(out, run_inputs(teacher, card_path(teacher), data))
    with phase('load'):
        ckpt = module_checkpoint(module, overrides, teacher) \
            if module is not None \
            else load_checkpoint(teacher, overrides)
    # What identifies the run in a training checkpoint, beside the data and
    # the student.
    run = dict(teacher=str(teacher.resolve()),
               teacher_bytes=file_bytes(teacher), method=distiller.name,
               method_options=method_options or {}, weight=weight,
               label_weight=label_weight, epochs=epochs, lr=lr,
               weight_decay=weight_decay, patience=patience, seed=seed,
               device=dev.type)
    if ckpt.spec.arch == 'dgcnn':
        from gnncompress.workflows import point_clouds as pointcloud
        if auto:
            raise GnnCompressError('--method auto does not train point '
                                   'clouds yet: pick a method, e.g. '
                                   '--method kd')
        if teacher_onnx:
            raise GnnCompressError('--teacher-onnx is not supported for '
                                   'DGCNN teachers yet: drop it')
        return pointcloud.distill(
            teacher, ckpt=ckpt, data=data, data_root=data_root,
            distiller=distiller, student=requested_student or 'dgcnn',
            hidden=hidden, layers=layers, k=k, emb=emb, head=head,
            points=points, augment=augment,
            batch_size=batch_size or pointcloud.BATCH_SIZE, epochs=epochs,
            lr=lr, weight_decay=weight_decay, label_weight=label_weight,
            weight=weight, patience=patience, seed=seed, dev=dev, out=out,
            baseline=baseline, export=export, min_accuracy=min_accuracy,
            max_accuracy_drop=max_accuracy_drop, progress=progress,
            command=command, config=config,
            method_options=method_options or {},
            checkpoint=functools.partial(
                training_checkpoint, out, checkpoint_every, checkpoint_dir,
                resume, **run))
    if isinstance(hidden, (list, tuple)):
        raise GnnCompressError('--hidden takes one width (per-layer widths '
                               'are for DGCNN students)')
    no_cloud_options(k=k, emb=emb, head=head, points=points,
                      augment=augment)
    if student == 'dgcnn':
        raise ArchitectureError('A DGCNN student needs a DGCNN teacher on '
                                'point clouds: pick another --student')
    layers = 2 if layers is None else layers
    with one_at_a_time(), phase('load'):
        graph = resolve_data(data, data_root, ckpt, seed,
                             normalize=normalize_features, split=split)
    # --batch-size: whole graphs per step on a dataset of many graphs, else
    # sampled subgraphs of B seed nodes
    per_step = graphs_per_step(graph, batch_size, fanout)
    hops = None if per_step is not None or (
        batch_size is None and fanout is None) else \
        minibatch_options(distiller, batch_size, fanout, layers)
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
    if normalize_features is None and not ckpt.card and hops is None:
        with phase('teacher'):
            graph, feature_note = pick_features(ckpt.build(), graph, dev)
    s_spec = student_spec(ckpt.spec, graph, arch=student, hidden=hidden,
                          layers=layers, heads=heads, ratio=ratio,
                          readout=ckpt.spec.readout)
    config = resolved_config(
        config, ckpt=ckpt, graph=graph, s_spec=s_spec, out=out, dev=dev,
        data=data, data_root=data_root,
        ratio=ratio if ratio is not None or hidden is not None
        else DEFAULT_RATIO,
        weight=distiller.default_weight if weight is None else weight,
        label_weight=label_weight)
    saver = training_checkpoint(
        out, checkpoint_every, checkpoint_dir, resume, **run,
        data=graph.name, nodes=graph.num_nodes,
        edges=int(graph.edge_index.size(1)), split=graph.split,
        student=s_spec.to_dict(),
        **({} if hops is None else {'batch_size': batch_size,
                                    'fanout': hops}),
        **({} if per_step is None else {'batch_size': per_step}))
    if hops is not None:
        from gnncompress.workflows import distill_sampled as minibatch
        report = minibatch.distill(
            teacher, ckpt=ckpt, graph=graph, s_spec=s_spec,
            distiller=distiller, batch_size=batch_size, fanout=hops,
            epochs=epochs, lr=lr, weight_decay=weight_decay,
            label_weight=label_weight, weight=weight, patience=patience,
            seed=seed, dev=dev, out=out, baseline=baseline, export=export,
            min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop,
            progress=progress, command=command, config=config,
            method_options=method_options or {}, teacher_onnx=teacher_onnx,
            checkpoint=saver)
        finish_checkpoint(saver, out)
        return report
    g = graph.to(dev)
    ranks = process_ranks.current()  # batches of graphs in a process group

    with phase('teacher'):
        teacher_model = ckpt.build().to(dev)
        teacher_out = forward_frozen(teacher_model, g)  # once for the run
        teacher_acc = accuracy(teacher_out.logits, g.y, g.test_mask)
    train_args = dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                      patience=patience, progress=progress,
                      batch_size=per_step)

    alone_entry, alone = None, None
    if baseline:
        with phase('baseline'):
            alone_entry, alone = trained_alone(
                s_spec, seed, dev, lambda m: fit(
                    m, g, label_weight=1.0, desc='student alone',
                    **train_args))

    choice = None
    if auto:
        with phase('train'):
            choice = choose(
                lambda name: train_candidate(name, s_spec, g, teacher_out,
                                             seed, dev, train_args),
                budget_s=budget_s)
        model = choice.model
        result = replace(choice.result, test_accuracy=test_score(model, g))
        distiller = build_method('kd' if choice.method == ALONE
                                 else choice.method, None)
        weight, label_weight = (0.0, 1.0) if choice.method == ALONE \
            else (None, distiller.default_label_weight)
    else:
        seed_everything(seed)
        model = build_model(s_spec).to(dev)
        with kept_on_failure(saver, model, s_spec, out, distiller.name,
                             graph.name, ranks.rank), phase('train'):
            result = fit(model, g, method=distiller,
                         teacher_outputs=[teacher_out],
                         label_weight=label_weight, weight=weight,
                         desc=f'distill {distiller.name}', checkpoint=saver,
                         **train_args)
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    report = distill_outputs(
        out, teacher=teacher, ckpt=ckpt, teacher_model=teacher_model,
        teacher_acc=teacher_acc, model=model, s_spec=s_spec,
        distiller=distiller, graph=graph, result=result,
        alone_entry=alone_entry, alone_model=alone,
        inputs=(g.x, g.edge_index, g.batch),
        training=describe_training(result, epochs=epochs, lr=lr,
                                   weight_decay=weight_decay,
                                   patience=patience, **ranks.described()),
        notes=[n for n in (feature_note, choice and choice.note()) if n],
        export=export,
        dev=dev, weight=weight,
        label_weight=label_weight, method_options=method_options,
        command=command, config=config, seed=seed,
        min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop,
        teacher_onnx=teacher_onnx, auto=choice)
    finish_checkpoint(saver, out)
    return report


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
