"""Single-teacher distillation on real data: GAT teacher -> small GCN student.

For every dataset and seed: a GAT teacher (3 layers, 256 hidden, 8 heads)
trained by ``gnncompress train-teacher``'s code, then a GCN student with at
least 30x fewer parameters trained alone, with KD and with LSP, each for the
same number of epochs (no early stopping, so the wall times compare). One
JSON file per dataset x run x seed; files that exist are skipped, so an
interrupted run resumes. ``--report`` writes the tables into
docs/BENCHMARKS.md.

    python benchmarks/distill.py --data-root ../shared/datasets
    python benchmarks/distill.py --report
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from gnncompress import api
from gnncompress.checkpoint import load_checkpoint
from gnncompress.engine import fit, forward_frozen
from gnncompress.models import build_model, count_parameters

HERE = Path(__file__).resolve().parent
RESULTS = HERE / 'results' / 'distill'
DOC = HERE.parent / 'docs' / 'BENCHMARKS.md'
RATIO = 30.0
EPOCHS = 200
# run name -> (method, method options, weight); None: the student alone.
RUNS = {
    'alone': (None, {}, None),
    'kd': ('kd', {}, None),
    'lsp': ('lsp', {}, None),        # the paper's defaults: RBF, lambda 100
    'lsp-w1': ('lsp', {}, 1.0),      # the same with lambda 1
}


def teacher_path(dataset: str, seed: int) -> Path:
    return RESULTS / 'teachers' / f'{dataset}-seed{seed}.pt'


def run_one(dataset: str, seed: int, run: str, data_root: str) -> dict:
    tpath = teacher_path(dataset, seed)
    if not tpath.exists():
        api.train_teacher(dataset, tpath, arch='gat', hidden=256, layers=3,
                          heads=8, data_root=data_root, seed=seed,
                          progress=False)
    ckpt = load_checkpoint(tpath)
    graph = api.resolve_data(dataset, data_root, ckpt, seed)
    teacher = ckpt.build()
    spec = api.student_spec(ckpt.spec, graph, ratio=RATIO)
    method_name, options, weight = RUNS[run]

    start = time.perf_counter()
    teacher_out = forward_frozen(teacher, graph) if method_name else None
    teacher_seconds = time.perf_counter() - start
    api.seed_everything(seed)
    student = build_model(spec)
    method = api.build_method(method_name, options) if method_name else None
    result = fit(student, graph, method=method,
                 teacher_outputs=[teacher_out] if teacher_out else [],
                 epochs=EPOCHS, patience=None, weight=weight, progress=False)
    return {
        'dataset': dataset, 'seed': seed, 'run': run,
        'test_accuracy': result.test_accuracy,
        'val_accuracy': result.val_accuracy, 'best_epoch': result.best_epoch,
        'epochs': result.epochs_run,
        'seconds': result.seconds + teacher_seconds,
        'student_parameters': count_parameters(student),
        'teacher_parameters': count_parameters(teacher),
        'teacher_test_accuracy': ckpt.card.get('test_accuracy'),
        'student_spec': spec.to_dict(), 'threads': torch.get_num_threads(),
    }


def collect(datasets: list[str], seeds: list[int], data_root: str) -> None:
    for dataset in datasets:
        for seed in seeds:
            for run in RUNS:
                path = RESULTS / dataset / f'{run}-seed{seed}.json'
                if path.exists():
                    continue
                row = run_one(dataset, seed, run, data_root)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix('.tmp')
                tmp.write_text(json.dumps(row, indent=2))
                tmp.replace(path)
                print(f"{dataset} seed {seed} {run}: "
                      f"{100 * row['test_accuracy']:.1f}% in "
                      f"{row['seconds']:.1f} s", flush=True)


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return '-'
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f'{mean:.1f} ± {std:.1f}'


def report() -> str:
    lines = ['| dataset | teacher (GAT 3x256x8) | student alone | KD | LSP '
             '(λ=100, paper) | LSP (λ=1) | params teacher / student | '
             's/run alone | s/run KD | s/run LSP | seeds |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for folder in sorted(p for p in RESULTS.iterdir()
                         if p.is_dir() and p.name != 'teachers'):
        rows = [json.loads(p.read_text()) for p in folder.glob('*.json')]
        by_run = {r: [x for x in rows if x['run'] == r] for r in RUNS}
        alone = by_run['alone']
        if not alone:
            continue
        teacher = [x['teacher_test_accuracy'] for x in alone]
        ratio = alone[0]['teacher_parameters'] / \
            alone[0]['student_parameters']
        secs = {r: statistics.fmean(x['seconds'] for x in v) if v else 0
                for r, v in by_run.items()}
        lines.append(
            f"| {folder.name} | {_mean_std(teacher)} | "
            + ' | '.join(_mean_std([x['test_accuracy'] for x in by_run[r]])
                         for r in RUNS)
            + f" | {alone[0]['teacher_parameters']:,} / "
            f"{alone[0]['student_parameters']:,} "
            f"({ratio:.0f}x)"
            f" | {secs['alone']:.1f} | {secs['kd']:.1f} | {secs['lsp']:.1f}"
            f' | {len(alone)} |')
    return '\n'.join(lines)


def write_report() -> None:
    machine = (f'{platform.machine()}, {torch.get_num_threads()} threads, '
               f'torch {torch.__version__}, Python {platform.python_version()}')
    section = '\n'.join([
        '<!-- distill:start -->', report(), '',
        f'Machine of the last `--report`: {machine}.', '<!-- distill:end -->'])
    text = DOC.read_text() if DOC.exists() else ''
    if '<!-- distill:start -->' in text:
        head, rest = text.split('<!-- distill:start -->', 1)
        tail = rest.split('<!-- distill:end -->', 1)[1]
        text = head + section + tail
    else:
        text += '\n' + section + '\n'
    DOC.write_text(text)
    print(report())


def _seeds(text: str) -> list[int]:
    if '-' in text:
        a, b = text.split('-')
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(',')]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', default='Cora,CiteSeer')
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--data-root', default=str(HERE.parent.parent /
                                                   'shared' / 'datasets'))
    parser.add_argument('--quick', action='store_true',
                        help='Cora, one seed: a few minutes.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    args = parser.parse_args(argv)
    if not args.report:
        datasets = ['Cora'] if args.quick else args.datasets.split(',')
        seeds = [0] if args.quick else _seeds(args.seeds)
        collect(datasets, seeds, args.data_root)
    write_report()


if __name__ == '__main__':
    sys.exit(main())
