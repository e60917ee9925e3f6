"""One prepared command that checks the CUDA path end to end.

Run it on a machine with a GPU (time there is short, so it is one command
with a hard budget), after a dry run on the CPU:

    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --quick  # dry
    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda  # <= 8 min

It runs, each step as the user would run it and under its own time limit:

1. the test suite with CUDA visible and GNNCOMPRESS_TEST_DEVICE=cuda: the
   tests marked ``cuda`` run on the GPU, those marked ``cpu_only`` on the
   CPU, and the rest take ``--device auto``'s choice (the GPU); with
   pytest-xdist when it is installed;
2. ``distill`` with every distill method on the bundled Cora sample;
3. Physics (when ``--data-root`` holds it): a GCN teacher, then ``distill``
   on the full graph and with ``--batch-size 4096`` (each run's seconds
   per epoch in the summary: sampling runs on the GPU when the graph fits
   there, and the issue's target is an epoch within 3x of the full
   graph's);
4. ``torchrun --nproc-per-node 1`` (NCCL on CUDA, gloo on the CPU);
5. ``amalgamate`` of two teachers trained on class subsets of Cora;
6. ``cotrain`` with each online method;
7. ``bench`` of teacher and student with the GPU runtimes.

Every step's exit status, wall time, last output line and the figures of
its report go to ``OUT/summary.json`` and ``OUT/summary.md``. A step that
would start after the total budget is recorded as not run. The script
exits 0 when every step that ran passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / 'samples' / 'cora_gat.pt'
CORA = ('--data', 'Cora', '--data-root', str(ROOT / 'samples'))
DISTILL_METHODS = ('kd', 'lsp', 'fitnet', 'at', 'gsp', 'g-crd', 'abkd', 'glnn')
COTRAIN_METHODS = ('alignahead', 'mutual')


def _cli(*args: str) -> list[str]:
    return [sys.executable, '-m', 'gnncompress', *args]


def _report_figures(folder: Path) -> dict[str, Any]:
    """The few numbers of a run's report.json worth a glance."""
    path = folder / 'report.json'
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keep = {}
    for key in ('test_accuracy', 'teacher_test_accuracy', 'speedups',
                'timings', 'device'):
        if key in report:
            keep[key] = report[key]
    training = report.get('training')
    if isinstance(training, dict) and training.get('epochs_run'):
        # Issue 23's mini-batch target: an epoch of Physics at
        # --batch-size 4096 within 3x of a full-graph epoch.
        keep['seconds_per_epoch'] = training.get('seconds', 0.0) / \
            training['epochs_run']
    student = report.get('student')
    if isinstance(student, dict):
        for key in ('test_accuracy', 'latency'):
            if key in student:
                keep[f'student_{key}'] = student[key]
    return keep


def _portable(text: str) -> str:
    """``text`` with this machine's paths made relative to the repository
    (the summary is committed and read elsewhere)."""
    return text.replace(sys.executable, 'python').replace(f'{ROOT}/', '')


class Runner:
    def __init__(self, out: Path, budget_s: float, only: str = '') -> None:
        self.only = only
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, cmd: list[str], timeout_s: float,
            folder: Path | None = None,
            env: dict[str, str] | None = None) -> bool:
        if self.only and not any(part in name
                                 for part in self.only.split(',')):
            return True
        left = self.deadline - time.monotonic()
        row: dict[str, Any] = {'step': name, 'command': _portable(
            ' '.join(cmd))}
        if left < 5:
            row.update(status='not run', reason='total budget spent')
            self.steps.append(row)
            print(f'[skip] {name}: total budget spent', flush=True)
            return False
        print(f'[run ] {name}', flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True,
                                  text=True, timeout=min(timeout_s, left),
                                  env={**os.environ, **(env or {})})
            rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = 'timeout'
            text = (exc.stdout or b'').decode(errors='replace') \
                if isinstance(exc.stdout, bytes) else (exc.stdout or '')
        wall = time.perf_counter() - start
        lines = [line for line in text.splitlines() if line.strip()]
        row.update(status='ok' if rc == 0 else 'failed', rc=rc,
                   wall_s=round(wall, 2),
                   last_line=_portable(lines[-1][:300]) if lines else '')
        if rc != 0:
            row['tail'] = '\n'.join(lines[-15:])
        if folder is not None:
            row['figures'] = _report_figures(folder)
        self.steps.append(row)
        print(f'[{"ok" if rc == 0 else "FAIL":4}] {name} ({wall:.1f} s) '
              f'{row["last_line"][:120]}', flush=True)
        return rc == 0

    def write(self, settings: dict[str, Any]) -> int:
        failed = [s for s in self.steps if s['status'] == 'failed']
        summary = {'settings': settings, 'steps': self.steps,
                   'passed': sum(s['status'] == 'ok' for s in self.steps),
                   'failed': len(failed),
                   'not_run': sum(s['status'] == 'not run'
                                  for s in self.steps)}
        tmp = self.out / 'summary.json.tmp'
        # The reports' figures (bench's rows name their files) too.
        tmp.write_text(_portable(json.dumps(summary, indent=2, default=str)))
        tmp.replace(self.out / 'summary.json')
        lines = [f'# gpu_check on {settings["machine"]}', '',
                 f'device `{settings["device"]}`, torch '
                 f'{settings["torch"]}; {summary["passed"]} passed, '
                 f'{summary["failed"]} failed, {summary["not_run"]} not run',
                 '', '| step | status | wall s | last line |',
                 '|---|---|---|---|']
        for s in self.steps:
            last = str(s.get('last_line', s.get('reason', ''))).replace(
                '|', '\\|')[:100]
            lines.append(f'| {s["step"]} | {s["status"]} | '
                         f'{s.get("wall_s", "")} | {last} |')
        (self.out / 'summary.md').write_text('\n'.join(lines) + '\n')
        return 1 if failed else 0


def machine(device: str) -> str:
    import torch
    if device == 'cuda' and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f'CPU, {os.cpu_count()} cores'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'))
    parser.add_argument('--out', type=Path,
                        default=ROOT / 'benchmarks' / 'results' / 'gpu_check')
    parser.add_argument('--data-root', type=Path,
                        default=ROOT.parent / 'shared' / 'datasets',
                        help='Folder holding Physics/raw (copied to a cache '
                             'before PyG processes it); skipped when absent.')
    parser.add_argument('--budget-s', type=float, default=480.0)
    parser.add_argument('--quick', action='store_true',
                        help='Dry run: 2 epochs everywhere, the suite limited '
                             'to tests/training/test_train.py.')
    parser.add_argument('--skip-tests', action='store_true')
    parser.add_argument('--only', default='',
                        help='Run only the steps whose name contains one of '
                             'these comma-separated parts.')
    args = parser.parse_args(argv)

    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('Error: --device cuda but torch sees no GPU; run the dry run '
              'with --device cpu.', file=sys.stderr)
        return 1
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dev = args.device
    epochs = '2' if args.quick else '30'
    runner = Runner(out, args.budget_s, args.only)
    settings = {'device': dev, 'machine': machine(dev),
                'torch': torch.__version__, 'quick': args.quick,
                'budget_s': args.budget_s}

    if not args.skip_tests:
        tests = ['tests/training/test_train.py'] if args.quick else ['tests']
        cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
               *tests]
        try:
            import xdist  # noqa: F401
            cmd += ['-n', str(min(14, os.cpu_count() or 1))]
        except ImportError:
            pass
        # The tests marked `cuda` run on the GPU; those marked `cpu_only`
        # stay on the CPU; the rest take --device auto's choice.
        env = {'GNNCOMPRESS_TEST_DEVICE': 'cuda'} if dev == 'cuda' else \
            {'CUDA_VISIBLE_DEVICES': '', 'GNNCOMPRESS_TEST_DEVICE': 'cpu'}
        runner.run('test suite', cmd, 300, env=env)

    for method in DISTILL_METHODS:
        folder = out / f'distill-{method}'
        extra = ['--student', 'mlp'] if method == 'glnn' else []
        runner.run(f'distill {method} (Cora)',
                   _cli('distill', str(TEACHER), '--method', method,
                        '--epochs', epochs, '--device', dev, *extra,
                        '--out', str(folder)), 120, folder)

    physics = args.data_root / 'Physics' / 'raw'
    if physics.is_dir():
        cache = out / 'data'
        shutil.copytree(args.data_root / 'Physics', cache / 'Physics')
        teacher = out / 'physics-gcn.pt'
        common = ['--data', 'Physics', '--data-root', str(cache),
                  '--device', dev]
        if runner.run('train-teacher (Physics, gcn)',
                      _cli('train-teacher', *common, '--arch', 'gcn',
                           '--epochs', epochs, '--out', str(teacher)), 150):
            for name, extra in (('full graph', []),
                                ('--batch-size 4096',
                                 ['--batch-size', '4096'])):
                folder = out / f'physics-{"mb" if extra else "full"}'
                runner.run(f'distill kd (Physics, {name})',
                           _cli('distill', str(teacher), *common, '--method',
                                'kd', '--epochs', epochs, *extra,
                                '--out', str(folder)), 150, folder)
    else:
        runner.steps.append({'step': 'Physics', 'status': 'not run',
                             'reason': f'{physics} is absent'})

    folder = out / 'torchrun'
    runner.run(f'torchrun 1 process ({"nccl" if dev == "cuda" else "gloo"})',
               [sys.executable, '-m', 'torch.distributed.run',
                '--nproc-per-node', '1', '-m', 'gnncompress', 'distill',
                str(TEACHER), '--method', 'kd', '--epochs', epochs,
                '--batch-size', '512', '--device', dev, '--out', str(folder)],
               150, folder)

    t1, t2 = out / 'cora-0-3.pt', out / 'cora-4-6.pt'
    ok = all(runner.run(f'train-teacher (Cora {classes}, {arch})',
                        _cli('train-teacher', *CORA, '--classes',
                             classes, '--arch', arch, '--epochs', epochs,
                             '--device', dev, '--out', str(path)), 120)
             for classes, arch, path in (('0-3', 'gcn', t1),
                                         ('4-6', 'gat', t2)))
    if ok:
        folder = out / 'amalgamate'
        runner.run('amalgamate (Cora 0-3 + 4-6)',
                   _cli('amalgamate', str(t1), str(t2), *CORA,
                        '--tasks', '0-3,4-6', '--epochs', epochs, '--device',
                        dev, '--out', str(folder)), 180, folder)

    for method in COTRAIN_METHODS:
        folder = out / f'cotrain-{method}'
        runner.run(f'cotrain {method} (Cora)',
                   _cli('cotrain', *CORA, '--method', method,
                        '--epochs', epochs, '--device', dev,
                        '--out', str(folder)), 120, folder)

    student = out / 'distill-kd' / 'student.onnx'
    # The student's weights too: cuda-graph replays PyTorch models only.
    weights = out / 'distill-kd' / 'student.safetensors'
    runtimes = 'eager,compile,onnxruntime' + \
        (',cuda-graph' if dev == 'cuda' else '')
    runner.run(f'bench ({runtimes})',
               _cli('bench', str(TEACHER), str(weights), str(student), *CORA,
                    '--runtimes', runtimes, '--device', dev,
                    '--baseline', str(TEACHER), '--repeat', '20',
                    '--out', str(out / 'bench')), 150)
    bench_json = out / 'bench' / 'bench.json'
    if bench_json.is_file():
        runner.steps[-1]['figures'] = json.loads(bench_json.read_text())

    code = runner.write(settings)
    print(f'wrote {out}/summary.json and summary.md')
    return code


if __name__ == '__main__':
    sys.exit(main())
