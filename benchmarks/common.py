"""Shared pieces of the benchmark scripts: resumable result files, one
student run, mean ± std, and the sections of docs/BENCHMARKS.md."""
from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.graph import Graph
from gnncompress.models import ArchSpec, build_model, count_parameters
from gnncompress.training.train import fit, forward_frozen

HERE = Path(__file__).resolve().parent
RESULTS = HERE / 'results'
DOC = HERE.parent / 'docs' / 'BENCHMARKS.md'
SHARED = HERE.parent.parent / 'shared' / 'datasets'


def write_json(path: Path, row: dict[str, Any]) -> None:
    """Atomic: a result file exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(row, indent=2))
    tmp.replace(path)


def read_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob('*.json'))]


def ensure_teacher(path: Path, dataset: str, data_root: str, seed: int,
                   **kwargs: Any) -> Path:
    if not path.exists():
        api.train_teacher(dataset, path, data_root=data_root, seed=seed,
                          progress=False, **kwargs)
    return path


def student_run(teacher: Path, dataset: str, data_root: str, seed: int,
                method: str | None, spec: ArchSpec | None = None,
                student: str = 'gcn', ratio: float = 30.0,
                options: dict[str, Any] | None = None,
                weight: float | None = None, epochs: int = 200,
                patience: int | None = None, lr: float = 0.01,
                graph: Graph | None = None,
                history_every: int = 0) -> dict[str, Any]:
    """Train one student (alone when ``method`` is None) and return its
    figures. The teacher's forward is part of the timed work.
    ``history_every`` > 0 keeps every that many epochs of the loss history
    (the first and last included) under ``history``."""
    ckpt = load_checkpoint(teacher)
    graph = graph or api.resolve_data(dataset, data_root, ckpt, seed)
    teacher_model = ckpt.build()
    spec = spec or api.student_spec(ckpt.spec, graph, arch=student,
                                    ratio=ratio)
    start = time.perf_counter()
    teacher_out = forward_frozen(teacher_model, graph) if method else None
    teacher_seconds = time.perf_counter() - start
    api.seed_everything(seed)
    model = build_model(spec)
    distiller = api.build_method(method, options) if method else None
    label_weight = distiller.default_label_weight if distiller else 1.0
    result = fit(model, graph, method=distiller,
                 teacher_outputs=[teacher_out] if teacher_out else [],
                 epochs=epochs, patience=patience, weight=weight, lr=lr,
                 label_weight=label_weight, progress=False)
    kept = {} if history_every <= 0 else {'history': [
        h for i, h in enumerate(result.history)
        if i % history_every == 0 or i == len(result.history) - 1]}
    return {
        **kept,
        'dataset': dataset, 'seed': seed, 'method': method or 'alone',
        'student': spec.arch, 'test_accuracy': result.test_accuracy,
        'val_accuracy': result.val_accuracy, 'best_epoch': result.best_epoch,
        'epochs': result.epochs_run, 'fit_seconds': result.seconds,
        'teacher_forward_seconds': teacher_seconds,
        'seconds_per_epoch': result.seconds / max(1, result.epochs_run),
        'student_parameters': count_parameters(model),
        'teacher_parameters': count_parameters(teacher_model),
        'teacher_test_accuracy': ckpt.card.get('test_accuracy'),
        'student_spec': spec.to_dict(), 'options': options or {},
        'weight': weight, 'threads': torch.get_num_threads(),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024,
    }


def mean_std(values: list[float], scale: float = 100.0,
             digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    mean = statistics.fmean(values) * scale
    if len(values) == 1:   # one run has no spread to show
        return f'{mean:.{digits}f}'
    std = statistics.stdev(values) * scale
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _threads() -> str:
    n = torch.get_num_threads()
    return f'{n} thread' + ('' if n == 1 else 's')


def machine() -> str:
    import os
    cpu = 'unknown CPU'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({_threads()}), Python '
            f'{platform.python_version()}')


def update_doc(marker: str, body: str) -> None:
    """Replace the section between ``<!-- marker:start/end -->`` in
    docs/BENCHMARKS.md, appending it if absent."""
    start, end = f'<!-- {marker}:start -->', f'<!-- {marker}:end -->'
    section = f'{start}\n{body.rstrip()}\n{end}'
    text = DOC.read_text() if DOC.exists() else '# Benchmarks\n'
    if start in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + '\n\n' + section + '\n'
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def publish(path: Path, marker: str,
            render: Callable[[dict[str, Any]], str]) -> None:
    """Render the stored result ``path`` into the ``marker`` section of
    docs/BENCHMARKS.md (and the terminal)."""
    if not path.exists():
        sys.exit(f'{path} missing: run without --report first')
    body = render(json.loads(path.read_text()))
    print(body)
    update_doc(marker, body)


def publish_folder(folder: Path, marker: str,
                   render: Callable[[], str]) -> None:
    """Render the result files of ``folder`` into the ``marker`` section
    of docs/BENCHMARKS.md (and the terminal)."""
    if not folder.is_dir():
        sys.exit(f'{folder} missing: run without --report first')
    body = render()
    print(body)
    update_doc(marker, body)


def parse_seeds(text: str) -> list[int]:
    if '-' in text:
        a, b = text.split('-')
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(',')]
