"""The sampled-subgraphs regime: node classification of one graph too
large for a full-graph pass, one step per sampled batch of seed nodes
(``distill --batch-size B --fanout 15,10``).

The teachers' outputs on every node are computed once, before training
(layer-wise, :func:`gnncompress.training.sampling.layerwise_inference`), and
every
step reads the rows of its batch. Validation and test run layer-wise over
all nodes in bounded memory. In a process group each rank takes its share
of every batch's seeds (:mod:`gnncompress.training.ranks`)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.errors import GnnCompressError
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy
from gnncompress.methods import DistillMethod, StudentInputs
from gnncompress.models import ModelOutput, run_model
from gnncompress.training import ranks as process_ranks
from gnncompress.training.regimes.scoring import candidate_accuracy
from gnncompress.training.sampling import (
    CSR,
    MEMMAP_BYTES,
    Batch,
    NeighborSampler,
    TensorStore,
    layerwise_inference,
)

HIDDEN_VIEWS = ('seeds', 'nodes')


def hidden_view(method: DistillMethod | None) -> str:
    """Which rows of the hidden features ``method`` sees on a batch: its
    parts' ``batch_hiddens`` (``'seeds'`` by default; ``'nodes'`` for a
    structure over the edges into the seeds), which must agree among the
    parts that read hidden features. Raises a one-line error when they do
    not."""
    if method is None:
        return 'seeds'
    parts = getattr(method, 'parts', [method])
    wants = {p.name: p.batch_hiddens for p in parts
             if 'hiddens' in p.requires}
    kinds = set(wants.values())
    if len(kinds) > 1:
        nodes = ', '.join(n for n, k in wants.items() if k == 'nodes')
        seeds = ', '.join(n for n, k in wants.items() if k == 'seeds')
        raise GnnCompressError(
            f"Method '{method.name}' cannot train on sampled subgraphs: "
            f"{nodes} compares the features of every sampled node, {seeds} "
            f"those of the seeds alone: run them apart (e.g. --method "
            f"{nodes}) or drop --batch-size")
    kind = kinds.pop() if kinds else 'seeds'
    if kind not in HIDDEN_VIEWS:
        raise ValueError(f"batch_hiddens must be one of "
                         f"{', '.join(HIDDEN_VIEWS)} (got {kind!r})")
    return kind


def batch_view(output: ModelOutput, batch: Batch, rows: bool,
               logits: str = 'seeds', trimmed: bool = False) -> ModelOutput:
    """What a method's loss sees of one batch: logits of the seed nodes
    only (their sampled neighbourhood is complete, the other nodes' is
    cut short), hidden features of every sampled node (structure losses
    need both ends of an edge). ``rows``: ``output`` covers the whole graph
    (the teacher's cache), else the batch (the student). ``logits='nodes'``
    keeps the logits of every sampled node too, for a structure loss over
    the logits (the method's ``batch_logits``). ``trimmed``: hidden
    features of the seeds and their sampled neighbours only (the student's
    rows of the last hidden layer in :func:`trimmed_output`, all that
    :func:`batch_graph`'s edges reach)."""
    keep = batch.n_id if logits == 'nodes' else batch.n_id[:batch.batch_size]
    if rows:
        nodes = batch.n_id[:batch.hop_nodes[1]] if trimmed else batch.n_id
        return ModelOutput(logits=output.logits[keep],
                           hiddens=[h[nodes] for h in output.hiddens])
    return ModelOutput(logits=output.logits[:keep.numel()],
                       hiddens=output.hiddens)


def batch_graph(graph: Graph, batch: Batch, x: Tensor,
                labels: str = 'nodes') -> Graph:
    """The batch as a :class:`Graph` whose edges are those into the seeds:
    structure losses compare each seed's sampled neighbourhood.
    ``labels='seeds'`` gives ``y`` and the masks of the seeds alone, the
    rows of :func:`batch_view`'s logits (for losses that use labels)."""
    into_seeds = batch.edge_index[1] < batch.batch_size
    rows = batch.n_id if labels == 'nodes' else batch.n_id[:batch.batch_size]
    return Graph(name=graph.name, x=x,
                 edge_index=batch.edge_index[:, into_seeds],
                 y=graph.y[rows], train_mask=graph.train_mask[rows],
                 val_mask=graph.val_mask[rows],
                 test_mask=graph.test_mask[rows],
                 num_classes=graph.num_classes)


def seed_cross_entropy(logits: Tensor, graph: Graph, batch: Batch) -> Tensor:
    """The label loss of one batch: cross-entropy over its seeds that are
    training nodes (``logits``: the batch's, seeds first; zero, with a
    gradient, when no seed is a training node)."""
    seed_ids = batch.n_id[:batch.batch_size]
    logits = logits[:batch.batch_size]
    train = graph.train_mask[seed_ids].to(logits.device)
    if not bool(train.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[train],
                           graph.y[seed_ids].to(logits.device)[train])


def evaluate(model: nn.Module, graph: Graph, csr: CSR,
             memmap_bytes: int = MEMMAP_BYTES) -> Tensor:
    """The model's logits on every node, layer-wise in bounded memory."""
    store = TensorStore(memmap_bytes)
    try:
        logits = layerwise_inference(model, graph.x, csr, keep_hiddens=False,
                                     store=store).logits
        return logits.clone() if store.files else logits
    finally:
        store.close()


def trimmable(model: nn.Module, hops: int) -> bool:
    """Whether :func:`trimmed_output` applies: a plain stack of
    message-passing layers (no jumping knowledge), one per sampled hop."""
    from torch_geometric.nn.models.basic_gnn import BasicGNN

    return isinstance(model, BasicGNN) and model.jk_mode is None and \
        model.num_layers == hops


def trimmed_output(model: nn.Module, x: Tensor, edge_index: Tensor,
                   batch: Batch) -> ModelOutput:
    """:func:`~gnncompress.models.run_model` on a sampled subgraph, each
    layer computed only where a later layer or the loss reads it: layer
    ``i`` of ``L`` for the nodes within ``L - 1 - i`` hops of the seeds,
    over the edges into them (so the logits of the seeds alone, the last
    hidden layer for the seeds and their sampled neighbours, what
    :func:`batch_graph`'s edges need). The values are those of the whole
    subgraph's (GCN's normalisation included); :func:`trimmable` says
    when it applies."""
    from gnncompress.models import propagation
    from gnncompress.models.build import _norm_and_act

    layers = model.num_layers
    kinds = propagation.plan(model.convs, x, edge_index)
    hiddens: list[Tensor] = []
    for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
        depth = layers - 1 - i
        rows = batch.hop_nodes[depth]
        if kinds is None:
            x = conv(x, edge_index[:, :batch.hop_edges[depth]])[:rows]
        else:
            x = propagation.fast_layer(conv, kinds[i], x, edge_index,
                                       rows=rows,
                                       num_nodes=batch.hop_nodes[-1])
        if i < layers - 1:
            hiddens.append(x)
            x = _norm_and_act(model, norm, x)
            x = model.dropout(x)
    x = model.lin(x) if hasattr(model, 'lin') else x
    return ModelOutput(logits=x, hiddens=hiddens)


def to_device(output: ModelOutput, dev: torch.device) -> ModelOutput:
    return ModelOutput(logits=output.logits.to(dev),
                       hiddens=[h.to(dev) for h in output.hiddens])


# The share of a GPU's free memory that the graph, its CSR and the teacher
# cache may take for the sampler to run there; the rest is for the
# student's training and its full-graph validation pass.
DEVICE_SHARE = 0.5


def fits_on_device(device: torch.device, tensors: Sequence[Tensor],
                   share: float = DEVICE_SHARE) -> bool:
    """Whether ``tensors`` take at most ``share`` of the free memory of
    ``device``, a CUDA device (always False elsewhere: the CPU samples in
    place)."""
    if device.type != 'cuda':
        return False
    free, _ = torch.cuda.mem_get_info(device)
    need = sum(t.numel() * t.element_size() for t in tensors)
    return need <= share * free


def sampled_on(graph: Graph, csr: CSR,
               teacher_outputs: Sequence[ModelOutput],
               device: torch.device) -> torch.device:
    """Where the sampled-subgraphs regime samples: on ``device`` when it is
    a GPU that holds the graph, its CSR and the teacher cache together
    (:func:`fits_on_device`), else on the CPU."""
    tensors = [graph.x, graph.edge_index, graph.y, graph.train_mask,
               graph.val_mask, graph.test_mask, csr.rowptr, csr.col]
    tensors += [t for out in teacher_outputs
                for t in (out.logits, *out.hiddens)]
    return device if fits_on_device(device, tensors) else \
        torch.device('cpu')


class SampledSubgraphs:
    """One epoch visits every node of ``graph`` once as a seed (only the
    training nodes when ``all_nodes`` is false: no method, nothing else to
    learn from) in shuffled batches of ``batch_size``, each with its
    ``fanout`` neighbourhood sampled by a generator seeded with ``seed``.

    A step's forward gives the student's logits of the seeds and the rows
    of its hidden features that the method reads (``hiddens``, see
    :func:`hidden_view`: ``'seeds'``, or ``'nodes'`` for every sampled
    node, which with ``trim`` means the seeds and their sampled
    in-neighbours, all that :func:`trimmed_output` computes of the last
    hidden layer); its label loss is the cross-entropy over the training
    seeds; ``teacher_outputs`` (whole-graph tensors, on the CPU or
    memory-mapped, computed once) are cut to the same rows. On a GPU
    that holds them (:func:`sampled_on`), the graph, its CSR and the
    teacher cache move there once: the sampler draws every batch on the
    GPU and validation is one full-graph pass there. Otherwise ``graph``
    stays on the CPU, batches are sampled there and move to ``device``,
    and validation runs layer-wise.
    ``on_device`` overrides that choice (True also on the CPU, for tests
    of the GPU's path).
    """

    def __init__(self, graph: Graph, csr: CSR,
                 teacher_outputs: Sequence[ModelOutput] = (), *,
                 fanout: Sequence[int], batch_size: int, trim: bool,
                 device: torch.device, all_nodes: bool = True,
                 hiddens: str = 'seeds', seed: int = 0,
                 memmap_bytes: int = MEMMAP_BYTES,
                 on_device: bool | None = None) -> None:
        self.csr = csr
        self.trim, self.hiddens, self.device = trim, hiddens, device
        self.memmap_bytes = memmap_bytes
        self.ranks = process_ranks.current()
        self.batch_size = self.ranks.share(batch_size)
        if on_device is None:
            on_device = sampled_on(graph, csr, teacher_outputs,
                                   device) == device
        self.on_device = on_device
        self.sample_on = device if on_device else torch.device('cpu')
        if on_device:
            graph = graph.to(device)
            teacher_outputs = [to_device(t, device) for t in teacher_outputs]
            csr = CSR(csr.rowptr.to(device), csr.col.to(device),
                      None if csr.weight is None else csr.weight.to(device))
        self.graph, self.teacher_outputs = graph, teacher_outputs
        self.generator = torch.Generator(self.sample_on).manual_seed(
            self.ranks.sampler_seed(seed))
        self.order = torch.Generator().manual_seed(seed)  # same every rank
        self.seed = seed  # the probe's own draws: the same every rank
        self.sampler = NeighborSampler(csr, fanout, self.batch_size,
                                       self.generator)
        self.seeds = torch.arange(graph.num_nodes) if all_nodes else \
            graph.train_mask.nonzero().view(-1).cpu()

    def probe(self, student: nn.Module
              ) -> tuple[Sequence[ModelOutput], ModelOutput, Graph]:
        first = self.sampler.sample(self.seeds[:self.batch_size],
                                    torch.Generator().manual_seed(self.seed))
        return (self.teachers(first), self.forward(student, first),
                self.method_graph(first))

    def steps(self, epoch: int) -> Iterator[Batch]:
        mine, shuffle = self.ranks.epoch_seeds(self.seeds, self.order)
        return self.sampler.batches(mine, shuffle=shuffle)

    def _hidden_rows(self, batch: Batch) -> int | None:
        """How many leading rows of every hidden layer the method sees
        (None: all of them)."""
        if self.hiddens == 'seeds':
            return batch.batch_size
        return batch.hop_nodes[1] if self.trim else None

    def forward(self, student: nn.Module, step: Batch) -> ModelOutput:
        return self._forward(student, step, self._inputs(step))

    def student_inputs(self, student: nn.Module, step: Batch
                       ) -> StudentInputs:
        return StudentInputs(self._inputs(step),
                             lambda x: self._forward(student, step, x))

    def _inputs(self, step: Batch) -> Tensor:
        """The features of the batch's sampled nodes, seeds first."""
        return self.graph.x[step.n_id].to(self.device)

    def _forward(self, student: nn.Module, step: Batch,
                 x: Tensor) -> ModelOutput:
        edge_index = step.edge_index.to(self.device)
        out = trimmed_output(student, x, edge_index, step) if self.trim \
            else run_model(student, x, edge_index)
        rows = self._hidden_rows(step)
        return ModelOutput(logits=out.logits[:step.batch_size],
                           hiddens=out.hiddens if rows is None
                           else [h[:rows] for h in out.hiddens])

    def label_loss(self, out: ModelOutput, step: Batch) -> tuple[str, Tensor]:
        return 'ce', seed_cross_entropy(out.logits, self.graph, step)

    def teachers(self, step: Batch) -> list[ModelOutput]:
        rows = self._hidden_rows(step)
        nodes = step.n_id if rows is None else step.n_id[:rows]
        seeds = step.n_id[:step.batch_size]
        return [ModelOutput(logits=t.logits[seeds].to(self.device),
                            hiddens=[h[nodes].to(self.device)
                                     for h in t.hiddens])
                for t in self.teacher_outputs]

    def method_graph(self, step: Batch) -> Graph:
        if self.hiddens == 'seeds':
            inside = (step.edge_index < step.batch_size).all(0)
            graph = batch_graph(self.graph, step,
                                x=torch.empty(step.batch_size, 0),
                                labels='seeds')
            graph.edge_index = step.edge_index[:, inside]
        else:  # as many rows as the student's logits before the cut
            rows = step.batch_size if self.trim else step.n_id.numel()
            graph = batch_graph(self.graph, step, x=torch.empty(rows, 0))
        return graph.to(self.device)

    def _logits(self, student: nn.Module) -> Tensor:
        if self.on_device:  # the whole graph is here: one pass
            with torch.no_grad():
                return run_model(student, self.graph.x,
                                 self.graph.edge_index).logits
        return evaluate(student, self.graph, self.csr, self.memmap_bytes)

    def validate(self, student: nn.Module) -> float:
        return candidate_accuracy(self._logits(student), self.graph.y,
                                  self.graph.val_mask)

    def test(self, student: nn.Module) -> float:
        return accuracy(self._logits(student), self.graph.y,
                        self.graph.test_mask)

    def state_dict(self) -> dict[str, Any]:
        return {'sampler': self.generator.get_state(),
                'order': self.order.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.generator.set_state(state['sampler'])
        except RuntimeError:
            raise GnnCompressError(
                f'The checkpoint sampled its batches on another device '
                f'than this run ({self.sample_on.type}): resume it with the '
                f'--device it was written with') from None
        self.order.set_state(state['order'])
