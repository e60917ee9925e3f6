"""What a `distill` command costs around its training, and what OpenMP's
wait policy does to it (issue 23, part 1).

Each pair runs the same command twice as a user runs it, as a separate
process: once with the CLI's default ``OMP_WAIT_POLICY=PASSIVE`` and once
with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP's spinning workers, which were
the default before), in alternating order so a drift in the machine's
speed falls on both. Per run it keeps the wall time from outside (imports
included) and report.json's phase breakdown (load, teacher, train,
export, check, measure); the overhead is the wall time less the training.

    python benchmarks/overhead.py                  # Cora quick start, 3 pairs
    python benchmarks/overhead.py --physics        # also Physics (shared data)
    python benchmarks/overhead.py --load 2         # beside 2 busy processes
    python benchmarks/overhead.py --report         # rewrite the docs section
    python benchmarks/overhead.py --physics --against /tmp/base

``--against DIR`` pairs this checkout (or ``--checkout DIR2``) with
another one (``git worktree add /tmp/base <commit>``), both under the
default policy, in alternating order: the before and after of a change,
side by side in one run, with the ratio this / other pair by pair
(results/overhead-against/, one file per dataset x pair of commits x
pair). Every run starts in an empty folder, so the code timed is the
checkout's whatever folder the script is started from.

``--load N`` starts N processes that only spin for the length of the
timed runs: a machine shared with other jobs, as CI machines and this
project's benchmark machine often are.

One result file per dataset x load x pair (results/overhead/), skipped
when present: the run resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import RESULTS, SHARED

ROOT = Path(__file__).resolve().parent.parent
OUT = RESULTS / 'overhead'
POLICIES = ('PASSIVE', 'ACTIVE')
PHYSICS_TEACHER = Path(tempfile.gettempdir()) / 'gnncompress-overhead' / \
    'physics_gcn.pt'


def _gnncompress() -> list[str]:
    return [sys.executable, '-m', 'gnncompress']


def command(dataset: str, out: Path) -> list[str]:
    """The distill command timed for ``dataset``."""
    if dataset == 'Cora':  # the README's quick start, as written
        return [*_gnncompress(), 'distill', str(ROOT / 'samples' /
                                                'cora_gat.pt'),
                '--out', str(out)]
    return [*_gnncompress(), 'distill', str(PHYSICS_TEACHER), '--data',
            'Physics', '--data-root', str(SHARED), '--out', str(out)]


def ensure_physics_teacher() -> None:
    if PHYSICS_TEACHER.exists():
        return
    PHYSICS_TEACHER.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*_gnncompress(), 'train-teacher', '--data', 'Physics',
                    '--data-root', str(SHARED), '--arch', 'gcn',
                    '--hidden', '128', '--layers', '2', '--epochs', '100',
                    '--out', str(PHYSICS_TEACHER)], check=True)


def one_run(dataset: str, policy: str, checkout: Path = ROOT) -> dict:
    """One distill process of ``checkout``'s code (its folder first on
    PYTHONPATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'run'
        env = {**os.environ, 'OMP_WAIT_POLICY': policy,
               'PYTHONPATH': os.pathsep.join(
                   [str(checkout), os.environ.get('PYTHONPATH', '')])}
        start = time.perf_counter()
        # Run from the empty temporary folder: `python -m` puts the working
        # directory first on sys.path, ahead of PYTHONPATH, so a run
        # started in a checkout would time that checkout's code whatever
        # ``checkout`` names.
        done = subprocess.run(command(dataset, out), env=env, cwd=tmp,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f'{dataset} {policy} failed:\n{done.stderr[-2000:]}')
        report = json.loads((out / 'report.json').read_text())
    timings = report['timings']
    return {'policy': policy, 'wall_s': round(wall, 3),
            'timings': timings,
            'overhead_s': round(wall - timings.get('train', 0.0), 3)}


SPIN = 'while True: pass'


def pending(datasets: list[str], pairs: int, folder: Path, tag: str):
    """(dataset, pair, result file) of each pair not yet stored."""
    for dataset in datasets:
        if dataset == 'Physics':
            ensure_physics_teacher()
        for pair in range(pairs):
            path = folder / f'{dataset}-{tag}-pair{pair}.json'
            if not path.exists():
                yield dataset, pair, path


def collect(datasets: list[str], pairs: int, load: int) -> None:
    for dataset, pair, path in pending(datasets, pairs, OUT, f'load{load}'):
        order = POLICIES if pair % 2 == 0 else POLICIES[::-1]
        spinners = [subprocess.Popen([sys.executable, '-c', SPIN])
                    for _ in range(load)]
        try:
            runs = {p: one_run(dataset, p) for p in order}
        finally:
            for proc in spinners:
                proc.kill()
                proc.wait()
        common.write_json(path, {
            'dataset': dataset, 'load': load, 'pair': pair,
            'order': list(order), 'runs': runs,
            'machine': common.machine()})
        print(dataset, load, pair,
              {p: r['wall_s'] for p, r in runs.items()}, flush=True)


AGAINST = RESULTS / 'overhead-against'


def commit_of(checkout: Path) -> str:
    done = subprocess.run(['git', '-C', str(checkout), 'rev-parse',
                           '--short', 'HEAD'], capture_output=True,
                          text=True, check=True)
    # Benchmarks, their results and the docs are not the code timed.
    # Uncommitted edits are named by a hash of their diff, so pairs timed
    # before an edit are not taken for pairs of the edited code.
    diff = subprocess.run(['git', '-C', str(checkout), 'diff', 'HEAD',
                           '--', '.', ':!benchmarks', ':!docs'],
                          capture_output=True, check=True).stdout
    edits = f'+changes-{hashlib.sha1(diff).hexdigest()[:7]}' if diff else ''
    return done.stdout.strip() + edits


def collect_against(datasets: list[str], pairs: int, other: Path,
                    this: Path = ROOT) -> None:
    """Pairs of (``this`` checkout, ``other``) runs, PASSIVE,
    alternating."""
    sides = {'this': this.resolve(), 'other': other.resolve()}
    commits = {side: commit_of(path) for side, path in sides.items()}
    tag = f"{commits['this']}-vs-{commits['other']}"
    for dataset, pair, path in pending(datasets, pairs, AGAINST, tag):
        order = list(sides) if pair % 2 == 0 else list(sides)[::-1]
        runs = {side: one_run(dataset, 'PASSIVE', sides[side])
                for side in order}
        common.write_json(path, {
            'dataset': dataset, 'pair': pair, 'order': order,
            'commits': commits, 'runs': runs,
            'machine': common.machine()})
        print(dataset, pair, {s: r['wall_s'] for s, r in runs.items()},
              flush=True)


def report_against() -> str:
    rows = common.read_rows(AGAINST)
    phases = ['load', 'train', 'export', 'check', 'measure', 'other']
    lines = [
        'One `distill` process of a commit against an earlier one, the '
        'two run back to back in alternating order under the default '
        'policy, median over the pairs (s); overhead = wall - train; the '
        'ratio is later / earlier wall time and overhead pair by pair '
        '(median, min-max). Command: `python benchmarks/overhead.py '
        '--physics --against DIR`, DIR a worktree of the earlier commit.',
        '', '| dataset | code | pairs | wall | overhead | ' +
        ' | '.join(phases) + ' |',
        '|---|---|---|---|---|' + '---|' * len(phases)]
    notes = []
    compared = sorted({(r['commits']['other'], r['commits']['this'])
                       for r in rows})
    for dataset in ('Cora', 'Physics'):
        for other, this in compared:
            mine = [r for r in rows if r['dataset'] == dataset
                    and r['commits']['other'] == other
                    and r['commits']['this'] == this]
            if not mine:
                continue
            for side in ('other', 'this'):
                commit = ', '.join(sorted({r['commits'][side]
                                           for r in mine}))
                lines.append(_row([dataset, commit],
                                  [r['runs'][side] for r in mine], phases))
            for figure in ('wall_s', 'overhead_s'):
                ratio = [r['runs']['this'][figure] /
                         r['runs']['other'][figure] for r in mine]
                notes.append(f"{dataset} {this} / {other} {figure[:-2]} "
                             f"{statistics.median(ratio):.2f} "
                             f"({min(ratio):.2f}-{max(ratio):.2f})")
    lines += ['', 'Later / earlier: ' + '; '.join(notes) + '.', '',
              'Machine: ' + '; '.join(sorted({r['machine']
                                              for r in rows})) + '.']
    return '\n'.join(lines)


def _median(values: list[float]) -> str:
    return f'{statistics.median(values):.2f}'


def _row(labels: list[str], runs: list[dict], phases: list[str]) -> str:
    """A table row: ``labels``, the number of runs, and the medians of
    wall time, overhead and each phase."""
    cells = [str(len(runs)), _median([run['wall_s'] for run in runs]),
             _median([run['overhead_s'] for run in runs])]
    cells += [_median([run['timings'].get(p, 0.0) for run in runs])
              for p in phases]
    return '| ' + ' | '.join([*labels, *cells]) + ' |'


def report() -> str:
    rows = common.read_rows(OUT)
    phases = ['load', 'teacher', 'train', 'export', 'check', 'measure',
              'other']
    lines = [
        'Wall time of one `distill` process (imports included) and the '
        "phases report.json records, median over the pairs (s), under the "
        "CLI's default `OMP_WAIT_POLICY=PASSIVE` and under `ACTIVE`; "
        'overhead = wall - train. The ratio is PASSIVE / ACTIVE wall time '
        'pair by pair (median, min-max), the two runs of a pair back to '
        'back in alternating order. Cora: the README\'s quick start as '
        'written; Physics: a GCN 2 x 128 teacher from `train-teacher`, distill '
        'with the defaults. "Busy processes": that many processes spinning '
        'beside the runs (a shared machine). Commands: `python '
        'benchmarks/overhead.py --physics` and `python '
        'benchmarks/overhead.py --load 2`.', '',
        '| dataset | busy processes | policy | pairs | wall | overhead | ' +
        ' | '.join(phases) + ' |',
        '|---|---|---|---|---|---|' + '---|' * len(phases)]
    ratios = []
    for dataset in ('Cora', 'Physics'):
        for load in sorted({r.get('load', 0) for r in rows}):
            mine = [r for r in rows if r['dataset'] == dataset
                    and r.get('load', 0) == load]
            if not mine:
                continue
            for policy in POLICIES:
                lines.append(_row([dataset, str(load), policy],
                                  [r['runs'][policy] for r in mine], phases))
            pair_ratios = [r['runs']['PASSIVE']['wall_s'] /
                           r['runs']['ACTIVE']['wall_s'] for r in mine]
            ratios.append(
                f'{dataset} with {load} busy: '
                f'{statistics.median(pair_ratios):.2f} '
                f'({min(pair_ratios):.2f}-{max(pair_ratios):.2f}, '
                f'{len(pair_ratios)} pairs)')
    lines += ['', 'PASSIVE / ACTIVE wall time: ' + '; '.join(ratios) + '.',
              '', 'Machine: ' + '; '.join(sorted({r['machine']
                                                  for r in rows})) + '.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--load', type=int, default=0,
                        help='busy processes beside the timed runs')
    parser.add_argument('--physics', action='store_true',
                        help='also time Physics (needs the shared data)')
    parser.add_argument('--report', action='store_true',
                        help='only rewrite the section of docs/BENCHMARKS.md')
    parser.add_argument('--against', type=Path, default=None,
                        help='pair this checkout with the one in this '
                        'folder (a git worktree of an earlier commit)')
    parser.add_argument('--checkout', type=Path, default=ROOT,
                        help='with --against: time the code of this '
                        'folder instead of this checkout\'s')
    args = parser.parse_args()
    if args.against is not None:
        if not args.report:
            datasets = ['Cora'] + (['Physics'] if args.physics else [])
            collect_against(datasets, args.pairs, args.against,
                            args.checkout)
        common.publish_folder(AGAINST, 'overhead-against', report_against)
        return
    if not args.report:
        datasets = ['Cora'] + (['Physics'] if args.physics else [])
        collect(datasets, args.pairs, args.load)
    common.publish_folder(OUT, 'overhead', report)


if __name__ == '__main__':
    main()
