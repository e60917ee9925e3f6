from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from gnncompress.core.errors import ArchitectureError
from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.methods.lsp import (
    LSP,
    StructureKL,
    structure_kl,
    symmetric_applies,
    symmetric_structure,
)
from gnncompress.models import ModelOutput, edge_ops
from gnncompress.models.edge_ops import EdgePattern


@register_method('alignahead')
class Alignahead(DistillMethod):
    r"""Online cross-layer structure alignment from the `"Alignahead: Online
    Cross-Layer Knowledge Extraction on Graph Neural Networks"
    <https://arxiv.org/abs/2205.02468>`_ paper (Guo et al., IJCNN 2022).

    No teacher: :math:`M` students of one architecture train alternately and
    receive their peers as "teachers". With :math:`l^{(i)}` the LSP local
    structure (:class:`~gnncompress.methods.lsp.LSP`) of layer :math:`i`
    out of :math:`L`, student :math:`k` minimises

    .. math::
        \mathcal{L}_k = \frac{1}{M-1} \sum_{m \ne k} \sum_{i=1}^{L}
        \mathrm{KL}\big(l_m^{(\pi(i))} \,\|\, l_k^{(i)}\big), \qquad
        \pi(i) = i + 1 \text{ for } i < L, \quad \pi(L) = 1

    (layer :math:`i` learns the peer's next layer, the last layer the
    peer's first), weighted by :math:`\alpha` (the method weight, default
    1 as in the paper) beside the cross-entropy. The layers are all
    message-passing layers' pre-activation outputs: the hidden layers and
    the logits for node classification, every layer's node output (before
    pooling) for graph classification. The KL of one layer pair is LSP's
    per-node sum over incoming edges, averaged over the nodes that have
    edges; peers' structures carry no gradient. A peer's output stays fixed
    until the peer's next step while the other :math:`M - 1` students read
    it, so its structures are computed once and shared (:class:`_Peers`).
    On an undirected graph with the L2 or RBF kernel each own layer's KL
    to all its peers is one :class:`~gnncompress.methods.lsp.StructureKL`
    (structures in CSR order, gradient in closed form).

    On a sampled subgraph (``cotrain --batch-size``) the structures are
    those of each seed's sampled in-edges; the logits layer then needs the
    logits of the seeds' sampled neighbours as well (``batch_logits``),
    computed on the same subgraph, whose last hop those neighbours lack:
    student and peers share that cut.

    Args:
        kernel (str, optional): LSP kernel. (default: :obj:`'l2'`, i.e.
            :math:`-\|h_i - h_j\|^2`: the paper uses a Euclidean kernel
            outside PPI; :obj:`'rbf'` is its PPI choice)
        sigma (float, optional): RBF width. (default: :obj:`1.0`)
        cyclic (bool, optional): Cross-layer pairing as above;
            :obj:`False` pairs same-depth layers, :math:`\pi(i) = i` (the
            paper's "OC" ablation, ``cotrain --method oc``).
            (default: :obj:`True`)
    """
    requires = frozenset({'logits', 'hiddens'})
    default_weight = 1.0
    batch_logits = 'nodes'
    paper = 'Guo et al., IJCNN 2022, arXiv:2205.02468'
    summary = 'online: each layer learns the peers\' next-layer local ' \
        'structure (cotrain)'

    def __init__(self, kernel: str = 'l2', sigma: float = 1.0,
                 cyclic: bool = True) -> None:
        super().__init__()
        self.structure = LSP(kernel=kernel, sigma=sigma)
        self.cyclic = cyclic

    def pairs(self, num_layers: int) -> list[tuple[int, int]]:
        """(own layer, peer layer) index pairs."""
        return [(i, (i + 1) % num_layers if self.cyclic else i)
                for i in range(num_layers)]

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        edge_index = graph.edge_index
        own = aligned_layers(student_output, graph)
        num_nodes = own[0].size(0)
        peers = [self._layers_of(peer, graph, len(own))
                 for peer in teacher_outputs]
        pattern = edge_ops.edge_pattern(edge_index, num_nodes)
        total = own[0].new_zeros(())
        if symmetric_applies(self.structure, pattern):
            # Each own layer's structure once, against all its peers.
            for i, j in self.pairs(len(own)):
                log_peers = torch.stack([
                    _PEERS.structure(self.structure, theirs[j], edge_index,
                                     pattern) for theirs in peers])
                total = total + StructureKL.apply(own[i], log_peers,
                                                  self.structure, pattern)
            return total / len(teacher_outputs)
        log_own = [self.structure.local_structure(h, edge_index)
                   for h in own]
        for theirs in peers:
            log_peer = [_PEERS.structure(self.structure, h, edge_index)
                        for h in theirs]
            for i, j in self.pairs(len(own)):
                total = total + structure_kl(log_own[i], log_peer[j],
                                             edge_index[1], num_nodes,
                                             direction='ts')
        return total / len(teacher_outputs)

    @staticmethod
    def _layers_of(peer: ModelOutput, graph: Graph,
                   depth: int) -> list[Tensor]:
        theirs = aligned_layers(peer, graph)
        if len(theirs) != depth:
            raise ArchitectureError(
                f'Alignahead pairs layers of models of one depth (got '
                f'{len(theirs)} and {depth} layers): give the student '
                f'as many layers as its peers')
        return theirs


def aligned_layers(out: ModelOutput, graph: Graph) -> list[Tensor]:
    """Every layer's node output: the hidden layers, plus the logits when
    they are per node (node classification)."""
    if graph.batch is not None:
        return list(out.hiddens)
    return [*out.hiddens, out.logits]


class _Peers:
    """Peers' log local structures, shared by every student's Alignahead
    instance and found again by the identity of the peer's layer tensor
    (and of the edges), checked through weak references: with M students
    each peer output is read by M - 1 of them between two of its steps.
    An entry goes with its peer tensor (when the peer steps), and no more
    than :attr:`KEEP` are kept."""

    KEEP = 32

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()

    def structure(self, lsp: LSP, h: Tensor, edge_index: Tensor,
                  pattern: EdgePattern | None = None) -> Tensor:
        """The log local structure of ``h``: in edge order, or in the
        symmetric path's order when given the ``pattern``."""
        key = (id(h), id(edge_index), pattern is None, lsp.kernel,
               lsp.sigma, lsp.degree, lsp.coef, lsp.paper_l2_sign)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is h and hit[1]() is edge_index \
                and hit[2] == (h._version, edge_index._version):
            self._entries.move_to_end(key)
            return hit[3]
        with torch.no_grad():
            value = lsp.local_structure(h.detach(), edge_index) \
                if pattern is None else \
                symmetric_structure(lsp, h.detach(), pattern)[0]
        self._entries[key] = (weakref.ref(h), weakref.ref(edge_index),
                              (h._version, edge_index._version), value)
        # Dropped with the peer's tensor, so nothing outlives a run.
        weakref.finalize(h, self._entries.pop, key, None)
        while len(self._entries) > self.KEEP:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


_PEERS = _Peers()
