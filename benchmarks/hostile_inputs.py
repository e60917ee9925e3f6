"""Time and memory on hostile inputs (docs/robustness.md, "Bounded time and
memory"): ``inspect`` on deep [1 x 1] GCN files, the peak memory of reading
a large checkpoint, and how fast a bench row over its budget is stopped.
Each measurement runs in a fresh process; files go to a temporary folder
and are removed.

    python benchmarks/hostile_inputs.py
    python benchmarks/hostile_inputs.py --megabytes 1000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INSPECT = '''
import sys, time, torch
from safetensors.torch import save_file
from gnncompress import api
from gnncompress.core.errors import GnnCompressError
layers, path = int(sys.argv[1]), sys.argv[2]
state = {}
for i in range(layers):
    state[f'convs.{i}.lin.weight'] = torch.ones(1, 1)
    state[f'convs.{i}.bias'] = torch.zeros(1)
save_file(state, path)
start = time.perf_counter()
try:
    api.inspect(path)
    outcome = 'inspected'
except GnnCompressError:
    outcome = 'refused'
print(time.perf_counter() - start, outcome)
'''

SAVE = '''
import sys, torch
megabytes, path = int(sys.argv[1]), sys.argv[2]
rows = megabytes * 250_000 // 1000
torch.save({'convs.0.lin.weight': torch.ones(rows, 1000)}, path)
print('saved')
'''

MEMORY = '''
import resource, sys
from gnncompress.checkpoints.reading import read_weights
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
read_weights(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
'''

BUDGET = '''
import sys, time
sys.path.insert(0, sys.argv[2])
from test_bounded_inputs import _loop_onnx
from gnncompress.workflows.bench_table import BenchModel
from gnncompress.workflows.bench_rows import run_bench, synthetic_graph
path = _loop_onnx(sys.argv[1], 10 ** 12)
entry = BenchModel('endless', path, onnx_path=path)
graph = synthetic_graph(50, 100, 4, seed=0)
start = time.perf_counter()
row = run_bench([entry], graph, runtimes=['onnxruntime'], threads=[1],
                    warmup=0, repeat=1, row_budget_s=1.0)[0]
print(time.perf_counter() - start, row.error)
'''


def _run(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, '-c', code, *args], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--layers', default='250,500,1000,10000')
    parser.add_argument('--megabytes', type=int, default=500)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layers in map(int, args.layers.split(',')):
            seconds, outcome = _run(INSPECT, str(layers),
                                    f'{tmp}/deep.safetensors').split()
            results[f'inspect {layers} layers'] = \
                f'{float(seconds):.2f} s ({outcome})'
            print(f'inspect, {layers:>6} layers: {float(seconds):.2f} s '
                  f'({outcome})', flush=True)
        _run(SAVE, str(args.megabytes), f'{tmp}/big.pt')
        grown = float(_run(MEMORY, f'{tmp}/big.pt'))
        Path(f'{tmp}/big.pt').unlink(missing_ok=True)
        results[f'read {args.megabytes} MB'] = f'{grown:.0f} MB peak growth'
        print(f'read_weights, {args.megabytes} MB file: peak memory grew by '
              f'{grown:.0f} MB', flush=True)
        line = _run(BUDGET, f'{tmp}/endless.onnx', str(ROOT / 'tests'))
        seconds, error = line.split(' ', 1)
        results['endless loop, 1 s budget'] = f'{float(seconds):.2f} s'
        print(f'bench row, Loop of 10^12, budget 1 s: stopped after '
              f'{float(seconds):.2f} s ({error})')
    print(json.dumps(results))


if __name__ == '__main__':
    main()
