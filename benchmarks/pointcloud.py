"""Point clouds: the LSP paper's Table 4 shape on ModelNet10-PCD.

A DGCNN teacher (EdgeConv widths 64, 64, 128, 256, k = 20) and a student
with half the channels and k = 10 (32, 32, 64, 128; about 0.12M
parameters), trained alone and with KD, FitNet, AT and LSP (dynamic: local
structures on the union of both models' kNN graphs), each from the last
EdgeConv layer of the teacher to the student's last. Rows: overall and mean
class accuracy on the official test split (selection on 10% of the
training clouds per class), parameters, latency per cloud (eager PyTorch,
one cloud), training seconds per epoch and peak memory of the run.

Two settings:

- ``cpu`` (default, within 3 hours on 2 cores): 64 points per cloud, the
  teacher's embedding 512 and head 256 (the paper's are 1024 and 512, 256),
  20 teacher epochs and 15 student epochs. At 128 points a teacher epoch
  took about 125 s on one thread (30 epochs and 3 x 5 student runs would
  not fit); at 64 points about 60 s, and the whole setting about 2.5
  hours of one core (run seeds in two processes: ``--seeds 0-1`` and
  ``--seeds 2`` once the teacher is there).
- ``full`` (for a GPU): 1,024 points, the paper's teacher (embedding 1024,
  head 512, 256), 100 epochs each.

Both use Adam (lr 0.001, cosine schedule, weight decay 1e-4), batches of
32 clouds and the ``scale`` augmentation (the DGCNN authors' code). One
teacher per setting (seed 0); students on 3 seeds. Every run is its own
process (so the peak memory is the run's own) and writes one JSON file;
existing files are skipped, so an interrupted run resumes.

    python benchmarks/pointcloud.py                       # cpu setting
    python benchmarks/pointcloud.py --setting full --device cuda
    python benchmarks/pointcloud.py --quick --epochs 1    # smoke test
    python benchmarks/pointcloud.py --report              # only the doc
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    RESULTS,
    SHARED,
    machine,
    mean_std,
    parse_seeds,
    read_rows,
    update_doc,
    write_json,
)

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.models import build_model, count_parameters
from gnncompress.outputs.latency import torch_latency
from gnncompress.tasks.cloud_training import evaluate
from gnncompress.tasks.point_clouds import cloud_points, load_clouds
from gnncompress.workflows.point_clouds import fit_clouds, student_spec

METHODS = ('alone', 'kd', 'fitnet', 'at', 'lsp')
TEACHER = dict(hidden=[64, 64, 128, 256], k=20)
STUDENT = dict(hidden=[32, 32, 64, 128], k=10, emb=256, head=[128])
SETTINGS: dict[str, dict[str, Any]] = {
    'cpu': dict(points=64, emb=512, head=[256], teacher_epochs=20,
                epochs=15),
    'full': dict(points=1024, emb=1024, head=[512, 256],
                 teacher_epochs=100, epochs=100),
}
POINTS_OVERRIDE: int | None = None   # --points (smoke tests)
COMMON = dict(lr=0.001, weight_decay=1e-4, batch_size=32,
              augment=['scale'])
NAMES = {'teacher': 'teacher', 'alone': 'student alone',
         'kd': 'student KD', 'fitnet': 'student FitNet',
         'at': 'student AT', 'lsp': 'student LSP'}
# The LSP paper's Table 4 (ModelNet40, 1,024 points): overall accuracy.
PAPER = {'teacher': 92.4, 'alone': 91.2, 'kd': 91.6, 'at': 91.6,
         'fitnet': 91.1, 'lsp': 91.9}


def _teacher_path(out: Path) -> Path:
    # results/<run>/teachers/ is not committed (.gitignore).
    return out.parent / 'teachers' / f'{out.name}.pt'


def _points(setting: str) -> int:
    return POINTS_OVERRIDE or SETTINGS[setting]['points']


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _latency_ms(model: torch.nn.Module, graph, device) -> float:
    one = cloud_points(graph)[graph.test_mask.nonzero().view(-1)[:1]]
    x = one.reshape(-1, 3).to(device)
    empty = torch.zeros(2, 0, dtype=torch.long, device=device)
    return torch_latency(model.to(device), x, empty).median_ms


def run_teacher(setting: str, out: Path, data_root: str, device: str,
                epochs: int) -> dict[str, Any]:
    s = SETTINGS[setting]
    path = _teacher_path(out)
    start = time.perf_counter()
    result = api.train_teacher(
        'ModelNet10', path, arch='dgcnn', data_root=data_root, seed=0,
        epochs=epochs, patience=None, device=device, progress=False,
        points=_points(setting), emb=s['emb'], head=s['head'],
        lr=COMMON['lr'], weight_decay=COMMON['weight_decay'],
        batch_size=COMMON['batch_size'], augment=COMMON['augment'],
        **TEACHER)
    seconds = time.perf_counter() - start
    dev = api.resolve_device(device)
    ckpt = load_checkpoint(path)
    model = ckpt.build().to(dev)
    graph = load_clouds('ModelNet10', data_root, seed=0,
                        points=_points(setting)).to(dev)
    overall, mean_class = evaluate(model, graph, graph.test_mask)
    return {'method': 'teacher', 'seed': 0, 'setting': setting,
            'points': _points(setting),
            'test_accuracy': overall, 'mean_class_accuracy': mean_class,
            'val_accuracy': result.val_accuracy,
            'parameters': result.parameters, 'epochs': result.epochs_run,
            'seconds_per_epoch': seconds / max(1, result.epochs_run),
            'latency_ms': _latency_ms(model, graph, dev),
            'peak_memory_mb': _peak_memory_mb(dev),
            'spec': ckpt.spec.to_dict(), 'device': str(dev),
            'threads': torch.get_num_threads(), 'machine': machine()}


def run_student(setting: str, out: Path, method: str, seed: int,
                data_root: str, device: str, epochs: int) -> dict[str, Any]:
    dev = api.resolve_device(device)
    ckpt = load_checkpoint(_teacher_path(out))
    graph = load_clouds('ModelNet10', data_root, seed=seed,
                        points=_points(setting)).to(dev)
    spec = student_spec(ckpt.spec, graph, **STUDENT)
    teacher = ckpt.build().to(dev) if method != 'alone' else None
    distiller = api.build_method(method) if method != 'alone' else None
    api.seed_everything(seed)
    model = build_model(spec).to(dev)
    result = fit_clouds(model, graph, teacher=teacher, method=distiller,
                        epochs=epochs, lr=COMMON['lr'],
                        weight_decay=COMMON['weight_decay'],
                        batch_size=COMMON['batch_size'],
                        augmentations=COMMON['augment'], seed=seed,
                        progress=False)
    overall, mean_class = evaluate(model, graph, graph.test_mask)
    return {'method': method, 'seed': seed, 'setting': setting,
            'points': _points(setting),
            'test_accuracy': overall, 'mean_class_accuracy': mean_class,
            'val_accuracy': result.val_accuracy,
            'best_epoch': result.best_epoch,
            'parameters': count_parameters(model),
            'epochs': result.epochs_run,
            'seconds_per_epoch': result.seconds / max(1, result.epochs_run),
            'latency_ms': _latency_ms(model, graph, dev),
            'peak_memory_mb': _peak_memory_mb(dev),
            'weight': distiller.default_weight if distiller else None,
            'spec': spec.to_dict(), 'device': str(dev),
            'threads': torch.get_num_threads(), 'machine': machine()}


def _job(args: argparse.Namespace, out: Path) -> None:
    """One run in this process (called by the parent through a child)."""
    if args.job == 'teacher':
        row = run_teacher(args.setting, out, args.data_root, args.device,
                          args.teacher_epochs)
        write_json(out / 'teacher.json', row)
    else:
        row = run_student(args.setting, out, args.job, args.job_seed,
                          args.data_root, args.device, args.epochs)
        write_json(out / f'{args.job}-seed{args.job_seed}.json', row)


def _spawn(argv: list[str], job: str, seed: int = 0) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv,
           '--job', job, '--job-seed', str(seed)]
    subprocess.run(cmd, check=True)


def report(out: Path, setting: str) -> str:
    rows = read_rows(out) if out.is_dir() else []
    if not rows:
        return f'No results yet for the {setting} setting.'
    s = SETTINGS[setting]
    first = rows[0]
    points = first.get('points', s['points'])
    lines = [f'Setting `{setting}`: ModelNet10-PCD, {points} points '
             f'per cloud, {first["device"]}; teacher DGCNN '
             f'{TEACHER["hidden"]} k={TEACHER["k"]}, embedding {s["emb"]}, '
             f'head {s["head"]}; student {STUDENT["hidden"]} '
             f'k={STUDENT["k"]}, embedding {STUDENT["emb"]}, head '
             f'{STUDENT["head"]}. Test accuracy (%) mean ± std over seeds '
             f'(the teacher: one run, seed 0).', '',
             '| model | overall acc | mean class acc | paper (ModelNet40, '
             'overall) | parameters | latency per cloud (ms) | s / epoch '
             '| peak memory (MB) | epochs | seeds |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for method in ('teacher', *METHODS):
        mine = [r for r in rows if r['method'] == method]
        if not mine:
            continue
        name = NAMES[method]
        lines.append(
            f'| {name} | {mean_std([r["test_accuracy"] for r in mine])} | '
            f'{mean_std([r["mean_class_accuracy"] for r in mine])} | '
            f'{PAPER[method]:.1f} | {mine[0]["parameters"]:,} | '
            f'{mean_std([r["latency_ms"] for r in mine], 1, 2)} | '
            f'{mean_std([r["seconds_per_epoch"] for r in mine], 1, 1)} | '
            f'{max(r["peak_memory_mb"] for r in mine):.0f} | '
            f'{mine[0]["epochs"]} | {len(mine)} |')
    alone = [r['test_accuracy'] for r in rows if r['method'] == 'alone']
    if alone:
        base = 100 * sum(alone) / len(alone)
        gains = []
        for method in METHODS[1:]:
            mine = [r['test_accuracy'] for r in rows if r['method'] == method]
            if mine:
                ours = 100 * sum(mine) / len(mine) - base
                gains.append(f'{NAMES[method][8:]} {ours:+.1f} (paper '
                             f'{PAPER[method] - PAPER["alone"]:+.1f})')
        lines += ['', 'Overall accuracy against the student alone, in '
                  'points: ' + ', '.join(gains) + '.']
    lines += ['', f'Machine: {first["machine"]}.']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--setting', choices=sorted(SETTINGS), default='cpu')
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--epochs', type=int, default=None,
                        help='Student epochs (default: the setting\'s).')
    parser.add_argument('--teacher-epochs', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--points', type=int, default=None,
                        help='Points per cloud (default: the setting\'s; '
                        '32 with --quick).')
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--quick', action='store_true',
                        help='Seed 0 only, results kept apart and the doc '
                        'left alone: a smoke test (with --epochs 1).')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    parser.add_argument('--job', help=argparse.SUPPRESS)
    parser.add_argument('--job-seed', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global POINTS_OVERRIDE
    POINTS_OVERRIDE = args.points or (32 if args.quick else None)
    s = SETTINGS[args.setting]
    args.epochs = args.epochs or s['epochs']
    args.teacher_epochs = args.teacher_epochs or \
        (args.epochs if args.quick else s['teacher_epochs'])
    out = RESULTS / ('pointcloud-quick' if args.quick else 'pointcloud') \
        / args.setting
    if args.job:
        _job(args, out)
        return
    passed = [a for a in (argv if argv is not None else sys.argv[1:])
              if a not in ('--report',)]
    if not args.report:
        if not (out / 'teacher.json').exists():
            _spawn(passed, 'teacher')
        teacher = json.loads((out / 'teacher.json').read_text())
        print(f"teacher: {100 * teacher['test_accuracy']:.2f}%", flush=True)
        seeds = [0] if args.quick else parse_seeds(args.seeds)
        for seed in seeds:
            for method in args.methods.split(','):
                if not (out / f'{method}-seed{seed}.json').exists():
                    _spawn(passed, method, seed)
                    row = json.loads(
                        (out / f'{method}-seed{seed}.json').read_text())
                    print(f'{method} seed {seed}: '
                          f"{100 * row['test_accuracy']:.2f}%", flush=True)
    body = '\n\n'.join(report(RESULTS / 'pointcloud' / name, name)
                       for name in SETTINGS) if not args.quick else \
        report(out, args.setting)
    if not args.quick:
        update_doc('pointcloud', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
