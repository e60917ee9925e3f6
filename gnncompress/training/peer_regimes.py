"""How cotrain's students train (:mod:`gnncompress.workflows.cotrain`): the
:class:`~gnncompress.training.regimes.peers.Peers` regime for each kind of
data (the whole graph, sampled subgraphs: :class:`SampledParts`, batches
of graphs, several graphs of node classification) and
:func:`train_peers`, which runs it in the one training loop."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput, run_model, sparse_input
from gnncompress.tasks.graph_level import BATCH_SIZE
from gnncompress.tasks.inductive import supervised_loss
from gnncompress.training import ranks as process_ranks
from gnncompress.training.loop import FitResult, fit
from gnncompress.training.objectives.peers import (
    peer_objective,
    peer_results,
    prepare_peers,
)
from gnncompress.training.regimes.full_graph import FullGraph
from gnncompress.training.regimes.graph_batches import (
    GraphBatches,
    GraphPart,
    GraphParts,
    cut,
)
from gnncompress.training.regimes.peers import MethodInputs, Peers
from gnncompress.training.regimes.sampled import (
    batch_graph,
    batch_view,
    evaluate,
    seed_cross_entropy,
)
from gnncompress.training.sampling import (
    CSR,
    MEMMAP_BYTES,
    Batch,
    NeighborSampler,
)


@dataclass
class SampledPart:
    """One sampled subgraph as the students see it: the features and
    edges of its nodes on their device, and (filled as needed) the graph
    their losses take, per kind of ``batch_logits``."""
    batch: Batch
    x: Tensor           # [n, F]
    edge_index: Tensor  # [2, e], local ids
    graphs: dict[str, Graph] = field(default_factory=dict)


class SampledParts:
    """The parts of :class:`Peers` on sampled subgraphs of one
    node-classification graph (``cotrain --batch-size B --fanout 15,10``),
    for graphs too large for one full-graph pass.

    Every batch of ``seeds`` is sampled once (:class:`NeighborSampler`, up
    to ``fanout[i]`` in-neighbours per node at hop i, its generator seeded
    with ``seed``) and all the students take their steps on it in turn.
    Each step's supervised loss is the cross-entropy over the seeds that
    are training nodes; the online loss sees
    :func:`~gnncompress.training.regimes.sampled.batch_view` of student and
    peers:
    Alignahead's (and OC's) layer structures over the edges into the
    seeds, from every sampled node's features; mutual learning's KL and
    entropy over the seeds' logits, its ensemble cross-entropy over the
    training seeds. So one batch of every node with ``fanout`` -1 (all
    neighbours) gives the full-graph losses. Validation and the final test
    run layer-wise over all nodes in bounded memory
    (:func:`~gnncompress.training.regimes.sampled.evaluate`). ``graph``
    stays where it is (the CPU); each batch moves to ``device``. In a
    process group (``--nproc``) every rank takes its share of each batch's
    seeds, sampled with a generator of its own
    (:mod:`gnncompress.training.ranks`).
    """

    def __init__(self, graph: Graph, *, fanout: Sequence[int],
                 batch_size: int, seeds: Tensor, device: torch.device,
                 seed: int = 0, csr: CSR | None = None,
                 memmap_bytes: int = MEMMAP_BYTES) -> None:
        if graph.batch is not None or graph.node_graph is not None:
            raise ValueError('sampled subgraphs need one node-'
                             'classification graph')
        self.graph, self.device, self.seeds = graph, device, seeds
        self.ranks = process_ranks.current()
        self.batch_size = self.ranks.share(batch_size)
        self.memmap_bytes = memmap_bytes
        self.csr = csr if csr is not None else \
            CSR.from_edges(graph.edge_index, graph.num_nodes)
        self.order = torch.Generator().manual_seed(seed)  # same every rank
        self.seed = seed
        self.sampler = NeighborSampler(self.csr, fanout, self.batch_size,
                                       self.ranks.draws(self.order, seed))

    def part(self, batch: Batch) -> SampledPart:
        x = self.graph.x[batch.n_id].to(self.device)
        # Every student and peer reads these rows: large sparse features
        # are worth their sparse form (models/sparse_input.py) once each.
        sparse_input.register(x)
        return SampledPart(batch, x, batch.edge_index.to(self.device))

    def probe(self) -> SampledPart:
        """The first seeds' subgraph, which the methods are prepared on,
        sampled with draws of its own: the same on every rank, and the
        batches of the run the same as without it."""
        return self.part(self.sampler.sample(
            self.seeds[:self.batch_size],
            torch.Generator().manual_seed(self.seed)))

    def steps(self, epoch: int) -> Iterator[SampledPart]:
        mine, shuffle = self.ranks.epoch_seeds(self.seeds, self.order)
        for batch in self.sampler.batches(mine, shuffle=shuffle):
            yield self.part(batch)

    def forward(self, model: nn.Module, part: SampledPart) -> ModelOutput:
        return run_model(model, part.x, part.edge_index)

    def logits(self, model: nn.Module) -> Tensor:
        return evaluate(model, self.graph, self.csr, self.memmap_bytes)

    def label_loss(self, out: ModelOutput, part: SampledPart) -> Tensor:
        return seed_cross_entropy(out.logits, self.graph, part.batch)

    def method_inputs(self, method: DistillMethod,
                      peers: Sequence[ModelOutput], out: ModelOutput,
                      part: SampledPart) -> MethodInputs:
        kind = method.batch_logits
        if kind not in part.graphs:
            part.graphs[kind] = batch_graph(self.graph, part.batch, part.x,
                                            labels=kind).to(self.device)
        return ([batch_view(p, part.batch, rows=False, logits=kind)
                 for p in peers],
                batch_view(out, part.batch, rows=False, logits=kind),
                part.graphs[kind])

    def state_dict(self) -> dict[str, Any]:
        return {'generator': self.sampler.generator.get_state(),
                'order': self.order.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.set_state(state.get('order', state['generator']))
        self.sampler.generator.set_state(state['generator'])


def _masked_label_loss(parts: Any, out: ModelOutput, part: Any) -> Tensor:
    """The supervised loss over the training rows of a part's graph
    (BCE-with-logits for a 0/1 label matrix, cross-entropy otherwise)."""
    g = parts.method_graph(part)
    return supervised_loss(out.logits[g.train_mask], g.y[g.train_mask])


def peer_regime(students: nn.ModuleList, graph: Graph, *, online: bool,
                batch_size: int | None = None,
                fanout: Sequence[int] | None = None, seed: int = 0,
                csr: CSR | None = None) -> tuple[Peers, Callable[[], Any]]:
    """The :class:`Peers` regime of ``graph`` and the part the methods are
    prepared on (a function: sampling it draws from the sampler).

    One node-classification graph trains full-graph, or with ``fanout``
    on sampled subgraphs of ``batch_size`` seeds: every node once per
    epoch with an ``online`` method (its losses cover every node), else
    only the training nodes. Graph classification takes shuffled batches
    of ``batch_size`` training graphs (default 32); several graphs of node
    classification batches of whole training graphs (default: enough for
    10 steps an epoch), the methods prepared on the training graphs and
    the validation and test graphs never in a step."""
    device = next(students.parameters()).device
    term = 'bce' if graph.multilabel else 'ce'
    if fanout is not None:
        assert batch_size is not None
        sampled = SampledParts(
            graph, fanout=fanout, batch_size=batch_size, device=device,
            seeds=torch.arange(graph.num_nodes) if online
            else graph.train_mask.nonzero().view(-1), seed=seed, csr=csr)
        return Peers(sampled, students, label_loss=sampled.label_loss,
                     term=term, method_inputs=sampled.method_inputs), \
            sampled.probe
    parts: FullGraph | GraphBatches | GraphParts
    if graph.node_graph is not None:
        parts = GraphParts(graph, label_loss=supervised_loss, loss_name=term,
                           batch_size=batch_size, seed=seed)
        train_ids = parts.train_ids
        probe = partial(cut, graph, train_ids)
    elif graph.batch is not None:
        parts = GraphBatches(graph, batch_size=batch_size or BATCH_SIZE,
                             seed=seed)
        every = torch.ones(graph.num_nodes, dtype=torch.bool,
                           device=graph.x.device)
        probe = partial(GraphPart, graph, every)  # the whole union
    else:
        parts = FullGraph(graph)

        def probe() -> Graph:
            return graph
    return Peers(parts, students, label_loss=partial(_masked_label_loss,
                                                     parts),
                 term=term, whole=isinstance(parts, FullGraph)), probe


def train_peers(models: Sequence[nn.Module], graph: Graph,
                methods: Sequence[DistillMethod] | None, *, epochs: int,
                lr: float, weight_decay: float, weight: float | None = None,
                label_weight: float = 1.0, patience: int | None = None,
                batch_size: int | None = None,
                fanout: Sequence[int] | None = None, seed: int = 0,
                csr: CSR | None = None, progress: bool = True,
                desc: str = 'cotrain', checkpoint: Any = None
                ) -> list[FitResult]:
    """Train ``models`` in turn (student k's step on a part, then student
    k+1's) for ``epochs`` or until every one has run out of ``patience``,
    each with its own method of ``methods`` (None: alone), and leave each
    at its best validation epoch; one FitResult per student. The data and
    its steps are those of :func:`peer_regime`. When a loss stops being
    finite, every student is put back at its best epoch before the
    :class:`TrainingError` (whose ``best_epoch`` and ``val_accuracy`` list
    one value per student)."""
    students = nn.ModuleList(models)
    regime, probe = peer_regime(students, graph, online=bool(methods),
                                batch_size=batch_size, fanout=fanout,
                                seed=seed, csr=csr)
    if methods:
        prepare_peers(regime, methods, probe())
        weight = methods[0].default_weight if weight is None else weight
    result = fit(students, regime,
                 method=nn.ModuleList(methods) if methods else None,
                 epochs=epochs, lr=lr, weight_decay=weight_decay,
                 patience=patience, progress=progress, desc=desc,
                 checkpoint=checkpoint,
                 objective=peer_objective(regime, methods, label_weight,
                                          weight or 0.0))
    return peer_results(result, len(models))


__all__ = ['SampledPart', 'SampledParts', 'peer_regime', 'train_peers']
