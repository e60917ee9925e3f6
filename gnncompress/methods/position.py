r"""Position features for a graph-free student, from the `"Learning MLPs on
Graphs: A Unified View of Effectiveness, Robustness, and Efficiency"
<https://openreview.net/forum?id=Cs3r5KLdoj>`_ paper (NOSMOG; Tian et al.,
ICLR 2023): the MLP student reads :math:`[x_v, p_v]`, its node features
next to a DeepWalk embedding :math:`p_v` of the node's place in the graph
(Perozzi et al., KDD 2014), computed once per run before training.

DeepWalk here is our own vectorised code over the graph's CSR (PyG's
``Node2Vec`` needs torch-cluster or pyg-lib):

* :func:`random_walks`: ``walks_per_node`` uniform walks of ``length``
  steps from every node, all advanced together one step at a time; a node
  without in-edges stays where it is.
* :func:`deepwalk`: skip-gram with negative sampling (word2vec's SGNS).
  Every pair :math:`(u, c)` at most ``window`` steps apart on a walk is a
  positive pair (a pair ``g`` steps apart is kept with probability
  :math:`(w - g + 1) / w`, word2vec's shrunk window), scored against
  ``negatives`` nodes :math:`n` drawn from the walks' node frequencies to
  the power 3/4:

  .. math::
      \ell(u, c) = -\log \sigma(p_u^\top q_c)
      - \sum_{n} \log \sigma(-p_u^\top q_n)

  with :math:`p` the embeddings and :math:`q` the context vectors. The
  gradients are written out and applied with ``index_add_`` in batches of
  pairs (SGD, the learning rate falling linearly to zero as in word2vec;
  a row met several times in a batch moves by the mean of its gradients,
  :func:`sgns_step`), so a batch touches only the rows it uses: Cora's
  embeddings take about 9 s of CPU time on one thread
  (``benchmarks/nosmog_position.py --time-only``), where dense Adam over
  both tables took 172 s.
* The starting rate is word2vec's 0.025 at the defaults' budget of pairs
  per node (5 walks of 50 steps, window 5, one pass: 1,460 expected
  pairs) or more, and grows in inverse proportion to a smaller budget, up
  to 10 times (:func:`rate_for`), so that every row can travel about as
  far. NOSMOG's settings for the Amazon graphs give one walk per node and
  one pass (Photo: 172 pairs per node), and at 0.025 the embeddings
  barely left their start (Photo's mean norm 0.04, a linear probe on them
  near chance; ``benchmarks/deepwalk_probe.py``).
* :func:`positions_for_new_nodes`: a node the training graph did not have
  takes the mean position of its neighbours that it had (zeros without
  any), NOSMOG's rule for its inductive test nodes.

The defaults are NOSMOG's settings for Cora in its public code
(``tran.conf.yaml``: walk length 50, 5 walks per node, window 5, one
epoch, 64 dimensions). Its code trains gensim's skip-gram with
hierarchical softmax; negative sampling ranks the same pairs, and on a
linear probe of the embeddings ours score above gensim's on the same walks
on all five of NOSMOG's graphs but one probe (Computers, 0.56 below;
docs/BENCHMARKS.md, "Position features").
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.models import ModelOutput


def in_neighbours(edge_index: Tensor, num_nodes: int) -> tuple[Tensor,
                                                                Tensor]:
    """``(rowptr, sources)``: the sources of the edges into node ``i`` are
    ``sources[rowptr[i]:rowptr[i + 1]]``."""
    src, dst = edge_index.cpu()
    order = torch.argsort(dst, stable=True)
    counts = torch.bincount(dst, minlength=num_nodes)
    rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return rowptr, src[order]


def random_walks(rowptr: Tensor, sources: Tensor, starts: Tensor,
                 length: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """``[len(starts), length + 1]`` node ids: each row a walk from its
    start that moves at every step to a uniformly drawn source of an edge
    into the current node (a neighbour, on an undirected graph); a node
    without one stays put."""
    degree = rowptr[1:] - rowptr[:-1]
    walks = torch.empty(starts.numel(), length + 1, dtype=torch.long)
    walks[:, 0] = current = starts
    for step in range(1, length + 1):
        d = degree[current]
        offset = (torch.rand(current.shape, generator=generator,
                             dtype=torch.float64) * d).long()
        moved = d > 0
        current = current.clone()
        current[moved] = sources[rowptr[current[moved]] + offset[moved]]
        walks[:, step] = current
    return walks


def skipgram_pairs(walks: Tensor, window: int,
                   generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
    """``(centres, contexts)``: the pairs of nodes ``g <= window`` steps
    apart on a walk, both ways round, each gap kept with probability
    ``(window - g + 1) / window``."""
    centres, contexts = [], []
    for gap in range(1, min(window, walks.size(1) - 1) + 1):
        a, b = walks[:, :-gap].reshape(-1), walks[:, gap:].reshape(-1)
        keep = torch.rand(a.shape, generator=generator) \
            < (window - gap + 1) / window
        centres += [a[keep], b[keep]]
        contexts += [b[keep], a[keep]]
    if not centres:
        return walks.new_empty(0), walks.new_empty(0)
    return torch.cat(centres), torch.cat(contexts)


def deepwalk(edge_index: Tensor, num_nodes: int, dim: int = 64, *,
             walk_length: int = 50, walks_per_node: int = 5,
             window: int = 5, epochs: int = 1, negatives: int = 5,
             lr: float = 0.025, batch_size: int = 1024,
             seed: int = 0) -> Tensor:
    """``[num_nodes, dim]`` float32 DeepWalk embeddings of the graph
    (module docstring), the same for the same ``seed``, computed on one
    thread (:func:`one_thread`). ``lr`` is the starting rate at the
    defaults' budget of pairs per node or more; a smaller budget scales it
    up (:func:`rate_for`)."""
    with one_thread():
        return _deepwalk(edge_index, num_nodes, dim, walk_length,
                         walks_per_node, window, epochs, negatives, lr,
                         batch_size, seed)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside, as many as before after. A
    batch of skip-gram updates is too small to split: on a busy 2-core
    machine, Cora's embeddings took 226 s on 2 threads and 17 s on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _deepwalk(edge_index: Tensor, num_nodes: int, dim: int,
              walk_length: int, walks_per_node: int, window: int,
              epochs: int, negatives: int, lr: float, batch_size: int,
              seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    rowptr, sources = in_neighbours(edge_index, num_nodes)
    starts = torch.arange(num_nodes).repeat(walks_per_node)
    walks = random_walks(rowptr, sources, starts, walk_length, generator)
    table = noise_table(walks, num_nodes)
    embedding = (torch.rand(num_nodes, dim, generator=generator) - 0.5) / dim
    context = torch.zeros(num_nodes, dim)
    rate = lr * rate_for(walk_length, walks_per_node, window, epochs)
    batches = []
    for _ in range(epochs):
        centres, contexts = skipgram_pairs(walks, window, generator)
        order = torch.randperm(centres.numel(), generator=generator)
        # at most one pair per node in a batch, on average: on a small
        # graph, batches of `batch_size` pairs would give each node too
        # few steps (sgns_step averages a row's updates in a batch)
        batches += [(centres[b], contexts[b])
                    for b in order.split(min(batch_size, num_nodes))]
    for i, (c, o) in enumerate(batches):
        drawn = table[torch.randint(table.numel(), (c.numel(), negatives),
                                    generator=generator)]
        sgns_step(embedding, context, c, torch.cat([o[:, None], drawn], 1),
                  rate * max(1e-4, 1.0 - i / len(batches)))
    return embedding


def expected_pairs(walk_length: int, walks_per_node: int, window: int,
                   epochs: int) -> float:
    """The mean number of skip-gram pairs per node (:func:`skipgram_pairs`
    over every walk and pass): both ways round, each gap ``g`` kept with
    probability ``(window - g + 1) / window``."""
    per_walk = sum(2 * (walk_length + 1 - g) * (window - g + 1) / window
                   for g in range(1, min(window, walk_length) + 1))
    return per_walk * walks_per_node * epochs


# The budget at which word2vec's rate is used: the defaults' (NOSMOG's Cora
# settings), and how much larger a smaller budget may make it.
REFERENCE_PAIRS = expected_pairs(50, 5, 5, 1)
MAX_RATE_FACTOR = 10.0


def rate_for(walk_length: int, walks_per_node: int, window: int,
             epochs: int) -> float:
    """How many times word2vec's starting rate the skip-gram takes: 1 at
    :data:`REFERENCE_PAIRS` pairs per node or more, in inverse proportion
    below it, at most :data:`MAX_RATE_FACTOR`. A rate larger than the
    budget calls for does harm: on Cora, 10 times word2vec's lowered a
    linear probe on the embeddings, and 40 times diverged (tried by hand,
    seed 0; not a committed benchmark)."""
    pairs = expected_pairs(walk_length, walks_per_node, window, epochs)
    if pairs <= 0:
        return 1.0
    return min(MAX_RATE_FACTOR, max(1.0, REFERENCE_PAIRS / pairs))


def sgns_step(embedding: Tensor, context: Tensor, centres: Tensor,
              targets: Tensor, rate: float) -> None:
    """One step, in place, on the skip-gram loss of a batch: centre
    ``centres[i]`` against ``targets[i, 0]`` (its context) and
    ``targets[i, 1:]`` (negatives). Every gradient is taken at the values
    before the step, and a row met several times in the batch moves by
    ``rate`` times the mean of its gradients (a sum would let a node
    frequent in the batch jump far: a small graph's embeddings diverged)."""
    e, q = embedding[centres], context[targets]           # [B, d], [B, K, d]
    label = torch.zeros(1, targets.size(1))
    label[0, 0] = 1.0
    score = (q * e[:, None, :]).sum(2)                    # [B, K]
    g = (label - torch.sigmoid(score)) * rate             # -rate * dl/dscore
    flat = targets.reshape(-1)
    context.index_add_(0, flat, (g[:, :, None] * e[:, None, :]).reshape(
        -1, e.size(1)) / _multiplicity(flat)[:, None])
    embedding.index_add_(0, centres, (g[:, :, None] * q).sum(1)
                         / _multiplicity(centres)[:, None])


def _multiplicity(index: Tensor) -> Tensor:
    """How often each entry's value occurs in ``index`` (float)."""
    _, inverse, counts = torch.unique(index, return_inverse=True,
                                      return_counts=True)
    return counts[inverse].float()


def noise_table(walks: Tensor, num_nodes: int,
                size: int = 1_000_000) -> Tensor:
    """About ``size`` node ids, each repeated in proportion to its count in
    the walks to the power 3/4: a uniform draw from the table is a
    negative sample (word2vec's unigram table)."""
    noise = torch.bincount(walks.reshape(-1), minlength=num_nodes
                           ).double().pow(0.75)
    repeats = (noise * (size / noise.sum())).round().long()
    table = torch.repeat_interleave(torch.arange(num_nodes), repeats)
    return table if table.numel() else torch.arange(num_nodes)


def positions_for_new_nodes(known: Tensor, edge_index: Tensor,
                            has_position: Tensor) -> Tensor:
    """Every node's position: its own row of ``known`` where
    ``has_position``, else the mean of the rows of its neighbours (the
    sources of its in-edges) that have one, or zeros without any."""
    src, dst = edge_index
    use = has_position[src] & ~has_position[dst]
    total = torch.zeros_like(known).index_add_(0, dst[use], known[src[use]])
    count = torch.zeros(known.size(0), dtype=known.dtype,
                        device=known.device).index_add_(
        0, dst[use], torch.ones_like(dst[use], dtype=known.dtype))
    mean = total / count.clamp(min=1.0)[:, None]
    return torch.where(has_position[:, None], known, mean)


@register_method('position')
class Position(DistillMethod):
    r"""NOSMOG's position features (module docstring): the student's input
    becomes :math:`[x, P]`, with :math:`P` the ``dim``-wide DeepWalk
    embeddings of the nodes, computed once per run from the training
    graph's edges and the run's seed. It adds no loss: combine it with a
    method that does, e.g. ``glnn+position``. The student must be an MLP,
    trained full-graph on one graph; its ONNX file takes ``position
    [N, dim]`` as a second input (``positions.safetensors`` holds the
    training graph's rows; :func:`positions_for_new_nodes` gives a new
    node's).

    Args:
        dim (int, optional): Embedding width. (default: :obj:`64`)
        walk_length (int, optional): Steps per walk. (default: :obj:`50`)
        walks_per_node (int, optional): Walks from every node.
            (default: :obj:`5`)
        window (int, optional): Largest gap of a skip-gram pair.
            (default: :obj:`5`)
        epochs (int, optional): Passes over the pairs. (default: :obj:`1`)
    """
    paper = 'Tian et al., ICLR 2023 (NOSMOG), arXiv:2208.10010'
    summary = ('MLP input + DeepWalk position features; add to a method, '
               'e.g. glnn+position')
    preferred_student = 'mlp'
    default_weight = 0.0
    default_label_weight = 0.0
    adds_inputs = True

    def __init__(self, dim: int = 64, walk_length: int = 50,
                 walks_per_node: int = 5, window: int = 5,
                 epochs: int = 1) -> None:
        super().__init__()
        for name, value in (('dim', dim), ('walk_length', walk_length),
                            ('walks_per_node', walks_per_node),
                            ('window', window), ('epochs', epochs)):
            if int(value) != value or value < 1:
                raise ValueError(f"'{name}' must be a positive integer "
                                 f'(got {value})')
        self.settings = dict(dim=int(dim), walk_length=int(walk_length),
                             walks_per_node=int(walks_per_node),
                             window=int(window), epochs=int(epochs))

    def student_inputs(self, graph: Graph, seed: int) -> Tensor:
        return deepwalk(graph.edge_index, graph.num_nodes, seed=seed,
                        **self.settings).to(graph.x)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        return student_output.logits.new_zeros(())
