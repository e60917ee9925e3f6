"""The Python API. The CLI is a thin layer over these functions, so a script
or a CI pipeline gets exactly what the command line does."""
from __future__ import annotations

import contextlib
import inspect as _inspect
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gnncompress import __version__
from gnncompress.bench import onnx_latency, torch_latency
from gnncompress.checkpoint import (
    CARD_KIND,
    Checkpoint,
    card_path,
    load_checkpoint,
)
from gnncompress.data import Graph, load_graph
from gnncompress.engine import accuracy, fit, forward_frozen
from gnncompress.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
    OutputError,
)
from gnncompress.export import atomic_path, export_onnx, save_safetensors
from gnncompress.methods import DistillMethod, canonical_name, method_class
from gnncompress.methods.combined import Combined
from gnncompress.models import (
    ArchSpec,
    build_model,
    count_parameters,
    count_spec_parameters,
)
from gnncompress.report import ModelEntry, Report

DEFAULT_RATIO = 10.0
STUDENT_DROPOUT = 0.5


# Output folders ---------------------------------------------------------------

@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A private folder next to ``out``; its files move into ``out`` only when
    the block succeeds, so a failed run leaves nothing in ``out``."""
    out = Path(out)
    check_writable(out)
    anchor = out
    while not anchor.exists():
        anchor = anchor.parent
    try:
        stage = Path(tempfile.mkdtemp(prefix='.gnncompress-', dir=anchor))
    except OSError as e:
        raise OutputError(f'Output folder {out} cannot be written '
                          f'({e.strerror}): choose another --out') from None
    try:
        yield stage
        try:
            out.mkdir(parents=True, exist_ok=True)
            for item in sorted(stage.iterdir()):
                os.replace(item, out / item.name)
        except OSError as e:
            raise OutputError(f'Output folder {out} cannot be written '
                              f'({e.strerror}): choose another --out') \
                from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_writable(out: Path) -> None:
    """Fail before any training if ``out`` cannot be written; creates
    nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f'Output folder {out} is a file: choose another '
                          f'--out')
    anchor = out
    while not anchor.exists():
        anchor = anchor.parent
    if not anchor.is_dir():
        raise OutputError(f'Output folder {out} cannot be written: {anchor} '
                          f'is a file; choose another --out')
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix='.gnncompress-', dir=anchor))
    except OSError as e:
        raise OutputError(f'Output folder {out} cannot be written '
                          f'({e.strerror}): choose another --out') from None


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
                 ckpt: Checkpoint, seed: int) -> Graph:
    """``--data`` if given, else the dataset named on the teacher's card."""
    if data is None:
        card = ckpt.card
        if not card.get('data'):
            raise DataError(
                f'No dataset given: pass --data NAME (the checkpoint has no '
                f'teacher card {card_path(ckpt.path).name} naming one)')
        base = ckpt.path.parent
        data = card['data']
        if card.get('data_is_file'):
            data = base / data
        if data_root is None and card.get('data_root') is not None:
            data_root = base / card['data_root']
    return load_graph(data, data_root, seed=seed)


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

    def to_dict(self) -> dict[str, Any]:
        return {'path': str(self.path), 'format': self.format,
                'spec': self.spec.to_dict(), 'sources': self.sources,
                'parameters': self.parameters, 'notes': self.notes,
                'card': self.card}


def inspect(checkpoint: str | Path,
            overrides: dict[str, Any] | None = None) -> Inspection:
    """The inferred architecture of a checkpoint and where each field came
    from."""
    ckpt = load_checkpoint(checkpoint, overrides)
    return Inspection(path=ckpt.path, format=ckpt.format, spec=ckpt.spec,
                      sources=ckpt.sources,
                      parameters=count_parameters(ckpt.build()),
                      notes=ckpt.notes, card=ckpt.card)


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
                  hidden: int = 256, layers: int = 3, heads: int = 8,
                  dropout: float | None = None, norm: str | None = None,
                  jk: str | None = None, aggr: str = 'mean',
                  alpha: float = 0.1, theta: float = 0.5,
                  data_root: str | Path | None = None, epochs: int = 300,
                  lr: float = 0.005, weight_decay: float = 5e-4,
                  patience: int | None = 100, seed: int = 0,
                  device: str = 'auto', progress: bool = True,
                  readout: str = 'mean') -> TeacherResult:
    """Train a teacher and save it as a plain PyG ``state_dict`` (the format
    users already have), with a teacher card (``.json``) beside it that
    records what the weights cannot tell and the dataset it was trained
    on. On a graph-classification dataset the teacher pools its last layer
    with ``readout`` and classifies graphs."""
    out = Path(out)
    if out.suffix not in ('.pt', '.pth'):
        raise OutputError(f'Teacher file {out} must end in .pt or .pth')
    check_writable(out.parent)
    dev = resolve_device(device)
    graph = load_graph(data, data_root, seed=seed)
    if dropout is None:
        # GAT's and GCNII's papers use 0.6 on the citation graphs.
        dropout = 0.6 if arch in ('gat', 'gatv2', 'gcnii') else 0.5
    spec = ArchSpec(arch=arch, in_channels=graph.num_features,
                    hidden_channels=hidden, num_layers=layers,
                    out_channels=graph.num_classes,
                    heads=heads if arch in ('gat', 'gatv2') else 1,
                    dropout=dropout, norm=norm, jk=jk, aggr=aggr,
                    alpha=alpha, theta=theta,
                    readout=readout if graph.batch is not None else None)
    seed_everything(seed)
    model = build_model(spec).to(dev)
    result = fit(model, graph.to(dev), epochs=epochs, lr=lr,
                 weight_decay=weight_decay, patience=patience,
                 progress=progress, desc=f'teacher {arch}')
    card = {
        'kind': CARD_KIND, 'version': __version__,
        'spec': {k: getattr(spec, k) for k in
                 (*ArchSpec.NOT_IN_WEIGHTS, 'jk', 'norm')},
        'split': graph.split, 'seed': seed, 'epochs_run': result.epochs_run,
        'val_accuracy': result.val_accuracy,
        'test_accuracy': result.test_accuracy,
        **_card_data(data, data_root, out.parent),
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
        return make(hidden)
    ratio = DEFAULT_RATIO if ratio is None else ratio
    if ratio <= 0:
        raise GnnCompressError(f"'ratio' must be positive (got {ratio})")
    budget = count_spec_parameters(teacher) / ratio
    start = max(teacher.hidden_channels, heads)
    for width in range(start - start % heads, 0, -heads):
        if count_spec_parameters(make(width)) <= budget:
            return make(width)
    raise ArchitectureError(
        f'No {layers}-layer {arch} student is {ratio:g}x smaller than the '
        f'teacher ({count_spec_parameters(teacher):,} parameters): lower '
        f'--ratio or --layers')


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


def distill(teacher: str | Path, *, data: str | Path | None = None,
            data_root: str | Path | None = None, method: str = 'kd',
            method_options: dict[str, Any] | None = None,
            student: str | None = None, hidden: int | None = None,
            layers: int = 2, heads: int = 1, ratio: float | None = None,
            epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
            label_weight: float | None = None, weight: float | None = None,
            patience: int | None = 100, seed: int = 0, device: str = 'auto',
            out: str | Path | None = None, baseline: bool = False,
            overrides: dict[str, Any] | None = None, export: bool = True,
            progress: bool = True, command: str = '') -> Report:
    """Distill ``teacher`` into a smaller student and write
    ``student.safetensors``, ``student.onnx``, ``report.json`` and
    ``report.md`` to ``out``. ``student`` defaults to the method's preferred
    student (an MLP for GLNN) or GCN; ``weight`` and ``label_weight`` to the
    method's own defaults."""
    teacher = Path(teacher)
    distiller = build_method(method, method_options)
    student = student or distiller.preferred_student or 'gcn'
    if label_weight is None:
        label_weight = distiller.default_label_weight
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / f'{teacher.stem}-{distiller.name}'
    dev = resolve_device(device)
    check_writable(out)
    ckpt = load_checkpoint(teacher, overrides)
    graph = resolve_data(data, data_root, ckpt, seed)
    check_fits(ckpt.spec, graph, 'teacher')
    check_task(ckpt.spec, graph, distiller)
    s_spec = student_spec(ckpt.spec, graph, arch=student, hidden=hidden,
                          layers=layers, heads=heads, ratio=ratio,
                          readout=ckpt.spec.readout)
    g = graph.to(dev)

    teacher_model = ckpt.build().to(dev)
    teacher_out = forward_frozen(teacher_model, g)  # once for the whole run
    teacher_acc = accuracy(teacher_out.logits, g.y, g.test_mask)
    train_args = dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                      patience=patience, progress=progress)

    alone_entry = None
    if baseline:
        seed_everything(seed)
        alone = build_model(s_spec).to(dev)
        alone_fit = fit(alone, g, label_weight=1.0, desc='student alone',
                        **train_args)
        alone_entry = ModelEntry(
            role='student-alone', spec=s_spec.to_dict(),
            parameters=count_parameters(alone),
            test_accuracy=alone_fit.test_accuracy,
            val_accuracy=alone_fit.val_accuracy)

    seed_everything(seed)
    model = build_model(s_spec).to(dev)
    result = fit(model, g, method=distiller, teacher_outputs=[teacher_out],
                 label_weight=label_weight, weight=weight,
                 desc=f'distill {distiller.name}', **train_args)
    used_weight = distiller.default_weight if weight is None else weight

    with staged_output(out) as stage:
        files: dict[str, str] = {}
        parity_cases: dict[str, float] = {}
        student_entry = ModelEntry(
            role='student', spec=s_spec.to_dict(),
            parameters=count_parameters(model),
            test_accuracy=result.test_accuracy,
            val_accuracy=result.val_accuracy)
        teacher_entry = ModelEntry(
            role='teacher', spec=ckpt.spec.to_dict(),
            parameters=count_parameters(teacher_model),
            test_accuracy=teacher_acc, file=str(teacher),
            file_bytes=teacher.stat().st_size)
        dev_name = dev.type
        teacher_entry.latency[f'pytorch-{dev_name}'] = torch_latency(
            teacher_model, g.x, g.edge_index, g.batch).to_dict()
        student_entry.latency[f'pytorch-{dev_name}'] = torch_latency(
            model, g.x, g.edge_index, g.batch).to_dict()
        if export:
            st_path = save_safetensors(
                model, s_spec, stage / 'student.safetensors',
                extra={'gnncompress.method': distiller.name,
                       'gnncompress.data': graph.name})
            student_entry.file = str(out / 'student.safetensors')
            student_entry.file_bytes = st_path.stat().st_size
            files['safetensors'] = student_entry.file
            onnx_path = stage / 'student.onnx'
            parity = export_onnx(model, graph.x, graph.edge_index, onnx_path,
                                 uses_graph=s_spec.uses_graph,
                                 batch=graph.batch)
            parity_cases = parity.cases
            files['onnx'] = str(out / 'student.onnx')
            student_entry.latency['onnxruntime-cpu'] = onnx_latency(
                onnx_path, graph.x, graph.edge_index, graph.batch).to_dict()
        model.to(dev)
        files['report_json'] = str(out / 'report.json')
        files['report_md'] = str(out / 'report.md')
        report = Report(
            command=command or f'gnncompress distill {teacher}',
            method=distiller.name,
            method_options={**(method_options or {}), 'weight': used_weight,
                            'label_weight': label_weight},
            data={'name': graph.name, 'nodes': graph.num_nodes,
                  'edges': int(graph.edge_index.size(1)),
                  'features': graph.num_features,
                  'classes': graph.num_classes, 'split': graph.split},
            teacher=teacher_entry, student=student_entry,
            student_alone=alone_entry,
            compression_ratio=teacher_entry.parameters /
            student_entry.parameters,
            onnx_max_abs_diff=max(parity_cases.values(), default=float('nan')),
            onnx_parity=parity_cases,
            training={'epochs': epochs, 'epochs_run': result.epochs_run,
                      'best_epoch': result.best_epoch,
                      'seconds': result.seconds, 'lr': lr,
                      'weight_decay': weight_decay, 'patience': patience,
                      'val_accuracy': result.val_accuracy},
            seed=seed, device=str(dev), versions=versions(),
            teacher_spec_sources=ckpt.sources,
            notes=list(ckpt.notes.values()), files=files)
        (stage / 'report.json').write_text(report.to_json() + '\n')
        (stage / 'report.md').write_text(report.to_markdown())
    return report


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


# export ----------------------------------------------------------------------

def export(checkpoint: str | Path, out: str | Path,
           overrides: dict[str, Any] | None = None, num_nodes: int = 64,
           seed: int = 0):
    """ONNX export of any checkpoint, validated on random graphs (the
    checkpoint carries no data)."""
    out = Path(out)
    if out.suffix != '.onnx':
        raise OutputError(f'Output file {out} must end in .onnx')
    check_writable(out.parent)
    ckpt = load_checkpoint(checkpoint, overrides)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, ckpt.spec.in_channels, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, 4 * num_nodes),
                               generator=gen)
    make_folder(out.parent)
    return export_onnx(ckpt.build(), x, edge_index, out,
                       uses_graph=ckpt.spec.uses_graph)


# cotrain ---------------------------------------------------------------------

from gnncompress.online import cotrain as cotrain  # noqa: E402
