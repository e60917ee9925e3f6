"""A teacher's ArchSpec inferred from its weights alone: the architecture,
widths, depth, normalisation and heads that the tensor names and shapes
imply."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import Tensor

from gnncompress.core.errors import ArchitectureError
from gnncompress.models import ArchSpec


def infer_spec(state_dict: dict[str, Tensor],
               path: Path | str = 'checkpoint',
               ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Read the architecture from PyG ``BasicGNN`` key patterns and shapes.

    Returns the spec's fields, each field's source, and a note per field that
    the weights could not tell.
    """
    if 'emb.lin.weight' in state_dict and 'convs.0.lin.weight' in state_dict:
        return _infer_dgcnn(state_dict)
    if 'classifier.weight' in state_dict and \
            any(k.startswith('gnn.convs.') for k in state_dict):
        return _infer_graph_classifier(state_dict, path)
    layer_ids = sorted({int(m.group(1)) for k in state_dict
                        if (m := re.match(r'convs\.(\d+)\.', k))})
    if not layer_ids and 'lins.0.weight' in state_dict:
        return _infer_mlp(state_dict)
    if not layer_ids:
        shown = ', '.join(list(state_dict)[:4])
        raise ArchitectureError(
            f'Unknown architecture in {path}: found keys {shown}, ... but no '
            f"'convs.N.' layers. Supported: state_dicts of PyG's GCN, GAT, "
            f'GATv2, GraphSAGE and GIN (torch_geometric.nn.models)')
    if layer_ids != list(range(len(layer_ids))):
        raise ArchitectureError(
            f'Layers of {path} are not numbered 0..L-1 (found '
            f"{', '.join(map(str, layer_ids[:8]))}"
            f"{', ...' if len(layer_ids) > 8 else ''})")
    num_layers = len(layer_ids)

    def conv(i: int, name: str) -> Tensor | None:
        return state_dict.get(f'convs.{i}.{name}')

    first = {k[len('convs.0.'):] for k in state_dict
             if k.startswith('convs.0.')}
    if 'weight1' in first and 'lins.0.weight' in state_dict:
        return _infer_gcnii(state_dict, num_layers)
    if 'att_src' in first and 'lin.weight' in first:
        arch = 'gat'
    elif 'att' in first and 'lin_l.weight' in first:
        arch = 'gatv2'
    elif 'nn.lins.0.weight' in first:
        arch = 'gin'
    elif 'lin_l.weight' in first and ('lin_r.weight' in first or
                                      'lin.weight' not in first):
        # No lin_r: the 'gcn' aggregation (models/sage_gcn.py) when the
        # card or --aggr says so; else the build misfits and the layers
        # are read one by one (a root-weight-free SAGE with 'mean').
        arch = 'sage'
    elif 'lin.weight' in first:
        arch = 'gcn'
    else:
        raise ArchitectureError(
            f"Unknown layer type in {path}: layer 0 has "
            f"{', '.join(sorted(first))}. Supported: GCN, GAT, GATv2, "
            f'GraphSAGE, GIN')

    def out_width(i: int) -> int:
        if arch == 'gat':
            att = conv(i, 'att_src')
            return int(att.shape[1] * att.shape[2])
        if arch == 'gatv2':
            att = conv(i, 'att')
            return int(att.shape[1] * att.shape[2])
        if arch == 'gin':
            last = max(int(m.group(1)) for k in state_dict
                       if (m := re.match(rf'convs\.{i}\.nn\.lins\.(\d+)\.', k)))
            return int(conv(i, f'nn.lins.{last}.weight').shape[0])
        name = 'lin_l.weight' if arch == 'sage' else 'lin.weight'
        return int(conv(i, name).shape[0])

    first_weight = {'gat': 'lin.weight', 'gatv2': 'lin_l.weight',
                    'gin': 'nn.lins.0.weight', 'sage': 'lin_l.weight',
                    'gcn': 'lin.weight'}[arch]
    in_channels = int(conv(0, first_weight).shape[1])
    values: dict[str, Any] = {'arch': arch, 'num_layers': num_layers,
                              'in_channels': in_channels}
    sources = {k: 'weights' for k in values}
    notes: dict[str, str] = {}

    heads = 1
    if arch in ('gat', 'gatv2'):
        heads = int(conv(0, 'att_src' if arch == 'gat' else 'att').shape[1])
    values['heads'], sources['heads'] = heads, 'weights'

    jk = None
    if 'jk.lstm.weight_ih_l0' in state_dict:
        jk = 'lstm'
    elif 'lin.weight' in state_dict:
        hidden = out_width(0)
        jk = 'cat' if state_dict['lin.weight'].shape[1] == hidden * num_layers\
            else 'last'
        if jk == 'last':
            notes['jk'] = ("jumping knowledge 'last' assumed: the weights of "
                           "'last' and 'max' are identical (set --jk max)")
    values['jk'] = jk
    sources['jk'] = 'default' if jk == 'last' else 'weights'

    if jk:
        values['hidden_channels'] = out_width(0)
        values['out_channels'] = int(state_dict['lin.weight'].shape[0])
    else:
        last = num_layers - 1
        if arch == 'gat':  # the output layer averages its heads
            values['out_channels'] = int(conv(last, 'att_src').shape[2])
        elif arch == 'gatv2':
            values['out_channels'] = int(conv(last, 'att').shape[2])
        else:
            values['out_channels'] = out_width(last)
        values['hidden_channels'] = out_width(0) if num_layers > 1 \
            else values['out_channels']
    sources['hidden_channels'] = sources['out_channels'] = 'weights'

    # A 1-layer GIN keeps its norm only inside its MLP.
    norm_keys = [k for k in state_dict
                 if re.match(r'(convs\.\d+\.nn\.)?norms\.0\.', k)]
    if any(k.endswith('.running_mean') for k in norm_keys):
        norm = 'batch_norm'
    elif any(k.endswith('.mean_scale') for k in norm_keys):
        norm = 'graph_norm'
    elif any(k.endswith('norms.0.weight') for k in norm_keys):
        norm = 'layer_norm'
    else:
        norm = None
    values['norm'] = norm
    sources['norm'] = 'weights' if norm else 'default'
    if norm is None:
        notes['norm'] = ('no normalisation assumed: norms without parameters'
                         ' (e.g. instance_norm) leave no trace in the weights')
    for name in ArchSpec.NOT_IN_WEIGHTS:
        sources[name] = 'default'
    if arch == 'sage':
        notes['aggr'] = ("SAGE aggregation 'mean' assumed: the weights "
                         "cannot tell (set --aggr)")
    return values, sources, notes


def _infer_graph_classifier(state_dict: dict[str, Tensor], path: Path | str,
                            ) -> tuple[dict[str, Any], dict[str, str],
                                       dict[str, str]]:
    """A graph classifier (models/readout.py): a BasicGNN under ``gnn.``
    whose layers all keep the hidden width, and ``classifier``."""
    body = {k[len('gnn.'):]: v for k, v in state_dict.items()
            if k.startswith('gnn.')}
    values, sources, notes = infer_spec(body, path)
    values['hidden_channels'] = values['out_channels']
    values['out_channels'] = int(state_dict['classifier.weight'].shape[0])
    values['readout'] = 'mean'
    notes['readout'] = ("global 'mean' pooling assumed: the weights cannot "
                        "tell mean, sum and max apart (set it on the card)")
    return values, sources, notes


def _infer_dgcnn(state_dict: dict[str, Tensor],
                 ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """DGCNN (models/dgcnn.py): ``convs.N.lin`` EdgeConv layers (input
    ``2 x`` the previous width), ``emb.lin``, ``head.N.lin`` and
    ``classifier``."""
    def count(prefix: str) -> int:
        return len({k.split('.')[1] for k in state_dict
                    if re.match(rf'{prefix}\.\d+\.lin\.weight$', k)})

    widths = [int(state_dict[f'convs.{i}.lin.weight'].shape[0])
              for i in range(count('convs'))]
    values: dict[str, Any] = {
        'arch': 'dgcnn', 'num_layers': len(widths), 'widths': widths,
        'in_channels': int(state_dict['convs.0.lin.weight'].shape[1]) // 2,
        'hidden_channels': widths[-1],
        'emb_channels': int(state_dict['emb.lin.weight'].shape[0]),
        'head': [int(state_dict[f'head.{i}.lin.weight'].shape[0])
                 for i in range(count('head'))],
        'out_channels': int(state_dict['classifier.weight'].shape[0])}
    sources = {key: 'weights' for key in values}
    for name in ArchSpec.NOT_IN_WEIGHTS:
        sources[name] = 'default'
    values.update(k=20, readout='max')
    notes = {'k': 'k=20 neighbours assumed (the DGCNN paper\'s): the weights '
                  'cannot tell (set it on the teacher card)',
             'readout': "global 'max' pooling assumed: the weights cannot "
                        'tell max, mean and sum apart (set it on the card)'}
    return values, sources, notes


def _norm_of(state_dict: dict[str, Tensor], pattern: str) -> str | None:
    keys = [k for k in state_dict if re.match(pattern, k)]
    if any(k.endswith('.running_mean') for k in keys):
        return 'batch_norm'
    if any(k.endswith('.mean_scale') for k in keys):
        return 'graph_norm'
    if any(k.endswith('.weight') for k in keys):
        return 'layer_norm'
    return None


def _infer_mlp(state_dict: dict[str, Tensor],
               ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """PyG ``MLP``: ``lins.N`` linear layers, optional ``norms.N``."""
    num_layers = len({k.split('.')[1] for k in state_dict
                      if re.match(r'lins\.\d+\.weight$', k)})
    first = state_dict['lins.0.weight']
    out_channels = int(state_dict[f'lins.{num_layers - 1}.weight'].shape[0])
    values: dict[str, Any] = {
        'arch': 'mlp', 'num_layers': num_layers,
        'in_channels': int(first.shape[1]),
        # One layer has no hidden width; BasicGNN inference does the same.
        'hidden_channels': int(first.shape[0]) if num_layers > 1
        else out_channels,
        'out_channels': out_channels,
        'norm': _norm_of(state_dict, r'norms\.0\.')}
    sources = {k: 'weights' for k in values}
    for name in ArchSpec.NOT_IN_WEIGHTS:
        sources[name] = 'default'
    return values, sources, {}


def _infer_gcnii(state_dict: dict[str, Tensor], num_layers: int,
                 ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """GCNII: ``lins.0`` in, ``convs.N.weight1`` (and ``weight2`` without
    shared weights), ``lins.1`` out."""
    values: dict[str, Any] = {
        'arch': 'gcnii', 'num_layers': num_layers,
        'in_channels': int(state_dict['lins.0.weight'].shape[1]),
        'hidden_channels': int(state_dict['convs.0.weight1'].shape[0]),
        'out_channels': int(state_dict['lins.1.weight'].shape[0]),
        'shared_weights': 'convs.0.weight2' not in state_dict}
    sources = {k: 'weights' for k in values}
    for name in ArchSpec.NOT_IN_WEIGHTS:
        sources[name] = 'default'
    notes = {'alpha': 'GCNII alpha=0.1 and theta=0.5 assumed (the paper\'s '
                      'Cora setting): the weights cannot tell (set them on '
                      'the teacher card)'}
    return values, sources, notes
