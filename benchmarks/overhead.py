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

``--load N`` starts N processes that only spin for the length of the
timed runs: a machine shared with other jobs, as CI machines and this
project's benchmark machine often are.

One result file per dataset x load x pair (results/overhead/), skipped
when present: the run resumes.
"""
from __future__ import annotations

import argparse
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


def one_run(dataset: str, policy: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'run'
        env = {**os.environ, 'OMP_WAIT_POLICY': policy}
        start = time.perf_counter()
        done = subprocess.run(command(dataset, out), env=env,
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


def collect(datasets: list[str], pairs: int, load: int) -> None:
    for dataset in datasets:
        if dataset == 'Physics':
            ensure_physics_teacher()
        for pair in range(pairs):
            path = OUT / f'{dataset}-load{load}-pair{pair}.json'
            if path.exists():
                continue
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


def _median(values: list[float]) -> str:
    return f'{statistics.median(values):.2f}'


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
                runs = [r['runs'][policy] for r in mine]
                cells = [_median([run['timings'].get(p, 0.0)
                                  for run in runs]) for p in phases]
                lines.append(
                    f"| {dataset} | {load} | {policy} | {len(runs)} | "
                    f"{_median([run['wall_s'] for run in runs])} | "
                    f"{_median([run['overhead_s'] for run in runs])} | "
                    + ' | '.join(cells) + ' |')
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
    args = parser.parse_args()
    if not args.report:
        datasets = ['Cora'] + (['Physics'] if args.physics else [])
        collect(datasets, args.pairs, args.load)
    common.publish_folder(OUT, 'overhead', report)


if __name__ == '__main__':
    main()
