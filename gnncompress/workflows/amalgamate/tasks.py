"""Amalgamation's tasks: one per teacher, a dataset each or label subsets
of one graph, with where the slimmable student predicts each (head and
columns), and how a task is scored."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gnncompress.checkpoints.teachers import Checkpoint
from gnncompress.core.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
)
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import micro_f1
from gnncompress.tasks.datasets import load_graph, parse_classes
from gnncompress.workflows.inputs import card_data_root, resolve_data


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



def parse_tasks(text: str) -> list[list[int]]:
    """``'0-4,5-9'`` -> ``[[0..4], [5..9]]`` (one class range per task)."""
    return [parse_classes(part) for part in text.split(',')]


def resolve_tasks(ckpts: list[Checkpoint], data: str | Sequence[str] | None,
                  tasks: str | Sequence[Sequence[int]] | None,
                  data_root: str | Path | None, seed: int) -> list[Task]:
    """One task per teacher: a dataset each (``data`` lists as many names as
    teachers), or label subsets of one dataset (``tasks``, else the
    ``classes`` on the teachers' cards)."""
    names = dataset_names(data)
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
            cache[key] = load_graph(
                name, card_data_root(name, data_root, ckpt), seed) \
                if name else resolve_data(None, data_root, ckpt, seed)
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


def dataset_names(data: str | Sequence[str] | None) -> list[str] | None:
    """``--data``'s dataset names (``'Cora,CiteSeer'`` or a list)."""
    return [d.strip() for d in data.split(',')] if isinstance(data, str) \
        else list(data) if data is not None else None


def tasks_text(task_list: list[Task]) -> str | list[list[int]] | None:
    """The label subsets as ``--tasks`` writes them (``'0-3,4-6'``), a list
    of class lists when one is no range, ``None`` for whole datasets."""
    classes = [t.classes for t in task_list]
    if any(c is None for c in classes):
        return None
    if all(c == list(range(c[0], c[-1] + 1)) for c in classes):
        return ','.join(f'{c[0]}-{c[-1]}' if len(c) > 1 else str(c[0])
                        for c in classes)
    return classes


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


def check_graphs(tasks: Sequence[Task], fanout: bool) -> bool:
    """Whether the tasks' data are several-graph datasets (trained by
    :class:`GraphBatches`); refuses a mix with single graphs and
    ``--fanout`` on them."""
    for task in tasks:
        if task.graph.batch is not None:
            raise DataError(
                f'{task.graph.name} is graph classification (one label per '
                f'graph); amalgamation merges node-classification '
                f'teachers: distill a graph classifier with gnncompress '
                f'distill')
    several = [t.graph.node_graph is not None for t in tasks]
    if any(several) and not all(several):
        names = ', '.join(t.graph.name for t, s in zip(tasks, several) if s)
        raise DataError(f'{names} hold several graphs and the other '
                        f'datasets one: amalgamate datasets of one kind')
    if any(several) and fanout:
        raise GnnCompressError('--fanout samples neighbours in one large '
                               'graph; on a several-graph dataset '
                               '--batch-size counts whole graphs per step: '
                               'drop --fanout')
    return any(several)
