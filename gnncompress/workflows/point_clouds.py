"""Point-cloud classification with DGCNN: training augmentations, the
training loop for one student (its teacher runs on every batch), overall
and mean class accuracy, ONNX export with a dynamic number of points, and
the ``train-teacher`` / ``distill`` flows for point clouds.

The teacher's outputs are not cached over the dataset as for static
graphs: augmented batches differ every step, and DGCNN's hidden features of
all ModelNet10 clouds (4,899 x 1,024 points x 512 channels) would take
about 10 GB. The teacher runs on each batch without gradients instead.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnncompress.core.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
)
from gnncompress.core.graph import Graph
from gnncompress.core.out_folder import atomic_path
from gnncompress.models import ArchSpec
from gnncompress.models.dgcnn import DGCNN
from gnncompress.outputs.onnx import run_export
from gnncompress.outputs.parity import (
    Parity,
    onnx_session,
    require_parity,
    stress_session,
)
from gnncompress.tasks.cloud_training import augment, evaluate, parse_augment
from gnncompress.tasks.point_clouds import cloud_points, is_clouds, load_clouds
from gnncompress.training import ranks as process_ranks

BATCH_SIZE = 32        # clouds per step (the DGCNN paper's)


TEACHER_WIDTHS = (64, 64, 128, 256)   # the DGCNN paper's EdgeConvs


TOLERANCE = 1e-4


# Training ----------------------------------------------------------------

def fit_clouds(student: nn.Module, graph: Graph, *,
               teacher: nn.Module | None = None, method=None,
               epochs: int = 200, lr: float = 0.001,
               weight_decay: float = 1e-4, label_weight: float = 1.0,
               weight: float | None = None, patience: int | None = None,
               progress: bool = True, desc: str = 'train',
               batch_size: int = BATCH_SIZE,
               augmentations: Sequence[str] = (), seed: int = 0,
               checkpoint: Any = None):
    """Train a DGCNN ``student`` on the training clouds of ``graph`` (Adam
    with a cosine learning-rate schedule down to ``lr / 100``, as the
    DGCNN authors' code anneals) and leave it at its best validation
    epoch (overall accuracy). With a ``method``, the frozen ``teacher``
    runs on the same augmented batch; the loss is ``label_weight * CE +
    weight * method.loss``; ``checkpoint`` saves and resumes the run
    (:class:`gnncompress.training.resume.TrainingCheckpoint`). The one
    training loop, :func:`gnncompress.training.loop.fit`, under
    :class:`~gnncompress.training.regimes.clouds.AugmentedClouds`."""
    from gnncompress.training import loop
    from gnncompress.training.regimes.clouds import AugmentedClouds

    if method is not None and teacher is None:
        raise ValueError('a distillation method needs a teacher')
    regime = AugmentedClouds(
        graph, cloud_points(graph), teacher=teacher,
        edges=method is not None and 'hiddens' in method.requires,
        batch_size=batch_size,
        augment=lambda pos, gen: augment(pos, augmentations, gen),
        score=lambda model, mask: evaluate(model, graph, mask)[0], seed=seed)
    return loop.fit(student, regime, method=method, epochs=epochs, lr=lr,
                    weight_decay=weight_decay, label_weight=label_weight,
                    weight=weight, patience=patience, progress=progress,
                    desc=desc, schedule='cosine', checkpoint=checkpoint)


# Export ----------------------------------------------------------------

class _CloudLogits(nn.Module):
    """The exported graph: ``pos [B, n, 3] -> logits [B, C]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pos: Tensor) -> Tensor:
        return self.model(pos)


def check_clouds(pos: Tensor, k: int, seed: int = 0) -> dict[str, Tensor]:
    """The inputs every DGCNN export is validated on: the export batch,
    more clouds of more points, fewer points, and one cloud of exactly
    ``k`` points (the fewest the kNN search takes)."""
    gen = torch.Generator().manual_seed(seed)
    b, n, c = pos.shape

    def clouds(count: int, points: int) -> Tensor:
        x = torch.randn(count, points, c, generator=gen)
        return x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)

    return {'export clouds': pos, 'more points': clouds(b + 2, 2 * n + 7),
            'fewer points': clouds(2, max(k, n // 2)),
            'k points': clouds(1, k)}


def export_clouds_onnx(model: nn.Module, pos: Tensor, path: Path,
                       tolerance: float = TOLERANCE) -> Parity:
    """Export a DGCNN with dynamic cloud and point counts (the kNN search
    is part of the graph; at least ``k`` points per cloud), then compare
    onnxruntime with PyTorch on :func:`check_clouds`; above ``tolerance``
    the export fails and nothing is written."""
    model = model.to('cpu').eval()
    pos = pos.cpu()
    assert isinstance(model, DGCNN)
    clouds = torch.export.Dim('clouds', min=1)
    points = torch.export.Dim('points', min=max(2, model.k))
    with atomic_path(path) as tmp:
        run_export(_CloudLogits(model), (pos,), tmp, ['pos'],
                   {'pos': {0: clouds, 1: points}})
        # onnxruntime's default settings, then a fixed 8 threads.
        sessions = [onnx_session(tmp), stress_session(tmp)]
        cases = {}
        for name, x in check_clouds(pos, model.k).items():
            with torch.no_grad():
                expected = model(x).numpy()
            cases[name] = 0.0
            for session in sessions:
                got = session.run(None, {'pos': x.numpy()})[0]
                cases[name] = max(cases[name], float('inf')
                                  if got.shape != expected.shape
                                  else float(np.abs(got - expected).max()))
        parity = Parity(cases)
        require_parity(parity, tolerance)
    return parity


# Specs ----------------------------------------------------------------

def _widths(hidden: int | Sequence[int] | None, layers: int | None,
            default: Sequence[int]) -> list[int]:
    if hidden is None:
        return list(default) if layers in (None, len(default)) else \
            [default[-1]] * layers
    if isinstance(hidden, int):
        return [hidden] * (layers or len(default))
    widths = [int(w) for w in hidden]
    if layers not in (None, len(widths)):
        raise ArchitectureError(
            f'--layers {layers} does not match the {len(widths)} widths '
            f"of --hidden {','.join(map(str, widths))}: give one width per "
            f'layer')
    return widths


def dgcnn_spec(graph: Graph, widths: Sequence[int], *, k: int | None = None,
               emb: int | None = None, head: Sequence[int] | None = None,
               dropout: float = 0.5, readout: str | None = None) -> ArchSpec:
    """A DGCNN for ``graph``; ``emb`` and ``head`` default to the DGCNN
    paper's proportions (embedding 4 x the last width, head half and a
    quarter of it: 1024, 512, 256 for the paper's widths)."""
    emb = 4 * widths[-1] if emb is None else emb
    head = [emb // 2, emb // 4] if head is None else list(head)
    return ArchSpec(arch='dgcnn', in_channels=graph.num_features,
                    hidden_channels=widths[-1], num_layers=len(widths),
                    out_channels=graph.num_classes, dropout=dropout,
                    readout=readout or 'max', widths=list(widths),
                    k=20 if k is None else k, emb_channels=emb, head=head)


def student_spec(teacher: ArchSpec, graph: Graph, *,
                 hidden: int | Sequence[int] | None = None,
                 layers: int | None = None, k: int | None = None,
                 emb: int | None = None,
                 head: Sequence[int] | None = None) -> ArchSpec:
    """A DGCNN student: ``hidden`` widths (default: half the teacher's),
    the teacher's ``k`` unless given, embedding and head scaled from the
    teacher's by the ratio of the last widths unless given."""
    t_widths = teacher.widths or []
    widths = _widths(hidden, layers, [max(1, w // 2) for w in t_widths])
    scale = widths[-1] / t_widths[-1]
    emb = max(1, round((teacher.emb_channels or 1024) * scale)) \
        if emb is None else emb
    head = [max(1, round(w * scale)) for w in teacher.head or []] \
        if head is None else head
    from gnncompress.workflows.students import STUDENT_DROPOUT
    return dgcnn_spec(graph, widths, k=teacher.k if k is None else k,
                      emb=emb, head=head, dropout=STUDENT_DROPOUT,
                      readout=teacher.readout)


def _check_points(graph: Graph, k: int) -> None:
    n = graph.split['points']
    if n < k:
        raise DataError(f'The clouds have {n} points, fewer than k={k} '
                        f'neighbours: raise --points or lower --k')


# train-teacher ---------------------------------------------------------------

def train_teacher(data: str | Path, out: str | Path, *,
                  hidden: int | Sequence[int] | None = None,
                  layers: int | None = None, k: int | None = None,
                  emb: int | None = None, head: Sequence[int] | None = None,
                  dropout: float | None = None, readout: str | None = None,
                  data_root: str | Path | None = None, epochs: int = 300,
                  lr: float = 0.001, weight_decay: float = 1e-4,
                  patience: int | None = None, seed: int = 0,
                  device: str = 'auto', progress: bool = True,
                  points: int | None = None,
                  augment: str | Sequence[str] | None = None,
                  batch_size: int = BATCH_SIZE):
    """:func:`gnncompress.api.train_teacher` for a DGCNN on a point-cloud
    dataset; the card also records ``points`` and the augmentations."""
    from gnncompress.models import build_model
    from gnncompress.workflows.runs import (
        check_writable,
        resolve_device,
        seed_everything,
    )
    from gnncompress.workflows.saved_teacher import save_teacher

    out = Path(out)
    if out.suffix not in ('.pt', '.pth'):
        raise GnnCompressError(f'Teacher file {out} must end in .pt or .pth')
    check_writable(out.parent)
    names = parse_augment(augment)
    dev = resolve_device(device)
    graph = load_clouds(data, data_root, seed=seed, points=points)
    spec = dgcnn_spec(graph, _widths(hidden, layers, TEACHER_WIDTHS), k=k,
                      emb=emb, head=head,
                      dropout=0.5 if dropout is None else dropout,
                      readout=readout)
    _check_points(graph, spec.k or 20)
    seed_everything(seed)
    model = build_model(spec).to(dev)
    result = fit_clouds(model, graph.to(dev), epochs=epochs, lr=lr,
                        weight_decay=weight_decay, patience=patience,
                        progress=progress, desc='teacher dgcnn',
                        batch_size=batch_size, augmentations=names,
                        seed=seed)
    _, mean_class = evaluate(model, graph.to(dev), graph.test_mask.to(dev))
    return save_teacher(
        model, spec, out, graph, seed, result, data, data_root,
        test_mean_class_accuracy=mean_class,
        points=graph.split['points'], augment=names)


# distill ----------------------------------------------------------------

def resolve_clouds(data: str | Path | None, data_root: str | Path | None,
                   ckpt: Any, seed: int, points: int | None) -> Graph:
    """``data`` if given, else the dataset (and point count) on the
    teacher's card; the card's ``data_root`` when ``data`` names the
    card's dataset."""
    from gnncompress.workflows.inputs import card_data_root, dataset_of

    card = ckpt.card
    if points is None:
        points = card.get('points')
    if data is None and not card.get('data'):
        raise DataError(
            'No dataset given: pass --data NAME (the checkpoint has no '
            'teacher card naming one)')
    data = dataset_of(data, ckpt)
    return load_clouds(data, card_data_root(data, data_root, ckpt),
                       seed=seed, points=points)


def distill(settings: Any, *, teacher: Path, ckpt: Any, distiller: Any,
            dev: torch.device, checkpoint: Any = None):
    """The point-cloud branch of :func:`gnncompress.api.distill` (a DGCNN
    teacher) on its resolved ``settings``
    (:class:`~gnncompress.workflows.settings.DistillSettings`): DGCNN
    student, per-batch teacher, overall and mean class accuracy, ONNX with
    a dynamic number of points. ``checkpoint(**run)`` gives the run's
    training checkpoint (or None) from what identifies the clouds and the
    student; a loss that stops being finite writes the best student so
    far."""
    from gnncompress.models import build_model, count_parameters
    from gnncompress.outputs.latency import measuring, torch_figures
    from gnncompress.outputs.report import ModelEntry
    from gnncompress.workflows.inputs import check_fits, resolved_config
    from gnncompress.workflows.results import (
        describe_training,
        exported_student,
        save_student,
        trained_alone,
        write_report,
    )
    from gnncompress.workflows.runs import (
        finish_checkpoint,
        kept_on_failure,
        seed_everything,
        staged_output,
    )

    t, shape, clouds = settings.training, settings.model, settings.clouds
    out, student = Path(settings.outputs.out), shape.student or 'dgcnn'
    batch_size = settings.batching.batch_size or BATCH_SIZE
    if student != 'dgcnn':
        raise ArchitectureError(
            f"A DGCNN teacher needs a DGCNN student (got --student "
            f"{student}): point clouds have no fixed graph; pass --student "
            f'dgcnn')
    names = parse_augment(clouds.augment if clouds.augment is not None
                          else ckpt.card.get('augment'))
    from gnncompress.workflows.distributed import one_at_a_time
    with one_at_a_time():  # processes of a group do not fill one cache
        graph = resolve_clouds(settings.data, settings.data_root, ckpt,
                               t.seed, clouds.points)
    if not is_clouds(graph):
        raise DataError(f'{graph.name} is not a point-cloud dataset')
    check_fits(ckpt.spec, graph, 'teacher')
    s_spec = student_spec(ckpt.spec, graph, hidden=shape.hidden,
                          layers=shape.layers, k=clouds.k, emb=clouds.emb,
                          head=clouds.head)
    used_weight = distiller.default_weight if settings.weight is None \
        else settings.weight
    config = resolved_config(
        settings.outputs.config, ckpt=ckpt, graph=graph, s_spec=s_spec,
        out=out, dev=dev, data=settings.data, data_root=settings.data_root,
        ratio=None, weight=used_weight, label_weight=settings.label_weight,
        hidden=s_spec.widths, k=s_spec.k,
        emb=s_spec.emb_channels, head=s_spec.head,
        points=graph.split['points'], augment=','.join(names),
        batch_size=batch_size)
    _check_points(graph, max(ckpt.spec.k or 20, s_spec.k or 20))
    g = graph.to(dev)
    teacher_model = ckpt.build().to(dev)
    teacher_acc, teacher_macc = evaluate(teacher_model, g, g.test_mask)
    train_args = dict(epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                      patience=t.patience, progress=t.progress,
                      batch_size=batch_size, augmentations=names,
                      seed=t.seed)
    alone_entry, alone = None, None
    if settings.baseline:
        alone_entry, alone = trained_alone(
            s_spec, t.seed, dev, lambda m: fit_clouds(
                m, g, desc='student alone', **train_args),
            mean_class_accuracy=lambda m: evaluate(m, g, g.test_mask)[1])
    seed_everything(t.seed)
    model = build_model(s_spec).to(dev)
    saver = None if checkpoint is None else checkpoint(
        data=graph.name, clouds=int(graph.y.numel()), split=graph.split,
        student=s_spec.to_dict(), augment=names, batch_size=batch_size)
    ranks = process_ranks.current()
    with kept_on_failure(saver, model, s_spec, out, distiller.name,
                         graph.name, ranks.rank):
        result = fit_clouds(model, g, teacher=teacher_model,
                            method=distiller,
                            label_weight=settings.label_weight,
                            weight=settings.weight,
                            desc=f'distill {distiller.name}',
                            checkpoint=saver, **train_args)
    if ranks.rank != 0:
        return None  # rank 0 writes the outputs
    _, student_macc = evaluate(model, g, g.test_mask)

    one = cloud_points(g)[g.test_mask.nonzero().view(-1)[:1]]  # [1, n, 3]
    with staged_output(out) as stage:
        files: dict[str, str] = {}
        parity_cases: dict[str, float] = {}
        student_entry = ModelEntry(
            role='student', spec=s_spec.to_dict(),
            parameters=count_parameters(model),
            test_accuracy=result.test_accuracy,
            val_accuracy=result.val_accuracy,
            mean_class_accuracy=student_macc)
        teacher_entry = ModelEntry(
            role='teacher', spec=ckpt.spec.to_dict(),
            parameters=count_parameters(teacher_model),
            test_accuracy=teacher_acc, file=str(teacher),
            file_bytes=Path(teacher).stat().st_size,
            mean_class_accuracy=teacher_macc)
        chosen, chosen_entry, exported = exported_student(
            model, student_entry, alone, alone_entry)
        # Latency per cloud: one test cloud at a time.
        x, batch = one.reshape(-1, one.size(-1)), None
        empty = torch.zeros(2, 0, dtype=torch.long, device=dev)
        for entry, m in ((teacher_entry, teacher_model),
                         (student_entry, model)):
            if measuring():
                entry.latency.update(torch_figures(m, x, empty, batch))
        if settings.outputs.export:
            save_student(chosen, s_spec, stage, out, distiller.name
                             if chosen is model else 'none (trained alone)',
                             graph.name, chosen_entry, files)
            onnx_path = stage / 'student.onnx'
            example = cloud_points(graph)[graph.test_mask.nonzero()
                                          .view(-1)[:2]]
            parity_cases = export_clouds_onnx(chosen, example,
                                              onnx_path).cases
            files['onnx'] = str(out / 'student.onnx')
            if measuring():
                student_entry.latency['onnxruntime-cpu'] = \
                    _onnx_cloud_latency(onnx_path, one.cpu())
        model.to(dev)
        chosen.to(dev)
        report = write_report(
            stage, out, command=settings.outputs.command or
            f'gnncompress distill {teacher}',
            method=distiller.name,
            method_options={**(settings.method_options or {}),
                            'weight': used_weight,
                            'label_weight': settings.label_weight},
            data={'name': graph.name, 'clouds': graph.y.numel(),
                  'points': graph.split['points'],
                  'nodes': graph.num_nodes, 'edges': 0,
                  'features': graph.num_features,
                  'classes': graph.num_classes, 'split': graph.split,
                  'augment': names},
            teacher=teacher_entry, student=student_entry,
            student_alone=alone_entry, parity_cases=parity_cases,
            training=describe_training(
                result, epochs=t.epochs, lr=t.lr,
                weight_decay=t.weight_decay, patience=t.patience,
                batch_size=batch_size, **ranks.described()),
            seed=t.seed, device=dev, ckpt=ckpt, files=files, config=config,
            **dataclasses.asdict(settings.gates), exported=exported)
    finish_checkpoint(saver, out)
    return report


def _onnx_cloud_latency(path: Path, pos: Tensor) -> dict[str, Any]:
    from gnncompress.outputs.latency import (
        measure_latency,
        report_figure,
        session_threads,
    )

    session = onnx_session(path, threads=torch.get_num_threads())
    feeds = {'pos': pos.numpy()}
    latency = report_figure(lambda s: measure_latency(
        lambda: session.run(None, feeds), budget_s=s))
    latency.runtime, latency.device = 'onnxruntime', 'cpu'
    latency.threads = session_threads(session)
    return latency.to_dict()
