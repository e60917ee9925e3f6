"""``distill --method auto``: try a few methods, keep the best on validation.

No single method is safe to default to (docs/BENCHMARKS.md, "The method
suite"): the best one differs per dataset, and each loses to the student
trained alone somewhere. ``auto`` trains a small, fixed set of candidates,
cheapest first, within a time budget, and keeps the student with the best
validation accuracy. Each candidate uses its method's default weights
(``gnncompress distill --list-methods``). The student trained alone is a
candidate too, so on validation ``auto`` never picks a method that does
worse than no distillation.

The choice reads the validation split only: candidates are trained with
the test split unscored, and the chosen student alone is scored on it
afterwards (a test permutes the test labels and checks the choice does not
change). The report lists every candidate with its validation accuracy
and time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from gnncompress.core.errors import GnnCompressError, TrainingError
from gnncompress.models import build_model
from gnncompress.training.train import fit
from gnncompress.workflows.runs import seed_everything
from gnncompress.workflows.students import build_method

# Cheapest first (time per epoch against the student alone, docs/
# BENCHMARKS.md): kd and at cost about as much as training alone, gsp and
# fitnet up to 3x. g-crd (up to 8x), lsp (below the student alone at its
# default weight on every dataset of the suite), abkd (deep students) and
# glnn (an MLP student) are left out. 'alone' is the student with labels
# only.
CANDIDATES = ('kd', 'at', 'alone', 'gsp', 'fitnet')
ALONE = 'alone'
# With no --budget-s: about this many times the first candidate's time.
BUDGET_FACTOR = 10


@dataclass
class Tried:
    """One candidate: its validation accuracy (None if not trained), its
    training time and epochs, and what happened."""
    method: str
    val_accuracy: float | None
    seconds: float
    epochs_run: int
    # 'trained', 'chosen', 'skipped: budget', 'failed: <why>' (a candidate
    # whose loss diverged; the others go on)
    status: str


@dataclass
class Choice:
    """The chosen candidate, its trained student and fit result, and every
    candidate as tried."""
    method: str
    model: nn.Module
    result: Any
    tried: list[Tried]
    budget_s: float

    def summary(self) -> dict[str, Any]:
        """What report.json records under ``auto``."""
        return {'chosen': self.method, 'budget_s': round(self.budget_s, 1),
                'candidates': [asdict(t) for t in self.tried]}

    def note(self) -> str:
        """One line for the report's notes."""
        scores = ', '.join(
            f'{t.method} {100 * t.val_accuracy:.1f}' if t.val_accuracy
            is not None else f'{t.method} ({t.status})' for t in self.tried)
        return (f'--method auto chose {self.method} on validation accuracy '
                f'(%): {scores}')


def choose(train: Callable[[str], tuple[nn.Module, Any]],
           candidates: Sequence[str] = CANDIDATES,
           budget_s: float | None = None,
           clock: Callable[[], float] = time.perf_counter) -> Choice:
    """Train each candidate with ``train(name) -> (model, fit_result)``
    (its ``val_accuracy`` and ``epochs_run`` are read; the test split is
    not looked at) and keep the best on validation; ties go to the earlier,
    cheaper one. A candidate starts only if the time spent so far plus the
    mean time of a candidate fits in ``budget_s`` (default
    ``BUDGET_FACTOR`` times the first candidate's); the first always runs.
    A candidate whose training fails (:class:`TrainingError`: its loss
    diverged) is marked so and the others go on; if all that ran failed,
    the last failure is raised.
    """
    tried: list[Tried] = []
    best: tuple[float, str, nn.Module, Any] | None = None
    failure: TrainingError | None = None
    spent = 0.0
    budget = budget_s
    for name in candidates:
        if tried and budget is not None and \
                spent + spent / len(tried) > budget:
            tried.append(Tried(name, None, 0.0, 0, 'skipped: budget'))
            continue
        start = clock()
        try:
            model, result = train(name)
        except TrainingError as e:  # a diverging candidate drops out
            seconds = clock() - start
            spent += seconds
            failure = e
            if budget is None:
                budget = BUDGET_FACTOR * seconds
            tried.append(Tried(name, None, seconds, 0,
                               f'failed: {str(e).split(":")[0]}'))
            continue
        seconds = clock() - start
        spent += seconds
        if budget is None:
            budget = BUDGET_FACTOR * seconds
        tried.append(Tried(name, float(result.val_accuracy), seconds,
                           int(result.epochs_run), 'trained'))
        if best is None or result.val_accuracy > best[0]:
            best = (result.val_accuracy, name, model, result)
    if best is None:  # every candidate that ran diverged
        assert failure is not None
        raise failure
    for t in tried:
        if t.method == best[1]:
            t.status = 'chosen'
    return Choice(best[1], best[2], best[3], tried, float(budget or 0.0))


def refuse_for_auto(*, budget_s: float | None, **given: Any) -> None:
    """What ``--method auto`` does not take, refused before anything runs:
    sampled subgraphs and resume (not yet), and one method's options."""
    flags = {'batch_size': '--batch-size', 'fanout': '--fanout',
             'checkpoint_every': '--checkpoint-every',
             'checkpoint_dir': '--checkpoint-dir', 'resume': '--resume'}
    for key, flag in flags.items():
        if given.get(key) is not None:
            raise GnnCompressError(
                f'--method auto trains full-graph without checkpoints for '
                f'now: drop {flag}, or pick a method, e.g. --method kd')
    for key, flag in (('method_options', '-o'), ('weight', '--weight'),
                      ('label_weight', '--label-weight')):
        value = given.get(key)
        if value or (key != 'method_options' and value is not None):
            raise GnnCompressError(
                f'{flag} sets one method, and --method auto tries several '
                f'with their defaults: drop {flag}, or pick that method')
    if budget_s is not None and not budget_s > 0:
        raise GnnCompressError(f'--budget-s must be a positive number of '
                               f'seconds (got {budget_s})')


def train_candidate(name: str, spec: Any, graph: Any, teacher_out: Any,
                    seed: int, dev: Any,
                    train_args: dict[str, Any]) -> tuple[nn.Module, Any]:
    """One candidate's student, trained from the run's seed with the
    method's default weights (``'alone'``: labels only), the test split
    unscored."""
    seed_everything(seed)
    model = build_model(spec).to(dev)
    if name == ALONE:
        result = fit(model, graph, label_weight=1.0, desc='auto: alone',
                     score_test=False, **train_args)
    else:
        method = build_method(name, None)
        result = fit(model, graph, method=method, teacher_outputs=[teacher_out],
                     label_weight=method.default_label_weight,
                     desc=f'auto: {name}', score_test=False, **train_args)
    return model, result


# distill with no --method: auto where it can run, else kd (the default
# before auto), and why, for the report's notes.
FALLBACK = 'kd'


def default_method(given: dict[str, Any], *, torchrun: bool = False,
                   point_cloud: bool = False) -> tuple[str, str | None]:
    """``distill``'s method when none is named: ``('auto', None)``, or
    ``('kd', why)`` where auto cannot run (several processes, sampled
    subgraphs, training checkpoints, point clouds) or where one method's
    options are given (-o, --weight, --label-weight: they were kd's when
    kd was the default). ``given``: the run's settings by flat name."""
    why = None
    if given.get('nproc') is not None or torchrun:
        why = 'trains in one process'
    elif given.get('batch_size') is not None or \
            given.get('fanout') is not None:
        why = 'trains full-graph (no --batch-size or --fanout)'
    elif given.get('checkpoint_every') is not None or \
            given.get('resume') is not None or \
            given.get('checkpoint_dir') is not None:
        why = 'keeps no training checkpoints (no --checkpoint-every, ' \
              '--checkpoint-dir or --resume)'
    elif point_cloud:
        why = 'does not train point clouds yet'
    elif given.get('method_options') or given.get('weight') is not None \
            or given.get('label_weight') is not None:
        why = 'tries several methods at their defaults, and -o, --weight ' \
              'and --label-weight set one'
    if why is None:
        return 'auto', None
    return FALLBACK, (f"distill's default method, auto, {why}: this run "
                      f'used {FALLBACK}; name one with --method')
