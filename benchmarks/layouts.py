"""Teachers as plain PyG scripts write them, through the tool (issue 20).

For each layout of the fixtures module (tests/layouts.py: PyG's
example
GCN and GAT, the OGB ``convs`` + ``bns`` style, a Linear encoder and head,
GraphSAGE with ``project=True``, a Lightning checkpoint, ...): train the
layout's model on Cora with plain PyG code (``Planetoid`` with
``NormalizeFeatures``, as PyG's examples; Adam, lr 0.01, weight decay
5e-4, EPOCHS epochs on the public split, the weights of the last epoch),
save it the way its users save it, then run the tool on the file as a user
would (a ``gnncompress distill`` subprocess, no teacher card, KD into a
2-layer GCN of 8 hidden channels, ``--baseline``, the same EPOCHS). One JSON
file per layout under benchmarks/results/layouts/; a layout whose file
exists is skipped, so an interrupted run resumes.

    python benchmarks/layouts.py                  # run what is missing
    python benchmarks/layouts.py --epochs 50      # a shorter run
    python benchmarks/layouts.py --report         # only rewrite the doc

The dataset is copied from --data-root (raw files, never written to) into
a cache folder before PyG processes it; teachers are kept there too (not
committed).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import RESULTS, SHARED, machine, update_doc, write_json

REPO = Path(__file__).resolve().parent.parent
OUT = RESULTS / 'layouts'
EPOCHS = 200
HIDDEN = 8          # the student's width: the floor the tool allows on Cora
SEED = 0


def fixtures():
    """tests/layouts.py, the project's own fixtures (loaded by
    path: this
    script is called layouts too)."""
    spec = importlib.util.spec_from_file_location(
        'layout_fixtures', REPO / 'tests' / 'layouts.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['layout_fixtures'] = module
    spec.loader.exec_module(module)
    return module


def cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'gnncompress-benchmarks' / 'layouts'


def cora(data_root: Path):
    """Cora as PyG's examples load it, from a copy of the raw files."""
    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures

    root = cache_dir() / 'data'
    if not (root / 'Cora' / 'raw').is_dir():
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix='.copy-'))
        shutil.copytree(data_root / 'Cora' / 'raw', tmp / 'raw')
        (root / 'Cora').mkdir(parents=True, exist_ok=True)
        (tmp / 'raw').replace(root / 'Cora' / 'raw')
        tmp.rmdir()
    return Planetoid(str(root), 'Cora', transform=NormalizeFeatures())[0]


def train_teacher(build, data, epochs: int) -> tuple[torch.nn.Module,
                                                     dict[str, float]]:
    """The plain PyG training loop of the examples; the script's own
    accuracies of the model it saves."""
    torch.manual_seed(SEED)
    model = build(data.num_features, int(data.y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01,
                                 weight_decay=5e-4)
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask],
                        data.y[data.train_mask]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x, data.edge_index).argmax(-1)
    return model, {
        split: float((pred[mask] == data.y[mask]).float().mean())
        for split, mask in (('val', data.val_mask), ('test', data.test_mask))}


def _template(row: dict) -> str:
    """A row's command with its layout's file named LAYOUT.pt."""
    return row['command'].replace(f"{row['layout']}.pt", 'LAYOUT.pt')


def tool_command(teacher: Path, out: Path, data_root: Path, epochs: int,
                 options: dict[str, str]) -> list[str]:
    extra = [a for k, v in options.items() for a in (f'--{k}', v) if a]
    return ['distill', str(teacher), '--data', 'Cora', '--data-root',
            str(data_root), '--epochs', str(epochs), '--hidden', str(HIDDEN),
            '--method', 'kd', '--seed', str(SEED), '--baseline',
            '--no-latency', '--no-progress', '--out', str(out), *extra]


def run_tool(args: list[str]) -> tuple[int, str]:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])])}
    done = subprocess.run([sys.executable, '-m', 'gnncompress', *args],
                          capture_output=True, text=True, env=env,
                          cwd=REPO)
    return done.returncode, done.stdout + done.stderr


def teacher_file(name: str, build, save, data, epochs: int
                 ) -> tuple[Path, dict[str, Any]]:
    """The layout's teacher, trained and saved by the script (kept in the
    cache with the script's own figures: training is deterministic, so a
    rerun reuses it)."""
    teacher = cache_dir() / 'teachers' / f'{name}-{epochs}.pt'
    facts = teacher.with_suffix('.json')
    if teacher.exists() and facts.exists():
        return teacher, json.loads(facts.read_text())
    model, own = train_teacher(build, data, epochs)
    teacher.parent.mkdir(parents=True, exist_ok=True)
    save(model, teacher)
    found = {'teacher_class': type(model).__name__,
             'teacher_parameters': sum(p.numel()
                                       for p in model.parameters()),
             'script_val_accuracy': own['val'],
             'script_test_accuracy': own['test']}
    write_json(facts, found)
    return teacher, found


# The tool's error when its feature check cannot tell raw from normalised
# features: the script trained on NormalizeFeatures, so its user answers
# with --normalize-features.
FEATURES_ERROR = 'Cannot tell which features the teacher was trained on'


def run_layout(name: str, fx, data, data_root: Path,
               epochs: int) -> dict[str, Any]:
    build, save, _ = fx.LAYOUTS[name]
    start = time.perf_counter()
    teacher, facts = teacher_file(name, build, save, data, epochs)
    options = dict(fx.OPTIONS.get(name, {}))
    row: dict[str, Any] = {
        'layout': name, 'epochs': epochs, 'seed': SEED, **facts,
        'options': options, 'commit': _commit(), 'machine': machine()}
    for _ in range(2):
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            out = Path(tmp) / 'run'
            args = tool_command(teacher, out, data_root, epochs, options)
            shown = {str(teacher): f'{name}.pt', str(out): 'out',
                     str(data_root): os.path.relpath(data_root, REPO)}
            row['command'] = 'gnncompress ' + shlex.join(
                [shown.get(a, a) for a in args])
            code, output = run_tool(args)
            row.update(exit_code=code, loads=code == 0)
            if code == 0:
                row.update(_figures(json.loads(
                    (out / 'report.json').read_text())))
                break
            row['error'] = ' '.join(output.split())
            if FEATURES_ERROR not in row['error'] or \
                    'normalize-features' in options:
                break
            row['first_error'] = row.pop('error')
            options['normalize-features'] = ''
    row['seconds'] = time.perf_counter() - start
    return row


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        'tool_teacher_test_accuracy': report['teacher']['test_accuracy'],
        'distilled_test_accuracy': report['student']['test_accuracy'],
        'distilled_val_accuracy': report['student']['val_accuracy'],
        'alone_test_accuracy': report['student_alone']['test_accuracy'],
        'alone_val_accuracy': report['student_alone']['val_accuracy'],
        'student_parameters': report['student']['parameters'],
        'exported': (report.get('exported') or {}).get('model'),
        'notes': report['notes']}


def _commit() -> str | None:
    done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() or None


def collect(names: list[str], data_root: Path, epochs: int) -> None:
    fx = fixtures()
    data = None
    for name in names:
        path = OUT / (f'{name}.json' if epochs == EPOCHS else
                      f'{name}-{epochs}-epochs.json')
        if path.exists():
            continue
        data = data if data is not None else cora(data_root)
        row = run_layout(name, fx, data, data_root, epochs)
        write_json(path, row)
        print(f"{name}: loads={row['loads']} "
              f"({row['seconds']:.0f} s)", flush=True)


def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100 * value:.1f}'


def _loads(row: dict[str, Any]) -> str:
    if 'first_error' in row:
        return 'yes, once told the features (see below)'
    return 'yes'


def _features(row: dict[str, Any]) -> str:
    if 'normalize-features' in row['options']:
        return 'row-normalised (--normalize-features)'
    for note in row['notes']:
        if note.startswith('features: '):
            return note.split(',')[0][len('features: '):]
    return '-'


def report() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob('*.json'))]
    if not rows:
        return '(no results yet: run benchmarks/layouts.py)'
    lines = ['| layout | epochs | loads | teacher test acc: tool / script | '
             'features the tool chose | student test acc: distilled / alone '
             '(val) | exported | options |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        options = ' '.join(f'--{k} {v}'.strip()
                           for k, v in r['options'].items())
        if not r['loads']:
            lines.append(f"| {r['layout']} | {r['epochs']} | no: "
                         f"{r.get('error', '')} | - / "
                         f"{_pct(r['script_test_accuracy'])} | - | - | - | "
                         f'{options or "-"} |')
            continue
        lines.append(
            f"| {r['layout']} | {r['epochs']} | {_loads(r)} | "
            f"{_pct(r['tool_teacher_test_accuracy'])} / "
            f"{_pct(r['script_test_accuracy'])} | {_features(r)} | "
            f"{_pct(r['distilled_test_accuracy'])} / "
            f"{_pct(r['alone_test_accuracy'])} "
            f"({_pct(r['distilled_val_accuracy'])} / "
            f"{_pct(r['alone_val_accuracy'])}) | {r.get('exported') or '-'} "
            f'| {options or "-"} |')
    asked = [f"- {r['layout']}: {r['first_error']}" for r in rows
             if 'first_error' in r]
    if asked:
        asked = ['Without a teacher card, the tool refused these teachers '
                 'the first time, as the feature check could not settle raw '
                 'against row-normalised features; the run in the table is '
                 'the next one, with `--normalize-features` (the script '
                 'trains on `NormalizeFeatures`):', '', *asked, '']
    return '\n'.join([
        *lines, '', *asked,
        'Epochs: of the teacher\'s training and of each student, '
        f'seed {SEED}; student: 2-layer GCN, {HIDDEN} hidden '
        f'channels, KD; tool command per layout (in the JSON files; '
        f'LAYOUT is the layout\'s name): '
        f"`{_template(rows[0])}`.",
        '',
        f"Machine: {rows[0]['machine']}."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--layouts', default=None,
                        help='Comma-separated layout names (default: all).')
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md from results.')
    args = parser.parse_args(argv)
    if not args.report:
        names = args.layouts.split(',') if args.layouts else \
            list(fixtures().LAYOUTS)
        cache_dir().mkdir(parents=True, exist_ok=True)
        collect(names, Path(args.data_root), args.epochs)
    body = report()
    update_doc('layouts', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
