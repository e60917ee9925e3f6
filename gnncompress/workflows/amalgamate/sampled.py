"""Mini-batch amalgamation on sampled subgraphs, for graphs too large for
one full-graph pass (``gnncompress amalgamate --batch-size B --fanout
15,10``).

Per graph, a :class:`~gnncompress.training.sampling.NeighborSampler` takes every
node as a seed (no label is read). Every teacher runs once, layer-wise
over all nodes of its graph
(:func:`gnncompress.workflows.distill_sampled.teacher_cache`):
its logits, its predicted classes and, for ``--topology lsp``, its hidden
features are kept in memory or in memory-mapped files, and each batch
reads its nodes' rows. The soft loss covers the seeds' logits; the
topology term the batch's edges into the seeds (:meth:`TAM.loss
<gnncompress.methods.tam.TAM.loss>`).

TAM's teacher map cannot come from the cache: it is the gradient of the
seeds' scores with respect to the weights of the sampled edges, so it
depends on which neighbours were drawn (a neighbour's own sampled
neighbourhood changes the messages that pass through it), and a graph-wide
map also counts the scores of nodes outside the batch. Each step therefore
runs every teacher forward and backward once on its batch's subgraph
(shared by all widths): about three teacher forwards per task and batch,
next to a forward and a double backward of the student per width and
task (with two 2-layer teachers and four widths on a 3,000-node graph, an
eighth of the training time). A teacher with more layers than ``--fanout``
has hops sees only the batch's hops in its map (its cached logits, which
the soft loss uses, are exact).

One optimiser step takes one batch of every graph and sums the loss of
every width on every task over them, as one full-graph step sums it over
every whole graph. An epoch has as many steps as the largest graph has
batches (every node of it a seed once); a smaller graph starts a new
shuffled pass whenever its batches run out, so every step still trains
every task. Agreement with the teachers (model selection) and the reported
accuracies run layer-wise over all nodes of each graph; latency and the
ONNX check use one sampled subgraph of B test nodes per graph.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.checkpoints.teachers import Checkpoint
from gnncompress.core.errors import ArchitectureError
from gnncompress.core.graph import Graph
from gnncompress.methods.tam import (
    TAM,
    TeacherTask,
    check_edges,
    check_messages,
)
from gnncompress.models.slimmable import SlimmableGNN
from gnncompress.training import ranks as process_ranks
from gnncompress.training.objectives.amalgamation import GroupLoss
from gnncompress.training.regimes.sampled import batch_view, evaluate
from gnncompress.training.regimes.sampled import to_device as _to
from gnncompress.training.sampling import (
    CSR,
    MEMMAP_BYTES,
    Batch,
    NeighborSampler,
    TensorStore,
    check_layerwise,
)
from gnncompress.workflows.amalgamate.regimes import (
    Amalgamation,
    Passes,
    group_loss,
)
from gnncompress.workflows.amalgamate.tasks import Task
from gnncompress.workflows.distill_sampled import sample_subgraph, teacher_cache


def check_teachers(ckpts: Sequence[Checkpoint], tam: TAM) -> None:
    """Every teacher can be cached layer-wise, and has a map when TAM
    needs one; checked before any data is loaded."""
    for ckpt in ckpts:
        model = ckpt.build()
        try:
            check_layerwise(model)
            if tam.uses_maps:
                check_messages(model)
        except ArchitectureError as e:
            raise ArchitectureError(f'Teacher {ckpt.path.name}: {e}') \
                from None


class SampledGraphs(Amalgamation):
    """The regime of mini-batch amalgamation
    (:class:`gnncompress.workflows.amalgamate.regimes.Amalgamation`): training
    batches,
    teacher outputs and evaluation. The graphs and the teacher caches stay
    on the CPU; batches move to ``device``. Each graph's sampler and its
    shuffled passes over the seeds share one generator, saved in training
        checkpoints. In a process group (``--nproc``) every rank draws the same
    passes and takes its share of each batch's seeds, sampled with a
    generator of its own (:mod:`gnncompress.training.ranks`).

    Args:
        tasks (list[Task]): One per teacher; tasks may share a graph.
        teachers (list[nn.Module]): The frozen teachers, on ``device``.
        tam (TAM): The loss.
        batch_size (int): Seed nodes per batch, in every graph.
        fanout (list[int]): Neighbours per node at each hop.
        seed (int): Randomness of the shuffling and the sampling.
        device (torch.device): Where the student trains.
        memmap_bytes (int, optional): Per-node tensors above this size go
            to memory-mapped files. (default: 1 GiB)
    """

    def __init__(self, tasks: Sequence[Task], teachers: Sequence[nn.Module],
                 tam: TAM, *, batch_size: int, fanout: Sequence[int],
                 seed: int, device: torch.device,
                 memmap_bytes: int = MEMMAP_BYTES) -> None:
        self.tasks, self.teachers, self.tam = list(tasks), list(teachers), tam
        self.batch_size, self.fanout = batch_size, list(fanout)
        self.seed, self.device = seed, device
        self.memmap_bytes = memmap_bytes
        self.store = TensorStore(memmap_bytes)
        self.graphs: list[Graph] = []
        for task in self.tasks:
            if all(task.graph is not g for g in self.graphs):
                self.graphs.append(task.graph)
        self._csr = {id(g): CSR.from_edges(g.edge_index, g.num_nodes)
                     for g in self.graphs}
        self.ranks = process_ranks.current()
        self._samplers, self.passes = [], []
        for i, g in enumerate(self.graphs):
            order = torch.Generator().manual_seed(seed + i)
            self._samplers.append(NeighborSampler(
                self._csr[id(g)], self.fanout, batch_size,
                self.ranks.draws(order, seed + i)))
            self.passes.append(Passes(g.num_nodes, batch_size, order))
        self._probes: dict[int, tuple[Tensor, Tensor]] = {}
        self.steps_per_epoch = max(math.ceil(g.num_nodes / batch_size)
                                   for g in self.graphs)
        try:
            self.teacher_tasks = [self._cache(teacher, task)
                                  for teacher, task in zip(self.teachers,
                                                           self.tasks)]
        except BaseException:
            self.close()
            raise

    def _cache(self, teacher: nn.Module, task: Task) -> TeacherTask:
        """The teacher's output on every node of its graph, once."""
        if self.tam.uses_maps:
            check_edges(teacher, task.graph.edge_index)
        cached = teacher_cache(teacher, task.graph, self._csr[id(task.graph)],
                               self.tam, self.store)
        return TeacherTask(cached, cached.logits.argmax(-1), None)

    def steps(self, epoch: int) -> Iterator[GroupLoss]:
        """Each optimiser step of one epoch: one batch of every graph
        (every node of a graph a seed once per pass, in shuffled order)."""
        for _ in range(self.steps_per_epoch):
            on_device: dict[int, tuple[Tensor, Tensor, Batch]] = {}
            for graph, sampler, passes in zip(self.graphs, self._samplers,
                                              self.passes):
                batch = sampler.sample(self.ranks.split(passes.next()))
                on_device[id(graph)] = (
                    graph.x[batch.n_id].to(self.device),
                    batch.edge_index.to(self.device), batch)
            views = [self._teacher_view(teacher, task, teacher_task,
                                        *on_device[id(task.graph)])
                     for teacher, task, teacher_task in zip(
                         self.teachers, self.tasks, self.teacher_tasks)]
            yield functools.partial(self._loss, on_device, views)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                'samplers': [s.generator.get_state() for s in self._samplers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for sampler, saved in zip(self._samplers, state.get('samplers', []),
                                  strict=False):
            sampler.generator.set_state(saved)

    def _teacher_view(self, teacher: nn.Module, task: Task,
                      teacher_task: TeacherTask, x: Tensor,
                      edge_index: Tensor, batch: Batch) -> TeacherTask:
        """What the loss sees of one teacher on one batch: the cached rows
        of the seeds (logits, classes) and of every sampled node (hidden
        features), and for TAM its map on the batch's subgraph."""
        seeds = batch.n_id[:batch.batch_size]
        output = _to(batch_view(teacher_task.output, batch, rows=True),
                     self.device)
        target = teacher_task.target[seeds].to(self.device)
        attribution = self.tam.teacher_map(teacher, x, edge_index, target) \
            if self.tam.uses_maps else None
        return TeacherTask(output, target, attribution)

    def _loss(self, on_device: dict[int, tuple[Tensor, Tensor, Batch]],
              views: list[TeacherTask], student: SlimmableGNN,
              width: float,
              group: list[int]) -> tuple[Tensor, dict[str, Tensor]]:
        task = self.tasks[group[0]]
        x, edge_index, batch = on_device[id(task.graph)]
        return group_loss(student, x, edge_index, task.head, width,
                          [self.tasks[i] for i in group],
                          [views[i] for i in group], group, self.tam,
                          batch=batch)

    def logits(self, student: SlimmableGNN, graph: Graph, head: int,
               width: float) -> Tensor:
        """The student's logits on every node of ``graph`` for (head,
        width), layer-wise in bounded memory (on the CPU)."""
        plain = student.submodel(graph.num_features, head, width)
        return evaluate(plain.to(self.device), graph, self._csr[id(graph)],
                        self.memmap_bytes)

    def measured_on(self, graph: Graph) -> tuple[Tensor, Tensor]:
        """Features and edges of one sampled subgraph around
        ``batch_size`` test nodes of ``graph`` (the same for every model
        timed or exported on it)."""
        if id(graph) not in self._probes:
            self._probes[id(graph)] = sample_subgraph(
                graph, self._csr[id(graph)], self.fanout, self.batch_size,
                self.seed)
        return self._probes[id(graph)]

    def describe(self) -> dict[str, Any]:
        """The report's additions to its ``training`` entry."""
        probes = {}
        for graph in self.graphs:
            x, edge_index = self.measured_on(graph)
            probes[graph.name] = {'nodes': x.size(0),
                                  'edges': int(edge_index.size(1))}
        return {'batch_size': self.batch_size, 'fanout': self.fanout,
                'steps_per_epoch': self.steps_per_epoch,
                'measured_on': probes}

    def close(self) -> None:
        """Remove the memory-mapped teacher caches, if any."""
        self.store.close()
