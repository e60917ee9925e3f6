"""A GNN rebuilt from the layer sequence that a checkpoint's weights show.

Users' own model classes name their layers as they like (``conv1``,
``convs.0`` plus ``bns.0``, ``encoder``, ``head``, ...). The recogniser
(:mod:`gnncompress.models.recognise`) describes each layer as JSON-friendly
data; :class:`SequenceGNN` puts every layer back under its own name, so the
user's ``state_dict`` loads unchanged, and runs them in order: input
encoders, message-passing layers and an output head, each followed by its
norms, then the activation, except after the last.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GraphNorm,
    SAGEConv,
)
from torch_geometric.nn.models import MLP
from torch_geometric.nn.resolver import activation_resolver

from gnncompress.core.errors import ArchitectureError
from gnncompress.models.output import ModelOutput
from gnncompress.models.sage_gcn import GCN_AGGR, GcnSAGEConv

CONVS = ('gcn', 'sage', 'gin', 'gat', 'gatv2')
NORMS = ('batch_norm', 'layer_norm', 'graph_norm')
# What ``inspect`` calls each kind of layer.
TITLES = {'gcn': 'GCNConv', 'sage': 'SAGEConv', 'gin': 'GINConv',
          'gat': 'GATConv', 'gatv2': 'GATv2Conv', 'linear': 'Linear',
          'batch_norm': 'BatchNorm1d', 'layer_norm': 'LayerNorm',
          'graph_norm': 'GraphNorm'}


def out_width(layer: dict[str, Any]) -> int:
    """The width a layer hands on (all heads when they are concatenated)."""
    if layer['kind'] in ('gat', 'gatv2') and layer['concat']:
        return layer['out'] * layer['heads']
    return layer['out'] if 'out' in layer else layer['dim']


def describe_layer(layer: dict[str, Any]) -> str:
    """``conv1  GATConv 1433 -> 8 x 8 heads (concat)`` and the like."""
    title = TITLES[layer['kind']]
    if layer['kind'] in NORMS:
        return f"{layer['name']}  {title}({layer['dim']})"
    shape = f"{layer['in']} -> {layer['out']}"
    extras = []
    if layer['kind'] in ('gat', 'gatv2'):
        shape += f" x {layer['heads']} heads"
        if layer['heads'] > 1:
            extras.append('concat' if layer['concat'] else 'mean of heads')
    if layer.get('project'):
        extras.append('project')
    if layer['kind'] == 'sage' and layer.get('aggr') == GCN_AGGR:
        extras.append("aggr 'gcn'")
    elif layer['kind'] == 'sage' and not layer['root_weight']:
        extras.append('no root weight')
    if layer['kind'] == 'gin':
        extras.append(f"MLP {','.join(map(str, layer['mlp']['widths']))}")
    if not layer.get('bias', True):
        extras.append('no bias')
    tail = f" ({', '.join(extras)})" if extras else ''
    return f"{layer['name']}  {title} {shape}{tail}"


def describe_layers(layers: list[dict[str, Any]]) -> list[str]:
    """One line per layer in execution order, norms after their layer."""
    lines = []
    for layer in layers:
        lines.append(describe_layer(layer))
        lines.extend(f'  then {describe_layer(n)}'
                     for n in layer.get('norms', []))
    return lines


def count_titles(layers: list[dict[str, Any]]) -> str:
    """``3 SAGEConv, 2 BatchNorm1d``: each layer type with its count."""
    counts: dict[str, int] = {}
    for layer in layers:
        for one in (layer, *layer.get('norms', [])):
            title = TITLES[one['kind']]
            counts[title] = counts.get(title, 0) + 1
    return ', '.join(f'{n} {title}' for title, n in counts.items())


def _gin_mlp(mlp: dict[str, Any], act: str) -> nn.Module:
    """The MLP inside a GINConv: PyG's ``MLP``, or an ``nn.Sequential``
    whose parameter-free slots (activations, dropout) hold the activation
    once per run of them."""
    if mlp['style'] == 'pyg':
        return MLP(mlp['widths'], act=act, norm=mlp['norm'])
    items: list[nn.Module] = [nn.Identity() for _ in range(mlp['length'])]
    previous_empty = False
    filled = {item['index']: item for item in mlp['items']}
    for index in range(mlp['length']):
        if index in filled:
            items[index] = _plain_layer(filled[index], act)
            previous_empty = False
        elif not previous_empty:
            items[index] = activation_resolver(act)
            previous_empty = True
    return nn.Sequential(*items)


def _plain_layer(layer: dict[str, Any], act: str) -> nn.Module:
    kind = layer['kind']
    if kind == 'linear':
        return nn.Linear(layer['in'], layer['out'], bias=layer['bias'])
    if kind == 'batch_norm':
        # Loads files without num_batches_tracked (older PyTorch) too.
        return nn.BatchNorm1d(layer['dim'], affine=layer['affine'])
    if kind == 'layer_norm':
        return nn.LayerNorm(layer['dim'])
    if kind == 'graph_norm':
        return GraphNorm(layer['dim'])
    if kind == 'gcn':
        return GCNConv(layer['in'], layer['out'], bias=layer['bias'])
    if kind == 'sage' and layer['aggr'] == GCN_AGGR:
        if layer['root_weight'] or layer['project']:
            raise ArchitectureError(
                f"SAGE layer '{layer['name']}' has a "
                f"{'root weight' if layer['root_weight'] else 'projection'}"
                ", which the 'gcn' aggregation has not (one weight on the "
                "mean over the node and its neighbours): leave --aggr gcn "
                'out for this checkpoint')
        return GcnSAGEConv(layer['in'], layer['out'], bias=layer['bias'])
    if kind == 'sage':
        return SAGEConv(layer['in'], layer['out'], aggr=layer['aggr'],
                        root_weight=layer['root_weight'],
                        project=layer['project'], bias=layer['bias'])
    if kind in ('gat', 'gatv2'):
        cls = GATConv if kind == 'gat' else GATv2Conv
        extra = {} if kind == 'gat' else \
            {'share_weights': layer['share_weights']}
        return cls(layer['in'], layer['out'], heads=layer['heads'],
                   concat=layer['concat'], bias=layer['bias'], **extra)
    if kind == 'gin':
        return GINConv(_gin_mlp(layer['mlp'], act))
    raise ValueError(f'unknown layer kind {kind!r}')


class SequenceGNN(nn.Module):
    """Layers under their checkpoint names, run in ``order``.

    Args:
        layers (list[dict]): The recognised layers in execution order; each
            has ``name``, ``kind`` and its widths, and a main layer (a conv
            or a Linear) lists the norms that follow it in ``norms``.
        act (str): The activation after every main layer but the last.
        dropout (float): Dropout after each activation (training only).
    """

    def __init__(self, layers: list[dict[str, Any]], act: str = 'relu',
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.order: list[tuple[str, str, list[str]]] = []
        for layer in layers:
            self._place(layer['name'], _plain_layer(layer, act))
            for norm in layer.get('norms', []):
                self._place(norm['name'], _plain_layer(norm, act))
            self.order.append((layer['name'], layer['kind'],
                               [n['name'] for n in layer.get('norms', [])]))
        self.act = activation_resolver(act)
        self.dropout = dropout

    def _place(self, name: str, module: nn.Module) -> None:
        """Register ``module`` at the dotted ``name``, making plain
        containers for the parents it needs."""
        *parents, leaf = name.split('.')
        owner: nn.Module = self
        for part in parents:
            child = owner._modules.get(part)
            if child is None:
                child = nn.Module()
                owner.add_module(part, child)
            owner = child
        owner.add_module(leaf, module)

    def forward_output(self, x: Tensor, edge_index: Tensor) -> ModelOutput:
        """The logits and the pre-norm output of every message-passing
        layer that is not the last layer."""
        hiddens: list[Tensor] = []
        last = len(self.order) - 1
        for i, (name, kind, norms) in enumerate(self.order):
            module = self.get_submodule(name)
            x = module(x, edge_index) if kind in CONVS else module(x)
            if kind in CONVS and i < last:
                hiddens.append(x)
            for norm in norms:
                x = self.get_submodule(norm)(x)
            if i == last:
                break
            x = self.act(x)
            x = torch.nn.functional.dropout(x, p=self.dropout,
                                            training=self.training)
        return ModelOutput(logits=x, hiddens=hiddens)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.forward_output(x, edge_index).logits
