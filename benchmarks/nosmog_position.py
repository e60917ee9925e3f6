"""NOSMOG's position features (Tian et al., ICLR 2023) on Cora in GLNN's
setting: the time of the DeepWalk embeddings, and GLNN against
GLNN + position features, per seed.

For each seed, a GraphSAGE teacher is trained with
configs/teacher-glnn-sage-cora.toml (GLNN's split drawn with the seed),
then ``distill --split glnn --student mlp --hidden 128 --layers 2`` runs
once with ``--method glnn`` and once with ``--method glnn+position``
(everything else at distill's defaults). One JSON file per seed goes to
results/nosmog_position/ (existing ones are skipped); the table gives the
test accuracy per seed and the mean ± std.

    python benchmarks/nosmog_position.py --seeds 0-2 --threads 1
    python benchmarks/nosmog_position.py --time-only   # the embeddings alone
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import common
import torch
from common import HERE, RESULTS, SHARED, read_rows, write_json

from gnncompress import api
from gnncompress.methods.position import deepwalk
from gnncompress.tasks.datasets import load_graph

OUT = RESULTS / 'nosmog_position'
CONFIG = HERE.parent / 'configs' / 'teacher-glnn-sage-cora.toml'
METHODS = ('glnn', 'glnn+position')


def embedding_time(data_root: str, seed: int = 0) -> dict:
    """Wall and CPU seconds of Cora's DeepWalk embeddings (NOSMOG's Cora
    settings, the defaults of ``position``)."""
    graph = load_graph('Cora', data_root)
    wall, cpu = time.perf_counter(), time.process_time()
    p = deepwalk(graph.edge_index, graph.num_nodes, seed=seed)
    return {'nodes': graph.num_nodes, 'edges': int(graph.edge_index.size(1)),
            'dim': p.size(1), 'wall_seconds': time.perf_counter() - wall,
            'cpu_seconds': time.process_time() - cpu}


def run(seed: int, data_root: str) -> dict:
    with CONFIG.open('rb') as f:
        recipe = dict(tomllib.load(f)['train-teacher'])
    row: dict = {'seed': seed, 'threads': torch.get_num_threads(),
                 'machine': common.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / 'teacher.pt'
        trained = api.train_teacher('Cora', teacher, data_root=data_root,
                                    seed=seed, progress=False, **recipe)
        row['teacher_test_accuracy'] = trained.test_accuracy
        for method in METHODS:
            start = time.perf_counter()
            report = api.distill(teacher, data='Cora', data_root=data_root,
                                 method=method, split='glnn', student='mlp',
                                 hidden=128, layers=2, seed=seed,
                                 out=Path(tmp) / method.replace('+', '-'),
                                 progress=False, export=False, latency=False)
            row[method] = {
                'test_accuracy': report.student.test_accuracy,
                'val_accuracy': report.student.val_accuracy,
                'best_epoch': report.training['best_epoch'],
                'seconds': time.perf_counter() - start,
                'timings': report.timings}
    return row


def table(rows: list[dict]) -> str:
    lines = ['| seed | teacher | ' + ' | '.join(METHODS) + ' |',
             '|---|---|' + '---|' * len(METHODS)]
    for r in rows:
        lines.append(f"| {r['seed']} | {100 * r['teacher_test_accuracy']:.2f}"
                     ' | ' + ' | '.join(f"{100 * r[m]['test_accuracy']:.2f}"
                                        for m in METHODS) + ' |')
    if len(rows) > 1:
        def ms(values):
            return (f'{100 * statistics.fmean(values):.2f} ± '
                    f'{100 * statistics.stdev(values):.2f}')
        lines.append('| mean ± std | ' + ms(
            [r['teacher_test_accuracy'] for r in rows]) + ' | ' + ' | '.join(
            ms([r[m]['test_accuracy'] for r in rows]) for m in METHODS)
            + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--time-only', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.time_only:
        print(embedding_time(args.data_root))
        return
    for seed in common.parse_seeds(args.seeds):
        path = OUT / f'cora-seed{seed}.json'
        if not path.exists():
            write_json(path, run(seed, args.data_root))
            print(f'wrote {path}', file=sys.stderr)
    rows = read_rows(OUT)
    body = '\n'.join([
        "### NOSMOG's position features on Cora (GLNN's setting)", '',
        'GLNN against GLNN + position features (DeepWalk, NOSMOG\'s Cora '
        'settings), SAGE teacher of configs/teacher-glnn-sage-cora.toml, '
        'MLP student 2 x 128, `--split glnn`, test accuracy (%) per seed. '
        f"Machine: {rows[0]['machine']}. Command: "
        '`python benchmarks/nosmog_position.py --seeds 0-2 --threads 1`.',
        '', table(rows)])
    print(body)
    common.update_doc('nosmog-position', body)


if __name__ == '__main__':
    main()
