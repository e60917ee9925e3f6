"""Knowledge amalgamation (TAM) on real data: the settings of Table 3 of
Jing et al. (CVPR 2021).

Settings (teachers trained per seed by ``train-teacher``'s code, splits as
``gnncompress`` loads them: the public Planetoid split for Cora, CiteSeer and
PubMed, a seeded stratified 20/30-per-class split for Computers, Photo and
CS; the paper used its own splits):

- ``amazon``: GCN teachers (2 x 256) on Computers and on Photo -> one GCN
  student (2 x 64 at width 1), one head per dataset.
- ``citation``: GAT teachers (3 x 256, 8 heads) on Cora, CiteSeer and
  PubMed -> one GAT student (2 x 64, 4 heads), first layer sized for
  CiteSeer's 3,703 features.
- ``computers-subsets`` and ``cs-subsets``: two GCN teachers on disjoint
  label subsets of Computers (0-4, 5-9) and of CS (0-6, 7-14) -> one GCN
  student with a union head.

Runs per setting and seed: the student without a topology loss (``--lambda
0``), with LSP (``--topology lsp``, λ = 100) and with TAM (λ = 0.1), each at
widths 0.25/0.5/0.75/1 trained jointly, 200 epochs, label-free selection.
One JSON file per setting x run x seed; existing files are skipped, so an
interrupted run resumes. Time per epoch is compared between TAM and the
same student trained without a topology loss (the soft loss alone), in the
same runs, and in a timing phase (``--timing``): per setting, seed 0's
teachers, both runs for TIMING_EPOCHS epochs, alternated TIMING_REPEATS
times, medians kept; one JSON file per setting in ``timing/``.

    python benchmarks/amalgamation.py                 # everything, 3 seeds
    python benchmarks/amalgamation.py --timing        # only the timing phase
    python benchmarks/amalgamation.py --report        # only rewrite the doc
    python benchmarks/amalgamation.py --quick --epochs 2 --teacher-epochs 2
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    SHARED,
    ensure_teacher,
    machine,
    mean_std,
    parse_seeds,
    read_rows,
    update_doc,
    write_json,
)

from gnncompress import api

OUT = RESULTS / 'amalgamation'
EPOCHS = 200
TIMING_EPOCHS, TIMING_REPEATS = 5, 3
WIDTHS = (0.25, 0.5, 0.75, 1.0)
GCN_TEACHER = dict(arch='gcn', hidden=256, layers=2)
GAT_TEACHER = dict(arch='gat', hidden=256, layers=3, heads=8)
# setting -> (datasets, label subsets or None, teacher, student options)
SETTINGS: dict[str, tuple[list[str], list[str] | None, dict[str, Any],
                          dict[str, Any]]] = {
    'amazon': (['Computers', 'Photo'], None, GCN_TEACHER,
               dict(student='gcn', hidden=64)),
    'citation': (['Cora', 'CiteSeer', 'PubMed'], None, GAT_TEACHER,
                 dict(student='gat', hidden=64, heads=4)),
    'computers-subsets': (['Computers'], ['0-4', '5-9'], GCN_TEACHER,
                          dict(student='gcn', hidden=64)),
    'cs-subsets': (['CS'], ['0-6', '7-14'], GCN_TEACHER,
                   dict(student='gcn', hidden=64)),
}
# run -> amalgamate options
RUNS = {
    'no-topology': dict(topology='none'),
    'lsp': dict(topology='lsp'),
    'tam': dict(topology='tam'),
}
# Jing et al. (CVPR 2021), Table 3: (teachers, TAM student), per task in
# the order of the setting's datasets; the paper's splits are its own.
PAPER = {'amazon': ((89.36, 92.48), (88.81, 91.79)),
         'citation': ((87.9, 79.0, 85.7), (87.1, 77.3, 83.2))}
QUICK = {'quick': (['Cora', 'CiteSeer'], None,
                   dict(arch='gcn', hidden=32, layers=2),
                   dict(student='gcn', hidden=16))}


def _teachers(out: Path, setting: str, seed: int, data_root: str,
              teacher_epochs: int) -> list[Path]:
    datasets, subsets, teacher, _ = {**SETTINGS, **QUICK}[setting]
    paths = []
    for i, part in enumerate(subsets or datasets):
        dataset = datasets[0] if subsets else part
        tag = f'{dataset}-c{part}' if subsets else dataset
        path = out / 'teachers' / f"{tag}-{teacher['arch']}-seed{seed}.pt"
        extra = {'classes': part} if subsets else {}
        paths.append(ensure_teacher(path, dataset, data_root, seed,
                                    epochs=teacher_epochs, **teacher,
                                    **extra))
    return paths


def _amalgamate(teachers: list[Path], setting: str, seed: int,
                data_root: str, epochs: int, **options: Any):
    datasets, subsets, _, student = {**SETTINGS, **QUICK}[setting]
    tmp = Path(tempfile.mkdtemp(prefix='amalg-'))
    try:
        return api.amalgamate(
            teachers, data=','.join(datasets),
            tasks=','.join(subsets) if subsets else None,
            data_root=data_root, widths=WIDTHS, epochs=epochs, seed=seed,
            out=tmp, export=False, progress=False, **student, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def timing(out: Path, settings: list[str], data_root: str,
           teacher_epochs: int) -> None:
    """Seconds per epoch without a topology loss and with TAM, the two
    alternated so that load on the machine hits both alike."""
    for setting in settings:
        path = out / 'timing' / f'{setting}.json'
        if path.exists():
            continue
        teachers = _teachers(out, setting, 0, data_root, teacher_epochs)
        seconds: dict[str, list[float]] = {'no-topology': [], 'tam': []}
        for _ in range(TIMING_REPEATS):
            for run in seconds:
                report = _amalgamate(teachers, setting, 0, data_root,
                                     TIMING_EPOCHS, patience=None,
                                     **RUNS[run])
                seconds[run].append(report.training['seconds_per_epoch'])
        medians = {run: statistics.median(v) for run, v in seconds.items()}
        write_json(path, {'setting': setting, 'epochs': TIMING_EPOCHS,
                          'repeats': TIMING_REPEATS, 'seconds': seconds,
                          'seconds_per_epoch': medians,
                          'ratio': medians['tam'] / medians['no-topology'],
                          'machine': machine()})
        print(f"{setting} timing: TAM / no topology "
              f"{medians['tam'] / medians['no-topology']:.2f}x", flush=True)


def collect(out: Path, settings: list[str], seeds: list[int],
            data_root: str, epochs: int, teacher_epochs: int) -> None:
    # Seeds outermost: an interrupted run has every setting at fewer seeds.
    for seed in seeds:
        for setting in settings:
            for run, options in RUNS.items():
                path = out / setting / f'{run}-seed{seed}.json'
                if path.exists():
                    continue
                teachers = _teachers(out, setting, seed, data_root,
                                     teacher_epochs)
                report = _amalgamate(teachers, setting, seed, data_root,
                                     epochs, **options)
                # Paths relative to the repository, not this machine's.
                root = str(Path(__file__).resolve().parent.parent) + '/'
                row = json.loads(json.dumps(report.to_dict())
                                 .replace(root, ''))
                row.update(run=run, setting=setting, machine=machine())
                write_json(path, row)
                tam = [f"{r['task']}@{r['width']:g} "
                       f"{100 * r['test_accuracy']:.1f}"
                       for r in report.results if r['width'] == 1.0]
                print(f'{setting} seed {seed} {run}: {", ".join(tam)}',
                      flush=True)


def report(out: Path) -> str:
    lines = []
    speed = ['| setting | no topology (s/epoch) | TAM (s/epoch) | '
             'TAM / no topology |', '|---|---|---|---|']
    for folder in sorted(p for p in out.iterdir() if p.is_dir()
                         and p.name not in ('teachers', 'timing')):
        rows = read_rows(folder)
        by_run = {r: [x for x in rows if x['run'] == r] for r in RUNS}
        first = next((x for x in rows), None)
        if first is None:
            continue
        tasks = [t['name'] for t in first['tasks']]
        student = first['student']
        lines += [f"**{folder.name}** — student {student['spec']['arch']}"
                  f" ({student['parameters']:,} parameters at width 1; "
                  f'seeds: {len(by_run["tam"])})', '',
                  '| model | width | ' + ' | '.join(tasks) + ' |',
                  '|---|---|' + '---|' * len(tasks)]
        # One set of teachers per seed, the same in every run of that seed.
        per_seed = list({x['seed']: x for x in rows}.values())
        teacher_cells = [mean_std([x['teachers'][i]['test_accuracy']
                                   for x in per_seed])
                         for i, _ in enumerate(tasks)]
        params = ', '.join(f"{t['parameters']:,}"
                           for t in first['teachers'])
        lines.append(f'| teachers ({params} parameters) | - | '
                     + ' | '.join(teacher_cells) + ' |')
        for run in RUNS:
            for width in WIDTHS:
                cells = []
                for task in tasks:
                    cells.append(mean_std(
                        [r['test_accuracy'] for x in by_run[run]
                         for r in x['results']
                         if r['task'] == task and r['width'] == width]))
                lines.append(f'| {run} | {width:g} | ' + ' | '.join(cells)
                             + ' |')
        if by_run['tam']:
            gaps = []
            for i, task in enumerate(tasks):
                tam = statistics.fmean(
                    r['test_accuracy'] for x in by_run['tam']
                    for r in x['results']
                    if r['task'] == task and r['width'] == 1.0)
                teacher = statistics.fmean(
                    x['teachers'][i]['test_accuracy'] for x in per_seed)
                gaps.append(f'{100 * (tam - teacher):+.1f}')
            lines.append('| TAM - teacher | 1 | ' + ' | '.join(gaps) + ' |')
        if folder.name in PAPER:
            for label, cells in zip(('paper: teachers', 'paper: TAM'),
                                    PAPER[folder.name]):
                lines.append(f'| {label} | 1 | '
                             + ' | '.join(f'{c:.2f}' for c in cells) + ' |')
        lines.append('')
        spe = {run: [x['training']['seconds_per_epoch'] for x in
                     sorted(by_run[run], key=lambda x: x['seed'])]
               for run in ('no-topology', 'tam')}
        if spe['no-topology'] and spe['tam']:
            # Per seed: the TAM implementation changed between seeds
            # (explain masks, then sparse products), see the doc.
            a = statistics.median(spe['no-topology'])
            per_seed = ' / '.join(f'{t:.3f}' for t in spe['tam'])
            ratios = ' / '.join(f'{t / a:.2f}x' for t in spe['tam'])
            speed.append(f'| {folder.name} | {a:.3f} | {per_seed} | '
                         f'{ratios} |')
    lines += [
        'Test accuracy (%, mean ± std over seeds) per task; all widths of a '
        'student are one set of weights trained jointly, selected on '
        'agreement with the teachers (no label). Time per epoch covers all '
        'widths and tasks, in the accuracy runs (no topology: median over '
        'seeds; TAM: each seed, in seed order):', '', *speed]
    timed = sorted((out / 'timing').glob('*.json')) \
        if (out / 'timing').is_dir() else []
    if timed:
        rows = [json.loads(p.read_text()) for p in timed]
        lines += ['', f'Timing phase (`--timing`): {rows[0]["epochs"]} '
                  f'epochs per run, the two runs alternated '
                  f'{rows[0]["repeats"]} times, medians:', '',
                  '| setting | no topology (s/epoch) | TAM (s/epoch) | '
                  'TAM / no topology |', '|---|---|---|---|']
        for r in rows:
            a, b = (r['seconds_per_epoch'][k] for k in ('no-topology', 'tam'))
            lines.append(f"| {r['setting']} | {a:.3f} | {b:.3f} | "
                         f"{r['ratio']:.2f}x |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--settings', default=','.join(SETTINGS))
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--teacher-epochs', type=int, default=300)
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--quick', action='store_true',
                        help='Small GCN teachers on Cora and CiteSeer, one '
                        'seed; results in results/amalgamation-quick, the '
                        'doc is not touched.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    parser.add_argument('--timing', action='store_true',
                        help='Only the timing phase (seed 0 teachers).')
    args = parser.parse_args(argv)
    out = RESULTS / 'amalgamation-quick' if args.quick else OUT
    settings = ['quick'] if args.quick else args.settings.split(',')
    if args.timing:
        timing(out, settings, args.data_root, args.teacher_epochs)
    elif not args.report:
        collect(out, settings,
                [0] if args.quick else parse_seeds(args.seeds),
                args.data_root, args.epochs, args.teacher_epochs)
    ran_on = sorted({r['machine'] for d in out.glob('*') if d.is_dir()
                     and d.name != 'teachers' for r in read_rows(d)})
    body = report(out) + '\n\nMachine: ' + ('; '.join(ran_on) or machine()) \
        + ' (each run beside other benchmarks on the same 2 cores).'
    if not args.quick:
        update_doc('amalgamation', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
