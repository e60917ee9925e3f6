"""Single-teacher distillation on real data: GAT teacher -> small GCN student.

For every dataset and seed: a GAT teacher (3 layers, 256 hidden, 8 heads)
trained with that seed by ``gnncompress train-teacher``'s code, then a GCN
student with at least 30x fewer parameters, trained alone, with KD and with
LSP for 200 epochs each (selection on validation accuracy, no early
stopping). One JSON file per dataset x run x seed; existing files are
skipped, so an interrupted run resumes. A separate timing phase repeats each
run three times on seed 0 and keeps the median, so that wall times are not
disturbed by whatever else ran during the accuracy runs.

    python benchmarks/distill.py                 # accuracy runs + timing
    python benchmarks/distill.py --report        # only rewrite the doc
"""
from __future__ import annotations

import argparse
import statistics
import sys

from common import (
    RESULTS,
    SHARED,
    ensure_teacher,
    machine,
    mean_std,
    parse_seeds,
    read_rows,
    student_run,
    update_doc,
    write_json,
)

OUT = RESULTS / 'distill'
RATIO = 30.0
EPOCHS = 200
REPEATS = 3
# run name -> (method, weight); method None is the student alone.
RUNS = {
    'alone': (None, None),
    'kd': ('kd', None),
    'lsp': ('lsp', 100.0),       # the paper's setting: RBF kernel, λ = 100
    'lsp-w1': ('lsp', 1.0),      # the same with λ = 1
}
TEACHER = dict(arch='gat', hidden=256, layers=3, heads=8)


def _teacher(dataset: str, seed: int, data_root: str):
    return ensure_teacher(OUT / 'teachers' / f'{dataset}-seed{seed}.pt',
                          dataset, data_root, seed, **TEACHER)


def collect(datasets: list[str], seeds: list[int], data_root: str) -> None:
    for dataset in datasets:
        for seed in seeds:
            for run, (method, weight) in RUNS.items():
                path = OUT / dataset / f'{run}-seed{seed}.json'
                if path.exists():
                    continue
                # Trained only when a result is missing (not committed).
                teacher = _teacher(dataset, seed, data_root)
                row = student_run(teacher, dataset, data_root, seed, method,
                                  ratio=RATIO, weight=weight, epochs=EPOCHS)
                write_json(path, {**row, 'run': run})
                print(f"{dataset} seed {seed} {run}: "
                      f"{100 * row['test_accuracy']:.1f}%", flush=True)


def timing(datasets: list[str], data_root: str) -> None:
    for dataset in datasets:
        path = OUT / 'timing' / f'{dataset}.json'
        if path.exists():
            continue
        teacher = _teacher(dataset, 0, data_root)
        seconds = {}
        for run, (method, weight) in RUNS.items():
            totals = [student_run(teacher, dataset, data_root, 0, method,
                                  ratio=RATIO, weight=weight, epochs=EPOCHS)
                      for _ in range(REPEATS)]
            seconds[run] = statistics.median(
                r['fit_seconds'] + r['teacher_forward_seconds']
                for r in totals)
        write_json(path, {'dataset': dataset, 'epochs': EPOCHS,
                          'repeats': REPEATS, 'seconds': seconds,
                          'machine': machine()})
        print(f'{dataset} timing: {seconds}', flush=True)


def report() -> str:
    lines = [
        '| dataset | teacher GAT 3x256x8 | student alone | KD | '
        'LSP (λ=100, paper) | LSP (λ=1) | parameters teacher / student |'
        ' seeds |', '|---|---|---|---|---|---|---|---|']
    times = ['| dataset | alone (s) | KD (s) | LSP (s) | KD / alone | '
             'LSP / alone |', '|---|---|---|---|---|---|']
    for folder in sorted(p for p in OUT.iterdir() if p.is_dir()
                         and p.name not in ('teachers', 'timing')):
        rows = read_rows(folder)
        by_run = {r: [x for x in rows if x['run'] == r] for r in RUNS}
        alone = by_run['alone']
        if not alone:
            continue
        first = alone[0]
        ratio = first['teacher_parameters'] / first['student_parameters']
        lines.append(
            f"| {folder.name} | "
            f"{mean_std([x['teacher_test_accuracy'] for x in alone])} | "
            + ' | '.join(mean_std([x['test_accuracy'] for x in by_run[r]])
                         for r in RUNS)
            + f" | {first['teacher_parameters']:,} / "
            f"{first['student_parameters']:,} ({ratio:.0f}x) | "
            f'{len(alone)} |')
        tpath = OUT / 'timing' / f'{folder.name}.json'
        if tpath.exists():
            import json
            secs = json.loads(tpath.read_text())['seconds']
            times.append(
                f"| {folder.name} | {secs['alone']:.2f} | {secs['kd']:.2f} |"
                f" {secs['lsp']:.2f} | {secs['kd'] / secs['alone']:.2f}x | "
                f"{secs['lsp'] / secs['alone']:.2f}x |")
    return '\n'.join(lines + [
        '', f'Wall time of {EPOCHS} epochs (teacher forward included), '
        f'median of {REPEATS} runs on seed 0:', ''] + times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', default='Cora,CiteSeer')
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--quick', action='store_true',
                        help='Cora, one seed: a couple of minutes.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    args = parser.parse_args(argv)
    datasets = ['Cora'] if args.quick else args.datasets.split(',')
    if not args.report:
        collect(datasets, [0] if args.quick else parse_seeds(args.seeds),
                args.data_root)
        timing(datasets, args.data_root)
    body = report() + f'\n\nMachine: {machine()}.'
    update_doc('distill', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
