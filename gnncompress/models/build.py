"""Build models from an ArchSpec and run them to a ModelOutput."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.models import GAT, GCN, GIN, MLP, GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN

from gnncompress.core.errors import ArchitectureError
from gnncompress.models import propagation, sparse_input
from gnncompress.models.dgcnn import DGCNN, dense_points
from gnncompress.models.gcnii import GCNII
from gnncompress.models.output import ModelOutput
from gnncompress.models.readout import GraphClassifier
from gnncompress.models.sage_gcn import GCN_AGGR, GcnGraphSAGE
from gnncompress.models.sequence import SequenceGNN
from gnncompress.models.spec import ArchSpec


def build_model(spec: ArchSpec) -> nn.Module:
    """A model whose ``state_dict`` has PyG's own key layout, so that
    users' checkpoints load into it unchanged."""
    if spec.arch == 'dgcnn':
        return DGCNN(spec.in_channels, spec.widths or [], spec.out_channels,
                     k=spec.k or 20, emb_channels=spec.emb_channels or 1024,
                     head=spec.head or [], dropout=spec.dropout,
                     readout=spec.readout or 'max')
    if spec.arch == 'sequence':
        return SequenceGNN(spec.layers or [], act=spec.act,
                           dropout=spec.dropout)
    if spec.arch == 'mlp':
        return sparse_input.attach(MLP(
            in_channels=spec.in_channels,
            hidden_channels=spec.hidden_channels,
            out_channels=spec.out_channels, num_layers=spec.num_layers,
            dropout=spec.dropout, act=spec.act, norm=spec.norm))
    if spec.arch == 'gcnii':
        return GCNII(spec.in_channels, spec.hidden_channels, spec.num_layers,
                     spec.out_channels, alpha=spec.alpha, theta=spec.theta,
                     dropout=spec.dropout, act=spec.act,
                     shared_weights=spec.shared_weights)
    common = dict(in_channels=spec.in_channels,
                  hidden_channels=spec.hidden_channels,
                  num_layers=spec.num_layers, dropout=spec.dropout,
                  act=spec.act, norm=spec.norm, jk=spec.jk)
    if spec.readout is not None:
        return _graph_classifier(spec, common)
    # With jk, BasicGNN adds a final Linear to the classes; without it the
    # last message-passing layer produces them.
    common['out_channels'] = spec.out_channels
    return sparse_input.attach(_node_gnn(spec, common))


def _node_gnn(spec: ArchSpec, common: dict) -> BasicGNN:
    if spec.arch == 'gcn':
        return GCN(**common)
    if spec.arch == 'sage':
        return _sage(spec, common)
    if spec.arch == 'gin':
        return GIN(**common, train_eps=spec.train_eps)
    if spec.arch in ('gat', 'gatv2'):
        hidden_layers = spec.num_layers - (0 if spec.jk else 1)
        if hidden_layers > 0 and spec.hidden_channels % spec.heads:
            raise ArchitectureError(
                f'GAT hidden width {spec.hidden_channels} is not divisible by '
                f'{spec.heads} heads: pick --hidden as a multiple of --heads')
        return GAT(**common, heads=spec.heads, v2=spec.arch == 'gatv2')
    raise ArchitectureError(f"Cannot build architecture '{spec.arch}'")


def _sage(spec: ArchSpec, common: dict) -> GraphSAGE:
    """PyG's GraphSAGE, or with ``aggr='gcn'`` its variant that averages
    over the node and its neighbours with one weight
    (models/sage_gcn.py)."""
    if spec.aggr == GCN_AGGR:
        return GcnGraphSAGE(**common)
    return GraphSAGE(**common, aggr=spec.aggr)


def _graph_classifier(spec: ArchSpec, common: dict) -> GraphClassifier:
    """Every layer keeps the hidden width (``out_channels=None``); the
    classifier maps the pooled graph embedding to the classes."""
    classes = {'gcn': GCN, 'gin': GIN, 'gat': GAT, 'gatv2': GAT}
    extra = {'gin': dict(train_eps=spec.train_eps),
             'gat': dict(heads=spec.heads),
             'gatv2': dict(heads=spec.heads, v2=True)}.get(spec.arch, {})
    if spec.arch in ('gat', 'gatv2') and spec.hidden_channels % spec.heads:
        raise ArchitectureError(
            f'GAT hidden width {spec.hidden_channels} is not divisible by '
            f'{spec.heads} heads: pick --hidden as a multiple of --heads')
    gnn = _sage(spec, {**common, 'out_channels': None}) \
        if spec.arch == 'sage' else \
        classes[spec.arch](**common, out_channels=None, **extra)
    return GraphClassifier(gnn, spec.out_channels, readout=spec.readout,
                           dropout=spec.dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_spec_parameters(spec: ArchSpec) -> int:
    """Parameter count without allocating (built on the meta device)."""
    with torch.device('meta'):
        return count_parameters(build_model(spec))


def run_model(model: nn.Module, x: Tensor, edge_index: Tensor,
              batch: Tensor | None = None) -> ModelOutput:
    """The model's logits and the pre-activation output of every hidden
    layer. A graph classifier (``batch`` maps nodes to graphs) returns one
    logit row per graph and the node output of all its layers. A DGCNN
    takes equally sized clouds as points ``x`` with ``batch`` (it builds
    its own graphs and ignores ``edge_index``)."""
    if isinstance(model, DGCNN):
        return model.forward_output(dense_points(x, batch))
    if isinstance(model, GraphClassifier):
        out = _basic_gnn_output(model.gnn, x, edge_index)
        return ModelOutput(logits=model.head(out.logits, batch),
                           hiddens=[*out.hiddens, out.logits])
    if isinstance(model, BasicGNN):
        return _basic_gnn_output(model, x, edge_index)
    if isinstance(model, MLP):
        return _mlp_output(model, x)
    if not hasattr(model, 'forward_output'):  # a wrapper (TaskSlice)
        return ModelOutput(logits=model(x, edge_index), hiddens=[])
    return model.forward_output(x, edge_index)


def forward_logits(model: nn.Module, x: Tensor, edge_index: Tensor,
                   batch: Tensor | None = None) -> Tensor:
    """The model's own forward (what is exported and timed)."""
    if isinstance(model, DGCNN):
        return model(dense_points(x, batch))
    if isinstance(model, GraphClassifier):
        return model(x, edge_index, batch)
    if isinstance(model, MLP):
        return model(x)
    return model(x, edge_index)


def forward_inputs(model: nn.Module, x: Tensor, edge_index: Tensor,
                   batch: Tensor | None = None) -> tuple[Tensor, ...]:
    """The tensors :func:`forward_logits` gives ``model`` (a graph-free
    MLP reads ``x`` alone)."""
    if isinstance(model, DGCNN):
        return (x,) if batch is None else (x, batch)
    if isinstance(model, GraphClassifier):
        return (x, edge_index) if batch is None else (x, edge_index, batch)
    if isinstance(model, MLP):
        return (x,)
    return (x, edge_index)


def _norm_and_act(model: nn.Module, norm: nn.Module, x: Tensor) -> Tensor:
    """Norm and activation in the order PyG's ``act_first`` sets."""
    if model.act is not None and model.act_first:
        x = model.act(x)
    x = norm(x)
    if model.act is not None and not model.act_first:
        x = model.act(x)
    return x


def _mlp_output(model: MLP, x: Tensor) -> ModelOutput:
    """Same computation as ``MLP.forward`` (``plain_last=True``)."""
    hiddens: list[Tensor] = []
    for i, (lin, norm) in enumerate(zip(model.lins, model.norms)):
        x = lin(x)
        hiddens.append(x)
        x = _norm_and_act(model, norm, x)
        x = torch.nn.functional.dropout(x, p=model.dropout[i],
                                        training=model.training)
    x = model.lins[-1](x)
    return ModelOutput(logits=x, hiddens=hiddens)


def _basic_gnn_output(model: BasicGNN, x: Tensor,
                      edge_index: Tensor) -> ModelOutput:
    """Same computation as ``BasicGNN.forward``, also returning the
    pre-activation output of every hidden layer; GCN, SAGE (mean) and GIN
    layers through one cached sparse product each (models/propagation.py)."""
    hiddens: list[Tensor] = []
    xs: list[Tensor] = []
    kinds = propagation.plan(model.convs, x, edge_index)
    for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
        x = conv(x, edge_index) if kinds is None else \
            propagation.fast_layer(conv, kinds[i], x, edge_index)
        if i < model.num_layers - 1 or model.jk_mode is not None:
            hiddens.append(x)
            x = _norm_and_act(model, norm, x)
            x = model.dropout(x)
            if hasattr(model, 'jk'):
                xs.append(x)
    x = model.jk(xs) if hasattr(model, 'jk') else x
    x = model.lin(x) if hasattr(model, 'lin') else x
    return ModelOutput(logits=x, hiddens=hiddens)
