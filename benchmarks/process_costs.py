"""What the `gnncompress` process itself costs around a command (issue 23,
part 1): the garbage collector's time during the run and the
interpreter's teardown after it, with Python's usual start and end (the
Typer app called as before) and with gnncompress.cli.process.main (the
collector paused while the options are parsed, then frozen; the process
ended with os._exit).

Each run is the README's quick start in a fresh process, whose wrapper
sums the collector's time per generation (gc.callbacks) and records when
the atexit handlers run; the teardown is the process's wall time after
that. The two ways alternate, run by run.

    python benchmarks/process_costs.py            # 3 runs of each
    python benchmarks/process_costs.py --report   # only rewrite the doc

One result file per way x run (results/process_costs/), skipped when
present.
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
from common import RESULTS

ROOT = Path(__file__).resolve().parent.parent
OUT = RESULTS / 'process_costs'
WAYS = ('usual', 'main')

# Runs in the child: the quick start, timed from inside.
WRAPPER = '''
import atexit, gc, json, sys, time
start = time.perf_counter()
spent = [0.0, 0.0, 0.0]
began = []
def watch(phase, info):
    if phase == 'start':
        began.append(time.perf_counter())
    elif began:
        spent[info['generation']] += time.perf_counter() - began.pop()
gc.callbacks.append(watch)
def done():
    print(json.dumps({'atexit_s': time.perf_counter() - start,
                      'collector_s': spent}), file=sys.stderr)
atexit.register(done)
way, sample, out = sys.argv[1:4]
sys.argv = ['gnncompress', 'distill', sample, '--out', out]
from gnncompress.cli import app, process
if way == 'main':
    process.main(app)
else:
    app(prog_name='gnncompress')
'''


def one_run(way: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, '-c', WRAPPER, way,
             str(ROOT / 'samples' / 'cora_gat.pt'), str(Path(tmp) / 'run')],
            capture_output=True, text=True, cwd=tmp,
            env={**os.environ, 'PYTHONPATH': str(ROOT)})
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f'{way} failed:\n{done.stderr[-2000:]}')
    inside = json.loads(done.stderr.strip().splitlines()[-1])
    return {'way': way, 'wall_s': wall, 'atexit_s': inside['atexit_s'],
            'teardown_s': wall - inside['atexit_s'],
            'collector_s': inside['collector_s'],
            'machine': common.machine()}


def collect(runs: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(runs):
        order = WAYS if i % 2 == 0 else WAYS[::-1]
        for way in order:
            path = OUT / f'{way}-run{i}.json'
            if path.exists():
                continue
            row = {**one_run(way), 'run': i}
            common.write_json(path, row)
            print(way, i, {k: row[k] for k in ('wall_s', 'teardown_s')},
                  f"collector {sum(row['collector_s']):.2f} s", flush=True)


def report() -> str:
    rows = common.read_rows(OUT)

    def median(way: str, value) -> str:
        values = [value(r) for r in rows if r['way'] == way]
        return f'{statistics.median(values):.2f}' if values else '-'

    lines = [
        'The `gnncompress` process around the README\'s quick start, '
        'median over runs (s): the garbage collector\'s time in the whole '
        'run and, of it, its full collections (generation 2), and the '
        'teardown after the atexit handlers. "usual": the Typer app called '
        'as before (collector on, '
        "Python's usual exit); \"main\": `gnncompress.cli.process.main`, "
        'as the console script and `python -m gnncompress` run it. '
        'Command: `python benchmarks/process_costs.py`.', '',
        '| process | runs | wall | collector | of it full collections | '
        'teardown |', '|---|---|---|---|---|---|']
    for way in WAYS:
        lines.append(
            f"| {way} | {sum(r['way'] == way for r in rows)} | "
            f"{median(way, lambda r: r['wall_s'])} | "
            f"{median(way, lambda r: sum(r['collector_s']))} | "
            f"{median(way, lambda r: r['collector_s'][2])} | "
            f"{median(way, lambda r: r['teardown_s'])} |")
    lines += ['', 'Machine: ' + '; '.join(sorted({r['machine']
                                                   for r in rows})) + '.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--report', action='store_true',
                        help='only rewrite the section of docs/BENCHMARKS.md')
    args = parser.parse_args()
    if not args.report:
        collect(args.runs)
    common.publish_folder(OUT, 'process-costs', report)


if __name__ == '__main__':
    main()
