"""`gnncompress train-teacher` and `gnncompress inspect`: train a teacher and
save it with its card; read a checkpoint and preview the student."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.errors import GnnCompressError, OutputError
from gnncompress.core.options import check_out_file, check_training
from gnncompress.models import (
    ArchSpec,
    build_model,
    count_parameters,
    count_spec_parameters,
)
from gnncompress.models.spec import check_readout
from gnncompress.tasks.datasets import (
    check_split,
    class_subset,
    load_graph,
    parse_classes,
)
from gnncompress.tasks.datasets import normalize_features as normalize_graph
from gnncompress.training.selection import TIES
from gnncompress.training.train import fit
from gnncompress.workflows.inputs import no_cloud_options
from gnncompress.workflows.runs import (
    check_writable,
    resolve_device,
    seed_everything,
)
from gnncompress.workflows.saved_teacher import TeacherResult, save_teacher
from gnncompress.workflows.students import check_trainable, student_spec


@dataclass
class Inspection:
    path: Path
    format: str
    spec: ArchSpec
    sources: dict[str, str]
    parameters: int
    notes: dict[str, str] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    # The student distill would build (inspect --ratio/--hidden).
    student: ArchSpec | None = None
    student_parameters: int | None = None

    def to_dict(self) -> dict[str, Any]:
        found = {'path': str(self.path), 'format': self.format,
                 'spec': self.spec.to_dict(), 'sources': self.sources,
                 'parameters': self.parameters, 'notes': self.notes,
                 'card': self.card}
        if self.student is not None:
            found['student'] = {
                'spec': self.student.to_dict(),
                'parameters': self.student_parameters,
                'ratio': self.parameters / self.student_parameters}
        return found


@dataclass(frozen=True)
class _Shape:
    """What sizing a student reads of a graph: the teacher's own widths,
    for a preview without data."""
    num_features: int
    num_classes: int


def inspect(checkpoint: str | Path,
            overrides: dict[str, Any] | None = None, *,
            ratio: float | None = None, hidden: int | None = None,
            student: str = 'gcn', layers: int = 2,
            heads: int = 1) -> Inspection:
    """The inferred architecture of a checkpoint and where each field came
    from; with ``ratio`` or ``hidden``, also the student ``distill`` would
    build from it (same sizing, same refusals), without training."""
    ckpt = load_checkpoint(checkpoint, overrides)
    found = Inspection(path=ckpt.path, format=ckpt.format, spec=ckpt.spec,
                       sources=ckpt.sources,
                       parameters=count_parameters(ckpt.build()),
                       notes=ckpt.notes, card=ckpt.card)
    if ratio is not None or hidden is not None:
        shape = _Shape(ckpt.spec.in_channels, ckpt.spec.out_channels)
        found.student = student_spec(
            ckpt.spec, shape, arch=student, hidden=hidden,  # type: ignore
            layers=layers, heads=heads, ratio=ratio,
            readout=ckpt.spec.readout)
        found.student_parameters = count_spec_parameters(found.student)
    return found


def train_teacher(data: str | Path, out: str | Path, *, arch: str = 'gat',
                  hidden: int | list[int] | None = None,
                  layers: int | None = None, heads: int = 8,
                  dropout: float | None = None, norm: str | None = None,
                  jk: str | None = None, aggr: str = 'mean',
                  alpha: float = 0.1, theta: float = 0.5,
                  data_root: str | Path | None = None, epochs: int = 300,
                  lr: float = 0.005, weight_decay: float = 5e-4,
                  patience: int | None = 100, seed: int = 0,
                  device: str = 'auto', progress: bool = True,
                  classes: str | list[int] | None = None,
                  normalize_features: bool = False,
                  readout: str | None = None, k: int | None = None,
                  emb: int | None = None, head: list[int] | None = None,
                  points: int | None = None,
                  augment: str | list[str] | None = None,
                  batch_size: int | None = None,
                  split: str = 'default',
                  ties: str = 'first') -> TeacherResult:
    """Train a teacher and save it as a plain PyG ``state_dict`` (the format
    users already have), with a teacher card (``.json``) beside it that
    records what the weights cannot tell and the dataset it was trained
    on. ``classes`` (``'0-4'``) trains on that label subset only (for
    amalgamation), renumbered from 0. On a graph-classification dataset the
    teacher pools its last layer with ``readout`` and classifies graphs.
    ``hidden`` defaults to 256 and ``layers`` to 3. ``arch='dgcnn'`` trains
    a point-cloud teacher
    (:func:`gnncompress.workflows.point_clouds.train_teacher`:
    ``hidden`` may list one width per layer; ``k``, ``emb``, ``head``,
    ``points``, ``augment`` and ``batch_size`` apply to it alone).
    ``split='glnn'`` trains on GLNN's split (:func:`gnncompress.tasks.datasets.
    glnn_split`); the card records it, and ``distill`` uses it.
    ``ties='last'`` keeps the last of the epochs of equal best validation
    accuracy, an equal score restarting the patience count, as GLNN's and
    NOSMOG's code select their teachers (node classification)."""
    check_training(lr=lr, weight_decay=weight_decay, seed=seed)
    check_split(split)
    if ties not in TIES:
        raise GnnCompressError(f'ties must be one of {", ".join(TIES)} '
                               f'(got {ties!r})')
    check_out_file(out, example='teacher.pt')
    if arch == 'dgcnn':
        if ties != 'first':
            raise GnnCompressError("ties='last' is for graph teachers; a "
                                   "point-cloud teacher keeps the first "
                                   "best epoch: drop ties")
        from gnncompress.workflows import point_clouds as pointcloud
        return pointcloud.train_teacher(
            data, out, hidden=hidden, layers=layers, k=k, emb=emb, head=head,
            dropout=dropout, readout=readout,
            data_root=data_root, epochs=epochs, lr=lr,
            weight_decay=weight_decay, patience=patience, seed=seed,
            device=device, progress=progress, points=points,
            augment=augment,
            batch_size=batch_size or pointcloud.BATCH_SIZE)
    if isinstance(hidden, (list, tuple)):
        raise GnnCompressError('--hidden takes one width (per-layer widths '
                               'are for --arch dgcnn)')
    no_cloud_options(k=k, emb=emb, head=head, points=points,
                      augment=augment, batch_size=batch_size)
    hidden = 256 if hidden is None else hidden
    layers = 3 if layers is None else layers
    out = Path(out)
    if out.suffix not in ('.pt', '.pth'):
        raise OutputError(f'Teacher file {out} must end in .pt or .pth')
    check_writable(out.parent)
    dev = resolve_device(device)
    if dropout is None:
        # GAT's and GCNII's papers use 0.6 on the citation graphs.
        dropout = 0.6 if arch in ('gat', 'gatv2', 'gcnii') else 0.5

    def teacher_spec(features: int, classes: int,
                     pooled: str | None) -> ArchSpec:
        return ArchSpec(arch=arch, in_channels=features,
                        hidden_channels=hidden, num_layers=layers,
                        out_channels=classes,
                        heads=heads if arch in ('gat', 'gatv2') else 1,
                        dropout=dropout, norm=norm, jk=jk, aggr=aggr,
                        alpha=alpha, theta=theta, readout=pooled)

    # The architecture options are checked before the data is loaded (a
    # large graph takes seconds), with stand-in widths; the readout, which
    # a node dataset ignores, by its name alone (the rules of a readout
    # apply once the data says the task is graph-level).
    teacher_spec(1, 2, None)
    if readout is not None:
        check_readout(readout)
    graph = load_graph(data, data_root, seed=seed, split=split)
    if normalize_features:
        graph = normalize_graph(graph)
    if classes is not None:
        if isinstance(classes, str):
            classes = parse_classes(classes)
        graph = class_subset(graph, list(classes))
    spec = teacher_spec(graph.num_features, graph.num_classes,
                        (readout or 'mean') if graph.batch is not None
                        else None)
    check_trainable(spec, graph, f'A teacher of --hidden {hidden}')
    seed_everything(seed)
    model = build_model(spec).to(dev)
    result = fit(model, graph.to(dev), epochs=epochs, lr=lr,
                 weight_decay=weight_decay, patience=patience,
                 progress=progress, desc=f'teacher {arch}', ties=ties)
    return save_teacher(
        model, spec, out, graph, seed, result, data, data_root,
        classes=list(classes) if classes is not None else None,
        normalize_features=True if normalize_features else None)
