"""Several processes against one: mini-batch KD with `--nproc N`.

For every dataset and seed: a GraphSAGE teacher (2 layers, 256 hidden)
trained with that seed, then the same mini-batch KD run (GCN student,
--batch-size 1024, --fanout 15,10, 100 epochs, selection on validation
accuracy, no early stopping) in one process and with DistributedDataParallel
over N CPU processes (gloo). One JSON file per dataset x processes x seed;
existing files are skipped, so an interrupted run resumes. The question is
whether N processes reach the accuracy of one; the time per epoch is
recorded too, but on a machine with fewer cores than N x threads the
processes compete for the cores, so it says little about the speed-up on
several GPUs or machines.

    python benchmarks/ddp.py                     # PubMed, 1 and 2 processes
    python benchmarks/ddp.py --quick             # Cora, 2 epochs, 1 seed
    python benchmarks/ddp.py --report            # only rewrite the doc
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import common

from gnncompress import api

TEACHER = dict(arch='sage', hidden=256, layers=2)
BATCH, FANOUT, EPOCHS = 1024, '15,10', 100


def run(out: Path, dataset: str, seed: int, procs: int, epochs: int,
        data_root: str) -> dict:
    teacher = common.ensure_teacher(
        out / 'teachers' / f'{dataset}-seed{seed}.pt', dataset, data_root,
        seed, **TEACHER)
    work = out / 'tmp' / f'{dataset}-{procs}-seed{seed}'
    shutil.rmtree(work, ignore_errors=True)
    report = api.distill(teacher, data=dataset, data_root=data_root,
                         method='kd', batch_size=BATCH, fanout=FANOUT,
                         epochs=epochs, patience=None, seed=seed,
                         device='cpu', out=work, export=False,
                         progress=False,
                         nproc=None if procs == 1 else procs)
    saved = json.loads((work / 'report.json').read_text())
    shutil.rmtree(work, ignore_errors=True)
    training = saved['training']
    return {'dataset': dataset, 'seed': seed, 'processes': procs,
            'epochs': training['epochs_run'],
            'seconds': training['seconds'],
            'seconds_per_epoch': training['seconds'] /
            max(1, training['epochs_run']),
            'test_accuracy': report.student.test_accuracy,
            'val_accuracy': report.student.val_accuracy,
            'teacher_test_accuracy': report.teacher.test_accuracy}


def table(out: Path) -> str:
    rows, mean_std = common.read_rows(out / 'runs'), common.mean_std
    lines = ['| dataset | processes | student test acc (%) | teacher (%) | '
             's / epoch (median) | seeds |', '|---|---|---|---|---|---|']
    keys = sorted({(r['dataset'], r['processes']) for r in rows})
    for dataset, procs in keys:
        group = [r for r in rows
                 if r['dataset'] == dataset and r['processes'] == procs]
        lines.append(
            f"| {dataset} | {procs} | "
            f"{mean_std([r['test_accuracy'] for r in group])} | "
            f"{mean_std([r['teacher_test_accuracy'] for r in group])} | "
            f"{statistics.median(r['seconds_per_epoch'] for r in group):.2f}"
            f" | {len(group)} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', default=None,
                        help='Comma-separated (default PubMed; --quick Cora).')
    parser.add_argument('--seeds', default=None,
                        help='e.g. 0-4 (default 0-4; --quick 0).')
    parser.add_argument('--processes', default='1,2',
                        help='Process counts to compare (default 1,2).')
    parser.add_argument('--epochs', type=int, default=None,
                        help=f'Student epochs (default {EPOCHS}; --quick 2).')
    parser.add_argument('--data-root', default=str(common.SHARED))
    parser.add_argument('--quick', action='store_true',
                        help='A smoke test; results under results/ddp-quick, '
                        'the doc untouched.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md.')
    args = parser.parse_args(argv)
    out = common.RESULTS / ('ddp-quick' if args.quick else 'ddp')
    datasets = (args.datasets or ('Cora' if args.quick else 'PubMed')
                ).split(',')
    seeds = common.parse_seeds(args.seeds or ('0' if args.quick else '0-4'))
    epochs = args.epochs or (2 if args.quick else EPOCHS)
    if not args.report:
        for dataset in datasets:
            for seed in seeds:
                for procs in map(int, args.processes.split(',')):
                    path = out / 'runs' / f'{dataset}-p{procs}-seed{seed}.json'
                    if path.exists():
                        continue
                    print(f'{dataset} seed {seed}: {procs} process(es)',
                          file=sys.stderr)
                    row = run(out, dataset, seed, procs, epochs,
                              args.data_root)
                    common.write_json(path, row)
    text = table(out)
    print(text)
    if args.quick:
        return
    common.update_doc('ddp', (
        '## Several processes (DDP) against one\n\n'
        f'Made by `python benchmarks/ddp.py` on {common.machine()}. '
        f'Mini-batch KD (batch {BATCH}, fanout {FANOUT}, {epochs} epochs), '
        'GCN student from a GraphSAGE teacher; mean ± std over seeds. The '
        "processes share the machine's cores, so the time per epoch is not "
        'the speed-up on several GPUs.\n\n' + text))


if __name__ == '__main__':
    main()
