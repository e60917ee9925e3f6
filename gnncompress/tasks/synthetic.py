"""A synthetic stand-in for PPI: several graphs, many binary labels per node,
an inductive split of whole graphs.

PPI (Zitnik & Leskovec, 2017; the PPI setting of GraphSAGE and GAT) cannot
be downloaded on machines without network access, so tests and benchmarks
use graphs drawn from one fixed random "world":

- communities overlap: every node belongs to one community and, with
  probability ``overlap``, to a second one;
- edges follow a degree-corrected block model: each node has a log-normal
  degree propensity; an edge starts at a node drawn by propensity and ends,
  with probability ``homophily``, at a node of one of its communities (else
  anywhere), drawn by propensity again;
- features are a noisy function of the communities: the mean of the node's
  community prototypes plus Gaussian noise (``noise``);
- labels depend on communities *and* on the neighbours: a first draw of
  every label from the node's communities (each label is tied to 15% of
  them), then the final label adds the mean first-draw label of the node's
  neighbours, so a model that ignores edges cannot recover it.

The world (prototypes, label rules) is drawn once from ``seed``; every graph
then draws its own nodes and edges from it, so labels mean the same in
training and test graphs, as in PPI.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

# PPI: 24 graphs (20/2/2), 2,373 nodes on average (we default to 2,000), 14.4
# directed edges per node, 50 features, 121 labels (we default to 100).
SPLITS = {'train': 20, 'val': 2, 'test': 2}


def synthetic_ppi(num_graphs: tuple[int, int, int] = (20, 2, 2),
                  num_nodes: int = 2000, degree: float = 14.0,
                  num_features: int = 50, num_labels: int = 100,
                  num_communities: int = 40, overlap: float = 0.3,
                  homophily: float = 0.8, noise: float = 1.5,
                  neighbour_weight: float = 3.0, seed: int = 0,
                  ) -> dict[str, list[Data]]:
    """Graphs of the synthetic PPI benchmark as ``{'train': [...], 'val':
    [...], 'test': [...]}`` lists of ``Data(x, edge_index, y)`` with ``y`` a
    float 0/1 matrix ``[nodes, num_labels]``.

    Args:
        num_graphs: training, validation and test graphs (PPI: 20/2/2).
        num_nodes: nodes per graph (PPI: 2,373 on average).
        degree: directed edges per node, both directions counted (PPI: 14.4).
        num_features: node features (PPI: 50).
        num_labels: binary labels per node (PPI: 121).
        num_communities: communities of the block model.
        overlap: chance that a node belongs to a second community.
        homophily: chance that an edge stays inside a community.
        noise: standard deviation of the feature noise (prototypes have unit
            variance).
        neighbour_weight: how much the neighbours' first-draw labels move a
            node's label logit.
        seed: fixes the world and every graph.
    """
    if min(num_graphs) < 0 or num_graphs[0] < 1:
        raise ValueError('need at least one training graph')
    if num_nodes < 2 or num_communities < 1 or num_labels < 1:
        raise ValueError('need at least 2 nodes, 1 community and 1 label')
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_communities, num_features, generator=gen)
    # Each label is switched on by 15% of the communities (six of the
    # default 40, weight 3) and its bias puts about a fifth of the nodes in
    # it.
    per_label = max(1, round(0.15 * num_communities))
    rule = torch.zeros(num_communities, num_labels)
    for label in range(num_labels):
        picks = torch.randperm(num_communities, generator=gen)[:per_label]
        rule[picks, label] = 3.0
    bias = -1.0 - torch.rand(num_labels, generator=gen)
    world = (prototypes, rule, bias)
    out: dict[str, list[Data]] = {}
    for name, count in zip(SPLITS, num_graphs):
        out[name] = [_one_graph(world, num_nodes, degree, overlap, homophily,
                                noise, neighbour_weight, gen)
                     for _ in range(count)]
    return out


def _one_graph(world: tuple[Tensor, Tensor, Tensor], n: int, degree: float,
               overlap: float, homophily: float, noise: float,
               neighbour_weight: float, gen: torch.Generator) -> Data:
    prototypes, rule, bias = world
    k = prototypes.size(0)
    first = torch.randint(k, (n,), generator=gen)
    second = torch.randint(k, (n,), generator=gen)
    has_second = torch.rand(n, generator=gen) < overlap
    member = torch.zeros(n, k)
    member[torch.arange(n), first] = 1.0
    member[has_second.nonzero().view(-1), second[has_second]] = 1.0
    theta = torch.exp(0.5 * torch.randn(n, generator=gen))

    edge_index = _block_model_edges(member, theta, 0.55 * n * degree, homophily,
                                    gen)
    share = member / member.sum(1, keepdim=True)
    x = share @ prototypes + noise * torch.randn(
        n, prototypes.size(1), generator=gen)

    base = member @ rule + bias
    first_draw = (base + torch.randn(base.shape, generator=gen) > 0).float()
    src, dst = edge_index
    in_deg = torch.zeros(n).index_add_(0, dst, torch.ones(dst.numel()))
    neigh = torch.zeros_like(first_draw).index_add_(0, dst, first_draw[src])
    neigh = neigh / in_deg.clamp_min(1).unsqueeze(1)
    logit = base + neighbour_weight * (neigh - 0.2) + \
        0.5 * torch.randn(base.shape, generator=gen)
    y = (logit > 0).float()
    return Data(x=x, edge_index=edge_index, y=y)


def _block_model_edges(member: Tensor, theta: Tensor, undirected: float,
                       homophily: float, gen: torch.Generator) -> Tensor:
    """About ``undirected`` edges of a degree-corrected block model, both
    directions stored, no self-loops or duplicates."""
    n, k = member.shape
    m = max(1, math.ceil(undirected))
    src = torch.multinomial(theta, m, replacement=True, generator=gen)
    dst = torch.multinomial(theta, m, replacement=True, generator=gen)
    inside = torch.rand(m, generator=gen) < homophily
    # One community of each source, chosen uniformly among its memberships.
    weights = member[src[inside]]
    comm = torch.multinomial(weights, 1, generator=gen).view(-1)
    targets = dst[inside]
    for c in comm.unique().tolist():
        rows = (comm == c).nonzero().view(-1)
        pool = theta * member[:, c]
        targets[rows] = torch.multinomial(pool, rows.numel(),
                                          replacement=True, generator=gen)
    dst[inside] = targets
    edge_index, _ = remove_self_loops(torch.stack([src, dst]))
    return coalesce(to_undirected(edge_index, num_nodes=n), num_nodes=n)
