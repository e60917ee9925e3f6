"""``distill --method auto`` on the method suite: its rule applied to the
suite's stored runs.

The suite (benchmarks/accuracy.py, results/accuracy/main/) already trained
every candidate of ``auto`` (gnncompress.workflows.auto.CANDIDATES: kd, at,
the student alone, gsp, fitnet) per dataset and seed with the same student,
seed and settings. This script hands those runs to
:func:`gnncompress.workflows.auto.choose`, the function ``distill --method
auto`` calls, as if each had just been trained, with a budget they all fit
in. It then reports the chosen student's test accuracy per dataset.
choose() reads only the validation accuracy; the test accuracy is read
only for the candidate it picks.

The suite trains without early stopping (patience off); ``distill`` stops
after 100 epochs without improvement. The rule is the same, but the runs
differ from a default ``distill --method auto`` in that one setting.

    python benchmarks/auto_choice.py            # print and update the doc
"""
from __future__ import annotations

import statistics
from types import SimpleNamespace

from common import RESULTS, mean_std, read_rows, update_doc

from gnncompress.workflows.auto import CANDIDATES, choose

SUITE = RESULTS / 'accuracy' / 'main'
DATASETS = ['Cora', 'CiteSeer', 'PubMed', 'Computers', 'Photo', 'CS',
            'Physics']


def stored(dataset: str) -> dict[int, dict[str, dict]]:
    """seed -> row -> stored result, for the candidates' rows."""
    out: dict[int, dict[str, dict]] = {}
    for row in read_rows(SUITE / dataset):
        if row['row'] in CANDIDATES:
            out.setdefault(row['seed'], {})[row['row']] = row
    return out


def replay(runs: dict[str, dict]) -> str:
    """The candidate choose() picks from one seed's stored runs."""
    def train(name: str):
        run = runs[name]
        return None, SimpleNamespace(val_accuracy=run['val_accuracy'],
                                     epochs_run=run['epochs'])
    return choose(train, budget_s=float('inf'), clock=lambda: 0.0).method


def report() -> str:
    lines = [
        '`python benchmarks/auto_choice.py`: `--method auto`\'s rule '
        '(gnncompress.workflows.auto.choose, on validation accuracy) '
        'applied to the suite\'s stored runs of its candidates (kd, at, '
        'the student alone, gsp, fitnet; GAT teacher, 30x smaller GCN, '
        'the suite\'s settings, no early stopping). Test accuracy (%), '
        'mean ± std over seeds; "best single" is the candidate with the '
        'best mean test accuracy, which no method can know in advance.',
        '',
        '| dataset | teacher | alone | auto | auto - teacher | auto - '
        'alone | best single | choices (seeds 0-4) | seeds |',
        '|---|---|---|---|---|---|---|---|---|']
    within_teacher, below_alone, done = 0, 0, 0
    for dataset in DATASETS:
        seeds = stored(dataset)
        complete = {s: r for s, r in seeds.items()
                    if all(c in r for c in CANDIDATES)}
        if not complete:
            continue
        order = sorted(complete)
        picks = [replay(complete[s]) for s in order]
        auto = [complete[s][p]['test_accuracy'] for s, p in zip(order, picks)]
        alone = [complete[s]['alone']['test_accuracy'] for s in order]
        teacher = complete[order[0]]['alone']['teacher_test_accuracy']
        best = max(CANDIDATES, key=lambda c: statistics.fmean(
            complete[s][c]['test_accuracy'] for s in order))
        best_runs = [complete[s][best]['test_accuracy'] for s in order]
        gap_teacher = 100 * (statistics.fmean(auto) - teacher)
        gap_alone = 100 * (statistics.fmean(auto) - statistics.fmean(alone))
        spread = 100 * statistics.stdev(alone) if len(alone) > 1 else 0.0
        done += 1
        within_teacher += gap_teacher >= -1.0
        below_alone += gap_alone < -spread
        lines.append(
            f'| {dataset} | {100 * teacher:.1f} | {mean_std(alone)} | '
            f'{mean_std(auto)} | {gap_teacher:+.1f} | {gap_alone:+.1f} | '
            f'{best} {mean_std(best_runs)} | {", ".join(picks)} | '
            f'{len(order)} |')
    lines += ['', f'Within 1 point of the teacher on {within_teacher} of '
              f'{done} datasets; below the student alone by more than the '
              f"alone runs' standard deviation on {below_alone}. The runs "
              f'are the suite\'s ("The method suite" above, same machine).']
    return '\n'.join(lines)


def main() -> None:
    body = report()
    print(body)
    update_doc('auto', body)


if __name__ == '__main__':
    main()
