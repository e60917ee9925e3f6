"""The regimes of amalgamation in the one training loop
(:class:`Amalgamation`): :class:`WholeGraphs` (one full-graph step per
epoch), :class:`GraphBatches` (batches of whole training graphs of
several-graph datasets, single- or multi-label) and
:class:`gnncompress.workflows.amalgamate.sampled.SampledGraphs` (sampled
subgraphs); all share :func:`group_loss`, model selection by agreement
with the teachers (:func:`mean_agreement`) and :func:`train_student`."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from gnncompress.core.graph import Graph
from gnncompress.core.metrics import micro_f1
from gnncompress.methods.tam import TAM, TeacherTask
from gnncompress.models.slimmable import SlimmableGNN
from gnncompress.training import ranks as process_ranks
from gnncompress.training.loop import FitResult, fit
from gnncompress.training.objectives.amalgamation import (
    GroupLoss,
    amalgamation_objective,
)
from gnncompress.training.regimes.graph_batches import cut, graphs_per_batch
from gnncompress.training.regimes.sampled import batch_view
from gnncompress.training.sampling import Batch
from gnncompress.workflows.amalgamate.tasks import Task


def _groups(tasks: Sequence[Task]) -> list[list[int]]:
    """Task indices that share one student forward (same graph, same
    head)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault((id(task.graph), task.head), []).append(i)
    return list(groups.values())


class Passes:
    """Shuffled passes over ``count`` items, one after the other, cut into
    chunks of ``size`` positions (the last chunk of a pass may be
    shorter); ``generator`` draws each pass's order. Its state (the
    generator, the pass under way, the position in it) goes into training
    checkpoints, so a resumed run draws the very chunks an uninterrupted
    one would."""

    def __init__(self, count: int, size: int,
                 generator: torch.Generator) -> None:
        self.count, self.size, self.generator = count, size, generator
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def next(self) -> Tensor:
        if self.position >= self.order.numel():
            self.order = torch.randperm(self.count, generator=self.generator)
            self.position = 0
        chunk = self.order[self.position:self.position + self.size]
        self.position += self.size
        return chunk

    def state_dict(self) -> dict[str, Any]:
        return {'generator': self.generator.get_state(),
                'order': self.order.clone(), 'position': self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state['generator'])
        self.order, self.position = state['order'], int(state['position'])


class Amalgamation:
    """What the regimes of amalgamation share (:func:`train_student` runs
    them in :func:`gnncompress.training.loop.fit`): each step is a
    :data:`~gnncompress.training.objectives.amalgamation.GroupLoss`;
    model selection is by agreement with the teachers
    (:func:`mean_agreement`, no label read); there is no test score during
    training (the report scores every task and width); the random state is
    that of each graph's :class:`Passes`. Subclasses give :meth:`steps`,
    :meth:`logits` and :meth:`measured_on`."""

    tasks: Sequence[Task]
    teacher_tasks: Sequence[TeacherTask]
    device: torch.device
    passes: list[Passes] = []

    def steps(self, epoch: int) -> Iterator[GroupLoss]:
        """One epoch's optimiser steps."""
        raise NotImplementedError

    def logits(self, student: SlimmableGNN, graph: Graph, head: int,
               width: float) -> Tensor:
        """The student's logits on every node of ``graph``."""
        raise NotImplementedError

    def measured_on(self, graph: Graph) -> tuple[Tensor, Tensor]:
        """Features and edges that latency and the ONNX check run on."""
        raise NotImplementedError

    def validate(self, student: SlimmableGNN) -> float:
        return mean_agreement(student, self.tasks, self.teacher_tasks,
                              self.logits)

    def test(self, student: SlimmableGNN) -> float:
        return float('nan')

    def state_dict(self) -> dict[str, Any]:
        return {'passes': [p.state_dict() for p in self.passes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p, saved in zip(self.passes, state['passes'], strict=True):
            p.load_state_dict(saved)


class WholeGraphs(Amalgamation):
    """Full-graph training (:class:`Amalgamation`): one optimiser step per
    epoch, on every task's whole graph; the student's logits, latency and
    the ONNX check on the whole graph too. Mini-batch training uses
    :class:`gnncompress.workflows.amalgamate.sampled.SampledGraphs` instead."""

    def __init__(self, tasks: Sequence[Task],
                 teacher_tasks: Sequence[TeacherTask], tam: TAM) -> None:
        self.tasks, self.teacher_tasks, self.tam = tasks, teacher_tasks, tam
        self.device = tasks[0].graph.x.device

    def steps(self, epoch: int) -> Iterator[GroupLoss]:
        yield self._loss

    def _loss(self, student: SlimmableGNN, width: float,
              group: list[int]) -> tuple[Tensor, dict[str, Tensor]]:
        graph, head = self.tasks[group[0]].graph, self.tasks[group[0]].head
        return group_loss(student, graph.x, graph.edge_index, head, width,
                          [self.tasks[i] for i in group],
                          [self.teacher_tasks[i] for i in group], group,
                          self.tam)

    def logits(self, student: SlimmableGNN, graph: Graph, head: int,
               width: float) -> Tensor:
        return whole_graph_logits(student, graph, head, width)

    def measured_on(self, graph: Graph) -> tuple[Tensor, Tensor]:
        return graph.x, graph.edge_index


class GraphBatches(Amalgamation):
    """Training over batches of whole training graphs, for several-graph
    datasets (:class:`Amalgamation`; the batches of
    :func:`gnncompress.tasks.inductive.fit_inductive`). Each graph's shuffled
    training graphs come in batches of enough graphs for
    ``STEPS_PER_EPOCH`` steps (2 on PPI); one optimiser step takes one
    batch of every dataset, an epoch as many steps as the dataset with the
    most batches has, and a dataset with fewer starts a new shuffled pass
    when its batches run out (``batch_size``: that many graphs per step in
    every dataset instead; in a process group every rank draws the same
    batches and trains on its share of each). Validation and test graphs
    are never trained on. The teachers' outputs, predictions and maps cover
    every graph, computed once on the union (message passing never crosses
    graphs, and a node's map is normalised over its own in-edges, so a
    graph's rows and edges are what the teacher gives that graph alone);
    each batch slices them
    (:meth:`gnncompress.training.regimes.graph_batches.GraphPart.slice`). The
    student's logits run on the whole union; latency and the ONNX check on
    the test graphs (the validation graphs when there is none)."""

    def __init__(self, tasks: Sequence[Task],
                 teacher_tasks: Sequence[TeacherTask], tam: TAM, *,
                 batch_size: int | None = None, seed: int = 0) -> None:
        self.tasks, self.teacher_tasks, self.tam = tasks, teacher_tasks, tam
        self.device = tasks[0].graph.x.device
        self.ranks = process_ranks.current()
        self.graphs: list[Graph] = []
        for task in tasks:
            if all(task.graph is not g for g in self.graphs):
                self.graphs.append(task.graph)
        self._train = {id(g): g.node_graph[g.train_mask].unique()
                       for g in self.graphs}
        self.graphs_per_step = {
            id(g): graphs_per_batch(ids, batch_size)
            for g, ids in zip(self.graphs, self._train.values())}
        self.steps_per_epoch = max(
            math.ceil(self._train[id(g)].numel() /
                      self.graphs_per_step[id(g)]) for g in self.graphs)
        # Shuffled passes over each graph's training graphs.
        self.passes = [Passes(self._train[id(g)].numel(),
                              self.graphs_per_step[id(g)],
                              torch.Generator().manual_seed(seed + i))
                       for i, g in enumerate(self.graphs)]
        self._probes: dict[int, tuple[Tensor, Tensor]] = {}

    def steps(self, epoch: int) -> Iterator[GroupLoss]:
        """Each optimiser step of one epoch: one batch of every dataset."""
        for _ in range(self.steps_per_epoch):
            parts = {}
            for g, passes in zip(self.graphs, self.passes):
                ids = self._train[id(g)]
                chunk = self.ranks.split(passes.next())
                parts[id(g)] = cut(g, ids[chunk.to(ids.device)])
            views = []
            for task, tt in zip(self.tasks, self.teacher_tasks):
                part = parts[id(task.graph)]
                edges = part.node_mask[task.graph.edge_index[0]]
                views.append(TeacherTask(
                    part.slice(tt.output), tt.target[part.node_mask],
                    tt.attribution[edges] if tt.attribution is not None
                    else None))
            yield functools.partial(self._loss, parts, views)

    def _loss(self, parts: dict[int, Any], views: list[TeacherTask],
              student: SlimmableGNN, width: float,
              group: list[int]) -> tuple[Tensor, dict[str, Tensor]]:
        task = self.tasks[group[0]]
        g = parts[id(task.graph)].graph
        return group_loss(student, g.x, g.edge_index, task.head, width,
                          [self.tasks[i] for i in group],
                          [views[i] for i in group], group, self.tam)

    def logits(self, student: SlimmableGNN, graph: Graph, head: int,
               width: float) -> Tensor:
        return whole_graph_logits(student, graph, head, width)

    def measured_on(self, graph: Graph) -> tuple[Tensor, Tensor]:
        if id(graph) not in self._probes:
            mask = graph.test_mask if bool(graph.test_mask.any()) \
                else graph.val_mask
            part = cut(graph, graph.node_graph[mask].unique()).graph
            self._probes[id(graph)] = (part.x, part.edge_index)
        return self._probes[id(graph)]

    def describe(self) -> dict[str, Any]:
        """The report's additions to its ``training`` entry."""
        measured = {}
        for g in self.graphs:
            x, edge_index = self.measured_on(g)
            measured[g.name] = {'nodes': x.size(0),
                                'edges': int(edge_index.size(1))}
        return {'graphs_per_step': {g.name: self.graphs_per_step[id(g)]
                                    for g in self.graphs},
                'training_graphs': {g.name: self._train[id(g)].numel()
                                    for g in self.graphs},
                'steps_per_epoch': self.steps_per_epoch,
                'measured_on': measured}


def train_student(student: SlimmableGNN, tasks: Sequence[Task],
                  teacher_tasks: Sequence[TeacherTask], tam: TAM, *,
                  epochs: int = 200, lr: float = 0.01,
                  weight_decay: float = 4e-6, patience: int | None = 100,
                  progress: bool = True, desc: str = 'amalgamate',
                  graphs: Amalgamation | None = None,
                  checkpoint: Any = None) -> FitResult:
    """Train every width of ``student`` on every task each epoch, in the
    one loop (:func:`gnncompress.training.loop.fit`, whose
    ``val_accuracy`` is here the best agreement with the teachers); the
    loss sees the teachers' outputs and maps only. Model selection keeps
    the epoch with the highest agreement with the teachers' predictions.

    ``graphs`` (default :class:`WholeGraphs`) is the regime that gives
    each epoch's optimiser steps. Every step sums the loss of every width
    on every group of tasks of its graphs (one backward per forward,
    gradients accumulated) and then takes one Adam step
    (:func:`~gnncompress.training.objectives.amalgamation.amalgamation_objective`):
    full-graph, one step per epoch on all graphs; mini-batch, one batch of
    every graph per step. History keeps the mean per step of that sum and
    of each term (``loss_<task>/<term>``), and the agreement as ``val``.
    ``checkpoint`` (a :class:`gnncompress.training.resume.TrainingCheckpoint`)
    saves and resumes the run."""
    graphs = graphs if graphs is not None else \
        WholeGraphs(tasks, teacher_tasks, tam)
    return fit(student, graphs, epochs=epochs, lr=lr,
               weight_decay=weight_decay, patience=patience,
               progress=progress, desc=desc, checkpoint=checkpoint,
               objective=amalgamation_objective(student.spec.widths,
                                                _groups(tasks)))


def group_loss(student: SlimmableGNN, x: Tensor, edge_index: Tensor,
               head: int, width: float, tasks: list[Task],
               teacher_tasks: list[TeacherTask], keys: list[int], tam: TAM,
               batch: Batch | None = None,
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """One student forward at ``width`` with output ``head`` on the graph
    ``(x, edge_index)``, and the summed loss of the ``tasks`` that head
    serves. On a sampled subgraph (``batch``) the logits of its seeds are
    scored (:func:`gnncompress.training.regimes.sampled.batch_view`) and
    the teacher tasks hold the seeds' rows."""
    edge_weight = student.unit_edge_weights(x, edge_index, head, width) \
        if tam.uses_maps else None
    out = student.forward_output(x, edge_index, head, width,
                                 edge_mask=edge_weight)
    if batch is not None:
        out = batch_view(out, batch, rows=False)
    loss = out.logits.new_zeros(())
    terms: dict[str, Tensor] = {}
    for task, teacher_task, key in zip(tasks, teacher_tasks, keys):
        parts = tam.loss(out, teacher_task, edge_index, edge_weight,
                         columns=task.columns, key=key)
        loss = loss + tam.total(parts)
        for k, v in parts.items():
            terms[f'{task.name}/{k}'] = v
    return loss, terms


# The student's logits on a whole graph for (head, width), in eval mode.
Logits = Callable[[SlimmableGNN, Graph, int, float], Tensor]


def whole_graph_logits(student: SlimmableGNN, graph: Graph, head: int,
                       width: float) -> Tensor:
    return student(graph.x, graph.edge_index, head, width)


def agreement(logits: Tensor, target: Tensor,
              mask: Tensor | None = None) -> float:
    """How far the student's ``logits`` agree with a teacher's predictions
    ``target`` on the rows of ``mask`` (default: all): the fraction whose
    class is the teacher's, or for multi-label targets (0/1 matrix) the
    micro-F1 of ``logits > 0`` against the labels the teacher predicts."""
    if mask is None:
        mask = torch.ones(logits.size(0), dtype=torch.bool,
                          device=logits.device)
    if target.dim() == 2:
        return micro_f1(logits, target, mask)
    return float((logits[mask].argmax(-1) == target[mask]).float().mean())


def selection_nodes(graph: Graph) -> Tensor | None:
    """The nodes model selection compares with the teachers: every node of
    one graph; the validation graphs of a several-graph dataset, which
    training never sees."""
    return graph.val_mask if graph.node_graph is not None else None


def report_nodes(graph: Graph) -> Tensor | None:
    """The nodes the report's agreement covers: every node of one graph;
    the test graphs of a several-graph dataset."""
    return graph.test_mask if graph.node_graph is not None else None


@torch.no_grad()
def mean_agreement(student: SlimmableGNN, tasks: Sequence[Task],
                   teacher_tasks: Sequence[TeacherTask],
                   logits_of: Logits | None = None) -> float:
    """:func:`agreement` of the student (eval mode) with each teacher on
    :func:`selection_nodes`, averaged over tasks and widths. ``logits_of``
    runs the student on a whole graph (default: one full forward;
    mini-batch training: layer-wise), once per graph, head and width."""
    logits_of = logits_of or whole_graph_logits
    student.eval()
    scores = []
    for width in student.spec.widths:
        seen: dict[tuple[int, int], Tensor] = {}
        for task, teacher_task in zip(tasks, teacher_tasks):
            key = (id(task.graph), task.head)
            if key not in seen:
                seen[key] = logits_of(student, task.graph, task.head, width)
            logits = seen[key][:, task.columns]
            scores.append(agreement(logits, teacher_task.target,
                                    selection_nodes(task.graph)))
    return sum(scores) / len(scores)
