from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCN2Conv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.resolver import activation_resolver

from gnncompress.models.output import ModelOutput


class GCNII(nn.Module):
    r"""The deep GCN from the `"Simple and Deep Graph Convolutional Networks"
    <https://arxiv.org/abs/2007.02133>`_ paper: a linear input layer,
    ``num_layers`` :class:`~torch_geometric.nn.conv.GCN2Conv` layers with
    initial residual and identity mapping, and a linear output layer.

    .. math::
        H^{(l+1)} = \sigma\Big(\big((1-\alpha)\hat{P}H^{(l)} + \alpha H^{(0)}
        \big)\big((1-\beta_l) I + \beta_l W^{(l)}\big)\Big),
        \quad \beta_l = \log(\theta / l + 1)

    The normalised adjacency :math:`\hat{P}` is computed once per forward
    and shared by all layers. The state_dict layout (``lins.0``,
    ``convs.N.weight1``, ``lins.1``) is the one of PyG's GCNII example.

    Args:
        in_channels (int): Node feature width.
        hidden_channels (int): Width of every layer.
        num_layers (int): Number of GCN2Conv layers.
        out_channels (int): Number of classes.
        alpha (float, optional): Initial-residual strength :math:`\alpha`.
            (default: :obj:`0.1`, the paper's Cora setting)
        theta (float, optional): Identity-mapping strength :math:`\theta`
            (:math:`\lambda` in the paper). (default: :obj:`0.5`, the
            paper's Cora setting)
        dropout (float, optional): Dropout. (default: :obj:`0.0`)
        act (str, optional): Activation. (default: :obj:`'relu'`)
        shared_weights (bool, optional): One weight for the propagated and
            the initial features, as in the paper. (default: :obj:`True`)
    """

    def __init__(self, in_channels: int, hidden_channels: int,
                 num_layers: int, out_channels: int, alpha: float = 0.1,
                 theta: float = 0.5, dropout: float = 0.0, act: str = 'relu',
                 shared_weights: bool = True) -> None:
        super().__init__()
        self.dropout = dropout
        self.act = activation_resolver(act)
        self.lins = nn.ModuleList([nn.Linear(in_channels, hidden_channels),
                                   nn.Linear(hidden_channels, out_channels)])
        self.convs = nn.ModuleList([
            GCN2Conv(hidden_channels, alpha, theta, layer=i + 1,
                     shared_weights=shared_weights, normalize=False)
            for i in range(num_layers)])

    def forward_output(self, x: Tensor, edge_index: Tensor) -> ModelOutput:
        edge_index, edge_weight = gcn_norm(edge_index, None, x.size(0),
                                           add_self_loops=True)
        x = F.dropout(x, self.dropout, self.training)
        x = x_0 = self.act(self.lins[0](x))
        hiddens = []
        for conv in self.convs:
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, x_0, edge_index, edge_weight)
            hiddens.append(x)
            x = self.act(x)
        x = F.dropout(x, self.dropout, self.training)
        return ModelOutput(logits=self.lins[1](x), hiddens=hiddens)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.forward_output(x, edge_index).logits
