"""The training loop: one student, optionally a method and frozen teachers'
outputs, full-graph, with validation-based selection."""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gnncompress.core import Graph, accuracy
from gnncompress.errors import TrainingError
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput, run_model


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


@torch.no_grad()
def forward_frozen(model: nn.Module, graph: Graph) -> ModelOutput:
    """A frozen model's output on the whole graph, computed once."""
    model.eval()
    return run_model(model, graph.x, graph.edge_index,
                     graph.batch).detach()


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


class Selection:
    """Validation-based model selection with early stopping: remembers the
    weights of ``model`` at its best score so far."""

    def __init__(self, model: nn.Module, patience: int | None) -> None:
        self.model, self.patience = model, patience
        self.best_score, self.best_epoch = -math.inf, 0
        self._state: dict[str, Tensor] | None = None

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` of ``epoch``; whether it is a new best."""
        if not score > self.best_score:  # NaN never wins
            return False
        self.best_score, self.best_epoch = score, epoch
        self._state = {k: v.detach().clone()
                       for k, v in self.model.state_dict().items()}
        return True

    def should_stop(self, epoch: int) -> bool:
        return self.patience is not None and \
            epoch - self.best_epoch >= self.patience

    def restore(self) -> None:
        """Put the best weights back (no-op before the first update)."""
        if self._state is not None:
            self.model.load_state_dict(self._state)

    def state_dict(self) -> dict[str, Any]:
        """The selection's state as tensors and plain values (for training
        checkpoints)."""
        return {'best_score': self.best_score, 'best_epoch': self.best_epoch,
                'weights': None if self._state is None else
                {k: v.to('cpu', copy=True) for k, v in self._state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state['best_score'])
        self.best_epoch = int(state['best_epoch'])
        weights = state['weights']
        device = next(iter(self.model.state_dict().values())).device
        self._state = None if weights is None else \
            {k: v.to(device) for k, v in weights.items()}


class TermMeans:
    """Each loss term's mean over the steps of one epoch, as the history
    records them (``loss_ce``, ``loss_kd``, ...: unweighted)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.steps += 1

    def entries(self) -> dict[str, float]:
        return {f'loss_{name}': total / max(1, self.steps)
                for name, total in self.sums.items()}


def record_epoch(selection: Selection, bar: tqdm,
                 history: list[dict[str, float]], epoch: int, loss: float,
                 val: float, terms: TermMeans | None = None) -> bool:
    """Log one epoch's loss (and its terms' means) and validation score,
    update the selection and the bar; whether to stop early."""
    history.append({'epoch': epoch, 'loss': loss, 'val': val,
                    **(terms.entries() if terms is not None else {})})
    selection.update(epoch, val)
    bar.set_postfix(loss=f'{loss:.4f}', val=f'{val:.3f}',
                    best=f'{selection.best_score:.3f}')
    return selection.should_stop(epoch)


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


def guard_finite(loss: Tensor, terms: dict[str, Tensor], epoch: int,
                 bar: tqdm, selection: Selection) -> None:
    """:func:`check_finite`, and on failure close the bar and put the
    student back at its best epoch (the error carries ``best_epoch`` and
    ``val_accuracy``)."""
    try:
        check_finite(loss, terms, epoch)
    except TrainingError as e:
        bar.close()
        selection.restore()  # keep the last good student
        e.best_epoch = selection.best_epoch
        e.val_accuracy = selection.best_score
        raise


def selected_result(selection: Selection, test_score: float, epochs_run: int,
                    seconds: float,
                    history: list[dict[str, float]]) -> FitResult:
    """The FitResult of a loop whose student is back at its best epoch."""
    return FitResult(best_epoch=selection.best_epoch,
                     val_accuracy=selection.best_score
                     if selection.best_epoch else float('nan'),
                     test_accuracy=test_score, epochs_run=epochs_run,
                     seconds=seconds, history=history)


def fit(student: nn.Module, graph: Graph, *,
        method: DistillMethod | None = None,
        teacher_outputs: Sequence[ModelOutput] = (),
        epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
        label_weight: float = 1.0, weight: float | None = None,
        patience: int | None = 100, progress: bool = True,
        desc: str = 'train', checkpoint: Any = None) -> FitResult:
    """Train ``student`` on ``graph`` and leave it at its best validation
    epoch.

    The loss is ``label_weight * CE(train nodes) + weight * method.loss``;
    ``weight`` defaults to the method's own ``default_weight``. A
    graph-classification ``graph`` (``graph.batch`` set) trains on batches
    of graphs (:func:`gnncompress.graphlevel.fit_graphs`).
    ``checkpoint`` (a :class:`gnncompress.resume.TrainingCheckpoint`) saves
    the run every few epochs and, when it was read from disk, continues the
    run it holds. When the loss stops being finite, the student is put back
    at its best epoch before the :class:`TrainingError` (which carries
    ``best_epoch`` and ``val_accuracy``) is raised.
    """
    if graph.batch is not None or graph.node_graph is not None:
        from gnncompress.graphlevel import fit_graphs
        from gnncompress.inductive import fit_inductive
        graph_level = graph.batch is not None
        if checkpoint is not None:
            raise TrainingError(
                '--checkpoint-every and --resume work on node classification '
                'of one graph only so far: drop them for ' +
                ('graph classification' if graph_level else
                 'several-graph datasets'))
        loop = fit_graphs if graph_level else fit_inductive
        return loop(student, graph, method=method,
                    teacher_outputs=teacher_outputs, epochs=epochs, lr=lr,
                    weight_decay=weight_decay, label_weight=label_weight,
                    weight=weight, patience=patience, progress=progress,
                    desc=desc)
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    if method is not None:
        with torch.no_grad():
            probe = run_model(student.eval(), graph.x, graph.edge_index)
        method.prepare(teacher_outputs, probe, graph)
        method = method.to(graph.x.device)
        weight = method.default_weight if weight is None else weight
    optimizer = adam(student, method, lr, weight_decay)

    selection = Selection(student, patience)
    history: list[dict[str, float]] = []
    done, before = 0, 0.0  # epochs and seconds of an interrupted run
    if checkpoint is not None:
        done, history, before = checkpoint.restore(student, method,
                                                   optimizer, selection)
    start = time.perf_counter()
    bar = progress_bar(epochs, desc, progress)
    epoch = done
    for epoch in bar:
        if epoch <= done:
            continue
        train_mode(student, method)
        optimizer.zero_grad(set_to_none=True)
        out = run_model(student, graph.x, graph.edge_index)
        terms = {'ce': F.cross_entropy(out.logits[graph.train_mask],
                                       graph.y[graph.train_mask])}
        loss = label_weight * terms['ce']
        if method is not None:
            terms[method.name] = method.loss(teacher_outputs, out, graph)
            loss = loss + weight * terms[method.name]
        guard_finite(loss, terms, epoch, bar, selection)
        loss.backward()
        optimizer.step()

        student.eval()
        with torch.no_grad():
            logits = run_model(student, graph.x, graph.edge_index).logits
        # A student whose outputs overflow is no candidate, whatever their
        # argmax scores: it could not be exported (NaN never wins).
        val = accuracy(logits, graph.y, graph.val_mask) \
            if bool(torch.isfinite(logits).all()) else float('nan')
        loss_value = float(loss.detach())
        epoch_terms = TermMeans()
        epoch_terms.add(terms)
        history.append({'epoch': epoch, 'loss': loss_value, 'val': val,
                        **epoch_terms.entries()})
        selection.update(epoch, val)
        bar.set_postfix(loss=f'{loss_value:.4f}', val=f'{val:.3f}',
                        best=f'{selection.best_score:.3f}')
        if selection.should_stop(epoch):
            break
        if checkpoint is not None:
            checkpoint.after_epoch(epoch, student, method, optimizer,
                                   selection, history,
                                   before + time.perf_counter() - start)
    bar.close()
    seconds = before + time.perf_counter() - start
    selection.restore()
    student.eval()
    with torch.no_grad():
        logits = run_model(student, graph.x, graph.edge_index).logits
    return FitResult(best_epoch=selection.best_epoch,
                     val_accuracy=selection.best_score
                     if selection.best_epoch else float('nan'),
                     test_accuracy=accuracy(logits, graph.y, graph.test_mask),
                     epochs_run=epoch, seconds=seconds, history=history)
