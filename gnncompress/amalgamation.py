"""``gnncompress amalgamate``: several frozen teachers, each expert on its own
task, merged into one slimmable student without any ground-truth label
(TAM, METHODS.md).

Regimes of the one training loop (:class:`Amalgamation`): :class:`WholeGraphs`
(one full-graph step per epoch), :class:`GraphBatches` (batches of whole
training graphs of several-graph datasets, single- or multi-label) and
:class:`gnncompress.amalgamation_minibatch.SampledGraphs` (sampled
subgraphs); all share :func:`group_loss` and :func:`train_student`."""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import Tensor

from gnncompress import api, outputs, plots
from gnncompress.bench import measuring, onnx_latency, torch_latency
from gnncompress.checkpoint import Checkpoint, card_path, load_checkpoint
from gnncompress.core import Graph, micro_f1
from gnncompress.data import load_graph, parse_classes
from gnncompress.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
    TrainingError,
    plural,
)
from gnncompress.export import export_onnx
from gnncompress.methods.tam import TAM, TeacherTask
from gnncompress.minibatch import batch_view, check_minibatch
from gnncompress.models import count_parameters
from gnncompress.models.slimmable import (
    DEFAULT_WIDTHS,
    SlimmableGNN,
    SlimmableSpec,
    TaskSlice,
    save_slimmable,
)
from gnncompress.options import check_out
from gnncompress.report import (
    Gate,
    ModelEntry,
    latency_cell,
    latency_labels,
)
from gnncompress.sampling import Batch
from gnncompress.training.loop import FitResult, fit
from gnncompress.training.objectives.amalgamation import (
    GroupLoss,
    amalgamation_objective,
)
from gnncompress.training.regimes.graph_batches import STEPS_PER_EPOCH, cut

SELECTION = ('agreement with the teachers\' predicted classes on all nodes, '
             'averaged over tasks and widths (no label is read)')
SELECTION_GRAPHS = ('agreement with the teachers\' predictions on the '
                    'validation graphs\' nodes (micro-F1 against their '
                    'predicted labels for multi-label tasks), averaged over '
                    'tasks and widths (no label is read)')


@dataclass
class Task:
    """One teacher's task: its graph, its classes (``None``: all of the
    graph's) and where the student predicts it (head and columns)."""
    name: str
    graph: Graph
    classes: list[int] | None
    head: int
    start: int
    stop: int

    @property
    def columns(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def num_classes(self) -> int:
        return self.stop - self.start

    def eval_mask(self) -> Tensor:
        """Test nodes whose label belongs to the task (evaluation only;
        multi-label: every test node)."""
        mask = self.graph.test_mask
        if self.classes is not None and not self.graph.multilabel:
            known = torch.tensor(self.classes, device=self.graph.y.device)
            mask = mask & torch.isin(self.graph.y, known)
        return mask

    def eval_labels(self) -> Tensor:
        """Labels renumbered to the task's columns (-1 outside it);
        multi-label: the task's label columns."""
        if self.classes is None:
            return self.graph.y
        if self.graph.multilabel:
            return self.graph.y[:, torch.tensor(self.classes,
                                                device=self.graph.y.device)]
        lookup = torch.full((int(self.graph.y.max()) + 1,), -1,
                            dtype=torch.long, device=self.graph.y.device)
        for i, c in enumerate(self.classes):
            if c < lookup.numel():
                lookup[c] = i
        return lookup[self.graph.y]


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
    :class:`gnncompress.amalgamation_minibatch.SampledGraphs` instead."""

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
    :func:`gnncompress.inductive.fit_inductive`). Each graph's shuffled
    training graphs come in batches of enough graphs for
    ``STEPS_PER_EPOCH`` steps (2 on PPI); one optimiser step takes one
    batch of every dataset, an epoch as many steps as the dataset with the
    most batches has, and a dataset with fewer starts a new shuffled pass
    when its batches run out. Validation and test graphs are never trained
    on. The teachers' outputs, predictions and maps cover every graph,
    computed once on the union (message passing never crosses graphs, and
    a node's map is normalised over its own in-edges, so a graph's rows
    and edges are what the teacher gives that graph alone); each batch
    slices them
    (:meth:`gnncompress.training.regimes.graph_batches.GraphPart.slice`). The
    student's logits run on the whole union; latency and the ONNX check on
    the test graphs (the validation graphs when there is none)."""

    def __init__(self, tasks: Sequence[Task],
                 teacher_tasks: Sequence[TeacherTask], tam: TAM, *,
                 seed: int = 0) -> None:
        self.tasks, self.teacher_tasks, self.tam = tasks, teacher_tasks, tam
        self.device = tasks[0].graph.x.device
        self.graphs: list[Graph] = []
        for task in tasks:
            if all(task.graph is not g for g in self.graphs):
                self.graphs.append(task.graph)
        self._train = {id(g): g.node_graph[g.train_mask].unique()
                       for g in self.graphs}
        self.graphs_per_step = {
            id(g): max(1, math.ceil(ids.numel() / STEPS_PER_EPOCH))
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
                parts[id(g)] = cut(g, ids[passes.next().to(ids.device)])
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
    ``checkpoint`` (a :class:`gnncompress.resume.TrainingCheckpoint`)
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
    scored (:func:`gnncompress.minibatch.batch_view`) and the teacher
    tasks hold the seeds' rows."""
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


def task_accuracy(logits: Tensor, task: Task) -> float:
    """Accuracy on the task's test nodes (``logits`` cut to its columns);
    micro-F1 for multi-label tasks."""
    mask = task.eval_mask()
    if task.graph.multilabel:
        return micro_f1(logits, task.eval_labels(), mask)
    if int(mask.sum()) == 0:
        return float('nan')
    return float((logits[mask].argmax(-1) ==
                  task.eval_labels()[mask]).float().mean())


# Setting up tasks ------------------------------------------------------------

def parse_tasks(text: str) -> list[list[int]]:
    """``'0-4,5-9'`` -> ``[[0..4], [5..9]]`` (one class range per task)."""
    return [parse_classes(part) for part in text.split(',')]


def resolve_tasks(ckpts: list[Checkpoint], data: str | Sequence[str] | None,
                  tasks: str | Sequence[Sequence[int]] | None,
                  data_root: str | Path | None, seed: int) -> list[Task]:
    """One task per teacher: a dataset each (``data`` lists as many names as
    teachers), or label subsets of one dataset (``tasks``, else the
    ``classes`` on the teachers' cards)."""
    names = [d.strip() for d in data.split(',')] if isinstance(data, str) \
        else list(data) if data is not None else None
    if isinstance(tasks, str):
        tasks = parse_tasks(tasks)
    if tasks is None and all(c.card.get('classes') for c in ckpts):
        tasks = [list(c.card['classes']) for c in ckpts]
    if tasks is not None and len(tasks) != len(ckpts):
        raise DataError(f'--tasks gives {len(tasks)} class ranges for '
                        f'{len(ckpts)} teachers: give one per teacher')
    cache: dict[str, Graph] = {}

    def graph_of(name: str | None, ckpt: Checkpoint) -> Graph:
        key = name or f'card:{ckpt.path}'
        if key not in cache:
            cache[key] = load_graph(name, data_root, seed) if name else \
                api.resolve_data(None, data_root, ckpt, seed)
        return cache[key]

    if tasks is not None:
        if names is not None and len(names) != 1:
            raise DataError('Label-subset tasks (--tasks) share one graph: '
                            'give one --data name')
        flat = [c for t in tasks for c in t]
        if len(set(flat)) != len(flat):
            raise DataError(f'The tasks {tasks} overlap: teachers must cover '
                            f'disjoint label subsets')
        graph = graph_of(names[0] if names else None, ckpts[0])
        result, start = [], 0
        for ckpt, classes in zip(ckpts, tasks):
            missing = [c for c in classes if c >= graph.num_classes]
            if missing:
                raise DataError(f'{graph.name} has classes 0-'
                                f'{graph.num_classes - 1}; class(es) '
                                f"{', '.join(map(str, missing))} do not exist")
            card = ckpt.card.get('classes')
            if card is not None and list(card) != list(classes):
                raise DataError(f'{ckpt.path.name} was trained on classes '
                                f'{card}, not {list(classes)}: fix --tasks')
            name = f'{graph.name}-c{_range_text(classes)}'
            result.append(Task(name, graph, list(classes), 0, start,
                               start + len(classes)))
            start += len(classes)
        return result
    if names is not None and len(names) != len(ckpts):
        raise DataError(f'--data names {len(names)} dataset(s) for '
                        f'{len(ckpts)} teachers: give one per teacher, or one '
                        f'dataset with --tasks')
    result = []
    for i, ckpt in enumerate(ckpts):
        graph = graph_of(names[i] if names else None, ckpt)
        name = graph.name if sum(t.graph.name == graph.name
                                 for t in result) == 0 else \
            f'{graph.name}-{i}'
        result.append(Task(name, graph, None, i, 0, graph.num_classes))
    return result


def _range_text(classes: list[int]) -> str:
    if classes == list(range(classes[0], classes[-1] + 1)) and \
            len(classes) > 1:
        return f'{classes[0]}-{classes[-1]}'
    return '_'.join(map(str, classes))


def check_teacher(ckpt: Checkpoint, task: Task) -> None:
    spec = ckpt.spec
    if spec.in_channels != task.graph.num_features:
        raise ArchitectureError(
            f'Teacher {ckpt.path.name} expects {spec.in_channels} input '
            f'features but {task.graph.name} has {task.graph.num_features}: '
            f'list --data in the order of the teachers')
    if spec.out_channels != task.num_classes:
        raise ArchitectureError(
            f'Teacher {ckpt.path.name} predicts {spec.out_channels} classes '
            f'but its task {task.name} has {task.num_classes}: check --data '
            f'and --tasks')


def check_graphs(tasks: Sequence[Task], minibatch: bool) -> bool:
    """Whether the tasks' data are several-graph datasets (trained by
    :class:`GraphBatches`); refuses a mix with single graphs and
    ``--batch-size`` on them."""
    several = [t.graph.node_graph is not None for t in tasks]
    if any(several) and not all(several):
        names = ', '.join(t.graph.name for t, s in zip(tasks, several) if s)
        raise DataError(f'{names} hold several graphs and the other '
                        f'datasets one: amalgamate datasets of one kind')
    if any(several) and minibatch:
        raise GnnCompressError('--batch-size on a several-graph dataset is '
                               'not supported yet: drop it (training takes '
                               'batches of whole graphs)')
    return any(several)


# The command -----------------------------------------------------------------

@dataclass
class AmalgamationReport:
    """Everything an amalgamation run measured. JSON keys are stable."""
    command: str
    setting: str                      # datasets | label-subsets
    tasks: list[dict[str, Any]]
    teachers: list[ModelEntry]
    student: dict[str, Any]
    results: list[dict[str, Any]]     # one per task x width
    union: list[dict[str, Any]]       # label subsets: one per width
    loss: dict[str, Any]
    selection: str
    training: dict[str, Any]
    seed: int
    device: str
    versions: dict[str, str]
    files: dict[str, Any] = field(default_factory=dict)
    # The settings the run resolved (config file, then command line).
    config: dict[str, Any] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {'schema': 1, 'kind': 'amalgamation', **asdict(self)}
        out['gates'] = [g.to_dict() for g in self.gates]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def rows(self) -> tuple[list[str], list[list[str]]]:
        latencies = [r['latency'] for r in self.results] + \
            [t.latency for t in self.teachers]
        runtimes = sorted({k for lat in latencies for k in lat})
        labels = latency_labels(latencies, runtimes)
        headers = ['task', 'model', 'width', 'parameters', 'test acc',
                   'agrees with teacher'] + \
            [f'{labels[r]} p50 ms' for r in runtimes]
        rows = []
        for task, teacher in zip(self.tasks, self.teachers):
            spec = teacher.spec
            row = [task['name'], f"teacher {spec['arch']} "
                   f"{spec['num_layers']}x{spec['hidden_channels']}", '-',
                   f'{teacher.parameters:,}',
                   f'{100 * teacher.test_accuracy:.2f}%', '-']
            rows.append(row + [_ms(teacher.latency.get(r), labels[r])
                               for r in runtimes])
        for r in self.results:
            row = [r['task'], f"student {self.student['spec']['arch']} "
                   f"{self.student['spec']['num_layers']}x{r['hidden']}",
                   f"{r['width']:g}", f"{r['parameters']:,}",
                   f"{100 * r['test_accuracy']:.2f}%",
                   f"{100 * r['agreement']:.2f}%"]
            rows.append(row + [_ms(r['latency'].get(k), labels[k])
                               for k in runtimes])
        return headers, rows

    def summary_lines(self) -> list[str]:
        loss = self.loss
        lines = [
            f"tasks: {', '.join(t['name'] for t in self.tasks)} "
            f'({self.setting})',
            f"loss: soft {loss['soft']} + {loss['lambda']:g} x topology "
            f"{loss['topology']}; no ground-truth label used",
            f"student: {self.student['parameters']:,} parameters in all "
            f"(widths {', '.join(f'{w:g}' for w in self.student['widths'])})",
            f'selection: {self.selection}',
            f"training: {plural(self.training['epochs_run'], 'epoch')} in "
            f"{self.training['seconds']:.1f} s "
            f"({self.training['seconds_per_epoch']:.3f} s/epoch), best "
            f"epoch {self.training['best_epoch']}, device {self.device}, "
            f'seed {self.seed}',
        ]
        if 'batch_size' in self.training:
            t = self.training
            probes = _probe_sizes(t['measured_on'])
            lines.append(
                f"mini-batch: {t['batch_size']:,} seed nodes of each graph "
                f"per step, fanout {','.join(map(str, t['fanout']))}, "
                f"{t['steps_per_epoch']} steps per epoch; latency and the "
                f'ONNX check on one sampled subgraph per graph ({probes})')
        if 'graphs_per_step' in self.training:
            t = self.training
            per = ', '.join(f'{n} {k} of {t["training_graphs"][n]}'
                            for n, k in t['graphs_per_step'].items())
            probes = _probe_sizes(t['measured_on'])
            lines.append(
                f'several graphs: batches of whole training graphs ({per} '
                f"per step), {t['steps_per_epoch']} steps per epoch; "
                f'latency and the ONNX check on the test graphs ({probes})')
        for u in self.union:
            lines.append(f"union of all tasks at width {u['width']:g}: "
                         f"{100 * u['test_accuracy']:.2f}%")
        parity = [r['onnx_max_abs_diff'] for r in self.results
                  if r.get('onnx_max_abs_diff') is not None]
        if parity:
            lines.append(f'ONNX max abs difference: {max(parity):.2e} '
                         f'(over {len(parity)} files, 4 check graphs each)')
        return lines

    def to_text(self) -> str:
        headers, rows = self.rows()
        return '\n'.join([tabulate(rows, headers=headers), '',
                          *self.summary_lines()])

    def to_markdown(self) -> str:
        headers, rows = self.rows()
        files = ''.join(f'- {k}: `{v}`\n' for k, v in self.files.items()
                        if k != 'onnx')
        files += ''.join(f'- onnx: `{v}`\n'
                         for v in self.files.get('onnx', []))
        return '\n'.join([
            '# gnncompress amalgamate report', '', f'`{self.command}`', '',
            tabulate(rows, headers=headers, tablefmt='github'), '',
            *[f'- {line}' for line in self.summary_lines()], '',
            '## Files', '', files, '## Versions', '',
            ', '.join(f'{k} {v}' for k, v in self.versions.items()), ''])


def _ms(latency: dict[str, Any] | None, label: str) -> str:
    return latency_cell(latency, label, f"{latency['median_ms']:.2f}") \
        if latency else '-'


def _parse_widths(widths: str | Sequence[float]) -> list[float]:
    if isinstance(widths, str):
        try:
            return [float(w) for w in widths.split(',')]
        except ValueError:
            raise ArchitectureError(f"Widths are numbers separated by commas, "
                                    f"e.g. 0.25,0.5,1 (got '{widths}')") \
                from None
    return [float(w) for w in widths]


@outputs.one_run
def amalgamate(teachers: Sequence[str | Path], *,
               data: str | Sequence[str] | None = None,
               tasks: str | Sequence[Sequence[int]] | None = None,
               data_root: str | Path | None = None, student: str = 'gcn',
               hidden: int = 64, layers: int = 2, heads: int = 1,
               widths: str | Sequence[float] = DEFAULT_WIDTHS,
               export_widths: str | Sequence[float] | None = None,
               weight: float | None = None, soft: str = 'mse',
               topology: str = 'tam', epochs: int = 200, lr: float = 0.01,
               weight_decay: float = 4e-6, patience: int | None = 100,
               seed: int = 0, device: str = 'auto',
               out: str | Path | None = None, export: bool = True,
               latency: bool = True, progress: bool = True,
               min_accuracy: float | None = None,
               max_accuracy_drop: float | None = None,
               batch_size: int | None = None,
               fanout: str | Sequence[int] | None = None,
               command: str = '',
               config: dict[str, Any] | None = None,
               checkpoint_every: int | None = None,
               checkpoint_dir: str | Path | None = None,
               resume: str | Path | None = None) -> AmalgamationReport:
    """Amalgamate ``teachers`` (one per task) into one slimmable student and
    write ``student.safetensors`` (all widths and heads + spec),
    ``onnx/<task>-w<width>.onnx`` (one per task and exported width, each
    checked against PyTorch), ``report.json`` and ``report.md`` to ``out``.

    ``weight`` is the topology loss weight lambda (default 0.1 for TAM, 100
    for LSP); ``lr`` 0.01 (our choice, as ``distill``: the authors' 1e-4
    needs far more full-graph epochs) and ``weight_decay`` 4e-6 (the
    authors' code). ``export_widths`` (``--width``) picks the widths that
    get an ONNX file (default: all). The gates ``min_accuracy`` (percent)
    and ``max_accuracy_drop`` (points below the task's teacher) apply to
    every task at every exported width; failures are in
    ``report.gates``.

    ``batch_size`` B trains on sampled subgraphs of B seed nodes per graph
    with ``fanout`` neighbours per hop (``'15,10'``; default 15, 10, then
    5), the teachers cached once layer-wise
    (:mod:`gnncompress.amalgamation_minibatch`).

    Several-graph datasets train on batches of whole training graphs
    (:class:`GraphBatches`); on multi-label data the tasks are label
    columns, scores and agreement micro-F1.

    ``checkpoint_every`` K saves the training every K epochs to
    ``checkpoint_dir`` (default ``out/.gnncompress-checkpoint``, removed
    when the run succeeds); ``resume`` (that folder, or ``out``) continues
    an interrupted run with the same options, ending with the student an
    uninterrupted run gives. When the loss stops being finite, the run
    stops with a :class:`~gnncompress.errors.TrainingError` and ``model``
    is back at its best epoch."""
    if len(teachers) < 2:
        raise GnnCompressError('Amalgamation needs at least two teachers '
                               f'(got {len(teachers)})')
    try:
        tam = TAM(weight=weight, soft=soft, topology=topology)
    except ValueError as e:
        raise GnnCompressError(str(e)) from None
    hops = None if batch_size is None and fanout is None else \
        check_minibatch(None, batch_size, fanout, layers)[1]
    widths = _parse_widths(widths)
    export_widths = sorted(set(_parse_widths(export_widths))) \
        if export_widths is not None else None
    check_out(out)
    out = Path(out) if out is not None else \
        Path('gnncompress-out') / 'amalgamate'
    dev = api.resolve_device(device)
    api.check_writable(out)
    outputs.claim(out, api.run_inputs(
        *teachers, *[card_path(Path(t)) for t in teachers],
        *([data] if isinstance(data, (str, Path)) else data or [])))
    ckpts = [load_checkpoint(t) for t in teachers]
    if hops is not None:
        from gnncompress import amalgamation_minibatch
        amalgamation_minibatch.check_teachers(ckpts, tam)
    task_list = resolve_tasks(ckpts, data, tasks, data_root, seed)
    for ckpt, task in zip(ckpts, task_list):
        check_teacher(ckpt, task)
    several = check_graphs(task_list, hops is not None)
    setting = 'label-subsets' if task_list[0].classes is not None \
        else 'datasets'
    heads_out = [task_list[-1].stop] if setting == 'label-subsets' else \
        [t.num_classes for t in task_list]
    spec = SlimmableSpec(arch=student,
                         in_channels=[t.graph.num_features
                                      for t in task_list],
                         hidden_channels=hidden, num_layers=layers,
                         out_channels=heads_out, widths=widths, heads=heads,
                         dropout=api.STUDENT_DROPOUT)
    if export_widths is not None:
        unknown = [w for w in export_widths if w not in spec.widths]
        if unknown:
            raise ArchitectureError(
                f"--width {', '.join(f'{w:g}' for w in unknown)} was not "
                f"trained (widths: {', '.join(f'{w:g}' for w in spec.widths)})")
    else:
        export_widths = spec.widths

    saver = api.training_checkpoint(
        out, checkpoint_every, checkpoint_dir, resume,
        teachers=[str(Path(t).resolve()) for t in teachers],
        teacher_bytes=[Path(t).stat().st_size for t in teachers],
        tasks=[_task_dict(t) for t in task_list], student=asdict(spec),
        loss={'soft': tam.soft, 'topology': tam.topology,
              'lambda': tam.weight},
        epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience,
        batch_size=batch_size, fanout=hops, seed=seed, device=dev.type)
    if hops is None:
        moved: dict[int, Graph] = {}
        for task in task_list:
            key = id(task.graph)
            moved.setdefault(key, task.graph.to(dev))
            task.graph = moved[key]
    teacher_models = [c.build().to(dev) for c in ckpts]
    sampled = None
    if hops is None:
        teacher_tasks = [tam.prepare(m, t.graph.x, t.graph.edge_index,
                                     slice(None), t.graph.multilabel)
                         for m, t in zip(teacher_models, task_list)]
        graphs: Amalgamation = \
            GraphBatches(task_list, teacher_tasks, tam, seed=seed) \
            if several else WholeGraphs(task_list, teacher_tasks, tam)
    else:  # graphs stay on the CPU; batches move to the device
        sampled = amalgamation_minibatch.SampledGraphs(
            task_list, teacher_models, tam, batch_size=batch_size,
            fanout=hops, seed=seed, device=dev)
        graphs, teacher_tasks = sampled, sampled.teacher_tasks
    try:
        api.seed_everything(seed)
        model = SlimmableGNN(spec).to(dev)
        try:
            with api.interruptible(saver):
                fitted = train_student(
                    model, task_list, teacher_tasks, tam, epochs=epochs,
                    lr=lr, weight_decay=weight_decay, patience=patience,
                    progress=progress, graphs=graphs, checkpoint=saver)
        except TrainingError as e:
            raise api.keep_best_student(
                e, out, 'agreement with the teachers',
                lambda path, stopped: _save_student(model, task_list, path,
                                                    stopped)) from None
        training = {'epochs': epochs, 'epochs_run': fitted.epochs_run,
                    'best_epoch': fitted.best_epoch,
                    'best_agreement': fitted.val_accuracy,
                    'seconds': fitted.seconds,
                    'seconds_per_epoch':
                    fitted.seconds / max(1, fitted.epochs_run),
                    'lr': lr, 'weight_decay': weight_decay,
                    'patience': patience}
        if not isinstance(graphs, WholeGraphs):
            training.update(graphs.describe())
        report = _write_outputs(
            model, spec, task_list, ckpts, teacher_models, teacher_tasks,
            graphs, tam=tam, setting=setting, training=training,
            selection=SELECTION_GRAPHS if several else SELECTION,
            export_widths=export_widths, dev=dev, out=out, export=export,
            latency=latency and measuring(), min_accuracy=min_accuracy,
            max_accuracy_drop=max_accuracy_drop,
            command=command or 'gnncompress amalgamate ' +
            ' '.join(map(str, teachers)), seed=seed, config=config)
        if saver is not None and \
                saver.folder == out / api.DEFAULT_CHECKPOINT_FOLDER:
            saver.remove()  # the default folder inside out has served
        return report
    finally:
        if sampled is not None:
            sampled.close()


def _write_outputs(model: SlimmableGNN, spec: SlimmableSpec,
                   task_list: list[Task], ckpts: list[Checkpoint],
                   teacher_models: list[Any],
                   teacher_tasks: list[TeacherTask],
                   graphs: Amalgamation, *,
                   tam: TAM, setting: str, training: dict[str, Any],
                   selection: str,
                   export_widths: list[float], dev: torch.device, out: Path,
                   export: bool, latency: bool, min_accuracy: float | None,
                   max_accuracy_drop: float | None, command: str, seed: int,
                   config: dict[str, Any] | None) -> AmalgamationReport:
    """Score, time and export the trained student next to its teachers;
    write the files and the report. ``graphs`` gives the student's logits
    on each whole graph and the graph latency and the ONNX check run on."""
    with api.staged_output(out) as stage:
        files: dict[str, Any] = {}
        teacher_entries = []
        for ckpt, m, t, tt in zip(ckpts, teacher_models, task_list,
                                  teacher_tasks):
            entry = ModelEntry(
                role='teacher', spec=ckpt.spec.to_dict(),
                parameters=count_parameters(m),
                test_accuracy=task_accuracy(tt.output.logits, t),
                file=str(ckpt.path), file_bytes=ckpt.path.stat().st_size)
            if latency:
                x, edge_index = graphs.measured_on(t.graph)
                entry.latency[f'pytorch-{dev.type}'] = torch_latency(
                    m, x.to(dev), edge_index.to(dev)).to_dict()
            teacher_entries.append(entry)
        results = []
        onnx_files = []
        model.eval()
        for width in spec.widths:
            for task, tt in zip(task_list, teacher_tasks):
                g = task.graph
                with torch.no_grad():
                    logits = graphs.logits(model, g, task.head,
                                           width)[:, task.columns]
                plain = TaskSlice(model.submodel(g.num_features, task.head,
                                                 width),
                                  task.start, task.stop)
                row: dict[str, Any] = {
                    'task': task.name, 'width': width,
                    'hidden': spec.hidden_at(width),
                    'parameters': count_parameters(plain),
                    'test_accuracy': task_accuracy(logits, task),
                    'agreement': agreement(logits, tt.target,
                                           report_nodes(g)),
                    'latency': {}, 'onnx': None, 'onnx_max_abs_diff': None,
                    'onnx_parity': {}}
                x, edge_index = graphs.measured_on(g)
                if latency:
                    row['latency'][f'pytorch-{dev.type}'] = torch_latency(
                        plain.to(dev), x.to(dev),
                        edge_index.to(dev)).to_dict()
                if export and width in export_widths:
                    onnx_dir = stage / 'onnx'
                    onnx_dir.mkdir(exist_ok=True)
                    name = f'{task.name}-w{width:g}.onnx'
                    parity = export_onnx(plain, x, edge_index,
                                         onnx_dir / name)
                    row['onnx'] = str(out / 'onnx' / name)
                    row['onnx_max_abs_diff'] = parity.max_abs_diff
                    row['onnx_parity'] = parity.cases
                    onnx_files.append(row['onnx'])
                    if latency:
                        row['latency']['onnxruntime-cpu'] = onnx_latency(
                            onnx_dir / name, x, edge_index).to_dict()
                results.append(row)
        union = _union_accuracy(model, task_list, graphs.logits) \
            if setting == 'label-subsets' else []
        if export:
            _save_student(model, task_list, stage / 'student.safetensors')
            files['safetensors'] = str(out / 'student.safetensors')
            files['onnx'] = onnx_files
        files['report_json'] = str(out / 'report.json')
        files['report_md'] = str(out / 'report.md')
        report = AmalgamationReport(
            command=command,
            setting=setting, tasks=[_task_dict(t) for t in task_list],
            teachers=teacher_entries,
            student={'spec': asdict(spec), 'widths': spec.widths,
                     'parameters': count_parameters(model)},
            results=results, union=union,
            loss={'soft': tam.soft, 'topology': tam.topology,
                  'lambda': tam.weight},
            selection=selection, training=training,
            seed=seed, device=str(dev), versions=api.versions(), files=files,
            config=config or {},
            gates=api.accuracy_gates(
                [(f"{r['task']} w{r['width']:g}", r['test_accuracy'],
                  teacher.test_accuracy)
                 for r in results
                 for task, teacher in zip(task_list, teacher_entries)
                 if task.name == r['task'] and (export_widths is None or
                                                r['width'] in export_widths)],
                min_accuracy, max_accuracy_drop))
        if plots.drawn('widths.png', plots.amalgamation_widths,
                       report.to_dict(), stage / 'widths.png'):
            files['widths_png'] = str(out / 'widths.png')
        (stage / 'report.json').write_text(report.to_json() + '\n')
        (stage / 'report.md').write_text(report.to_markdown())
    return report


def _save_student(model: SlimmableGNN, tasks: list[Task], path: Path,
                  extra: dict[str, str] | None = None) -> None:
    """``student.safetensors``: every width and head, the spec and the
    tasks (and ``extra`` metadata)."""
    save_slimmable(model, path, extra={'gnncompress.tasks': json.dumps(
        [_task_dict(t) for t in tasks]), **(extra or {})})


def _task_dict(task: Task) -> dict[str, Any]:
    g = task.graph
    return {'name': task.name, 'data': g.name, 'classes': task.classes,
            'head': task.head, 'columns': [task.start, task.stop],
            'nodes': g.num_nodes, 'edges': int(g.edge_index.size(1)),
            'features': g.num_features, 'split': g.split}


@torch.no_grad()
def _union_accuracy(model: SlimmableGNN, tasks: Sequence[Task],
                    logits_of: Logits) -> list[dict[str, Any]]:
    """Label subsets: the union head's argmax over all tasks' classes, on
    the test nodes whose label is in one of them; multi-label: the union
    head's micro-F1 over all tasks' label columns on the test nodes."""
    graph = tasks[0].graph
    labels = torch.tensor([c for t in tasks for c in t.classes],
                          device=graph.y.device)
    if graph.multilabel:
        return [{'width': width, 'test_accuracy': micro_f1(
            logits_of(model, graph, 0, width), graph.y[:, labels],
            graph.test_mask)} for width in model.spec.widths]
    mask = graph.test_mask & torch.isin(graph.y, labels)
    rows = []
    for width in model.spec.widths:
        logits = logits_of(model, graph, 0, width)
        predicted = labels[logits.argmax(-1)]
        acc = float((predicted[mask] == graph.y[mask]).float().mean()) \
            if int(mask.sum()) else float('nan')
        rows.append({'width': width, 'test_accuracy': acc})
    return rows


def _probe_sizes(measured_on: dict[str, dict[str, int]]) -> str:
    """``'Cora 1,024 nodes, 5,210 edges; ...'``: the graphs latency and the
    ONNX check ran on, for the report's text."""
    return '; '.join(f"{name} {v['nodes']:,} nodes, {v['edges']:,} edges"
                     for name, v in measured_on.items())
