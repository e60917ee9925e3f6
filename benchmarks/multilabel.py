"""Inductive node classification: multi-label synthetic PPI and the node
labels of TU datasets, whole graphs unseen in training.

Settings (teachers trained by ``train-teacher``'s code: one per seed
where the split depends on the seed, one for synthetic PPI):

- ``synthetic``: ``SyntheticPPI`` (gnncompress.tasks.synthetic.synthetic_ppi at
its
  defaults: 20/2/2 graphs of 2,000 nodes, 50 features, 100 labels),
  micro-F1 with logits thresholded at 0.
- ``tu``: ENZYMES, PROTEINS and NCI1 node labels (``<name>-nodes``: one-hot
  degree features, whole graphs split 80/10/10 per seed), accuracy.

Teacher: GCN 3 x 256; student: 2-layer GCN about 10x smaller; trained alone
and with KD (multi-label form on synthetic PPI), LSP and G-CRD; batches of
whole training graphs (10 steps per epoch), 200 epochs, patience 50.
Alignahead (``cotrain --method alignahead``): two students of the same
size teaching each other, no teacher, the mean of their scores (RBF
kernel on multi-label data, the paper's PPI choice). One JSON
file per dataset x method x seed; existing files are skipped, so an
interrupted run resumes.

    python benchmarks/multilabel.py                  # everything, 3 seeds
    python benchmarks/multilabel.py --report         # only rewrite the doc
    python benchmarks/multilabel.py --quick --epochs 2 --teacher-epochs 2

PPI itself needs a network to download; with one, the same table for PPI is

    python benchmarks/multilabel.py --settings ppi
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
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

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.synthetic import synthetic_ppi
from gnncompress.training.peer_regimes import train_peers
from gnncompress.workflows.cotrain import build_online_methods, paper_options

OUT = RESULTS / 'multilabel'
SETTINGS = {'synthetic': ['SyntheticPPI'],
            'tu': ['ENZYMES-nodes', 'PROTEINS-nodes', 'NCI1-nodes'],
            'ppi': ['PPI']}
METHODS = [None, 'kd', 'lsp', 'g-crd']
# Online distillation (no teacher): two students of the student's size
# teaching each other (gnncompress cotrain --method alignahead).
ONLINE = 'alignahead'
ONLINE_STUDENTS = 2
TEACHER = dict(arch='gcn', hidden=256, layers=3)
STUDENT_RATIO = 10.0
PATIENCE = 50
# Datasets whose train/val/test graphs do not depend on the seed: one
# teacher (seed 0) serves every student seed. The TU node-label splits are
# drawn per seed, so their teachers are too (a teacher must not have
# trained on the student's test graphs).
FIXED_SPLIT = ('SyntheticPPI', 'PPI')


def collect(out: Path, datasets: list[tuple[str, str]], seeds: list[int],
            data_root: str, epochs: int, teacher_epochs: int,
            teacher: dict) -> None:
    """``datasets``: (label, what load_graph is given)."""
    for label, source in datasets:
        for seed in seeds:
            teacher_seed = 0 if label in FIXED_SPLIT else seed
            teacher_path = ensure_teacher(
                out / 'teachers' / f'{label}-s{teacher_seed}.pt', source,
                data_root, teacher_seed, epochs=teacher_epochs,
                patience=PATIENCE, **teacher)
            graph = None
            for method in METHODS:
                path = out / f'{label}-{method or "alone"}-s{seed}.json'
                if path.exists():
                    continue
                if graph is None:
                    graph = api.resolve_data(source, data_root,
                                             load_checkpoint(teacher_path),
                                             seed)
                row = student_run(teacher_path, source, data_root, seed,
                                  method, ratio=STUDENT_RATIO, epochs=epochs,
                                  patience=PATIENCE, graph=graph)
                row.update(dataset=label, metric=graph.split['metric'],
                           graphs=graph.split['graphs'],
                           teacher=teacher_path.name)
                write_json(path, row)
                print(f'{label} {method or "alone"} seed {seed}: '
                      f'{100 * row["test_accuracy"]:.1f}', flush=True)


def online_run(graph, spec, seed: int, epochs: int) -> dict:
    """Two students of ``spec`` trained together with Alignahead; the
    row's score is the mean of theirs (as benchmarks/online.py does)."""
    api.seed_everything(seed)
    models = [build_model(spec) for _ in range(ONLINE_STUDENTS)]
    options = paper_options(ONLINE, graph, None)
    start = time.perf_counter()
    results = train_peers(
        models, graph, build_online_methods(ONLINE, ONLINE_STUDENTS, options),
        epochs=epochs, lr=0.01, weight_decay=5e-4, patience=PATIENCE,
        seed=seed, progress=False)
    return {'seed': seed, 'method': ONLINE, 'students': ONLINE_STUDENTS,
            'test_accuracy': statistics.fmean(r.test_accuracy
                                              for r in results),
            'student_test_accuracy': [r.test_accuracy for r in results],
            'best_epochs': [r.best_epoch for r in results],
            'fit_seconds': time.perf_counter() - start,
            'options': options or {}, 'student_spec': spec.to_dict()}


def collect_online(out: Path, datasets: list[tuple[str, str]],
                   seeds: list[int], data_root: str, epochs: int) -> None:
    """The Alignahead row, with the student size of the distilled rows
    (read from the seed's student-alone result)."""
    for label, source in datasets:
        for seed in seeds:
            path = out / f'{label}-{ONLINE}-s{seed}.json'
            alone = out / f'{label}-alone-s{seed}.json'
            if path.exists() or not alone.exists():
                continue
            spec = ArchSpec.from_dict(json.loads(alone.read_text())
                                      ['student_spec'])
            graph = load_graph(source, data_root, seed=seed)
            row = online_run(graph, spec, seed, epochs)
            row.update(dataset=label, metric=graph.split['metric'],
                       graphs=graph.split['graphs'])
            write_json(path, row)
            print(f'{label} {ONLINE} seed {seed}: '
                  f'{100 * row["test_accuracy"]:.1f}', flush=True)


def report(out: Path) -> str:
    rows = read_rows(out)
    if not rows:
        return 'No results yet.'
    labels = sorted({r['dataset'] for r in rows})
    lines = ['| dataset | metric | graphs (train/val/test) | teacher | '
             'student alone | KD | LSP | G-CRD | Alignahead (2 students, '
             'no teacher) | seeds |', '|---|---|---|---|---|---|---|---|---|'
             '---|']
    for label in labels:
        mine = [r for r in rows if r['dataset'] == label]
        # One entry per teacher (synthetic PPI: one teacher for all seeds).
        teacher = {r.get('teacher', f"{label}-s{r['seed']}.pt"):
                   r['teacher_test_accuracy'] for r in mine
                   if 'teacher_test_accuracy' in r}
        cells = [mean_std([r['test_accuracy'] for r in mine
                           if r['method'] == (m or 'alone')])
                 for m in [*METHODS, ONLINE]]
        g = mine[0]['graphs']
        lines.append(f'| {label} | {mine[0]["metric"]} | {g["train"]}/'
                     f'{g["val"]}/{g["test"]} | '
                     f'{mean_std(list(teacher.values()))} | '
                     + ' | '.join(cells) + ' | '
                     + ','.join(map(str, sorted({r['seed'] for r in mine})))
                     + ' |')
    first = next(r for r in rows if 'teacher_parameters' in r)
    lines += ['', 'Test score in percent, mean ± std over the seeds in the '
              "row's last column (a cell whose runs are not all done "
              'averages the seeds it has): micro-F1 for multi-label data, '
              'accuracy otherwise, selected on the validation graphs. '
              f'Teacher {first["teacher_parameters"]:,} parameters, student '
              f'{first["student_parameters"]:,} (first row).']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--settings', default='synthetic,tu')
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--epochs', type=int, default=200)
    parser.add_argument('--teacher-epochs', type=int, default=200)
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--quick', action='store_true',
                        help='A tiny synthetic PPI and MUTAG node labels, '
                        'small teachers, one seed, results in a temporary '
                        'folder; the doc is not touched.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    args = parser.parse_args(argv)
    if args.quick:
        with tempfile.TemporaryDirectory(prefix='multilabel-quick-') as tmp:
            out = Path(tmp)
            tiny = out / 'tiny-ppi.pt'
            torch.save(synthetic_ppi(num_graphs=(4, 1, 1), num_nodes=100,
                                     num_labels=8, num_features=8,
                                     num_communities=12), tiny)
            collect(out, [('tiny-ppi', str(tiny)),
                          ('MUTAG-nodes', 'MUTAG-nodes')], [0],
                    args.data_root, args.epochs, args.teacher_epochs,
                    dict(arch='gcn', hidden=16, layers=2))
            collect_online(out, [('tiny-ppi', str(tiny))], [0],
                           args.data_root, args.epochs)
            print(report(out))
        return
    if not args.report:
        names = [n for s in args.settings.split(',') for n in SETTINGS[s]]
        collect(OUT, [(n, n) for n in names], parse_seeds(args.seeds),
                args.data_root, args.epochs, args.teacher_epochs, TEACHER)
        collect_online(OUT, [(n, n) for n in names],
                       parse_seeds(args.seeds), args.data_root, args.epochs)
    body = report(OUT) + f'\n\nMachine: {machine()}.'
    update_doc('multilabel', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
