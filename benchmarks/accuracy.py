"""The single-teacher method suite on seven real datasets, and the ABKD deep
setting.

main suite: per dataset, one GAT teacher (3 layers, 256 hidden, 8 heads,
seed 0) and, for each seed, a GCN student with at least 30x fewer
parameters trained alone and with KD, FitNet, AT, LSP, GSP, G-CRD and ABKD,
plus an MLP student of the same budget trained alone and with GLNN.

deep suite (ABKD paper, Table 3): a GCNII teacher with 64 layers of width 64
and a GCNII student with 4 layers of width 4, on Cora, CiteSeer and PubMed:
student alone, LSP, GSP, G-CRD, ABKD.

memory: peak resident memory of one LSP, GSP and plain student run on
Physics (495,924 edges), each in a fresh process.

One JSON file per suite x dataset x method x seed; existing files are
skipped, so an interrupted run resumes. ``--report`` only rewrites
docs/BENCHMARKS.md.

    python benchmarks/accuracy.py                     # everything
    python benchmarks/accuracy.py --quick             # Cora, seed 0
    python benchmarks/accuracy.py --suite deep --seeds 0-2
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

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

from gnncompress.models import ArchSpec

OUT = RESULTS / 'accuracy'
DATASETS = ['Cora', 'CiteSeer', 'PubMed', 'Computers', 'Photo', 'CS',
            'Physics']
DEEP_DATASETS = ['Cora', 'CiteSeer', 'PubMed']
RATIO = 30.0
EPOCHS = 200
# The co-purchase and co-author graphs have 2.5-50x the edges or features of
# the citation graphs: half the student epochs keep the whole benchmark
# near 3 hours on 2 cores. Students may still be improving at epoch 100
# there (best_epoch in each result file says so).
LARGE = ('Computers', 'Photo', 'CS', 'Physics')
EPOCHS_BY_DATASET = {name: 100 for name in LARGE}
# Student learning rate: GCN's 0.01 on the citation graphs; on the raw
# bag-of-words features of the others (Photo: about 259 ones per node) it
# killed every ReLU of the student, trained alone too, in 2 of 4 seeds on
# Photo (the 'lr' suite keeps those runs), so the teachers' 0.005 there.
# Computers collapsed at 0.005 as well (in seed 1 every row, the student
# alone included; the 'lr' suite keeps those runs): 0.001 and 200 epochs.
LR = 0.01
LR_BY_DATASET = {name: 0.005 for name in LARGE}
LR_BY_DATASET['Computers'] = 0.001
EPOCHS_BY_DATASET['Computers'] = 200
TEACHER = dict(arch='gat', hidden=256, layers=3, heads=8, epochs=200,
               patience=50)
# GCNII's paper setting for the citation graphs (alpha 0.1, theta 0.5,
# dropout 0.6); fewer epochs than its 1,500 to fit the time budget.
DEEP_TEACHER = dict(arch='gcnii', hidden=64, layers=64, epochs=300,
                    patience=100, lr=0.01)
# row name -> (method, student architecture, method options)
MAIN_ROWS = {
    'alone': (None, 'gcn', {}), 'kd': ('kd', 'gcn', {}),
    'fitnet': ('fitnet', 'gcn', {}), 'at': ('at', 'gcn', {}),
    'lsp': ('lsp', 'gcn', {}), 'gsp': ('gsp', 'gcn', {}),
    'g-crd': ('g-crd', 'gcn', {}),
    # The paper's sample size, 8x ours: 64x the n x n logits, so only on
    # the three citation graphs.
    'g-crd-8192': ('g-crd', 'gcn', {'max_samples': 8192}),
    'abkd': ('abkd', 'gcn', {}),
    'mlp-alone': (None, 'mlp', {}), 'glnn': ('glnn', 'mlp', {}),
}
PAPER_GCRD_DATASETS = ('Cora', 'CiteSeer', 'PubMed')
# The loss weights of the stored runs: the methods' defaults when the suite
# ran. benchmarks/weight_sweep.py (issue 22) chose other defaults for some
# of them on the suite's validation split; naming the weights here keeps the
# stored runs reproducible. The other methods use their default.
SUITE_WEIGHTS = {'kd': 1.0, 'fitnet': 10.0, 'lsp': 100.0, 'abkd': 0.1}
DEEP_ROWS = {'alone': None, 'lsp': 'lsp', 'gsp': 'gsp', 'g-crd': 'g-crd',
             'abkd': 'abkd'}
MEMORY_RUNS = ('alone', 'lsp', 'gsp')
# Runs at a learning rate the main table does not use, and why it does not:
# Photo at GCN's 0.01 (the collapse that made the larger graphs use 0.005)
# and Computers at 0.005 (which collapsed too), each at 100 epochs.
LR_ROWS = tuple(r for r in MAIN_ROWS if r != 'g-crd-8192')
LR_STUDIES = (dict(dataset='Photo', lr=0.01, seeds=(0, 1, 2, 3)),
              dict(dataset='Computers', lr=0.005, seeds=(0, 1)))


def _teacher(dataset: str, data_root: str, deep: bool = False) -> Path:
    if deep:
        return ensure_teacher(OUT / 'teachers' / f'{dataset}-gcnii64.pt',
                              dataset, data_root, 0, **DEEP_TEACHER)
    return ensure_teacher(OUT / 'teachers' / f'{dataset}-gat.pt', dataset,
                          data_root, 0, **TEACHER)


def main_run(dataset: str, data_root: str, seed: int, row: str,
             weight: float | None = None) -> dict:
    """One run in the main suite's setting: ``row``'s method, student and
    options on ``dataset``, at ``weight`` (None: the suite's)."""
    method, student, options = MAIN_ROWS[row]
    if weight is None:
        weight = SUITE_WEIGHTS.get(method)
    return student_run(
        _teacher(dataset, data_root), dataset, data_root, seed, method,
        student=student, ratio=RATIO, options=options, weight=weight,
        epochs=EPOCHS_BY_DATASET.get(dataset, EPOCHS),
        lr=LR_BY_DATASET.get(dataset, LR))


def run_main(datasets: list[str], seeds: list[int], data_root: str) -> None:
    for dataset in datasets:
        for seed in seeds:
            for row in MAIN_ROWS:
                path = OUT / 'main' / dataset / f'{row}-seed{seed}.json'
                if path.exists() or (row == 'g-crd-8192' and dataset
                                     not in PAPER_GCRD_DATASETS):
                    continue
                # Trained only when a result is missing (not committed).
                result = main_run(dataset, data_root, seed, row)
                write_json(path, {**result, 'row': row})
                print(f"main {dataset} seed {seed} {row}: "
                      f"{100 * result['test_accuracy']:.1f}% "
                      f"({result['fit_seconds']:.1f} s)", flush=True)


def run_lr(data_root: str) -> None:
    for study in LR_STUDIES:
        dataset, lr = study['dataset'], study['lr']
        for seed in study['seeds']:
            for row in LR_ROWS:
                path = OUT / 'lr' / dataset / f'{row}-seed{seed}.json'
                if path.exists():
                    continue
                method, student, options = MAIN_ROWS[row]
                result = student_run(
                    _teacher(dataset, data_root), dataset, data_root, seed,
                    method, student=student, ratio=RATIO, options=options,
                    weight=SUITE_WEIGHTS.get(method), epochs=100, lr=lr)
                write_json(path, {**result, 'row': row, 'lr': lr})
                print(f"lr {lr} {dataset} seed {seed} {row}: "
                      f"{100 * result['test_accuracy']:.1f}%", flush=True)


# The same Photo rows with row-normalised features for teacher and student
# (train-teacher --normalize-features), at GCN's lr 0.01: does
# normalisation remove the collapse the 'lr' table shows?
NORM_STUDY = dict(dataset='Photo', lr=0.01)


def run_norm(seeds: list[int], data_root: str) -> None:
    dataset, lr = NORM_STUDY['dataset'], NORM_STUDY['lr']
    for seed in seeds:
        for row in LR_ROWS:
            path = OUT / 'norm' / dataset / f'{row}-seed{seed}.json'
            if path.exists():
                continue
            teacher = ensure_teacher(
                OUT / 'teachers' / f'{dataset}-gat-norm.pt', dataset,
                data_root, 0, normalize_features=True, **TEACHER)
            method, student, options = MAIN_ROWS[row]
            result = student_run(
                teacher, dataset, data_root, seed, method, student=student,
                ratio=RATIO, options=options, weight=SUITE_WEIGHTS.get(method),
                epochs=EPOCHS_BY_DATASET.get(dataset, EPOCHS), lr=lr)
            write_json(path, {**result, 'row': row, 'lr': lr,
                              'feature_norm': 'row'})
            print(f"norm {dataset} seed {seed} {row}: "
                  f"{100 * result['test_accuracy']:.1f}%", flush=True)


SPEED_EPOCHS = 20
SPEED_ROUNDS = 3


def run_speed(datasets: list[str], data_root: str) -> None:
    """The speed figure on its own: per dataset, every row and the student
    alone timed for SPEED_EPOCHS epochs (no early stop), in SPEED_ROUNDS
    interleaved rounds (alone, kd, ..., alone, kd, ...), so that a change
    of load on the machine hits every row alike."""
    from gnncompress import api
    from gnncompress.checkpoints.teachers import load_checkpoint

    for dataset in datasets:
        path = OUT / 'speed' / f'{dataset}.json'
        if path.exists():
            continue
        teacher = _teacher(dataset, data_root)
        graph = api.resolve_data(dataset, data_root,
                                 load_checkpoint(teacher), 0)
        times: dict[str, list[float]] = {row: [] for row in MAIN_ROWS}
        for _ in range(SPEED_ROUNDS):
            for row, (method, student, options) in MAIN_ROWS.items():
                if row == 'g-crd-8192' and dataset not in PAPER_GCRD_DATASETS:
                    continue
                result = student_run(
                    teacher, dataset, data_root, 0, method, student=student,
                    ratio=RATIO, options=options, epochs=SPEED_EPOCHS,
                    weight=SUITE_WEIGHTS.get(method),
                    patience=SPEED_EPOCHS + 1, graph=graph,
                    lr=LR_BY_DATASET.get(dataset, LR))
                times[row].append(result['seconds_per_epoch'])
        write_json(path, {'dataset': dataset, 'epochs': SPEED_EPOCHS,
                          'rounds': SPEED_ROUNDS,
                          'seconds_per_epoch': {r: t for r, t in
                                                times.items() if t},
                          'machine': machine()})
        print(f'speed {dataset}: done', flush=True)


def run_deep(datasets: list[str], seeds: list[int], data_root: str) -> None:
    for dataset in datasets:
        spec = None
        for seed in seeds:
            for row, method in DEEP_ROWS.items():
                path = OUT / 'deep' / dataset / f'{row}-seed{seed}.json'
                if path.exists():
                    continue
                teacher = _teacher(dataset, data_root, deep=True)
                if spec is None:
                    from gnncompress.checkpoints.teachers import load_checkpoint
                    t_spec = load_checkpoint(teacher).spec
                    spec = ArchSpec('gcnii', t_spec.in_channels, 4, 4,
                                    t_spec.out_channels, dropout=0.6)
                result = student_run(teacher, dataset, data_root, seed,
                                     method, spec=spec, epochs=EPOCHS,
                                     weight=SUITE_WEIGHTS.get(method))
                write_json(path, {**result, 'row': row})
                print(f"deep {dataset} seed {seed} {row}: "
                      f"{100 * result['test_accuracy']:.1f}%", flush=True)


def run_memory(data_root: str) -> None:
    """Each run in a fresh process, so its peak memory is its own."""
    for row in MEMORY_RUNS:
        path = OUT / 'memory' / f'Physics-{row}.json'
        if path.exists():
            continue
        subprocess.run([sys.executable, __file__, '--memory-run', row,
                        '--data-root', data_root], check=True)


def memory_run(row: str, data_root: str) -> None:
    method, student, _ = MAIN_ROWS[row]
    teacher = _teacher('Physics', data_root)
    result = student_run(teacher, 'Physics', data_root, 0, method,
                         student=student, ratio=RATIO, epochs=20,
                         weight=SUITE_WEIGHTS.get(method),
                         lr=LR_BY_DATASET.get('Physics', LR))
    write_json(OUT / 'memory' / f'Physics-{row}.json', {**result, 'row': row})
    print(f"memory Physics {row}: {result['peak_rss_mb']:.0f} MB",
          flush=True)


def _table(suite: str, rows: dict, title: str) -> list[str]:
    folder = OUT / suite
    if not folder.exists():
        return []
    header = ['dataset', 'teacher'] + list(rows) + ['params T / S', 'seeds']
    lines = [f'### {title}', '', '| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    speed = ['', 'Time per epoch relative to the student alone (main '
             'table: the speed phase, interleaved rounds of 20 epochs, where '
             'it has run, else the median over the seeds\' runs; MLP rows '
             'relative to the MLP alone):', '',
             '| dataset | ' + ' | '.join(rows) + ' |',
             '|' + '---|' * (len(rows) + 1)]
    for dataset in DATASETS:
        found = read_rows(folder / dataset) if (folder / dataset).exists() \
            else []
        if not found:
            continue
        by_row = {r: [x for x in found if x['row'] == r] for r in rows}
        alone = by_row['alone'] or found
        cells = [mean_std([x['test_accuracy'] for x in by_row[r]])
                 for r in rows]
        first = alone[0]
        ratio = first['teacher_parameters'] / first['student_parameters']
        lines.append(
            f"| {dataset} | {100 * first['teacher_test_accuracy']:.1f} | "
            + ' | '.join(cells) + f" | {first['teacher_parameters']:,} / "
            f"{first['student_parameters']:,} ({ratio:.0f}x) | "
            f"{len(by_row['alone'])} |")

        def per_epoch(r: str) -> float | None:
            values = [x['seconds_per_epoch'] for x in by_row.get(r, [])]
            return statistics.median(values) if values else None

        timed = OUT / 'speed' / f'{dataset}.json'
        if suite == 'main' and timed.exists():
            measured = json.loads(timed.read_text())['seconds_per_epoch']

            def per_epoch(r: str) -> float | None:  # noqa: F811
                values = measured.get(r)
                return statistics.median(values) if values else None

        cells = []
        for r in rows:
            base = per_epoch('mlp-alone' if r in ('mlp-alone', 'glnn')
                             else 'alone')
            own = per_epoch(r)
            cells.append(f'{own / base:.2f}x' if own and base else '-')
        speed.append(f'| {dataset} | ' + ' | '.join(cells) + ' |')
    return lines + speed + ['']


def report(data_root: str) -> str:
    lines = _table('main', MAIN_ROWS, 'GAT teacher -> GCN / MLP students')
    lines += _table('deep', DEEP_ROWS,
                    'ABKD deep setting: GCNII 64x64 -> GCNII 4x4')
    lr_rows = {r: MAIN_ROWS[r] for r in LR_ROWS}
    studies = ', '.join(f"{x['dataset']} at {x['lr']:g}" for x in LR_STUDIES)
    lr_table = _table('lr', lr_rows, f'Learning rates the main table does '
                      f'not use ({studies}; 100 epochs)')
    if lr_table:
        from gnncompress.tasks.datasets import load_graph

        for study in LR_STUDIES:
            x = load_graph(study['dataset'], data_root).x
            lr_table += [f"{study['dataset']}'s features: "
                         f"{float((x != 0).sum(1).float().mean()):.0f} "
                         f"nonzero entries per node on average, of "
                         f"{x.size(1)}, largest value {float(x.max()):g} "
                         f"(raw, not normalised); the main table uses lr "
                         f"{LR_BY_DATASET.get(study['dataset'], LR):g}.", '']
    lines += lr_table
    lines += _table('norm', lr_rows, f"{NORM_STUDY['dataset']} with "
                    f"row-normalised features (teacher and student), lr "
                    f"{NORM_STUDY['lr']:g}")
    seconds = [x['fit_seconds'] for suite in ('main', 'deep')
               if (OUT / suite).exists()
               for folder in sorted((OUT / suite).iterdir())
               for x in read_rows(folder)]
    if seconds:
        lines += [f'Student training time of the {len(seconds)} stored runs '
                  f'of the main and deep suites: '
                  f'{sum(seconds) / 3600:.1f} h (teachers, the speed phase '
                  f'and the studies not counted).', '']
    mem = []
    for row in MEMORY_RUNS:
        path = OUT / 'memory' / f'Physics-{row}.json'
        if path.exists():
            peak = json.loads(path.read_text())['peak_rss_mb']
            mem.append(f'| {row} | {peak:,.0f} |')
    if mem:
        lines += ['### Peak memory on Physics (one process per run)', '',
                  '| run | peak RSS (MB) |', '|---|---|', *mem, '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--suite', default='all',
                        choices=['all', 'main', 'deep', 'memory', 'lr',
                                 'norm', 'speed'])
    parser.add_argument('--datasets', default=None)
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--quick', action='store_true',
                        help='Cora, seed 0, main suite: minutes.')
    parser.add_argument('--report', action='store_true')
    parser.add_argument('--memory-run', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_run:
        memory_run(args.memory_run, args.data_root)
        return
    if not args.report:
        seeds = [0] if args.quick else parse_seeds(args.seeds)
        if args.quick:
            run_main(['Cora'], seeds, args.data_root)
        else:
            if args.suite in ('all', 'main'):
                run_main(args.datasets.split(',') if args.datasets
                         else DATASETS, seeds, args.data_root)
            if args.suite in ('all', 'deep'):
                run_deep(args.datasets.split(',') if args.datasets
                         else DEEP_DATASETS, seeds, args.data_root)
            if args.suite in ('all', 'memory'):
                run_memory(args.data_root)
            if args.suite in ('all', 'lr'):
                run_lr(args.data_root)
            if args.suite in ('all', 'norm'):
                run_norm(seeds, args.data_root)
            if args.suite in ('all', 'speed'):
                run_speed(args.datasets.split(',') if args.datasets
                          else DATASETS, args.data_root)
    body = report(args.data_root) + f'\nMachine: {machine()}.'
    update_doc('accuracy', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
