"""Topological attribution maps and the amalgamation loss (TAM)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import MessagePassing

from gnncompress.core.errors import ArchitectureError, DataError
from gnncompress.methods.lsp import LSP
from gnncompress.models import ModelOutput, run_model
from gnncompress.models.propagation import EdgeProbe

SOFT_LOSSES = ('mse', 'bce')
TOPOLOGIES = ('tam', 'lsp', 'none')
EPS = 1e-5


@dataclass
class TeacherTask:
    """What one frozen teacher gives its task, computed once."""
    output: ModelOutput        # logits [N, C_task] and hiddens
    # [N] the teacher's predicted class; multi-label: [N, C_task] 0/1, the
    # labels it predicts (logit > 0)
    target: Tensor
    attribution: Tensor | None  # [E] normalised map (topology 'tam')

    @property
    def multilabel(self) -> bool:
        return self.target.dim() == 2


def predicted(logits: Tensor, multilabel: bool) -> Tensor:
    """A teacher's prediction: its class (argmax), or for multi-label
    targets the 0/1 matrix of the labels whose logit is above 0 (sigmoid
    above 0.5)."""
    return (logits > 0).to(logits.dtype) if multilabel else logits.argmax(-1)


@contextlib.contextmanager
def unit_edge_weights(model: nn.Module, edge_index: Tensor,
                      x: Tensor | None = None,
                      ) -> Iterator[Tensor | EdgeProbe]:
    """A weight of 1 per edge, with gradient, multiplied into that edge's
    message in every message-passing layer of ``model``: an
    :class:`EdgeProbe` when the model's layers run as sparse products on
    ``x`` (given), else PyG's explain masks, without their sigmoid.
    Self-loops that a layer adds itself (GCN, GAT) get a constant 1."""
    check_edges(model, edge_index)
    if x is not None and EdgeProbe.supports(model, x, edge_index):
        probe = EdgeProbe(edge_index, x.size(0))
        with probe.running():
            yield probe
        return
    weight = torch.ones(edge_index.size(1), device=edge_index.device,
                        requires_grad=True)
    set_masks(model, weight, edge_index, apply_sigmoid=False)
    try:
        yield weight
    finally:
        clear_masks(model)


def check_messages(model: nn.Module) -> None:
    """Raise unless ``model`` passes messages (else it has no map)."""
    if not any(isinstance(m, MessagePassing) for m in model.modules()):
        raise ArchitectureError(
            f'{type(model).__name__} passes no messages, so it has no '
            f'topological attribution map: use --topology none or lsp')


def check_edges(model: nn.Module, edge_index: Tensor) -> None:
    check_messages(model)
    loops = int((edge_index[0] == edge_index[1]).sum())
    if loops and loops >= int(edge_index.max()) + 1:
        # PyG matches its mask to GCN's/GAT's re-added self-loops by count;
        # with a loop on every node the counts agree and the order does not.
        raise DataError('The graph has a self-loop on every node, which '
                        'attribution maps cannot align: remove self-loops '
                        'from the data')


def attribution(logits: Tensor, weight: Tensor | EdgeProbe, target: Tensor,
                create_graph: bool) -> Tensor:
    """``d (sum_i logits[i, target_i]) / d weight``, one value per edge;
    for a multi-label ``target`` (0/1 matrix), ``d (sum_i sum_{c:
    target_ic = 1} logits[i, c]) / d weight``. ``weight``: the unit edge
    weights the model ran with, as explain masks or an :class:`EdgeProbe`."""
    if target.dim() == 2:
        score = (logits * target).sum()
    else:
        score = logits.gather(1, target.view(-1, 1)).sum()
    if isinstance(weight, EdgeProbe):
        return weight.attribution(score, create_graph)
    (grad,) = torch.autograd.grad(score, weight, create_graph=create_graph,
                                  retain_graph=True, allow_unused=True)
    if grad is None:  # no message reached the scores
        return weight.new_zeros(weight.shape)
    return grad


def normalise_per_node(values: Tensor, dst: Tensor, num_nodes: int,
                       eps: float = EPS) -> Tensor:
    """``(F - mean_i) / sqrt(var_i + eps)`` over each destination node's
    incoming edges (population variance). Nodes without incoming edges own
    no value, so nothing is divided by zero."""
    ones = torch.ones_like(values)
    count = values.new_zeros(num_nodes).index_add(0, dst, ones).clamp(min=1)
    mean = values.new_zeros(num_nodes).index_add(0, dst, values) / count
    centred = values - mean[dst]
    var = values.new_zeros(num_nodes).index_add(0, dst, centred ** 2) / count
    return centred / torch.sqrt(var[dst] + eps)


def edges_into(edge_index: Tensor, num_nodes: int) -> Tensor | None:
    """Which edges end at one of the first ``num_nodes`` nodes (the seeds
    of a sampled subgraph), or None when every edge does."""
    keep = edge_index[1] < num_nodes
    return None if bool(keep.all()) else keep


class TAM(nn.Module):
    r"""The amalgamation loss from the `"Amalgamating Knowledge from
    Heterogeneous Graph Neural Networks"
    <https://openaccess.thecvf.com/content/CVPR2021/html/Jing_Amalgamating_Knowledge_From_Heterogeneous_Graph_Neural_Networks_CVPR_2021_paper.html>`_
    paper (Jing et al., CVPR 2021).

    Every edge :math:`e` gets a weight :math:`w_e = 1` multiplied into its
    message in every layer; the topological attribution map of a model on
    task :math:`k` is

    .. math::
        F = \frac{\partial}{\partial w} \sum_i z_{i, \hat{y}_i},\qquad
        \tilde{F}_{ji} = \frac{F_{ji} - \mu_i}{\sqrt{\sigma_i^2 + 10^{-5}}}

    with :math:`\hat{y}_i` the teacher's predicted class and
    :math:`\mu_i, \sigma_i^2` taken over node :math:`i`'s incoming edges.
    For a multi-label teacher (independent sigmoids, no single class) the
    score of node :math:`i` is :math:`\sum_{c \in P_i} z_{i,c}`, with
    :math:`P_i` the labels the teacher predicts positive (logit above 0):
    as the predicted class's logit in the single-label case, it is the
    evidence for what the teacher asserts about the node, so the map says
    which edges carry that evidence; a node with no predicted label adds
    nothing (its negative labels are asserted by absence, and summing
    their logits would mostly measure the many labels a node lacks).
    Per task,

    .. math::
        \mathcal{L} = \mathcal{L}_{soft}(z^s, z^t) + \lambda\,
        \mathrm{MSE}(\tilde{F}^s, \tilde{F}^t)

    The teacher's map is computed once; the student's with
    ``create_graph=True``, since otherwise it is a constant and the topology
    term trains nothing. No ground-truth label enters the loss. On a
    sampled subgraph (mini-batch training) the sum runs over the batch's
    seed nodes and both maps cover the edges into them; the teacher's map
    depends on the subgraph, so it is computed per batch
    (:meth:`teacher_map`).

    Args:
        weight (float, optional): :math:`\lambda`. (default: :obj:`0.1`,
            the authors' code; :obj:`100` for :obj:`topology='lsp'`, LSP's
            paper value)
        soft (str, optional): :obj:`'mse'` between logits (the paper) or
            :obj:`'bce'` of the student's logits to the teacher's one-hot
            predictions (the authors' code; multi-label: to the 0/1
            matrix of the teacher's logits above 0). (default:
            :obj:`'mse'`)
        topology (str, optional): :obj:`'tam'`, :obj:`'lsp'` (LSP between
            the last hidden layers, the paper's "MTL+LSP" baseline) or
            :obj:`'none'`. (default: :obj:`'tam'`)
    """

    def __init__(self, weight: float | None = None, soft: str = 'mse',
                 topology: str = 'tam') -> None:
        super().__init__()
        if soft not in SOFT_LOSSES:
            raise ValueError(f"'soft' must be one of {', '.join(SOFT_LOSSES)}"
                             f" (got '{soft}')")
        if topology not in TOPOLOGIES:
            raise ValueError(f"'topology' must be one of "
                             f"{', '.join(TOPOLOGIES)} (got '{topology}')")
        if weight is None:
            weight = LSP.paper_weight if topology == 'lsp' else 0.1
        if weight < 0:
            raise ValueError(f"'lambda' must not be negative (got {weight})")
        self.weight, self.soft, self.topology = weight, soft, topology
        self._lsp: dict[int, LSP] = {}

    @property
    def uses_maps(self) -> bool:
        """Whether the student needs unit edge weights (a double
        backward)."""
        return self.topology == 'tam' and self.weight > 0

    @property
    def uses_lsp(self) -> bool:
        return self.topology == 'lsp' and self.weight > 0

    @property
    def requires(self) -> frozenset[str]:
        """What the loss reads of a teacher's output, as a method's
        ``requires`` says it (the teacher cache of mini-batch training
        keeps hidden features only for LSP)."""
        return frozenset({'logits', 'hiddens'} if self.uses_lsp
                         else {'logits'})

    @torch.no_grad()
    def _forward(self, teacher: nn.Module, x: Tensor,
                 edge_index: Tensor) -> ModelOutput:
        return run_model(teacher, x, edge_index).detach()

    def prepare(self, teacher: nn.Module, x: Tensor, edge_index: Tensor,
                columns: slice = slice(None),
                multilabel: bool = False) -> TeacherTask:
        """The frozen teacher's logits (cut to ``columns``), its predicted
        classes (:func:`predicted`) and, for TAM, its normalised map,
        computed once."""
        teacher.eval()
        out = self._forward(teacher, x, edge_index)
        out = ModelOutput(out.logits[:, columns], out.hiddens)
        target = predicted(out.logits, multilabel)
        attribution_map = None
        if self.uses_maps:
            attribution_map = self.teacher_map(teacher, x, edge_index,
                                               target, columns)
        return TeacherTask(out, target, attribution_map)

    def teacher_map(self, teacher: nn.Module, x: Tensor, edge_index: Tensor,
                    target: Tensor,
                    columns: slice = slice(None)) -> Tensor:
        """The frozen teacher's normalised map on the graph ``(x,
        edge_index)``: the gradient of the scores of the first
        ``target.numel()`` nodes (all of them, or the seeds of a sampled
        subgraph, which come first) at their ``target`` classes, on the
        edges into those nodes (:func:`edges_into`)."""
        scored = target.numel()
        with torch.enable_grad(), \
                unit_edge_weights(teacher, edge_index, x) as weight:
            logits = run_model(teacher, x, edge_index).logits[:scored,
                                                              columns]
            raw = attribution(logits, weight, target, create_graph=False)
        keep = edges_into(edge_index, scored)
        if keep is not None:
            raw, edge_index = raw[keep], edge_index[:, keep]
        return normalise_per_node(raw, edge_index[1], scored).detach()

    def soft_loss(self, logits: Tensor, task: TeacherTask) -> Tensor:
        if self.soft == 'mse':
            return F.mse_loss(logits, task.output.logits)
        hard = task.target.to(logits.dtype) if task.multilabel else \
            F.one_hot(task.target, logits.size(1)).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, hard)

    def loss(self, student_output: ModelOutput, task: TeacherTask,
             edge_index: Tensor,
             edge_weight: Tensor | EdgeProbe | None = None,
             columns: slice = slice(None), key: int = 0,
             ) -> dict[str, Tensor]:
        """The terms for one task: ``soft`` and, unless switched off,
        ``topology``. ``edge_weight`` is the unit weight the student ran
        with on ``edge_index`` (needed for ``'tam'``); ``key`` names the
        task for LSP's per-teacher cache.

        The rows of ``student_output.logits`` (and of the task's) are the
        nodes scored: every node of the graph, or the seeds of a sampled
        subgraph, which come first
        (:func:`gnncompress.workflows.distill_sampled.
        batch_view`); the topology term compares the edges into them, so
        on a whole graph every edge."""
        logits = student_output.logits[:, columns]
        terms = {'soft': self.soft_loss(logits, task)}
        if not (self.uses_maps or self.uses_lsp):
            return terms
        keep = edges_into(edge_index, logits.size(0))
        into = edge_index if keep is None else edge_index[:, keep]
        if self.uses_maps:
            if edge_weight is None:
                raise ValueError('TAM needs the unit edge weights the '
                                 'student ran with')
            raw = attribution(logits, edge_weight, task.target,
                              create_graph=True)
            if keep is not None:
                raw = raw[keep]
            student_map = normalise_per_node(raw, into[1], logits.size(0))
            terms['topology'] = F.mse_loss(student_map, task.attribution)
        else:
            lsp = self._lsp.get(key)
            graph = _EdgesOnly(into)
            if lsp is None:
                lsp = self._lsp[key] = LSP()
                lsp.prepare([task.output], student_output, graph)
            terms['topology'] = lsp.loss([task.output], student_output, graph)
        return terms

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        loss = terms['soft']
        if 'topology' in terms:
            loss = loss + self.weight * terms['topology']
        return loss


@dataclass
class _EdgesOnly:
    """The part of a Graph that LSP reads."""
    edge_index: Tensor
