"""Default loss weights chosen on validation (issue 22, part 4).

For each method of the suite whose default weight (at the time of the
suite's runs) gave a mean validation accuracy below the student alone over
the seven datasets, and for LSP, train the suite's exact setting
(benchmarks/accuracy.py: its GAT teachers, 30x smaller GCN student, epochs
and learning rate per dataset) at a few weights on a log grid. The choice
per method is the weight with the highest mean, over the datasets, of
(method's validation accuracy - the student alone's), each dataset's gain
averaged over the seeds first. Test accuracy is stored and shown but never
read by the choice.

The student alone and the suite's weight (the first of each grid) are not
trained again: they are the suite's stored runs
(results/accuracy/main/DATASET/ROW-seedS.json), same teacher, seed and
setting. Every other cell is one JSON file per dataset x method x weight x
seed under results/weight-sweep/; existing files are skipped, so an
interrupted run resumes.

    python benchmarks/weight_sweep.py --seeds 0-2          # sweep, then report
    python benchmarks/weight_sweep.py --datasets Physics --seeds 0
    python benchmarks/weight_sweep.py --report             # doc section only
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
from accuracy import (
    DATASETS,
    MAIN_ROWS,
    SHARED,
    SUITE_WEIGHTS,
    _teacher,
    main_run,
)
from accuracy import OUT as SUITE
from common import (
    RESULTS,
    machine,
    parse_seeds,
    update_doc,
    write_json,
)

OUT = RESULTS / 'weight-sweep'
# method -> weights; the first is the weight the suite's stored runs used
# (the default when they ran; LSP's is the paper's lambda), the others a
# log grid below it.
GRID = {m: (SUITE_WEIGHTS[m], *lower) for m, lower in (
    ('lsp', (10.0, 1.0, 0.1)),
    ('fitnet', (1.0, 0.1)),
    ('abkd', (0.01, 0.001)),
    ('kd', (0.1,)))}


def _path(dataset: str, method: str, weight: float, seed: int):
    return OUT / dataset / f'{method}-w{weight:g}-seed{seed}.json'


def run(methods: list[str], datasets: list[str], seeds: list[int],
        data_root: str) -> None:
    """Seed by seed, so that a run cut short still covers every cell."""
    for seed in seeds:
        for dataset in datasets:
            for method in methods:
                # The suite's run stands for the first weight unless the
                # teacher trained again differs from the suite's.
                first = 0 if _new_teacher(dataset, data_root) else 1
                for weight in GRID[method][first:]:
                    path = _path(dataset, method, weight, seed)
                    if path.exists():
                        continue
                    result = main_run(dataset, data_root, seed, method,
                                      weight)
                    write_json(path, {**result, 'row': method})
                    print(f"{dataset} seed {seed} {method} w {weight:g}: "
                          f"val {100 * result['val_accuracy']:.1f}% "
                          f"({result['fit_seconds']:.1f} s)", flush=True)


def _load(path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _new_teacher(dataset: str, data_root: str) -> bool:
    """Whether this machine's teacher (trained again when missing: the
    teachers are not committed) differs from the one of the suite's runs,
    by test accuracy."""
    card = json.loads(_teacher(dataset, data_root).with_suffix('.json')
                      .read_text())
    stored = _load(SUITE / 'main' / dataset / 'alone-seed0.json')
    return card['test_accuracy'] != stored['teacher_test_accuracy']


def _run(dataset: str, method: str, weight: float,
         seed: int) -> dict | None:
    """A stored run: the suite's for the student alone (method None) and
    for the first weight of the grid (unless this sweep has its own, with
    another teacher), this sweep's otherwise."""
    suite = SUITE / 'main' / dataset
    if method is None:
        return _load(suite / f'alone-seed{seed}.json')
    own = _load(_path(dataset, method, weight, seed))
    if weight == GRID[method][0] and own is None:
        return _load(suite / f'{method}-seed{seed}.json')
    return own


def gains(method: str, dataset: str,
          key: str = 'val_accuracy') -> dict[float, list[float]]:
    """weight -> (run - the student alone) per seed, over the seeds that
    every weight of the method and the student alone have, so that the
    weights are compared on the same seeds."""
    runs = {w: {s: _run(dataset, method, w, s) for s in range(10)}
            for w in GRID[method]}
    alone = {s: _run(dataset, None, 0.0, s) for s in range(10)}
    seeds = [s for s in range(10)
             if alone[s] and all(runs[w][s] for w in GRID[method])]
    return {w: [runs[w][s][key] - alone[s][key] for s in seeds]
            for w in GRID[method]}


def _cell(values: list[float]) -> str:
    if not values:
        return '-'
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f'{mean:+.1f}'
    return f'{mean:+.1f} ± {100 * statistics.stdev(values):.1f}'


def _mean_over_datasets(per: list[dict[float, list[float]]],
                        weight: float) -> float | None:
    """Mean over the datasets of each dataset's mean over its seeds, over
    the datasets that have runs (every weight of a method has the same
    ones); None where none has."""
    done = [g[weight] for g in per if g[weight]]
    return statistics.fmean(map(statistics.fmean, done)) if done else None


def choose(method: str) -> tuple[float | None, dict[float, float], int]:
    """The weight with the highest mean validation gain over the datasets,
    each weight's mean gain (validation accuracy only), and the number of
    datasets the means cover."""
    per = [gains(method, d) for d in DATASETS]
    means = {w: m for w in GRID[method]
             if (m := _mean_over_datasets(per, w)) is not None}
    covered = sum(bool(g[GRID[method][0]]) for g in per)
    return (max(means, key=means.get) if means else None), means, covered


def suite_line() -> str:
    """From the suite's stored runs alone: per method, the mean over the
    datasets of (validation accuracy - the student alone's, GLNN: the MLP
    alone's), each dataset's a mean over its seeds."""
    cells = []
    for row in MAIN_ROWS:
        if row in ('alone', 'mlp-alone'):
            continue
        base = 'mlp-alone' if MAIN_ROWS[row][1] == 'mlp' else 'alone'
        per = []
        for dataset in DATASETS:
            folder = SUITE / 'main' / dataset
            pairs = [(_load(folder / f'{row}-seed{s}.json'),
                      _load(folder / f'{base}-seed{s}.json'))
                     for s in range(10)]
            diffs = [r['val_accuracy'] - b['val_accuracy']
                     for r, b in pairs if r and b]
            if diffs:
                per.append(statistics.fmean(diffs))
        if per:
            cells.append(f'{row} {100 * statistics.fmean(per):+.2f} '
                         f'({len(per)} datasets)')
    return ('The suite\'s stored runs (results/accuracy/main, the weights '
            'of SUITE_WEIGHTS, the others\' defaults): mean validation gain '
            'over the student alone, in points: ' + ', '.join(cells) + '.')


def report() -> str:
    lines = [
        suite_line(), '',
        '`python benchmarks/weight_sweep.py` (`--report` rewrites this '
        'section): validation accuracy of each method minus the student '
        'alone\'s, in points, mean ± std over seeds, in the method '
        'suite\'s setting (GAT teacher, 30x smaller GCN; the student '
        'alone and the first weight of each method, the default when the '
        'suite ran, are the suite\'s stored runs, except where the '
        'teacher trained again differs from the suite\'s). Per dataset, '
        'every weight of a method uses the same seeds (n). "mean" is the '
        'mean over the datasets with runs (n > 0) of the per-dataset '
        'means, the figure the choice (bold) reads; '
        '"test" is the same mean for test accuracy, shown only.', '',
        '| method | weight | ' + ' | '.join(DATASETS)
        + ' | mean (val) | test |',
        '|' + '---|' * (len(DATASETS) + 4)]
    chosen = {}
    for method in GRID:
        best, means, covered = choose(method)
        chosen[method] = (best, means, covered)
        per = [gains(method, d) for d in DATASETS]
        test = [gains(method, d, 'test_accuracy') for d in DATASETS]
        for weight in GRID[method]:
            mean = f'{100 * means[weight]:+.2f}' if weight in means else '-'
            if weight == best:
                mean = f'**{mean}**'
            tmean = _mean_over_datasets(test, weight)
            lines.append(
                f'| {method} | {weight:g} | '
                + ' | '.join(_cell(g[weight]) for g in per)
                + f' | {mean} | '
                + ('-' if tmean is None else f'{100 * tmean:+.2f}') + ' |')
        lines.append(f'| {method} | n | ' + ' | '.join(
            str(len(g[GRID[method][0]])) for g in per) + ' | | |')
    lines += ['', 'Chosen (highest mean validation gain): ' + ', '.join(
        f'{m} {best:g} ({100 * means[best]:+.2f} points over {covered} '
        f'datasets' + (', below the student alone at every weight'
                       if means[best] < 0 else '') + ')'
        for m, (best, means, covered) in chosen.items()
        if best is not None) + '.']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--methods', default=','.join(GRID))
    parser.add_argument('--datasets', default=','.join(DATASETS))
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (1: on the shared 2-core '
                        'machine 2 threads ran a Cora FitNet run 12x '
                        'slower, with the same figures)')
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.report:
        run(args.methods.split(','), args.datasets.split(','),
            parse_seeds(args.seeds), args.data_root)
    body = report() + (f'\n\nMachine: {machine()}; the suite\'s stored '
                       f'runs: the same machine at 2 threads.')
    update_doc('weight-sweep', body)
    print(body)


if __name__ == '__main__':
    sys.exit(main())
