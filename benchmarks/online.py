"""Online distillation (``gnncompress cotrain``): Alignahead and mutual
learning against students trained alone, and what the peers cost.

Four parts, one JSON file per dataset x architecture x method x student
count x seed (existing files are skipped, so an interrupted run resumes):

1. Alignahead's Table V setting: GCN and GraphSAGE (mean), 3 layers x 128,
   two students, on CS, Physics, Computers and Photo; ``self`` (alone) vs
   ``oc`` (same-depth layers) vs ``alignahead`` (cross-layer), 5 seeds.
2. Student count: 2, 3 and 4 GCN students with Alignahead on one dataset
   (the shape of the paper's Table VI); and (``kernel``) Alignahead with a
   flat RBF kernel instead of LSP's on CS and Photo, the nearest we have
   to the authors' public code.
3. Mutual learning on MUTAG, PROTEINS, ENZYMES, NCI1, IMDB-BINARY (GIN,
   3 x 64 with batch norm, no dropout, sum readout, batches of 32, 100
   epochs) and on Cora, CiteSeer, PubMed (GCN, 2 x 64): students alone vs
   2 and 3 mutual students, 5 seeds.
4. Speed: seconds per epoch of M online students vs the same M students
   trained alone in the same loop (median of 5 runs of 20 epochs, each
   after one untimed epoch, on seed 0, alone and online alternated), on
   Photo, Physics and MUTAG.

Every student is kept at its best validation epoch; a row's accuracy is the
mean test accuracy of its students ("alone" is the mean of the students of
``self``, i.e. single students trained alone).

    python benchmarks/online.py                  # everything (hours on CPU)
    python benchmarks/online.py --quick --epochs 3   # smoke test, no doc
    python benchmarks/online.py --report         # only rewrite the doc
"""
from __future__ import annotations

import argparse
import json
import statistics
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
from gnncompress.models import ArchSpec, build_model, count_parameters
from gnncompress.tasks.datasets import load_graph
from gnncompress.training.peer_regimes import train_peers
from gnncompress.workflows.cotrain import build_online_methods

TABLE_V = ('CS', 'Physics', 'Computers', 'Photo')
COUNT_DATASET = 'Photo'
TU = ('MUTAG', 'PROTEINS', 'ENZYMES', 'NCI1', 'IMDB-BINARY')
CITATION = ('Cora', 'CiteSeer', 'PubMed')
EPOCHS = 200
REPEATS = 5
# Per timing run, after one untimed epoch: the one-time setup (sparse
# matrices and edge patterns, built on first use) would weigh ten times
# more in 20 epochs than in a 200-epoch run.
TIMING_EPOCHS = 20
# The paper's figures we could check (the issue quotes this one); the
# other cells of its Table V are left empty rather than guessed.
PAPER = {('Computers', 'gcn'): (86.97, 87.47)}
# Kernel variants of Alignahead's local structure (the ``kernel`` part):
# the authors' public code scores an edge exp(-|h_i - h_j|_1 / 100),
# nearly uniform over a node's neighbours, where METHODS.md's LSP kernel
# -|h_i - h_j|^2 puts almost all of a node's weight on its nearest
# neighbour. RBF with sigma 10 is our nearest flat kernel: on CS's trained
# GCN layers the squared neighbour distances run from about 2 to 440
# (10th to 90th percentile), so exp(-d / 200) spans about 0.1 to 1.
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    'alignahead-rbf10': ('alignahead', {'kernel': 'rbf', 'sigma': 10.0},
                         'RBF, sigma 10'),
}
KERNEL_DATASETS = ('CS', 'Photo')


# Alignahead's own setting for Table V (METHODS.md): Adam at lr 0.001 with
# weight decay 5e-4 on every dataset but PPI. (A first try at 0.005, the
# method suite's rate for Photo, CS and Physics, made both SAGE students
# of OC fall to 72% and 62% on CS, seed 0: results/online-lr0.005/.)
TABLE_V_LR = 0.001


def _setting(dataset: str, arch: str) -> dict[str, Any]:
    if dataset in TU:
        # The GIN paper's choices (Xu et al., ICLR 2019): batch norm in
        # every layer, sum readout, lr 0.01, batches of 32, dropout 0 (of
        # its {0, 0.5}). Without batch norm, or with dropout 0.5 between
        # the layers, students on ENZYMES stayed at chance (17.9%, 6
        # classes; session 6 checks in docs/BENCHMARKS.md). 100 epochs:
        # the best validation epoch came before 100 in most earlier runs.
        return dict(arch='gin', hidden=64, layers=3, readout='sum',
                    lr=0.01, norm='batch_norm', dropout=0.0, epochs=100)
    if dataset in CITATION:
        return dict(arch='gcn', hidden=64, layers=2, readout=None, lr=0.01,
                    norm=None, dropout=0.5, epochs=EPOCHS)
    # Alignahead: 3 layers x 128.
    return dict(arch=arch, hidden=128, layers=3, readout=None,
                lr=TABLE_V_LR, norm=None, dropout=0.5,
                epochs=EPOCHS)


def run_online(dataset: str, arch: str, method: str, students: int,
               seed: int, data_root: str, epochs: int | None = None,
               warmup: int = 0) -> dict[str, Any]:
    s = _setting(dataset, arch)
    epochs = epochs or s['epochs']
    graph = load_graph(dataset, data_root, seed=seed)
    spec = ArchSpec(s['arch'], graph.num_features, s['hidden'], s['layers'],
                    graph.num_classes, dropout=s['dropout'], norm=s['norm'],
                    readout=s['readout'] if graph.batch is not None
                    else None)
    api.seed_everything(seed)
    models = [build_model(spec) for _ in range(students)]
    name, options, _ = VARIANTS.get(method, (method, None, ''))
    online = build_online_methods(name, students, options)
    args = dict(lr=s['lr'], weight_decay=5e-4, seed=seed, progress=False)
    if warmup:  # the timed run goes on from these weights
        train_peers(models, graph, online, epochs=warmup, **args)
        online = build_online_methods(name, students, options)
    start = time.perf_counter()
    results = train_peers(models, graph, online, epochs=epochs, **args)
    seconds = time.perf_counter() - start
    tests = [r.test_accuracy for r in results]
    vals = [r.val_accuracy for r in results]
    best = max(range(students), key=lambda k: vals[k])
    return {
        'dataset': dataset, 'arch': s['arch'], 'method': method,
        'students': students, 'seed': seed, 'epochs': epochs,
        'test_accuracy': tests, 'val_accuracy': vals,
        'mean_test_accuracy': statistics.fmean(tests),
        'selected_test_accuracy': tests[best],
        'best_epochs': [r.best_epoch for r in results],
        'seconds': seconds, 'seconds_per_epoch': seconds / epochs,
        'spec': spec.to_dict(), 'parameters': count_parameters(models[0]),
        'lr': s['lr'], 'threads': torch.get_num_threads(),
    }


def _path(out: Path, dataset: str, arch: str, method: str, students: int,
          seed: int) -> Path:
    return out / dataset / f'{arch}-{method}-m{students}-seed{seed}.json'


def _collect(out: Path, jobs: list[tuple[str, str, str, int]],
             seeds: list[int], data_root: str,
             epochs: int | None) -> None:
    # Seed-major: a plan cut short leaves every cell with the same seeds.
    for seed in seeds:
        for dataset, arch, method, students in jobs:
            arch_name = _setting(dataset, arch)['arch']
            path = _path(out, dataset, arch_name, method, students, seed)
            if path.exists():
                continue
            row = run_online(dataset, arch, method, students, seed,
                             data_root, epochs)
            write_json(path, row)
            print(f'{dataset} {arch_name} {method} x{students} seed {seed}: '
                  f"{100 * row['mean_test_accuracy']:.2f}%", flush=True)


def _timing(out: Path, jobs: list[tuple[str, str, str, int]],
            data_root: str, epochs: int | None) -> None:
    for dataset, arch, method, students in jobs:
        path = out / 'timing' / f'{dataset}-{arch}-{method}-m{students}.json'
        if path.exists():
            continue
        # Alternated, so a change in the machine's load hits both alike.
        runs: dict[str, list[float]] = {'self': [], method: []}
        for _ in range(REPEATS):
            for run in runs:
                runs[run].append(run_online(
                    dataset, arch, run, students, 0, data_root,
                    epochs or TIMING_EPOCHS, warmup=1)['seconds_per_epoch'])
        seconds = {run: statistics.median(v) for run, v in runs.items()}
        write_json(path, {'dataset': dataset, 'arch': arch,
                          'method': method, 'students': students,
                          'epochs': epochs or TIMING_EPOCHS,
                          'repeats': REPEATS, 'runs': runs,
                          'seconds_per_epoch': seconds,
                          'ratio': seconds[method] / seconds['self'],
                          'machine': machine()})
        print(f'{dataset} timing {method} x{students}: '
              f"{seconds[method] / seconds['self']:.2f}x", flush=True)


def plan(quick: bool) -> dict[str, list[tuple[str, str, str, int]]]:
    table_v = TABLE_V[-1:] if quick else TABLE_V
    archs = ('gcn',) if quick else ('gcn', 'sage')
    mutual_data = ('MUTAG', 'Cora') if quick else TU + CITATION
    counts = (2, 3) if quick else (2, 3, 4)
    return {
        'table_v': [(d, a, m, 2) for d in table_v for a in archs
                    for m in ('self', 'oc', 'alignahead')],
        'count': [(COUNT_DATASET, 'gcn', m, n) for n in counts
                  for m in ('self', 'alignahead')],
        'mutual': [(d, 'gcn', m, n) for d in mutual_data
                   for m, n in (('self', 2), ('mutual', 2), ('mutual', 3))],
        'kernel': [(d, 'gcn', m, 2) for d in
                   (KERNEL_DATASETS[-1:] if quick else KERNEL_DATASETS)
                   for m in VARIANTS],
        'timing': [(COUNT_DATASET, 'gcn', 'alignahead', 2),
                   (COUNT_DATASET, 'gcn', 'mutual', 2),
                   ('Physics', 'gcn', 'alignahead', 2),
                   ('MUTAG', 'gin', 'mutual', 2)],
    }


def _cell(out: Path, dataset: str, arch: str, method: str,
          students: int) -> tuple[str, int]:
    rows = [r for r in read_rows(out / dataset)
            if r['arch'] == arch and r['method'] == method
            and r['students'] == students]
    return mean_std([r['mean_test_accuracy'] for r in rows], digits=2), \
        len(rows)


def _seeds(cells: list[tuple[str, int]]) -> str:
    """The seeds column: one count, or each cell's when they differ."""
    counts = {n for _, n in cells}
    return str(counts.pop()) if len(counts) == 1 else \
        ' / '.join(str(n) for _, n in cells)


def report(out: Path) -> str:
    if not out.is_dir():
        return 'No results yet.'
    lines = ['Alignahead, two students (3 layers x 128, dropout 0.5; Adam '
             f'at lr {TABLE_V_LR:g}, weight decay 5e-4, as in the paper), '
             'test accuracy (%) mean ± std over seeds:', '',
             '| dataset | arch | alone (self) | OC | Alignahead | paper: '
             'alone -> Alignahead | seeds |', '|---|---|---|---|---|---|---|']
    for dataset in TABLE_V:
        for arch in ('gcn', 'sage'):
            cells = [_cell(out, dataset, arch, m, 2)
                     for m in ('self', 'oc', 'alignahead')]
            if not any(n for _, n in cells):
                continue
            paper = PAPER.get((dataset, arch))
            theirs = f'{paper[0]:.2f} -> {paper[1]:.2f}' if paper else '-'
            lines.append(f'| {dataset} | {arch} | '
                         + ' | '.join(c for c, _ in cells)
                         + f' | {theirs} | {_seeds(cells)} |')
    lines += ['', f'Student count, GCN on {COUNT_DATASET} with Alignahead:',
              '', '| students | alone (self) | Alignahead | seeds |',
              '|---|---|---|---|']
    for n in (2, 3, 4):
        cells = [_cell(out, COUNT_DATASET, 'gcn', m, n)
                 for m in ('self', 'alignahead')]
        if any(k for _, k in cells):
            lines.append(f'| {n} | {cells[0][0]} | {cells[1][0]} | '
                         f'{_seeds(cells)} |')
    kernel_rows = []
    for dataset in KERNEL_DATASETS:
        cells = [_cell(out, dataset, 'gcn', m, 2)
                 for m in ('self', 'alignahead', *VARIANTS)]
        if any(n for _, n in cells[2:]):
            kernel_rows.append(f'| {dataset} | '
                               + ' | '.join(c for c, _ in cells)
                               + f' | {_seeds(cells)} |')
    if kernel_rows:
        lines += ['', 'Kernel of the local structure, GCN with two '
                  'Alignahead students (setting as in the first table):',
                  '', '| dataset | alone (self) | Alignahead (LSP kernel: '
                  'minus squared distance) | '
                  + ' | '.join(f'Alignahead ({label})'
                               for _, _, label in VARIANTS.values())
                  + ' | seeds |',
                  '|---|---|---|' + '---|' * len(VARIANTS) + '---|',
                  *kernel_rows]
    lines += ['', 'Mutual learning (GIN 3 x 64 with batch norm, no '
              'dropout and sum readout, 100 epochs, on TU datasets, '
              'stratified 80/10/10 per seed; GCN 2 x 64, dropout 0.5, '
              '200 epochs, on citation graphs, public split):', '',
              '| dataset | alone | 2 mutual | 3 mutual | seeds |',
              '|---|---|---|---|---|']
    for dataset in TU + CITATION:
        arch = _setting(dataset, 'gcn')['arch']
        cells = [_cell(out, dataset, arch, m, n) for m, n in
                 (('self', 2), ('mutual', 2), ('mutual', 3))]
        if any(k for _, k in cells):
            lines.append(f'| {dataset} | '
                         + ' | '.join(c for c, _ in cells)
                         + f' | {_seeds(cells)} |')
    lines += ['', f'Speed: seconds per epoch, median of {REPEATS} runs '
              f'of {TIMING_EPOCHS} epochs (after one untimed epoch) on seed '
              '0, alone and online alternated; the ratio of the medians, '
              'and the range of the ratios of the runs paired in order '
              '(the bar is at most 1.5x):', '',
              '| dataset | arch | method | students | alone (s) | online '
              '(s) | ratio | range |', '|---|---|---|---|---|---|---|---|']
    for path in sorted((out / 'timing').glob('*.json')) \
            if (out / 'timing').is_dir() else []:
        t = json.loads(path.read_text())
        s = t['seconds_per_epoch']
        spread = '-'
        if 'runs' in t:
            pairs = [b / a for a, b in zip(t['runs']['self'],
                                           t['runs'][t['method']])]
            spread = f'{min(pairs):.2f}-{max(pairs):.2f}x'
        lines.append(f"| {t['dataset']} | {t['arch']} | {t['method']} | "
                     f"{t['students']} | {s['self']:.4f} | "
                     f"{s[t['method']]:.4f} | {t['ratio']:.2f}x | "
                     f'{spread} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--epochs', type=int, default=None,
                        help=f'Epochs per run (default: {EPOCHS}; 100 on '
                        'the TU datasets).')
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--parts',
                        default='table_v,count,mutual,kernel,timing')
    parser.add_argument('--datasets', default=None,
                        help='Only these datasets (comma-separated), e.g. '
                        'to share the plan between processes.')
    parser.add_argument('--quick', action='store_true',
                        help='Photo/MUTAG/Cora, one seed, results kept '
                        'apart and the doc left alone: a smoke test.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    args = parser.parse_args(argv)
    out = RESULTS / ('online-quick' if args.quick else 'online')
    jobs = plan(args.quick)
    if args.datasets:
        keep = set(args.datasets.split(','))
        jobs = {part: [j for j in todo if j[0] in keep]
                for part, todo in jobs.items()}
    seeds = [0] if args.quick else parse_seeds(args.seeds)
    if not args.report:
        for part in args.parts.split(','):
            if part == 'timing':
                _timing(out, jobs[part], args.data_root, args.epochs)
            else:
                _collect(out, jobs[part], seeds, args.data_root, args.epochs)
    rows = [r for d in out.glob('*') if d.is_dir() and d.name != 'timing'
            for r in read_rows(d)] if out.is_dir() else []
    epochs = sorted({r['epochs'] for r in rows})
    threads = sorted({r['threads'] for r in rows})
    # The machine as the speed runs saw it (their thread count), not as
    # the process writing the report does.
    timed = sorted((out / 'timing').glob('*.json')) \
        if (out / 'timing').is_dir() else []
    where = json.loads(timed[0].read_text())['machine'] if timed \
        else machine()
    body = report(out) + (
        f"\n\nEpochs per run: {', '.join(map(str, epochs)) or '-'}; "
        f"torch threads per run: {', '.join(map(str, threads)) or '-'}. "
        f'Machine: {where}.')
    if not args.quick:
        update_doc('online', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
