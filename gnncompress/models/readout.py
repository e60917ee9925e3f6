"""Graph classification: a message-passing body, global pooling, a linear
classifier."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import (
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from torch_geometric.nn.models.basic_gnn import BasicGNN

POOLS = {'mean': global_mean_pool, 'sum': global_add_pool,
         'max': global_max_pool}


class GraphClassifier(nn.Module):
    r"""A graph-level model: ``gnn`` (a PyG
    :class:`~torch_geometric.nn.models.BasicGNN` whose ``num_layers`` layers
    all keep the hidden width), then

    .. math::
        z_G = W \, \mathrm{dropout}\big(\mathrm{pool}_{i \in G}\,
        \sigma(h_i^{(L)})\big) + b

    with :math:`\mathrm{pool}` the mean, sum or max over the graph's nodes,
    as in the GIN paper's readout (one linear head on the pooled last
    layer). The state_dict holds ``gnn.*`` (PyG's own layout) and
    ``classifier.*``.

    Args:
        gnn (BasicGNN): The message-passing body (built with
            ``out_channels=None``).
        out_channels (int): Number of graph classes.
        readout (str, optional): :obj:`'mean'`, :obj:`'sum'` or
            :obj:`'max'`. (default: :obj:`'mean'`)
        dropout (float, optional): Dropout before the classifier.
            (default: :obj:`0.0`)
    """

    def __init__(self, gnn: BasicGNN, out_channels: int,
                 readout: str = 'mean', dropout: float = 0.0) -> None:
        super().__init__()
        self.gnn = gnn
        self.readout = readout
        self.dropout = dropout
        self.classifier = nn.Linear(gnn.out_channels, out_channels)

    def head(self, h: Tensor, batch: Tensor | None) -> Tensor:
        """Graph logits ``[B, C]`` from the last layer's node output."""
        h = self.gnn.act(h) if self.gnn.act is not None else h
        pooled = POOLS[self.readout](h, batch)  # [B, hidden]
        pooled = F.dropout(pooled, self.dropout, self.training)
        return self.classifier(pooled)

    def forward(self, x: Tensor, edge_index: Tensor,
                batch: Tensor | None = None) -> Tensor:
        """``batch`` assigns nodes to graphs; ``None`` is one graph."""
        return self.head(self.gnn(x, edge_index), batch)
