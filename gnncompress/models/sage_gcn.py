r"""GraphSAGE with the 'gcn' aggregator (Hamilton et al., 2017, the
"GCN-based" variant; DGL's ``SAGEConv(aggregator_type='gcn')``, the SAGE
teacher of GLNN): one weight on the mean over the node *and* its
in-neighbours,

.. math::
    h_i' = W \, \frac{h_i + \sum_{j \to i,\, j \ne i} h_j}
    {1 + |\{j \to i,\ j \ne i\}|} + b,

where PyG's mean aggregation (``aggr='mean'``) averages the neighbours
alone and adds a second weight on the node itself. Self-loops already in
``edge_index`` are dropped and one is added per node, so a node counts
once whether or not its graph lists it as its own neighbour.

:class:`GcnSAGEConv` is PyG's ``SAGEConv`` without the root weight, run on
the self-looped graph, so its ``state_dict`` is PyG's (``lin_l.weight``,
``lin_l.bias``, no ``lin_r``) and a checkpoint loads into either.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.nn import SAGEConv
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.utils import add_self_loops, remove_self_loops

# The spec's ``aggr`` that selects this layer.
GCN_AGGR = 'gcn'


class GcnSAGEConv(SAGEConv):
    """``SAGEConv`` with the 'gcn' aggregator (module docstring). Takes
    ``SAGEConv``'s options but ``aggr`` and ``root_weight``, which the
    aggregator fixes."""

    def __init__(self, in_channels: int, out_channels: int,
                 **kwargs: Any) -> None:
        kwargs.pop('aggr', None)
        kwargs.pop('root_weight', None)
        super().__init__(in_channels, out_channels, aggr='mean',
                         root_weight=False, **kwargs)

    def forward(self, x: Tensor | tuple[Tensor, Tensor],  # type: ignore[override]
                edge_index: Tensor, size: Any = None) -> Tensor:
        # A bipartite (x_src, x_dst) pair: the destinations are the first
        # rows of the sources (PyG's sampled-subgraph layout).
        nodes = x.size(0) if isinstance(x, Tensor) else x[1].size(0)
        edge_index = self_looped(edge_index, nodes)
        return super().forward(x, edge_index, size)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f"{self.out_channels}, aggr='{GCN_AGGR}')")


def self_looped(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``edge_index`` without its self-loops and with one on each of the
    first ``num_nodes`` nodes."""
    edges, _ = remove_self_loops(edge_index)
    return add_self_loops(edges, num_nodes=num_nodes)[0]


class GcnGraphSAGE(GraphSAGE):
    """PyG's ``GraphSAGE`` (same options, same ``state_dict`` keys but no
    ``lin_r``) whose layers are :class:`GcnSAGEConv`."""

    def init_conv(self, in_channels: int | tuple[int, int],
                  out_channels: int, **kwargs: Any) -> SAGEConv:
        return GcnSAGEConv(in_channels, out_channels, **kwargs)
