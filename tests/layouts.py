"""Teacher checkpoints as plain PyTorch Geometric scripts write them.

Each layout is a small model class written the way PyG's examples and
users' own code write them (attribute names, norms in lists of their own,
encoders and heads, training wrappers), trained a few epochs on a tiny
graph and saved the way its users save it. ``LAYOUTS`` maps a name to
``(build, save, sequence)``: ``build(in, out)`` the module, ``save(model,
path)`` the file, ``sequence`` what ``inspect`` must list, one entry per
layer in execution order.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GraphNorm,
    SAGEConv,
)
from torch_geometric.nn.models import GCN, MLP, GraphSAGE

HIDDEN = 16


class ExampleGCN(nn.Module):
    """PyG's examples/gcn.py: two conv attributes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_channels, HIDDEN)
        self.conv2 = GCNConv(HIDDEN, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index)


class ExampleGAT(nn.Module):
    """PyG's examples/gat.py: 8 heads concatenated, then one averaged head;
    ELU between them."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GATConv(in_channels, 8, heads=8, dropout=0.6)
        self.conv2 = GATConv(8 * 8, out_channels, heads=1, concat=False,
                             dropout=0.6)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.dropout(x, p=0.6, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, p=0.6, training=self.training)
        return self.conv2(x, edge_index)


class GatList(nn.Module):
    """GAT layers in a list, as BasicGNN names them, but 4 heads without a
    bias (concat shows only in the next layer's width), then 2 averaged."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            GATConv(in_channels, 8, heads=4, bias=False),
            GATConv(4 * 8, out_channels, heads=2, concat=False)])

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.convs[0](x, edge_index))
        return self.convs[1](x, edge_index)


class OgbSage(nn.Module):
    """The OGB examples: ``convs`` and a separate ``bns`` list."""

    def __init__(self, in_channels: int, out_channels: int,
                 layers: int = 3) -> None:
        super().__init__()
        widths = [in_channels] + [HIDDEN] * (layers - 1) + [out_channels]
        self.convs = nn.ModuleList(SAGEConv(a, b) for a, b in
                                   zip(widths, widths[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(HIDDEN)
                                 for _ in range(layers - 1))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for conv, bn in zip(self.convs[:-1], self.bns):
            x = F.relu(bn(conv(x, edge_index)))
            x = F.dropout(x, p=0.5, training=self.training)
        return self.convs[-1](x, edge_index)


class EncoderHead(nn.Module):
    """A Linear encoder, GCN layers, a Linear head."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(in_channels, 2 * HIDDEN)
        self.convs = nn.ModuleList([GCNConv(2 * HIDDEN, HIDDEN),
                                    GCNConv(HIDDEN, HIDDEN)])
        self.head = nn.Linear(HIDDEN, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.encoder(x))
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))
        return self.head(x)


class SequentialGIN(nn.Module):
    """GIN layers around ``nn.Sequential`` MLPs, a Linear head."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GINConv(nn.Sequential(
            nn.Linear(in_channels, HIDDEN), nn.BatchNorm1d(HIDDEN),
            nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()))
        self.conv2 = GINConv(nn.Sequential(
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(HIDDEN, HIDDEN)), train_eps=True)
        self.lin = nn.Linear(HIDDEN, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.conv1(x, edge_index))
        x = F.relu(self.conv2(x, edge_index))
        return self.lin(x)


class NormedGATv2(nn.Module):
    """GATv2 with 4 heads and a LayerNorm, then one averaged head."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GATv2Conv(in_channels, 4, heads=4)
        self.norm1 = nn.LayerNorm(4 * 4)
        self.conv2 = GATv2Conv(4 * 4, out_channels, heads=1, concat=False)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x, edge_index)))
        return self.conv2(x, edge_index)


class GraphNormGCN(nn.Module):
    """GCN layers with a GraphNorm in between."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_channels, HIDDEN)
        self.norm = GraphNorm(HIDDEN)
        self.conv2 = GCNConv(HIDDEN, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv1(x, edge_index)))
        return self.conv2(x, edge_index)


class SageNoRoot(nn.Module):
    """SAGE layers without the root weight (neighbours only)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = SAGEConv(in_channels, HIDDEN, root_weight=False)
        self.conv2 = SAGEConv(HIDDEN, out_channels, root_weight=False)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.conv1(x, edge_index))
        return self.conv2(x, edge_index)


class PygMlpGIN(nn.Module):
    """GIN layers around PyG's own ``MLP`` (batch norm inside), as PyG's
    GIN examples build them."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            GINConv(MLP([in_channels, HIDDEN, HIDDEN])),
            GINConv(MLP([HIDDEN, HIDDEN, out_channels]))])

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.convs[0](x, edge_index))
        return self.convs[1](x, edge_index)


def _sage_project(in_channels: int, out_channels: int) -> nn.Module:
    return GraphSAGE(in_channels, HIDDEN, num_layers=2,
                     out_channels=out_channels, project=True)


def _gcn(in_channels: int, out_channels: int) -> nn.Module:
    return GCN(in_channels, HIDDEN, num_layers=2, out_channels=out_channels)


# Ways users save -------------------------------------------------------------

def save_state_dict(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def save_lightning(model: nn.Module, path: Path) -> None:
    """A LightningModule keeps the model as ``self.model``; its checkpoint
    holds the optimizer's state beside the weights."""
    optimizer = torch.optim.Adam(model.parameters())
    torch.save({'epoch': 3, 'global_step': 12,
                'pytorch-lightning_version': '2.2.0',
                'state_dict': {f'model.{k}': v for k, v in
                               model.state_dict().items()},
                'optimizer_states': [optimizer.state_dict()]}, path)


def save_with_args(model: nn.Module, path: Path) -> None:
    """A training script saving its argparse options beside the weights."""
    args = argparse.Namespace(hidden=HIDDEN, lr=0.01, dataset='tiny')
    torch.save({'args': args, 'model_state_dict': model.state_dict()}, path)


def save_data_parallel(model: nn.Module, path: Path) -> None:
    """``nn.DataParallel`` around ``torch.compile``'s wrapper."""
    wrapped = nn.DataParallel(torch.compile(model))
    torch.save(wrapped.state_dict(), path)


Layout = tuple[Callable[[int, int], nn.Module],
               Callable[[nn.Module, Path], None], list[str]]

LAYOUTS: dict[str, Layout] = {
    'gcn-example': (ExampleGCN, save_state_dict,
                    ['conv1  GCNConv', 'conv2  GCNConv']),
    'gat-example': (ExampleGAT, save_state_dict,
                    ['conv1  GATConv {in} -> 8 x 8 heads (concat)',
                     'conv2  GATConv 64 -> {out} x 1 heads']),
    'gat-heads-list': (GatList, save_state_dict,
                       ['convs.0  GATConv {in} -> 8 x 4 heads (concat, no '
                        'bias)', 'convs.1  GATConv 32 -> {out} x 2 heads '
                        '(mean of heads)']),
    'ogb-bns': (OgbSage, save_state_dict,
                ['convs.0  SAGEConv', '  then bns.0  BatchNorm1d(16)',
                 'convs.1  SAGEConv', '  then bns.1  BatchNorm1d(16)',
                 'convs.2  SAGEConv']),
    'encoder-head': (EncoderHead, save_state_dict,
                     ['encoder  Linear {in} -> 32', 'convs.0  GCNConv 32 -> 16',
                      'convs.1  GCNConv 16 -> 16', 'head  Linear 16 -> {out}']),
    'sage-project': (_sage_project, save_state_dict,
                     ['convs.0  SAGEConv {in} -> 16 (project)',
                      'convs.1  SAGEConv 16 -> {out} (project)']),
    'gin-sequential': (SequentialGIN, save_state_dict,
                       ['conv1  GINConv {in} -> 16 (MLP {in},16,16)',
                        'conv2  GINConv 16 -> 16', 'lin  Linear']),
    'gatv2-layernorm': (NormedGATv2, save_data_parallel,
                        ['conv1  GATv2Conv {in} -> 4 x 4 heads (concat)',
                         '  then norm1  LayerNorm(16)',
                         'conv2  GATv2Conv 16 -> {out} x 1 heads']),
    'graphnorm': (GraphNormGCN, save_state_dict,
                  ['conv1  GCNConv', '  then norm  GraphNorm(16)',
                   'conv2  GCNConv']),
    'sage-no-root': (SageNoRoot, save_state_dict,
                     ['conv1  SAGEConv {in} -> 16 (no root weight)',
                      'conv2  SAGEConv 16 -> {out} (no root weight)']),
    'gin-pyg-mlp': (PygMlpGIN, save_state_dict,
                    ['convs.0  GINConv {in} -> 16 (MLP {in},16,16)',
                     'convs.1  GINConv 16 -> {out} (MLP 16,16,{out})']),
    'lightning': (_gcn, save_lightning, ['GCN 2 layers x 16 hidden']),
    'args-namespace': (ExampleGCN, save_with_args,
                       ['conv1  GCNConv', 'conv2  GCNConv']),
}
# What the tool cannot read from the weights, given as options.
OPTIONS = {'gat-example': {'act': 'elu'}}


def train(model: nn.Module, x: Tensor, edge_index: Tensor, y: Tensor,
          epochs: int = 3) -> nn.Module:
    """A few epochs of Adam on every node (enough to move BatchNorm's
    running statistics and every weight off its initial value)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(x, edge_index), y).backward()
        optimizer.step()
    return model.eval()


def write(name: str, path: Path, x: Tensor, edge_index: Tensor, y: Tensor,
          num_classes: int, seed: int = 0) -> nn.Module:
    """Build, train and save the layout ``name``; returns the model."""
    build, save, _ = LAYOUTS[name]
    torch.manual_seed(seed)
    model = train(build(x.size(1), num_classes), x, edge_index, y)
    save(model, path)
    return model
