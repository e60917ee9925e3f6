"""Training one student on a loaded dataset: picks the regime that fits the
dataset (one graph, batches of graphs, several graphs) and runs the one
loop, :func:`gnncompress.training.loop.fit`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput, run_model
from gnncompress.training import loop
from gnncompress.training.loop import FitResult
from gnncompress.training.regimes.full_graph import FullGraph
from gnncompress.training.regimes.graph_batches import GraphBatches, GraphParts


@torch.no_grad()
def forward_frozen(model: nn.Module, graph: Graph) -> ModelOutput:
    """A frozen model's output on the whole graph, computed once."""
    model.eval()
    return run_model(model, graph.x, graph.edge_index,
                     graph.batch).detach()


def fit(student: nn.Module, graph: Graph, *,
        method: DistillMethod | None = None,
        teacher_outputs: Sequence[ModelOutput] = (),
        epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
        label_weight: float = 1.0, weight: float | None = None,
        patience: int | None = 100, progress: bool = True,
        desc: str = 'train', checkpoint: Any = None,
        score_test: bool = True, batch_size: int | None = None,
        ties: str = 'first') -> FitResult:
    """Train ``student`` on ``graph`` and leave it at its best validation
    epoch.

    The loss is ``label_weight * CE(train nodes) + weight * method.loss``;
    ``weight`` defaults to the method's own ``default_weight``. A
    graph-classification ``graph`` (``graph.batch`` set) trains on batches
    of graphs, a several-graph node dataset (``graph.node_graph`` set) on
    batches of whole training graphs
    (:mod:`gnncompress.training.regimes.graph_batches`). ``checkpoint`` (a
    :class:`gnncompress.training.resume.TrainingCheckpoint`) saves the run
    every few
    epochs and, when it was read from disk, continues the run it holds.
    When the loss stops being finite, the student is put back at its best
    epoch before the :class:`TrainingError` (which carries ``best_epoch``
    and ``val_accuracy``) is raised. ``score_test=False`` leaves the test
    split unread. ``ties`` picks among epochs of equal best validation
    score: ``'first'`` or ``'last'``
    (:class:`~gnncompress.training.selection.Selection`).
    """
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    settings = dict(method=method, epochs=epochs, lr=lr,
                    weight_decay=weight_decay, label_weight=label_weight,
                    weight=weight, patience=patience, progress=progress,
                    desc=desc, score_test=score_test, ties=ties)
    return loop.fit(student, regime_for(graph, teacher_outputs, batch_size),
                    checkpoint=checkpoint, **settings)


def regime_for(graph: Graph, teacher_outputs: Sequence[ModelOutput] = (),
               batch_size: int | None = None) -> loop.Regime:
    """The regime that fits ``graph``: batches of ``batch_size`` whole
    training graphs (several graphs; default: enough for a few steps an
    epoch), batches of graphs (graph classification; default 32), else
    the whole graph (``batch_size`` must then be None)."""
    if graph.node_graph is not None:
        from gnncompress.tasks.inductive import supervised_loss
        return GraphParts(
            graph, teacher_outputs, label_loss=supervised_loss,
            loss_name='bce' if graph.multilabel else 'ce',
            batch_size=batch_size)
    if graph.batch is not None:
        from gnncompress.tasks.graph_level import BATCH_SIZE
        return GraphBatches(graph, teacher_outputs,
                            batch_size=batch_size or BATCH_SIZE)
    if batch_size is not None:
        raise ValueError('batch_size is for datasets of many graphs')
    return FullGraph(graph, teacher_outputs)


def test_score(student: nn.Module, graph: Graph) -> float:
    """The eval-mode student's score on ``graph``'s test split, as
    :func:`fit` reports it."""
    return regime_for(graph).test(student.eval())
