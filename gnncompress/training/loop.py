"""The one training loop: a student, optionally a distillation method and
its teachers, and a regime that says what an epoch is.

:func:`fit` owns what every run shares: preparing the method on a probe,
Adam over the student and the method, an optional learning-rate schedule,
validation-based selection with patience, the progress bar and history,
the finiteness guard (a NaN stops the run with the best student put back),
training checkpoints (save every K epochs, resume), restoring the best
student and testing it, and data parallelism in a process group
(:mod:`gnncompress.training.ranks`: rank 0's weights to start, gradients
averaged after every backward pass, rank 0's validation score; progress,
checkpoints and the test split on rank 0 alone; each rank's random state
in the checkpoint). What differs between runs
is a :class:`Regime`.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gnncompress.core.errors import GnnCompressError, TrainingError
from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput
from gnncompress.training import ranks as process_ranks
from gnncompress.training.selection import Selection, check_ties

SCHEDULES = ('cosine',)


@dataclass
class FitResult:
    """The outcome of one training run (the student holds the best
    weights)."""
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class Regime(Protocol):
    """What varies between training runs. A *step* is whatever
    :meth:`steps` yields: the whole graph, a batch of graphs, a batch of
    clouds."""

    device: torch.device

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        """The teachers' outputs, the (eval-mode) student's output and the
        Graph a method is prepared on (called without gradients)."""

    def steps(self, epoch: int) -> Iterable[Any]:
        """The steps of one epoch, in order."""

    def forward(self, student: nn.Module, step: Any) -> ModelOutput:
        """The student's output on one step."""

    def label_loss(self, out: ModelOutput, step: Any) -> tuple[str, Tensor]:
        """The supervised loss of one step and its name in messages."""

    def teachers(self, step: Any) -> Sequence[ModelOutput]:
        """The teachers' outputs cut (or computed) for one step."""

    def method_graph(self, step: Any) -> Graph:
        """The Graph the method sees for one step."""

    def validate(self, student: nn.Module) -> float:
        """The eval-mode student's validation score (NaN: no candidate)."""

    def test(self, student: nn.Module) -> float:
        """The eval-mode student's test score."""

    def state_dict(self) -> dict[str, Any]:
        """The regime's own random state (for training checkpoints)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional, for a method that sets ``reruns_student`` (adversarial
    # features): ``student_inputs(student, step)`` gives the step's
    # :class:`~gnncompress.methods.StudentInputs` (the student's input
    # features and a rerun of its forward on others). The regimes of one
    # node-classification graph have it; :func:`fit` refuses such a method
    # under the others.


@dataclass
class StepLoss:
    """One loss of a step, backpropagated as soon as it is computed (so one
    forward's graph is alive at a time), and its unweighted terms for the
    history; ``who`` names its part in the message when it is not finite
    (``' (width 0.5)'``, ``' of student 2'``)."""
    loss: Tensor
    terms: dict[str, Tensor]
    who: str = ''


# The losses of one step: what a run optimises. The loop calls it with the
# student (in train mode) and one step of the regime, backpropagates each
# loss it yields and then takes one optimiser step.
Objective = Callable[[nn.Module, Any], Iterable[StepLoss]]


def distill_objective(regime: Regime, method: DistillMethod | None,
                      label_weight: float, weight: float | None
                      ) -> Objective:
    """The default objective: ``label_weight * label loss + weight *
    method.loss`` on one forward of the student."""
    def losses(student: nn.Module, step: Any) -> Iterator[StepLoss]:
        out = regime.forward(student, step)
        name, label = regime.label_loss(out, step)
        terms = {name: label}
        loss = label_weight * label
        if method is not None:
            if method.reruns_student:
                method.see_inputs(regime.student_inputs(student, step))
            terms[method.name] = method.loss(
                regime.teachers(step), out, regime.method_graph(step))
            loss = loss + weight * terms[method.name]
        yield StepLoss(loss, terms)
    return losses


def check_reruns(method: DistillMethod, regime: Regime) -> None:
    """A method that reruns the student on perturbed features needs a
    regime that can (``student_inputs``); a one-line error otherwise."""
    if not method.reruns_student or hasattr(regime, 'student_inputs'):
        return
    parts = getattr(method, 'parts', [method])
    names = ', '.join(p.name for p in parts if p.reruns_student)
    raise GnnCompressError(
        f'{names} perturbs the node features of one graph: it trains on a '
        f'node-classification graph, full-graph or with --batch-size, not '
        f'on this dataset: drop {names} from --method')


def progress_bar(epochs: int, desc: str, progress: bool) -> tqdm:
    """Epochs ``1..epochs`` behind a bar on a terminal; nothing in logs and
    pipes (``disable=None``)."""
    return tqdm(range(1, epochs + 1), desc=desc,
                disable=None if progress else True,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def check_finite(loss: Tensor, terms: dict[str, Tensor], epoch: int,
                 who: str = '') -> None:
    """Stop the run with a message naming the epoch and every loss term
    when ``loss`` is NaN or infinite."""
    if torch.isfinite(loss):
        return
    shown = ', '.join(f'{k}={float(v.detach()):.4g}' for k, v in terms.items())
    raise TrainingError(
        f'The loss{who} became {float(loss.detach())} at epoch {epoch} '
        f'({shown}): lower --lr or the method weight')


def guard_finite(loss: Tensor, terms: dict[str, Tensor], epoch: int,
                 bar: tqdm, selection: Selection, who: str = '') -> None:
    """:func:`check_finite`, and on failure close the bar and put the
    student back at its best epoch (the error carries ``best_epoch`` and
    ``val_accuracy``)."""
    try:
        check_finite(loss, terms, epoch, who)
    except TrainingError as e:
        bar.close()
        selection.restore()  # keep the last good student
        e.best_epoch = selection.best_epoch
        e.val_accuracy = selection.best_score
        raise


def adam(student: nn.Module, method: DistillMethod | None, lr: float,
         weight_decay: float) -> torch.optim.Adam:
    """Adam over the student and the method's own trainable parts (FitNet's
    map, G-CRD's heads, ABKD's projections), which are never exported."""
    params = list(student.parameters()) + \
        (list(method.parameters()) if method is not None else [])
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train_mode(student: nn.Module, method: DistillMethod | None) -> None:
    student.train()
    if method is not None:
        method.train()


class TermMeans:
    """Each loss term's mean over the steps of one epoch that yield it, as
    the history records them (``loss_ce``, ``loss_kd``, ...: unweighted; a
    term a step yields several times counts their sum; a term of one peer,
    ``ce/2``, is averaged over that peer's steps)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.step_names: set[str] = set()
        self.steps = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.step_names.update(terms)

    def end_step(self) -> None:
        self.steps += 1
        for name in self.step_names:
            self.counts[name] = self.counts.get(name, 0) + 1
        self.step_names.clear()

    def entries(self) -> dict[str, float]:
        return {f'loss_{name}': total / max(1, self.counts.get(name, 0))
                for name, total in self.sums.items()}


def record_epoch(selection: Selection, bar: tqdm,
                 history: list[dict[str, float]], epoch: int, loss: float,
                 val: float, terms: TermMeans | None = None) -> bool:
    """Log one epoch's loss (and its terms' means) and validation score,
    update the selection and the bar; whether to stop early."""
    history.append({'epoch': epoch, 'loss': loss, 'val': val,
                    **(terms.entries() if terms is not None else {})})
    selection.update(epoch, val)
    bar.set_postfix(loss=f'{loss:.4f}', val=shown(val),
                    best=shown(selection.best_score))
    return selection.should_stop(epoch)


def shown(score: float | list[float]) -> str:
    """A score for the bar, or one per peer
    (:class:`~gnncompress.training.selection.PeerSelection`)."""
    if isinstance(score, list):
        return ' '.join(f'{s:.3f}' for s in score)
    return f'{score:.3f}'


def selected_result(selection: Selection, test_score: float, epochs_run: int,
                    seconds: float,
                    history: list[dict[str, float]]) -> FitResult:
    """The FitResult of a loop whose student is back at its best epoch."""
    return FitResult(best_epoch=selection.best_epoch,
                     val_accuracy=selection.best_score
                     if selection.best_epoch else float('nan'),
                     test_accuracy=test_score, epochs_run=epochs_run,
                     seconds=seconds, history=history)


def lr_schedule(optimizer: torch.optim.Optimizer, schedule: str | None,
                epochs: int, lr: float) -> Any:
    """``'cosine'``: cosine annealing over ``epochs`` down to ``lr / 100``
    (the DGCNN authors' schedule); ``None``: a constant rate."""
    if schedule is None:
        return None
    if schedule != 'cosine':
        raise ValueError(f'unknown schedule {schedule!r} (choose from '
                         f"{', '.join(SCHEDULES)})")
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, epochs, eta_min=lr / 100)


def fit(student: nn.Module, regime: Regime, *,
        method: DistillMethod | None = None, epochs: int = 200,
        lr: float = 0.01, weight_decay: float = 5e-4,
        label_weight: float = 1.0, weight: float | None = None,
        patience: int | None = 100, progress: bool = True,
        desc: str = 'train', checkpoint: Any = None,
        schedule: str | None = None,
        objective: Objective | None = None,
        score_test: bool = True, ties: str = 'first') -> FitResult:
    """Train ``student`` under ``regime`` and leave it at its best
    validation epoch.

    The loss of a step is ``label_weight * label loss + weight *
    method.loss``; ``weight`` defaults to the method's own
    ``default_weight``. An ``objective`` replaces that loss (amalgamation
    over widths and tasks, peers that learn from each other): the loop
    then leaves ``method`` unprepared and only trains its parameters with
    the student's. ``checkpoint`` (a
    :class:`gnncompress.training.resume.TrainingCheckpoint`) saves the run
    every few
    epochs and, when it was read from disk, continues the run it holds.
    When the loss stops being finite, the student is put back at its best
    epoch before the :class:`TrainingError` (which carries ``best_epoch``
    and ``val_accuracy``) is raised. ``score_test=False`` leaves the test
    split unread (``test_accuracy`` is NaN), for choices made on
    validation alone. ``ties`` picks among epochs of equal best validation
    score (:class:`~gnncompress.training.selection.Selection`).
    """
    check_ties(ties)  # before the teacher is probed
    if objective is None:
        if method is not None:
            check_reruns(method, regime)
            with torch.no_grad():
                teachers, probe, graph = regime.probe(student.eval())
            method.prepare(teachers, probe, graph)
            method = method.to(regime.device)
            weight = method.default_weight if weight is None else weight
        objective = distill_objective(regime, method, label_weight, weight)
    optimizer = adam(student, method, lr, weight_decay)
    scheduler = lr_schedule(optimizer, schedule, epochs, lr)
    ranks = process_ranks.current()  # no-ops in one process
    ranks.start((student, method))
    progress = progress and ranks.rank == 0

    # A regime of several peers asks for one selection per peer
    # (PeerSelection: its scores and best values are lists).
    selection = getattr(regime, 'selection', Selection)(student, patience,
                                                        ties)
    history: list[dict[str, float]] = []
    done, before = 0, 0.0  # epochs and seconds of an interrupted run
    if checkpoint is not None:
        done, history, before = checkpoint.restore(student, method,
                                                   optimizer, selection)
        extra = checkpoint.extra()
        if extra:
            regime.load_state_dict(ranks.resumed(extra))
            if scheduler is not None:
                scheduler.load_state_dict(extra['schedule'])
    start = time.perf_counter()
    bar = progress_bar(epochs, desc, progress)
    epoch = done
    for epoch in bar:
        if epoch <= done:
            continue
        train_mode(student, method)
        total, steps, means = 0.0, 0, TermMeans()
        for step in regime.steps(epoch):
            optimizer.zero_grad(set_to_none=True)
            ranks.before_step((student, method))
            for part in objective(student, step):
                guard_finite(ranks.total(part.loss), part.terms, epoch, bar,
                             selection, part.who)
                part.loss.backward()
                total += float(part.loss.detach())
                means.add(part.terms)
            ranks.average_gradients(optimizer)
            optimizer.step()
            steps += 1
            means.end_step()
        if scheduler is not None:
            scheduler.step()
        student.eval()
        val = ranks.score(lambda: regime.validate(student))
        if record_epoch(selection, bar, history, epoch,
                        ranks.mean_loss(total, steps), val, means):
            break
        if checkpoint is not None:
            extra = {'regime': regime.state_dict(),
                     'schedule': {} if scheduler is None
                     else scheduler.state_dict()}
            if checkpoint.due(epoch):  # every rank's random state
                extra.update(ranks.gathered(extra['regime']))
            if ranks.rank == 0:
                checkpoint.after_epoch(
                    epoch, student, method, optimizer, selection, history,
                    before + time.perf_counter() - start, extra=extra)
    bar.close()
    seconds = before + time.perf_counter() - start
    selection.restore()
    ranks.check_in_sync(student)
    student.eval()
    test = regime.test(student) if ranks.rank == 0 and score_test \
        else float('nan')
    return selected_result(selection, test, epoch, seconds, history)
