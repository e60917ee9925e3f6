"""The Python API. The CLI is a thin layer over these functions, so a script
or a CI pipeline gets exactly what the command line does."""
from __future__ import annotations

import contextlib
import functools
import inspect as _inspect
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gnncompress import __version__, outputs, plots
from gnncompress.bench import (
    REPORT_BUDGET_S,
    exported_latency,
    latency_budget,
    measuring,
    onnx_latency,
    torch_latency,
)
from gnncompress.catalogue import default_root
from gnncompress.checkpoint import (
    CARD_KIND,
    MODULE_PATH,
    Checkpoint,
    card_path,
    load_checkpoint,
    module_checkpoint,
    user_teacher,
)
from gnncompress.core import Graph, accuracy
from gnncompress.core.timing import breakdown, phase, timed_run
from gnncompress.data import (
    check_split,
    class_subset,
    load_graph,
    parse_classes,
)
from gnncompress.data import normalize_features as normalize_graph
from gnncompress.defaults import DEFAULT_RATIO
from gnncompress.distributed import (
    launch,
    one_at_a_time,
    refuse,
    under_torchrun,
)
from gnncompress.engine import fit, forward_frozen
from gnncompress.errors import (
    ArchitectureError,
    DataError,
    ExportError,
    GnnCompressError,
    OutputError,
    RunInterrupted,
    TrainingError,
    plural,
)
from gnncompress.export import (
    SPARSE_CHECK_DENSITY,
    atomic_path,
    export_onnx,
    onnx_signature,
    save_safetensors,
    sparse_features_hint,
)
from gnncompress.methods import DistillMethod, canonical_name, method_class
from gnncompress.methods.combined import Combined
from gnncompress.models import (
    ArchSpec,
    build_model,
    count_parameters,
    count_spec_parameters,
)
from gnncompress.options import (
    check_distill_method,
    check_memory,
    check_method_name,
    check_out,
    check_out_file,
    check_path_length,
    check_ratio,
    check_training,
    training_bytes,
)
from gnncompress.report import (
    Gate,
    ModelEntry,
    Report,
    export_choice,
    student_speedups,
)
from gnncompress.resume import DEFAULT_FOLDER as DEFAULT_CHECKPOINT_FOLDER
from gnncompress.teacher_features import pick_features

# Outputs or weights beyond this leave float32 fewer than 1e-4 of absolute
# precision at 7 digits: the ONNX parity check cannot pass.
OVERFLOW = 1e6
STUDENT_DROPOUT = 0.5


# Output folders ---------------------------------------------------------------

@contextlib.contextmanager
def staged_output(out: Path, owned: frozenset[str] = outputs.RUN_FILES,
                  ) -> Iterator[Path]:
    """A fresh folder beside ``out`` that takes the place of ``out`` in one
    rename when the block succeeds (:mod:`gnncompress.outputs`), so a
    failed or killed run leaves ``out`` as it was."""
    out = Path(out)
    check_writable(out)
    with outputs.staged(out, owned) as stage:
        yield stage


def check_writable(out: Path) -> None:
    """Fail before any training if ``out`` cannot be written; creates
    nothing."""
    out = Path(out)
    check_path_length(out, '--out')
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f'Output folder {out} is a file: choose '
                              f'another --out')
        anchor = out
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            raise OutputError(f'Output folder {out} cannot be written: '
                              f'{anchor} is a file; choose another --out')
        shutil.rmtree(tempfile.mkdtemp(prefix='.gnncompress-', dir=anchor))
    except OSError as e:
        raise OutputError(f'Output folder {out} cannot be written '
                          f'({e.strerror}): choose another --out') from None


def run_inputs(*paths: str | Path | None) -> list[Path]:
    """The files among ``paths`` (``--data`` may be a dataset name)."""
    return [Path(p) for p in paths if p is not None and Path(p).exists()]


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f'Folder {folder} cannot be created '
                          f'({e.strerror}): choose another output') from None


# Devices and seeds ------------------------------------------------------------

def resolve_device(device: str) -> torch.device:
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device not in ('cpu', 'cuda') and not device.startswith('cuda:'):
        raise GnnCompressError(f"Unknown device '{device}' (choose from auto, "
                               f'cpu, cuda)')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise GnnCompressError("Device 'cuda' requested but CUDA is not "
                               'available: use --device cpu or auto')
    return torch.device(device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def versions() -> dict[str, str]:
    import onnxruntime
    import torch_geometric
    return {'gnncompress': __version__, 'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__,
            'onnxruntime': onnxruntime.__version__,
            'python': platform.python_version()}


# Data through the teacher card ------------------------------------------------

def resolve_data(data: str | Path | None, data_root: str | Path | None,
                 ckpt: Checkpoint, seed: int,
                 normalize: bool | None = None,
                 split: str | None = None) -> Graph:
    """``--data`` if given, else the dataset named on the teacher's card;
    features row-normalised when ``normalize`` says so, or (``None``) when
    the teacher's card says the teacher was trained on them. ``split``
    (``None``: the card's) names the split; a ``glnn`` split is drawn with
    the seed on the teacher's card when it has one, so that the student
    sees the teacher's split."""
    if normalize is None:
        normalize = bool(ckpt.card.get('normalize_features'))
    on_card = ckpt.card.get('split')
    on_card = on_card if isinstance(on_card, dict) else {}
    if split is None:
        split = 'glnn' if on_card.get('kind') == 'glnn' else 'default'
    if split == 'glnn' and on_card.get('kind') == 'glnn' and \
            isinstance(on_card.get('seed'), int):
        split_seed = on_card['seed']
    else:
        split_seed = seed
    graph = _card_graph(data, data_root, ckpt, split_seed, split)
    return normalize_graph(graph) if normalize else graph


def _card_graph(data: str | Path | None, data_root: str | Path | None,
                ckpt: Checkpoint, seed: int, split: str = 'default'
                ) -> Graph:
    card = ckpt.card
    if data is None:
        if not card.get('data'):
            raise DataError(
                f'No dataset given: pass --data NAME (the checkpoint has no '
                f'teacher card {card_path(ckpt.path).name} naming one)')
        data = card['data']
        if card.get('data_is_file'):
            data = ckpt.path.parent / data
    return load_graph(data, card_data_root(data, data_root, ckpt), seed=seed,
                      split=split)


def card_data_root(data: str | Path, data_root: str | Path | None,
                   ckpt: Checkpoint) -> str | Path | None:
    """``data_root``, else the folder the teacher's card recorded when
    ``data`` is the dataset on the card (named by the card or given
    explicitly with the same name: ``--data Cora`` still finds the card's
    copy offline)."""
    card = ckpt.card
    if data_root is not None or card.get('data_root') is None or \
            not card.get('data'):
        return data_root
    on_card = ckpt.path.parent / card['data'] if card.get('data_is_file') \
        else card['data']
    same = Path(data) == on_card if isinstance(on_card, Path) else \
        str(data).lower() == str(on_card).lower()
    return ckpt.path.parent / card['data_root'] if same else None


def resolved_config(config: dict[str, Any] | None, *, ckpt: Checkpoint,
                    graph: Graph, s_spec: ArchSpec, out: Path,
                    dev: torch.device, data_root: str | Path | None,
                    ratio: float | None, weight: float,
                    label_weight: float) -> dict[str, Any] | None:
    """A distill run's settings with what the run resolved in place of
    the options left out (dataset, student, widths, weights, teacher
    architecture...), for report.json's ``config``. ``ratio`` left out
    with ``--hidden`` given: the compression the student achieved."""
    if config is None:
        return None
    if ratio is None:
        try:
            ratio = round(count_spec_parameters(ckpt.spec)
                          / max(1, count_spec_parameters(s_spec)), 2)
        except (ArchitectureError, KeyError, TypeError, ValueError):
            ratio = None  # a teacher rebuilt layer by layer
    values = {
        'data': graph.name,
        'data_root': str(data_root if data_root is not None
                         else default_root()),
        'student': s_spec.arch, 'hidden': s_spec.hidden_channels,
        'layers': s_spec.num_layers,
        'ratio': ratio,
        'weight': weight, 'label_weight': label_weight, 'out': str(out),
        'device': dev.type,
        'normalize_features': graph.feature_norm == 'row',
        **{k: getattr(ckpt.spec, k) for k in ('arch', 'aggr', 'jk', 'norm',
                                               'act')}}
    resolved = dict(config)
    for key, value in values.items():
        if key in resolved and resolved[key] in (None, 'auto'):
            resolved[key] = value
    return resolved


def check_fits(spec: ArchSpec, graph: Graph, what: str) -> None:
    if spec.in_channels != graph.num_features:
        raise ArchitectureError(
            f'The {what} expects {spec.in_channels} input features but '
            f'{graph.name} has {graph.num_features}: use the dataset the '
            f'{what} was trained on')
    if spec.out_channels != graph.num_classes:
        raise ArchitectureError(
            f'The {what} predicts {spec.out_channels} classes but '
            f'{graph.name} has {graph.num_classes}: use the dataset the '
            f'{what} was trained on')


# inspect ---------------------------------------------------------------------

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


# train-teacher ---------------------------------------------------------------

@dataclass
class TeacherResult:
    path: Path
    card: Path
    spec: ArchSpec
    parameters: int
    val_accuracy: float
    test_accuracy: float
    epochs_run: int


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
                  split: str = 'default') -> TeacherResult:
    """Train a teacher and save it as a plain PyG ``state_dict`` (the format
    users already have), with a teacher card (``.json``) beside it that
    records what the weights cannot tell and the dataset it was trained
    on. ``classes`` (``'0-4'``) trains on that label subset only (for
    amalgamation), renumbered from 0. On a graph-classification dataset the
    teacher pools its last layer with ``readout`` and classifies graphs.
    ``hidden`` defaults to 256 and ``layers`` to 3. ``arch='dgcnn'`` trains
    a point-cloud teacher (:func:`gnncompress.pointcloud.train_teacher`:
    ``hidden`` may list one width per layer; ``k``, ``emb``, ``head``,
    ``points``, ``augment`` and ``batch_size`` apply to it alone).
    ``split='glnn'`` trains on GLNN's split (:func:`gnncompress.data.
    glnn_split`); the card records it, and ``distill`` uses it."""
    check_training(lr=lr, weight_decay=weight_decay, seed=seed)
    check_split(split)
    check_out_file(out, example='teacher.pt')
    if arch == 'dgcnn':
        from gnncompress import pointcloud
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
    _no_cloud_options(k=k, emb=emb, head=head, points=points,
                      augment=augment, batch_size=batch_size)
    hidden = 256 if hidden is None else hidden
    layers = 3 if layers is None else layers
    out = Path(out)
    if out.suffix not in ('.pt', '.pth'):
        raise OutputError(f'Teacher file {out} must end in .pt or .pth')
    check_writable(out.parent)
    dev = resolve_device(device)
    graph = load_graph(data, data_root, seed=seed, split=split)
    if normalize_features:
        graph = normalize_graph(graph)
    if classes is not None:
        if isinstance(classes, str):
            classes = parse_classes(classes)
        graph = class_subset(graph, list(classes))
    if dropout is None:
        # GAT's and GCNII's papers use 0.6 on the citation graphs.
        dropout = 0.6 if arch in ('gat', 'gatv2', 'gcnii') else 0.5
    spec = ArchSpec(arch=arch, in_channels=graph.num_features,
                    hidden_channels=hidden, num_layers=layers,
                    out_channels=graph.num_classes,
                    heads=heads if arch in ('gat', 'gatv2') else 1,
                    dropout=dropout, norm=norm, jk=jk, aggr=aggr,
                    alpha=alpha, theta=theta,
                    readout=(readout or 'mean') if graph.batch is not None
                    else None)
    check_trainable(spec, graph, f'A teacher of --hidden {hidden}')
    seed_everything(seed)
    model = build_model(spec).to(dev)
    result = fit(model, graph.to(dev), epochs=epochs, lr=lr,
                 weight_decay=weight_decay, patience=patience,
                 progress=progress, desc=f'teacher {arch}')
    return save_teacher(
        model, spec, out, graph, seed, result, data, data_root,
        classes=list(classes) if classes is not None else None,
        normalize_features=True if normalize_features else None)


def save_teacher(model: torch.nn.Module, spec: ArchSpec, out: Path,
                 graph: Graph, seed: int, result: Any, data: str | Path,
                 data_root: str | Path | None,
                 **extra: Any) -> TeacherResult:
    """Write the teacher's ``state_dict`` and its card (what the weights
    cannot tell, the split, the scores, the data; ``extra`` entries that
    are not None) atomically."""
    card = {
        'kind': CARD_KIND, 'version': __version__,
        'spec': {k: getattr(spec, k) for k in
                 (*ArchSpec.NOT_IN_WEIGHTS, 'jk', 'norm')},
        'split': graph.split, 'seed': seed, 'epochs_run': result.epochs_run,
        'val_accuracy': result.val_accuracy,
        'test_accuracy': result.test_accuracy,
        **_card_data(data, data_root, out.parent),
        **{k: v for k, v in extra.items() if v is not None},
    }
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    make_folder(out.parent)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    with atomic_path(card_path(out)) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + '\n')
    return TeacherResult(path=out, card=card_path(out), spec=spec,
                         parameters=count_parameters(model),
                         val_accuracy=result.val_accuracy,
                         test_accuracy=result.test_accuracy,
                         epochs_run=result.epochs_run)


def _no_cloud_options(**options: Any) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        shown = ', '.join('--' + k.replace('_', '-') for k in given)
        raise GnnCompressError(f'{shown} apply to DGCNN point-cloud models '
                               f'only: drop them, or use --arch dgcnn')


def _card_data(data: str | Path, data_root: str | Path | None,
               base: Path) -> dict[str, Any]:
    """How the card names the data: paths relative to the card's folder
    where possible, so a folder of teacher + card + data can move."""
    def rel(p: Path) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), base.resolve())
        except ValueError:  # another drive on Windows
            return str(Path(p).resolve())

    path = Path(str(data))
    if path.is_file():
        return {'data': rel(path), 'data_is_file': True}
    return {'data': str(data), 'data_is_file': False,
            'data_root': rel(Path(data_root)) if data_root else None}


# distill ---------------------------------------------------------------------

def student_spec(teacher: ArchSpec, graph: Graph, *, arch: str = 'gcn',
                 hidden: int | None = None, layers: int = 2, heads: int = 1,
                 ratio: float | None = None,
                 readout: str | None = None) -> ArchSpec:
    """The student: ``hidden`` if given, else the widest one that leaves the
    teacher at least ``ratio`` times more parameters."""
    if arch not in ('gat', 'gatv2'):
        heads = 1

    def make(width: int) -> ArchSpec:
        return ArchSpec(arch=arch, in_channels=graph.num_features,
                        hidden_channels=width, num_layers=layers,
                        out_channels=graph.num_classes, heads=heads,
                        dropout=STUDENT_DROPOUT, readout=readout)

    if hidden is not None:
        if ratio is not None:
            raise GnnCompressError('Give either --hidden or --ratio, not both')
        check_trainable(make(hidden), graph, f'A student of --hidden {hidden}')
        return make(hidden)
    ratio = DEFAULT_RATIO if ratio is None else ratio
    check_ratio(ratio)
    budget = count_spec_parameters(teacher) / ratio
    start = max(teacher.hidden_channels, heads)
    for width in range(start - start % heads, 0, -heads):
        if count_spec_parameters(make(width)) <= budget:
            check_student_width(width, graph, arch, layers, ratio)
            return make(width)
    raise ArchitectureError(
        f'No {layers}-layer {arch} student is {ratio:g}x smaller than the '
        f'teacher ({count_spec_parameters(teacher):,} parameters): lower '
        f'--ratio or --layers')


def check_trainable(spec: ArchSpec, graph: Graph, what: str) -> None:
    """Refuse, before it is built, a model whose training cannot fit in
    memory."""
    # A preview without data (inspect --hidden) knows no node count: the
    # weights and optimiser state alone are checked then.
    nodes = getattr(graph, 'num_nodes', 0)
    check_memory(training_bytes(count_spec_parameters(spec), nodes,
                                spec.hidden_channels, spec.num_layers),
                 what, 'give a smaller --hidden or fewer --layers')


MIN_HIDDEN = 8


def check_student_width(width: int, graph: Graph, arch: str, layers: int,
                        ratio: float) -> None:
    """Refuse a student the ratio squeezed below the number of classes or
    below MIN_HIDDEN: it cannot hold what the teacher knows."""
    floor = max(MIN_HIDDEN, graph.num_classes)
    if width < floor:
        raise ArchitectureError(
            f'A {layers}-layer {arch} student {ratio:g}x smaller than the '
            f'teacher would be {width} wide, below {floor} (the number of '
            f'classes, at least {MIN_HIDDEN}): pass --hidden {floor} or '
            f'more, or a smaller --ratio')


def _accepted(cls: type) -> list[str]:
    return [p for p in _inspect.signature(cls.__init__).parameters
            if p != 'self']


def _instantiate(cls: type[DistillMethod],
                 options: dict[str, Any]) -> DistillMethod:
    unknown = [k for k in options if k not in _accepted(cls)]
    if unknown:
        raise GnnCompressError(
            f"Method '{cls.name}' has no option {', '.join(unknown)} "
            f"(accepted: {', '.join(_accepted(cls)) or 'none'})")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise GnnCompressError(f"Bad option for method '{cls.name}': {e}") \
            from None


def build_method(name: str,
                 options: dict[str, Any] | None = None) -> DistillMethod:
    """The method called ``name``; ``a+b`` combines methods. With several
    methods, ``a.key`` options go to method ``a`` (``a.weight`` is its weight
    in the sum) and plain keys to every method that accepts them."""
    options = dict(options or {})
    check_method_name(name)
    names = [n.strip() for n in name.split('+')]
    if len(names) == 1:
        return _instantiate(method_class(names[0]), options)
    classes = [method_class(n) for n in names]
    keys = {canonical_name(c.name) for c in classes}
    stray = [k for k in options if '.' in k and
             canonical_name(k.split('.', 1)[0]) not in keys]
    if stray:
        raise GnnCompressError(f"Option(s) {', '.join(stray)} name no method "
                               f"of '{name}'")
    plain = {k: v for k, v in options.items() if '.' not in k}
    unused = [k for k in plain
              if not any(k in _accepted(c) for c in classes)]
    if unused:
        raise GnnCompressError(f"No method of '{name}' has option "
                               f"{', '.join(unused)}")
    parts, weights = [], []
    for cls in classes:
        own = {k.split('.', 1)[1]: v for k, v in options.items()
               if '.' in k and
               canonical_name(k.split('.', 1)[0]) == canonical_name(cls.name)}
        weight = own.pop('weight', None)
        shared = {k: v for k, v in plain.items() if k in _accepted(cls)}
        part = _instantiate(cls, {**shared, **own})
        parts.append(part)
        weights.append(part.default_weight if weight is None else weight)
    return Combined(parts, weights)


def timed_command(fn):
    """A command whose report records where its time went (``timings``)
    and whose latency figures follow its ``latency`` and
    ``latency_budget_s`` arguments."""
    signature = _inspect.signature(fn)
    own = {'latency', 'latency_budget_s'} - set(signature.parameters)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        # a function without these arguments leaves them to this wrapper
        taken = {k: kwargs.pop(k) for k in own if k in kwargs}
        given = {**signature.bind_partial(*args, **kwargs).arguments,
                 **taken}
        enabled = given.get('latency', True)
        budget = given.get('latency_budget_s', REPORT_BUDGET_S)
        if not (isinstance(budget, (int, float)) and budget >= 0):
            raise GnnCompressError(f'--latency-budget-s must be a number of '
                                   f'seconds >= 0 (got {budget!r})')
        with timed_run(), latency_budget(float(budget), bool(enabled)):
            return fn(*args, **kwargs)
    return run


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
            latency_budget_s: float = REPORT_BUDGET_S) -> Report:
    """Distill ``teacher`` into a smaller student and write
    ``student.safetensors``, ``student.onnx``, ``report.json`` and
    ``report.md`` to ``out``. ``student`` defaults to the method's preferred
    student (an MLP for GLNN) or GCN; ``weight`` and ``label_weight`` to the
    method's own defaults. The gates ``min_accuracy`` (percent) and
    ``max_accuracy_drop`` (points below the teacher) are checked after the
    files are written; failures are in ``report.gates``. ``layers``
    defaults to 2. A DGCNN teacher distills into a DGCNN student on point
    clouds (:func:`gnncompress.pointcloud.distill`; ``hidden`` may list
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
    layer-wise (:func:`gnncompress.minibatch.distill`).

    ``nproc`` N (with ``batch_size``) trains in N processes with
    DistributedDataParallel, as does running under ``torchrun``
    (:mod:`gnncompress.distributed`); rank 0 writes the outputs and the
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
    ``report.timings`` says where the run's wall time went."""
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
    distiller = build_method(method, method_options)
    requested_student = student
    student = student or distiller.preferred_student or 'gcn'
    if label_weight is None:
        label_weight = distiller.default_label_weight
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / f'{teacher.stem}-{distiller.name}'
    dev = resolve_device(device)
    check_writable(out)
    outputs.claim(out, run_inputs(teacher, card_path(teacher), data))
    with phase('load'):
        ckpt = module_checkpoint(module, overrides, teacher) \
            if module is not None \
            else load_checkpoint(teacher, overrides)
    if ckpt.spec.arch == 'dgcnn':
        from gnncompress import pointcloud
        refuse('point clouds (a DGCNN teacher)')
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
            method_options=method_options or {})
    if isinstance(hidden, (list, tuple)):
        raise GnnCompressError('--hidden takes one width (per-layer widths '
                               'are for DGCNN students)')
    _no_cloud_options(k=k, emb=emb, head=head, points=points,
                      augment=augment)
    if student == 'dgcnn':
        raise ArchitectureError('A DGCNN student needs a DGCNN teacher on '
                                'point clouds: pick another --student')
    layers = 2 if layers is None else layers
    hops = None if batch_size is None and fanout is None else \
        _minibatch_options(distiller, batch_size, fanout, layers)
    with one_at_a_time(), phase('load'):
        graph = resolve_data(data, data_root, ckpt, seed,
                             normalize=normalize_features, split=split)
    check_fits(ckpt.spec, graph, 'teacher')
    check_task(ckpt.spec, graph, distiller)
    feature_note = None
    if normalize_features is None and not ckpt.card and hops is None:
        with phase('teacher'):
            graph, feature_note = pick_features(ckpt.build(), graph, dev)
    s_spec = student_spec(ckpt.spec, graph, arch=student, hidden=hidden,
                          layers=layers, heads=heads, ratio=ratio,
                          readout=ckpt.spec.readout)
    config = resolved_config(
        config, ckpt=ckpt, graph=graph, s_spec=s_spec, out=out, dev=dev,
        data_root=card_data_root(data if data is not None else
                                 ckpt.card.get('data', ''), data_root, ckpt),
        ratio=ratio if ratio is not None or hidden is not None
        else DEFAULT_RATIO,
        weight=distiller.default_weight if weight is None else weight,
        label_weight=label_weight)
    saver = training_checkpoint(
        out, checkpoint_every, checkpoint_dir, resume,
        teacher=str(teacher.resolve()), teacher_bytes=_file_bytes(teacher),
        data=graph.name, nodes=graph.num_nodes,
        edges=int(graph.edge_index.size(1)), split=graph.split,
        method=distiller.name, method_options=method_options or {},
        weight=weight, label_weight=label_weight, student=s_spec.to_dict(),
        epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience,
        seed=seed, device=dev.type,
        **({} if hops is None else {'batch_size': batch_size,
                                    'fanout': hops}))
    if hops is not None:
        if graph.batch is not None or graph.node_graph is not None:
            kind = 'graph-classification' if graph.batch is not None \
                else 'several-graph'
            raise GnnCompressError(f'--batch-size on a {kind} dataset is not '
                                   f'supported yet: drop it')
        from gnncompress import minibatch
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

    with phase('teacher'):
        teacher_model = ckpt.build().to(dev)
        teacher_out = forward_frozen(teacher_model, g)  # once for the run
        teacher_acc = accuracy(teacher_out.logits, g.y, g.test_mask)
    train_args = dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                      patience=patience, progress=progress)

    alone_entry = None
    if baseline:
        seed_everything(seed)
        alone = build_model(s_spec).to(dev)
        with phase('baseline'):
            alone_fit = fit(alone, g, label_weight=1.0,
                            desc='student alone', **train_args)
        alone_entry = ModelEntry(
            role='student-alone', spec=s_spec.to_dict(),
            parameters=count_parameters(alone),
            test_accuracy=alone_fit.test_accuracy,
            val_accuracy=alone_fit.val_accuracy)
    else:
        alone = None

    seed_everything(seed)
    model = build_model(s_spec).to(dev)
    with kept_on_failure(saver, model, s_spec, out, distiller.name,
                         graph.name), phase('train'):
        result = fit(model, g, method=distiller,
                     teacher_outputs=[teacher_out],
                     label_weight=label_weight, weight=weight,
                     desc=f'distill {distiller.name}', checkpoint=saver,
                     **train_args)
    report = distill_outputs(
        out, teacher=teacher, ckpt=ckpt, teacher_model=teacher_model,
        teacher_acc=teacher_acc, model=model, s_spec=s_spec,
        distiller=distiller, graph=graph, result=result,
        alone_entry=alone_entry, alone_model=alone,
        inputs=(g.x, g.edge_index, g.batch),
        training=describe_training(result, epochs=epochs, lr=lr,
                                   weight_decay=weight_decay,
                                   patience=patience),
        notes=[feature_note] if feature_note else [], export=export,
        dev=dev, weight=weight,
        label_weight=label_weight, method_options=method_options,
        command=command, config=config, seed=seed,
        min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop,
        teacher_onnx=teacher_onnx)
    finish_checkpoint(saver, out)
    return report


def _file_bytes(teacher: Path) -> int:
    """The teacher file's size (0 for an in-memory teacher)."""
    return teacher.stat().st_size if teacher.is_file() else 0


def distill_outputs(out: Path, *, teacher: Path, ckpt: Checkpoint,
                    teacher_model: torch.nn.Module, teacher_acc: float,
                    model: torch.nn.Module, s_spec: ArchSpec,
                    distiller: DistillMethod, graph: Graph, result: Any,
                    alone_entry: ModelEntry | None,
                    inputs: tuple[Tensor, Tensor, Tensor | None],
                    training: dict[str, Any], notes: list[str],
                    export: bool, dev: torch.device, weight: float | None,
                    label_weight: float,
                    method_options: dict[str, Any] | None, command: str,
                    config: dict[str, Any] | None, seed: int,
                    min_accuracy: float | None,
                    max_accuracy_drop: float | None,
                    teacher_onnx: bool = False,
                    alone_model: torch.nn.Module | None = None) -> Report:
    """What ``distill`` writes once the student is trained (full-graph or
    mini-batch): latency of teacher and student and the ONNX parity check
    on ``inputs`` (x, edge_index, batch: the whole graph, or a sampled
    subgraph when it is too large), the student's files and the report,
    all staged and moved into ``out`` at once. ``notes`` come after the
    teacher card's and the collapse warning. Teacher and student are timed
    in PyTorch with the same threads; ``teacher_onnx`` also exports the
    teacher and times it in onnxruntime with the student's threads.
    With ``--baseline`` (``alone_entry`` and ``alone_model``, the student
    trained alone), the files hold whichever of the two students scored
    better on validation (:func:`exported_student`)."""
    x, edge_index, batch = inputs
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
            file_bytes=_file_bytes(teacher))
        chosen, chosen_entry, exported = exported_student(
            model, student_entry, alone_model, alone_entry)
        x_dev, edges_dev = x.to(dev), edge_index.to(dev)
        batch_dev = batch.to(dev) if batch is not None else None
        for entry, m in ((teacher_entry, teacher_model),
                         (student_entry, model)):
            if measuring():
                entry.latency[f'pytorch-{dev.type}'] = torch_latency(
                    m, x_dev, edges_dev, batch_dev).to_dict()
        failure = None
        if export:
            save_student(chosen, s_spec, stage, out, distiller.name
                         if chosen is model else 'none (trained alone)',
                         graph.name, chosen_entry, files)
            onnx_path = stage / 'student.onnx'
            x_cpu, edges_cpu = x.cpu(), edge_index.cpu()
            batch_cpu = batch.cpu() if batch is not None else None
            try:
                parity = export_onnx(chosen, x_cpu, edges_cpu, onnx_path,
                                     uses_graph=s_spec.uses_graph,
                                     batch=batch_cpu)
                parity_cases = parity.cases
                parity_relative = parity.relative_cases()
                hint = (sparse_features_hint(
                    model, x_cpu, out / 'student.safetensors')
                    if batch_cpu is None and s_spec.uses_graph else None)
                notes += [hint] if hint else []
            except ExportError as e:
                failure = export_failure(e, chosen, (x_cpu, edges_cpu,
                                                     batch_cpu), out)
                write_failure(stage, out, failure, ['student.safetensors'],
                              test_accuracy=chosen_entry.test_accuracy)
        if export and failure is None and not measuring():
            files['onnx'] = str(out / 'student.onnx')
        elif export and failure is None:
            files['onnx'] = str(out / 'student.onnx')
            student_entry.latency['onnxruntime-cpu'] = onnx_latency(
                onnx_path, x_cpu, edges_cpu, batch_cpu).to_dict()
            if teacher_onnx:
                notes += teacher_onnx_latency(
                    teacher_entry, teacher_model, ckpt.spec.uses_graph,
                    (x_cpu, edges_cpu, batch_cpu),
                    student_entry.latency['onnxruntime-cpu']['threads'])
        model.to(dev)
        chosen.to(dev)
        if failure is None:
            report = write_report(
                stage, out,
                command=command or f'gnncompress distill {teacher}',
                method=distiller.name,
                method_options={**(method_options or {}),
                                'weight': used_weight,
                                'label_weight': label_weight},
                data=describe_graph(graph),
                teacher=teacher_entry, student=student_entry,
                student_alone=alone_entry, parity_cases=parity_cases,
                onnx_parity_relative=parity_relative,
                training=training, seed=seed, device=dev, ckpt=ckpt,
                files=files, config=config, min_accuracy=min_accuracy,
                max_accuracy_drop=max_accuracy_drop, notes=notes,
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
    (:func:`~gnncompress.report.export_choice`); else the distilled one and
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


def _minibatch_options(distiller: DistillMethod, batch_size: int | None,
                       fanout: str | list[int] | None,
                       layers: int) -> list[int]:
    """``--batch-size`` and ``--fanout`` checked before any data is
    loaded; the fanout, one count per student layer."""
    from gnncompress.minibatch import check_minibatch

    return check_minibatch(distiller, batch_size, fanout, layers)[1]


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
                 files: dict[str, str]) -> None:
    """``student.safetensors`` into the staged folder, recorded in the
    student's report entry and the list of files."""
    path = save_safetensors(model, spec, stage / 'student.safetensors',
                            extra={'gnncompress.method': method,
                                   'gnncompress.data': data})
    entry.file = str(out / 'student.safetensors')
    entry.file_bytes = path.stat().st_size
    files['safetensors'] = entry.file


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
    if plots.drawn('training.png', plots.distill_training, report.to_dict(),
                   stage / 'training.png'):
        files['training_png'] = str(out / 'training.png')
    (stage / 'report.json').write_text(report.to_json() + '\n')
    (stage / 'report.md').write_text(report.to_markdown())
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


def training_checkpoint(out: Path, every: int | None,
                        folder: str | Path | None, resume: str | Path | None,
                        **run: Any):
    """The :class:`~gnncompress.resume.TrainingCheckpoint` that
    ``--checkpoint-every``, ``--checkpoint-dir`` and ``--resume`` ask for
    (``None`` when none of them is given)."""
    from gnncompress import resume as rs

    if every is None and resume is None:
        return None
    if resume is not None:
        found = rs.find_checkpoint(resume).parent
        folder = folder if folder is not None else found
        if Path(folder).resolve() != found.resolve():
            raise OutputError(f'--resume {resume} and --checkpoint-dir '
                              f'{folder} name different checkpoints: give '
                              f'one of them')
    folder = Path(folder) if folder is not None else \
        out / DEFAULT_CHECKPOINT_FOLDER
    return rs.TrainingCheckpoint(folder, every, rs.run_identity(**run),
                                 resume=resume is not None)


@contextlib.contextmanager
def interruptible(saver: Any) -> Iterator[None]:
    """Ctrl-C in a run that saves training checkpoints (``saver``, a
    :class:`~gnncompress.resume.TrainingCheckpoint`) becomes
    :class:`RunInterrupted`, which the CLI turns into the command that
    resumes the run."""
    try:
        yield
    except KeyboardInterrupt:
        if saver is None:
            raise
        raise RunInterrupted(saver.folder, saver.path.is_file()) from None


@contextlib.contextmanager
def kept_on_failure(saver: Any, model: torch.nn.Module, spec: ArchSpec,
                    out: Path, method: str, data: str,
                    rank: int = 0) -> Iterator[None]:
    """Around a distillation's training: a loss that stops being finite
    writes the best student so far (:func:`keep_last_good`; on rank 0
    alone), and Ctrl-C with a training checkpoint ``saver`` says how to
    resume (:func:`interruptible`)."""
    try:
        with interruptible(saver):
            yield
    except TrainingError as e:
        if rank != 0:
            raise
        raise keep_last_good(e, model, spec, out, method, data) from None


def finish_checkpoint(saver: Any, out: Path) -> None:
    """After a successful run: the default checkpoint folder inside
    ``out`` has served its turn."""
    if saver is not None and saver.folder == out / DEFAULT_CHECKPOINT_FOLDER:
        saver.remove()


def keep_last_good(error: TrainingError, model: torch.nn.Module,
                   spec: ArchSpec, out: Path, method: str,
                   data: str) -> TrainingError:
    """:func:`keep_best_student` for distill's students."""
    return keep_best_student(
        error, out, 'validation accuracy',
        lambda path, stopped: save_safetensors(
            model, spec, path, extra={'gnncompress.method': method,
                                      'gnncompress.data': data, **stopped}))


def keep_best_student(error: TrainingError, out: Path, score: str,
                      save: Callable[[Path, dict[str, str]], Any]
                      ) -> TrainingError:
    """The error of a run whose loss stopped being finite, after writing
    its best student so far (``fit`` put it back in the model) to
    ``out/student.safetensors`` with ``save(path, metadata)`` (the
    metadata say why and when the run stopped) and a failure report;
    nothing is written when no epoch finished. ``score`` names the
    selection score in the message."""
    if not error.best_epoch:
        return TrainingError(f'{error} (no epoch finished, so no student was '
                             f'written)')
    kept = TrainingError(
        f'{error}; the best student before it (epoch {error.best_epoch}, '
        f'{score} {100 * error.val_accuracy:.2f}%) is in '
        f"{out / 'student.safetensors'}")
    kept.best_epoch, kept.val_accuracy = error.best_epoch, error.val_accuracy
    with staged_output(out) as stage:
        save(stage / 'student.safetensors',
             {'gnncompress.stopped': str(error),
              'gnncompress.best_epoch': str(error.best_epoch)})
        write_failure(stage, out, kept, ['student.safetensors'],
                      best_epoch=error.best_epoch,
                      val_accuracy=error.val_accuracy)
    return kept


def write_failure(stage: Path, out: Path, error: Exception,
                  kept: list[str], **details: Any) -> None:
    """``report.json`` and ``report.md`` of a run that failed after it had
    something worth keeping (``kept``, files in ``stage``): what happened,
    so that the folder never passes for a finished run's."""
    record = {'status': 'failed', 'error': str(error),
              'files': {name: str(out / name) for name in kept},
              'command': command_line(), **details}
    (stage / 'report.json').write_text(
        json.dumps(record, indent=2, default=str) + '\n')
    (stage / 'report.md').write_text(
        f'# gnncompress run failed\n\n{error}\n\nKept: '
        f"{', '.join(kept)}.\n")


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
def check_task(teacher: ArchSpec, graph: Graph,
               distiller: DistillMethod) -> None:
    """Node-level teachers go with node datasets, graph-level ones (with a
    readout) with graph datasets; graph-level distillation matches
    logits."""
    if (graph.batch is None) != (teacher.readout is None):
        task = 'graph' if teacher.readout else 'node'
        raise ArchitectureError(
            f'The teacher is a {task}-classification model but '
            f'{graph.name} is not a {task}-classification dataset: use the '
            f'dataset the teacher was trained on')
    if graph.batch is not None and distiller.requires - {'logits'}:
        raise GnnCompressError(
            f"Method '{distiller.name}' matches node-level "
            f"{', '.join(sorted(distiller.requires - {'logits'}))}; graph "
            f'classification supports logit methods such as kd')


def command_line() -> str:
    return ' '.join(['gnncompress', *sys.argv[1:]])


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
    from gnncompress.bench import describe

    for s in report.speedups:
        if s['speedup'] is not None:
            where = describe({'runtime': s['runtime'], 'device': s['device'],
                              'threads': s['student_threads']})
            return f"Speed-up over the teacher: {s['speedup']:.1f}x " \
                f'({where}).'
    return f'Speed-up over the teacher: {_NOT_TIMED}.'


def _amalgamate_speedup_line(report: Any) -> str:
    from gnncompress.bench import describe, speedup

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


def _bench_rows(entries: list[Any], graph: Graph, sizes: list[int] | None,
                degree: float | None, workdir: Path, seed: int,
                **kwargs: Any) -> tuple[list[Any], dict[int, list[Any]]]:
    """The main graph's rows, then each ``sizes`` graph's."""
    from gnncompress import comparison as cmp

    rows = cmp.run_bench(entries, graph, workdir=workdir, **kwargs)
    scaling: dict[int, list[Any]] = {}
    if sizes is None:
        return rows, scaling
    degree = degree or graph.edge_index.size(1) / graph.num_nodes
    widths = {e.in_channels for e in entries if e.in_channels}
    if len(widths) > 1:
        raise ArchitectureError(
            f'--sizes needs models that take the same number of features '
            f'(got {sorted(widths)})')
    width = widths.pop() if widths else graph.num_features
    for n in sizes:
        synthetic = cmp.synthetic_graph(n, round(n * degree), width,
                                        seed=seed)
        scaling[n] = cmp.run_bench(entries, synthetic, workdir=workdir,
                                   **kwargs)
    return rows, scaling


# export ----------------------------------------------------------------------

def export(checkpoint: str | Path, out: str | Path,
           overrides: dict[str, Any] | None = None, num_nodes: int = 64,
           seed: int = 0, quantize: str | None = None,
           sparse_features: bool = False):
    """ONNX export of any checkpoint, validated on random graphs (the
    checkpoint carries no data). ``quantize='int8'`` writes the dynamically
    quantised model instead, after validating the float export; the result
    is then an :class:`~gnncompress.export.Int8Check`: the int8 model's
    differences to PyTorch, the size of PyTorch's outputs and the agreement
    of predicted classes on the same graphs. ``sparse_features`` takes the
    node features as a CSR matrix (``x_indptr``, ``x_indices``,
    ``x_values``; :func:`~gnncompress.export.export_onnx`), validated on
    random features with at most 5% non-zeros."""
    if quantize not in (None, 'int8'):
        raise GnnCompressError(f"Unknown quantisation '{quantize}' (choose "
                               f'int8)')
    if quantize is not None and sparse_features:
        raise GnnCompressError('--quantize int8 does not support '
                               '--sparse-features; drop one of them')
    check_out_file(out, example='student.onnx')
    out = Path(out)
    if out.suffix != '.onnx':
        raise OutputError(f'Output file {out} must end in .onnx')
    check_writable(out.parent)
    ckpt = load_checkpoint(checkpoint, overrides)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, ckpt.spec.in_channels, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, 4 * num_nodes),
                               generator=gen)
    if sparse_features:
        x = x * (torch.rand(x.shape, generator=gen) < SPARSE_CHECK_DENSITY)
    make_folder(out.parent)
    model = ckpt.build()
    if ckpt.spec.arch == 'dgcnn':
        from gnncompress.pointcloud import export_clouds_onnx
        if quantize is not None or sparse_features:
            raise GnnCompressError('--quantize and --sparse-features are '
                                   'not supported for DGCNN; drop them')
        pos = torch.randn(2, max(num_nodes, ckpt.spec.k or 20), 3,
                          generator=gen)
        return export_clouds_onnx(model, pos, out)
    if quantize is None:
        return export_onnx(model, x, edge_index, out,
                           uses_graph=ckpt.spec.uses_graph,
                           sparse_features=sparse_features)
    from gnncompress.export import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / 'fp32.onnx'
        export_onnx(model, x, edge_index, fp32,
                    uses_graph=ckpt.spec.uses_graph)
        return quantize_int8(model, fp32, out, x, edge_index)


# bench -----------------------------------------------------------------------

@outputs.one_run
def bench(models: list[str | Path], *, data: str | Path | None = None,
          data_root: str | Path | None = None,
          graph_size: str | None = None, runtimes: list[str] | None = None,
          threads: list[int] | None = None, device: str = 'auto',
          baseline: str | Path | None = None, warmup: int = 3,
          repeat: int = 20, max_latency_ms: float | None = None,
          min_speedup: float | None = None,
          max_accuracy_drop: float | None = None,
          out: str | Path | None = 'gnncompress-bench', seed: int = 0,
          progress: Any = None, command: str = '',
          config: dict[str, Any] | None = None,
          sizes: str | list[int] | None = None, degree: float | None = None,
          row_budget_s: float | None = None):
    """Every model on one graph (``data`` or a synthetic ``graph_size``),
    under each runtime that applies, on the CPU at each thread count and on
    CUDA when ``device`` allows; writes ``bench.json``, ``bench.md`` and
    ``bench.png`` to ``out`` (``None``: nothing written). Failed gates are
    in the result (``failed_gates``); choosing an exit code is the
    caller's business. ``sizes`` (node counts) also times every model on
    synthetic graphs of those sizes with ``degree`` edges per node (default:
    the main graph's) and plots latency against size
    (``bench-sizes.png``). A row (model x runtime x threads) that takes
    longer than ``row_budget_s`` seconds (default
    :data:`~gnncompress.comparison.DEFAULT_ROW_BUDGET_S`) is stopped and
    reported as failed."""
    from gnncompress import comparison as cmp

    if row_budget_s is None:
        row_budget_s = cmp.DEFAULT_ROW_BUDGET_S
    if not math.isfinite(row_budget_s) or row_budget_s <= 0:
        raise GnnCompressError(f'--row-budget-s must be a positive number of '
                               f'seconds (got {row_budget_s})')

    runtimes = list(runtimes or cmp.RUNTIMES)
    unknown = [r for r in runtimes if r not in cmp.RUNTIMES]
    if unknown:
        raise GnnCompressError(f"Unknown runtime '{unknown[0]}' (choose from "
                               f"{', '.join(cmp.RUNTIMES)})")
    if threads and min(threads) < 1:
        raise GnnCompressError(f'--threads must be positive (got {threads})')
    if warmup < 0 or repeat < 1:
        raise GnnCompressError(f'--warmup must be at least 0 and --repeat at '
                               f'least 1 (got {warmup}, {repeat})')
    if not models:
        raise GnnCompressError('bench needs at least one model file')
    if (data is None) == (graph_size is None):
        raise DataError('bench needs exactly one of --data NAME and '
                        '--graph-size NODES:EDGES:FEATURES')
    if min_speedup is not None and baseline is None:
        raise GnnCompressError('--min-speedup needs --baseline MODEL')
    if max_accuracy_drop is not None and baseline is None:
        raise GnnCompressError('--max-accuracy-drop needs --baseline MODEL')
    if isinstance(sizes, str):
        sizes = cmp.parse_sizes(sizes)
    if out is not None:
        check_out(out)
        check_writable(Path(out))
        outputs.claim(out)
    paths = [Path(m) for m in models]
    if baseline is not None and Path(baseline) not in paths:
        paths.insert(0, Path(baseline))
    entries = cmp.load_models(paths)
    base_name = None
    if baseline is not None:
        base_name = entries[paths.index(Path(baseline))].name

    if graph_size is not None:
        graph = cmp.synthetic_graph(*cmp.parse_graph_size(graph_size),
                                    seed=seed)
        if max_accuracy_drop is not None:
            raise DataError('--max-accuracy-drop needs labels: use --data '
                            'with a labelled dataset, not --graph-size')
    else:
        graph = load_graph(data, data_root, seed=seed)
    for entry in entries:
        width = entry.in_channels
        if width is not None and width != graph.num_features:
            raise ArchitectureError(
                f'{entry.path} takes {width} input features but the graph has '
                f'{graph.num_features}: bench models on the data they were '
                f'trained for')
    devices = [torch.device('cpu')]
    if device in ('auto', 'cuda') or device.startswith('cuda:'):
        if torch.cuda.is_available():
            devices.append(resolve_device('cuda' if device == 'auto'
                                          else device))
        elif device != 'auto':
            resolve_device(device)  # raises: CUDA asked for, not there
    workdir = Path(tempfile.mkdtemp(prefix='gnncompress-bench-'))
    try:
        rows, scaling = _bench_rows(entries, graph, sizes, degree, workdir,
                                    runtimes=runtimes, threads=threads,
                                    devices=devices, warmup=warmup,
                                    repeat=repeat, progress=progress,
                                    seed=seed, row_budget_s=row_budget_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not any(row.latency for row in rows):
        first = rows[0]
        more = f' (and {plural(len(rows) - 1, "more failed row")})' \
            if len(rows) > 1 else ''
        raise GnnCompressError(
            f'No bench row ran, nothing was written: {first.model} '
            f'{first.runtime} {first.device} failed ({first.error}){more}: '
            f'bench models that take this graph, or try other --runtimes')
    degree = degree or graph.edge_index.size(1) / graph.num_nodes
    if base_name is not None:
        cmp.compare_to_baseline(rows, base_name)
    gates = cmp.check_gates(rows, base_name, max_latency_ms=max_latency_ms,
                            min_speedup=min_speedup,
                            max_accuracy_drop=max_accuracy_drop)
    result = cmp.BenchResult(
        graph={'name': graph.name, 'num_nodes': graph.num_nodes,
               'num_edges': int(graph.edge_index.size(1)),
               'num_features': graph.num_features,
               'labelled': bool(graph.test_mask.any())},
        models=[{'name': e.name, 'file': str(e.path),
                 'format': 'onnx' if e.is_onnx else 'pytorch',
                 'parameters': e.parameters, 'file_bytes': e.file_bytes}
                for e in entries],
        rows=rows, baseline=base_name, gates=gates, scaling=scaling,
        settings={'warmup': warmup, 'repeat': repeat, 'runtimes': runtimes,
                  'threads': threads or sorted({1, os.cpu_count() or 1}),
                  'devices': [str(d) for d in devices], 'seed': seed,
                  'sizes': list(scaling), 'degree': degree,
                  'command': command, 'config': config or {},
                  'versions': versions(),
                  'cpu_count': os.cpu_count(), 'time': cmp.timestamp()})
    if out is not None:
        with staged_output(Path(out), outputs.BENCH_FILES) as stage:
            (stage / 'bench.json').write_text(
                json.dumps(result.to_dict(), indent=2) + '\n')
            (stage / 'bench.md').write_text(result.markdown())
            plots.drawn('bench.png', cmp.plot, result, stage / 'bench.png')
            if scaling:
                plots.drawn('bench-sizes.png', cmp.plot_scaling, result,
                            stage / 'bench-sizes.png')
    return result


# amalgamate ------------------------------------------------------------------

@timed_command
def amalgamate(teachers: list[str | Path], *, latency: bool = True,
               latency_budget_s: float = REPORT_BUDGET_S, **kwargs: Any):
    """Merge several teachers into one slimmable student without labels;
    see :func:`gnncompress.amalgamation.amalgamate` for the options, and
    :func:`distill` for ``latency`` and ``latency_budget_s``."""
    from gnncompress.amalgamation import amalgamate as run
    return run(teachers, latency=latency, **kwargs)


# cotrain ---------------------------------------------------------------------

from gnncompress.online import cotrain as _cotrain  # noqa: E402

cotrain = timed_command(_cotrain)
