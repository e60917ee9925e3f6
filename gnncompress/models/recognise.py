"""Read a state_dict as a sequence of layers, whatever its attributes are
called.

Every module of a checkpoint is recognised by the signature of its
parameters (their names relative to the module, and their shapes): PyG's
GCNConv, SAGEConv, GINConv, GATConv and GATv2Conv, ``nn.Linear`` and the
norms. The layers keep the order in which their keys were registered;
norms kept in a list of their own (``convs`` plus ``bns``, the OGB style)
follow the message-passing layer of the same index. The result is the
``layers`` field of an :class:`ArchSpec` with ``arch='sequence'``
(:class:`gnncompress.models.sequence.SequenceGNN`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from gnncompress.core.errors import ArchitectureError
from gnncompress.models.sequence import (
    CONVS,
    NORMS,
    TITLES,
    out_width,
)

Layer = dict[str, Any]
Params = dict[str, Tensor]

SUPPORTED = ', '.join(TITLES.values())
# What fixes a model the weights cannot describe: distill runs the user's
# own class, whatever its layers.
CLASS_FIX = ('distill can still take it through your own model class '
             '(--teacher-class module:Class)')
# Wrappers around a whole model: DataParallel and DistributedDataParallel
# (module.), torch.compile (_orig_mod., also around a submodule), and the
# attribute a LightningModule or a training script keeps its model in.
_LEADING = ('module.', '_orig_mod.')
_SHARED = ('model.', 'net.')
# Options that shape a BasicGNN but not a sequence read from the weights.
_NOT_FOR_SEQUENCES = ('arch', 'jk', 'norm', 'heads', 'num_layers',
                      'hidden_channels', 'in_channels', 'out_channels')


ACT_NOTE = ("activation 'relu' assumed after every layer but the last: the "
            "weights cannot tell (set --act, e.g. --act elu for PyG's GAT "
            'example)')


class UnknownLayerError(ArchitectureError):
    """A module whose parameters match no supported layer type."""


def strip_prefixes(tensors: Params) -> Params:
    """The keys without wrapper prefixes, several at once and in any order:
    ``module.`` and ``_orig_mod.`` leading any key (``_orig_mod.`` also
    inside one), ``model.`` and ``net.`` when every key starts with it."""
    def clean(key: str) -> str:
        key = key.replace('._orig_mod.', '.')
        stripped = True
        while stripped:
            stripped = False
            for prefix in _LEADING:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        return key

    out = {clean(k): v for k, v in tensors.items()}
    while True:
        prefix = next((p for p in (*_LEADING, *_SHARED)
                       if all(k.startswith(p) for k in out)), None)
        if prefix is None or len(out) != len(
                {k[len(prefix):] for k in out}):
            return out
        out = {k[len(prefix):]: v for k, v in out.items()}


# Signatures: each takes a module's parameters by relative name and returns
# the layer, or None when they are not that layer's.

def _dims(*tensors: Tensor) -> bool:
    return all(t.numel() > 0 and min(t.shape, default=1) > 0
               for t in tensors)


def _linear(p: Params) -> Layer | None:
    w = p.get('weight')
    if w is None or w.dim() != 2 or not set(p) <= {'weight', 'bias'} or \
            not _dims(w):
        return None
    if 'bias' in p and tuple(p['bias'].shape) != (w.shape[0],):
        return None
    return {'kind': 'linear', 'in': int(w.shape[1]), 'out': int(w.shape[0]),
            'bias': 'bias' in p}


def _norm(p: Params) -> Layer | None:
    keys = set(p)
    batch = {'running_mean', 'running_var'}
    if batch <= keys <= batch | {'weight', 'bias', 'num_batches_tracked'}:
        kind, affine = 'batch_norm', 'weight' in keys
    elif keys == {'weight', 'bias', 'mean_scale'}:
        kind, affine = 'graph_norm', True
    elif keys == {'weight', 'bias'} and p['weight'].dim() == 1:
        kind, affine = 'layer_norm', True
    else:
        return None
    dim = p['running_mean' if kind == 'batch_norm' else 'weight']
    if dim.dim() != 1 or not _dims(dim) or any(
            v.dim() == 1 and v.shape != dim.shape for v in p.values()):
        return None
    return {'kind': kind, 'dim': int(dim.shape[0]), 'affine': affine}


def _gcn(p: Params) -> Layer | None:
    if set(p) not in ({'lin.weight'}, {'lin.weight', 'bias'}):
        return None
    lin = _linear({'weight': p['lin.weight'], **(
        {'bias': p['bias']} if 'bias' in p else {})})
    return lin and {**lin, 'kind': 'gcn'}


def _sage(p: Params) -> Layer | None:
    keys = set(p)
    if 'lin_l.weight' not in keys or 'att' in keys or not keys <= {
            'lin_l.weight', 'lin_l.bias', 'lin_r.weight', 'lin.weight',
            'lin.bias'}:
        return None
    lin = _linear(_sub(p, 'lin_l.'))
    if lin is None:
        return None
    return {**lin, 'kind': 'sage', 'aggr': 'mean',
            'root_weight': 'lin_r.weight' in keys,
            'project': 'lin.weight' in keys}


def _heads(name: str, att: Tensor, width: int) -> None:
    """Refuse attention whose head count does not match its linear map."""
    if att.shape[1] * att.shape[2] != width:
        raise ArchitectureError(
            f"Head-count mismatch in layer '{name}': its attention holds "
            f'{att.shape[1]} heads of {att.shape[2]} channels, but its '
            f'linear map gives {width} channels instead of '
            f'{att.shape[1] * att.shape[2]}: save the complete state_dict '
            f'of the model')


def _attention(p: Params, att_keys: set[str], lin_keys: set[str],
               kind: str) -> Layer | None:
    keys = set(p)
    main = sorted(att_keys)[0]
    if not att_keys <= keys or not keys <= att_keys | lin_keys | {'bias'} \
            or p[main].dim() != 3 or p[main].shape[0] != 1 or \
            not _dims(p[main]):
        return None
    lin_name = 'lin.weight' if kind == 'gat' else 'lin_l.weight'
    lin = p.get(lin_name)
    if lin is None or lin.dim() != 2 or not _dims(lin):
        return None
    if any(p[k].shape != p[main].shape for k in att_keys):
        return None
    heads, channels = int(p[main].shape[1]), int(p[main].shape[2])
    layer = {'kind': kind, 'in': int(lin.shape[1]), 'out': channels,
             'heads': heads, 'bias': 'bias' in p, 'concat': None,
             'check': (p[main], int(lin.shape[0]))}
    if kind == 'gatv2':
        layer['share_weights'] = 'lin_r.weight' not in p
    if 'bias' in p and heads > 1:
        layer['concat'] = p['bias'].numel() == heads * channels
    elif heads == 1:
        layer['concat'] = True
    return layer


def _gat(p: Params) -> Layer | None:
    return _attention(p, {'att_src', 'att_dst'}, {'lin.weight'}, 'gat')


def _gatv2(p: Params) -> Layer | None:
    return _attention(p, {'att'}, {'lin_l.weight', 'lin_l.bias',
                                   'lin_r.weight', 'lin_r.bias'}, 'gatv2')


def _gin(p: Params) -> Layer | None:
    inner = _sub(p, 'nn.')
    if not inner or set(p) - {'eps'} != {f'nn.{k}' for k in inner}:
        return None
    mlp = _pyg_mlp(inner) or _sequential(inner)
    if mlp is None:
        return None
    return {'kind': 'gin', 'in': mlp['widths'][0], 'out': mlp['widths'][-1],
            'mlp': mlp}


def _pyg_mlp(p: Params) -> dict[str, Any] | None:
    """PyG's ``MLP``: ``lins.N`` and optional ``norms.N``."""
    groups = _groups(p)
    lins = [_linear(groups.get(f'lins.{i}', {}))
            for i in range(len([g for g in groups if g.startswith('lins.')]))]
    norm_groups = [g for g in groups if g.startswith('norms.')]
    if not lins or None in lins or len(groups) != len(lins) + \
            len(norm_groups):
        return None
    norm = None
    if norm_groups:
        first = _norm(_unwrap_norm(groups[norm_groups[0]]))
        if first is None:
            return None
        norm = first['kind']
    return {'style': 'pyg', 'widths': [lins[0]['in'],
                                       *(lin['out'] for lin in lins)],
            'norm': norm}


def _sequential(p: Params) -> dict[str, Any] | None:
    """``nn.Sequential`` of Linear layers and norms; the slots without
    parameters (activations, dropout) are the missing indices."""
    groups = _groups(p)
    if not groups or not all(g.isdigit() for g in groups):
        return None
    items = []
    for index, group in groups.items():
        item = _linear(group) or _norm(group)
        if item is None:
            return None
        items.append({**item, 'index': int(index)})
    linears = [i for i in items if i['kind'] == 'linear']
    if not linears:
        return None
    return {'style': 'sequential', 'items': items,
            'length': max(i['index'] for i in items) + 1,
            'widths': [linears[0]['in'], *(i['out'] for i in linears)]}


def _unwrap_norm(p: Params) -> Params:
    """PyG's BatchNorm keeps torch's under ``module.``."""
    inner = _sub(p, 'module.')
    return inner if inner and len(inner) == len(p) else p


def _sub(p: Params, prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def _groups(p: Params) -> dict[str, Params]:
    """Parameters by their first one (``lins.N`` for PyG's MLP) or two name
    parts, in registration order."""
    out: dict[str, Params] = {}
    for key, value in p.items():
        parts = key.split('.')
        head = '.'.join(parts[:2]) if parts[0] in ('lins', 'norms') and \
            len(parts) > 2 else parts[0]
        out.setdefault(head, {})[key[len(head) + 1:]] = value
    return out


SIGNATURES: tuple[Callable[[Params], Layer | None], ...] = (
    _gcn, _sage, _gat, _gatv2, _gin, _linear, _norm)


def recognise(tensors: Params, path: Any = 'checkpoint') -> list[Layer]:
    """The layers of a state_dict in registration order, each with its
    ``name`` (the module's dotted path) and ``kind``."""
    layers: list[Layer] = []

    def visit(name: str, params: Params) -> None:
        for signature in SIGNATURES:
            layer = signature(params)
            if layer is not None:
                if 'check' in layer:
                    _heads(name, *layer.pop('check'))
                layers.append({'name': name, **layer})
                return
        own = [k for k in params if '.' not in k]
        known = _unsupported(params)
        if own or known:
            raise _unknown(name, params, tensors, path, known)
        children: dict[str, Params] = {}
        for key, value in params.items():
            child, rest = key.split('.', 1)
            children.setdefault(child, {})[rest] = value
        for child, sub in children.items():
            visit(f'{name}.{child}' if name else child, sub)

    visit('', tensors)
    return layers


# PyG layers the tool knows by their parameter names but cannot rebuild.
_UNSUPPORTED = ((('lin_rel.', 'lin_root.'), 'GraphConv'),
                (('lin_key.', 'lin_query.', 'lin_value.'),
                 'TransformerConv or ResGatedGraphConv'),
                (('weight1',), 'GCN2Conv'),
                (('nn.', 'lin.'), 'GINEConv'))


def _unsupported(params: Params) -> str | None:
    for names, title in _UNSUPPORTED:
        if all(any(k.startswith(n) for k in params) for n in names):
            return title
    return None


def _unknown(name: str, params: Params, tensors: Params,
             path: Any, known: str | None = None) -> UnknownLayerError:
    listed = _listing(params)
    where = f"layer '{name}'" if name else 'the top level'
    if known:
        what = (f"{where} is PyG's {known} ({listed}), which cannot be "
                f'rebuilt yet')
    else:
        what = f'{where} holds {listed}, which matches no supported layer'
    firsts = {k.split('.', 1)[0] for k in tensors}
    hint = ''
    if len(firsts) == 1 and '.' in name and name.split('.')[0] in firsts:
        hint = (f" Every key starts with '{firsts.pop()}.': if that wraps "
                f'the model, save the inner model\'s state_dict.')
    return UnknownLayerError(
        f'Unknown architecture in {path}: {what} (supported: {SUPPORTED}, '
        f'and the models of torch_geometric.nn.models): {CLASS_FIX}.{hint}')


def _listing(params: Params) -> str:
    """The first keys with their shapes; whole keys, never cut."""
    shown = list(params.items())[:6]
    listed = ', '.join(f'{k} {list(v.shape)}' for k, v in shown)
    if len(params) > len(shown):
        listed += f', and {len(params) - len(shown)} more'
    return listed


# Order ------------------------------------------------------------------------

def _list_index(name: str) -> int | None:
    """The index of a layer kept in a list: ``bns.1`` and ``blocks.1.bn``
    give 1."""
    for part in name.split('.')[1:]:
        if part.isdigit():
            return int(part)
    return None


def _open(layer: Layer) -> bool:
    """An attention layer whose concat the weights left open (no bias)."""
    return layer['kind'] in ('gat', 'gatv2') and layer['concat'] is None


def _chain(mains: list[Layer]) -> bool:
    """Whether each layer's input width is its predecessor's output width;
    fixes the concat of attention layers without a bias on the way."""
    for prev, layer in zip(mains, mains[1:]):
        if _open(prev):
            if layer['in'] not in (prev['out'], prev['out'] * prev['heads']):
                return False
            prev['concat'] = layer['in'] != prev['out']
        if out_width(prev) != layer['in']:
            return False
    return True


def order(layers: list[Layer], path: Any,
          keys: Params | None = None) -> list[Layer]:
    """The main layers (convs and Linear) in execution order, each with the
    norms that follow it under ``norms``."""
    mains = [dict(layer) for layer in layers if layer['kind'] not in NORMS]
    convs = [m for m in mains if m['kind'] in CONVS]
    if not convs:
        found = ', '.join(f"{TITLES[layer['kind']]} '{layer['name']}'"
                          for layer in layers[:6])
        raise UnknownLayerError(
            f'Unknown architecture in {path}: it holds no message-passing '
            f'layer, only {found} (keys {_listing(keys or {})}; supported: '
            f'{SUPPORTED}): {CLASS_FIX}')
    first = mains.index(convs[0])
    last = mains.index(convs[-1])
    before, body, after = mains[:first], mains[first:last + 1], \
        mains[last + 1:]
    candidates = [mains, body + before + after, before + after + body] \
        if before or after else [mains]
    for candidate in candidates:
        trial = [dict(m) for m in candidate]
        if _chain(trial):
            break
    else:
        widths = ', '.join(f"{m['name']} {m['in']} -> {out_width(m)}"
                           if not _open(m) else
                           f"{m['name']} {m['in']} -> {m['out']} x "
                           f"{m['heads']} heads" for m in mains)
        raise ArchitectureError(
            f'The layers of {path} do not chain in any order the tool '
            f'knows ({widths}): save the state_dict of one node-'
            f'classification model, or {CLASS_FIX}')
    if _open(trial[-1]):
        trial[-1]['concat'] = False  # PyG's GAT example averages at the end
    by_name = {m['name']: m for m in trial}
    conv_order = [m for m in trial if m['kind'] in CONVS]
    for m in trial:
        m['norms'] = []
    previous: Layer | None = None
    for layer in layers:
        if layer['kind'] not in NORMS:
            previous = by_name[layer['name']]
            continue
        target = _norm_target(layer, previous, conv_order, path)
        if target is None or out_width(target) != layer['dim']:
            after_what = '' if target is None else \
                f" ({target['name']} gives {out_width(target)})"
            raise ArchitectureError(
                f"The norm '{layer['name']}' of {path} has width "
                f"{layer['dim']} and follows no layer of that width"
                f'{after_what}: save the state_dict of one node-'
                f'classification model, or {CLASS_FIX}')
        target['norms'].append(layer)
        previous = None if _list_index(layer['name']) is not None \
            else previous
    return trial


def _norm_target(norm: Layer, previous: Layer | None,
                 conv_order: list[Layer], path: Any) -> Layer | None:
    """The main layer a norm follows: the one registered just before it,
    unless both sit in lists at different indices (``convs`` then
    ``bns``), when it is the message-passing layer of its own index."""
    index = _list_index(norm['name'])
    if previous is not None and (
            index is None or _list_index(previous['name']) in (index, None)):
        return previous
    if index is not None and index < len(conv_order):
        return conv_order[index]
    return None


# Spec -------------------------------------------------------------------------

def sequence_spec(tensors: Params, path: Any, card_spec: dict[str, Any],
                  overrides: dict[str, Any],
                  ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The fields of an ``arch='sequence'`` ArchSpec, their sources and a
    note per assumption, from the weights, the card and the options."""
    try:
        layers = order(recognise(tensors, path), path, tensors)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise UnknownLayerError(
            f'Unknown architecture in {path}: its weights are misshaped '
            f'for the layers their names suggest ({type(e).__name__}): save '
            f'the complete state_dict of the model') from None
    convs = [m for m in layers if m['kind'] in CONVS]
    inner = [out_width(m) for m in layers[:-1]]
    values: dict[str, Any] = {
        'arch': 'sequence', 'in_channels': layers[0]['in'],
        'out_channels': out_width(layers[-1]), 'num_layers': len(convs),
        'hidden_channels': max(inner, default=out_width(layers[-1])),
        'heads': convs[0].get('heads', 1), 'layers': layers}
    sources = dict.fromkeys(values, 'weights')
    notes: dict[str, str] = {}
    for key in ('act', 'aggr', 'dropout'):
        for origin, given in (('card', card_spec), ('option', overrides)):
            if given.get(key) is not None:
                values[key], sources[key] = given[key], origin
    ignored = [k for k in _NOT_FOR_SEQUENCES if overrides.get(k) is not None]
    if ignored:
        notes['ignored'] = (
            f"{', '.join('--' + k for k in ignored)} ignored: the layers and "
            f'their options are read from the weights')
    if sources.get('act') is None:
        notes['act'] = ACT_NOTE
    sage = [m for m in layers if m['kind'] == 'sage']
    if sage:
        for layer in sage:
            layer['aggr'] = values.get('aggr', 'mean')
        if sources.get('aggr') is None:
            notes['aggr'] = ("SAGE aggregation 'mean' assumed: the weights "
                             'cannot tell (set --aggr)')
    return values, sources, notes

