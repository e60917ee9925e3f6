"""Load teacher checkpoints safely and infer their ArchSpec from the weights.

Only tensors are ever read: ``.pt`` files go through
``torch.load(weights_only=True)`` after their pickled globals are listed, and
``.safetensors`` files hold nothing but tensors and string metadata.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.defaults import DEFAULT_MAX_CHECKPOINT_GB
from gnncompress.errors import ArchitectureError, CheckpointError, clip
from gnncompress.models import ArchSpec, build_model
from gnncompress.models.recognise import (
    ACT_NOTE,
    CLASS_FIX,
    UnknownLayerError,
    sequence_spec,
    strip_prefixes,
)

SPEC_KEY = 'gnncompress.spec'
VERSION_KEY = 'gnncompress.version'
CARD_KIND = 'gnncompress.teacher-card'
_WRAPPER_KEYS = ('model_state_dict', 'state_dict', 'model', 'net',
                 'weights')
# The one class a checkpoint may hold besides tensors and containers: the
# argparse.Namespace of a training script's options ({'args': ...}). Only
# its attributes are restored; no code of the file runs.
_SAFE_GLOBALS = (argparse.Namespace,)
_SAFE_NAMES = ('argparse.Namespace',)
_LIMIT = {'gb': DEFAULT_MAX_CHECKPOINT_GB}
# Deflate turns at most ~1 KB into one byte; weights hardly compress, and
# torch.save never compresses: an entry declaring more is a zip bomb.
MAX_INFLATION = 100
_FINITE_CHUNK = 1 << 22  # elements checked at a time: bounded memory
# More layers than any GNN in use; building each costs about 2 ms, so a
# small file declaring 10^6 layers would otherwise take half an hour.
MAX_LAYERS = 1000
# Tensors: a 1,000-layer GIN with norms has about 10,000.
MAX_TENSORS = 50_000
_WEIGHT_DTYPES = (torch.float32, torch.float64, torch.float16,
                  torch.bfloat16, torch.int64, torch.int32, torch.int16,
                  torch.int8, torch.uint8, torch.bool)


@dataclass
class Checkpoint:
    """A checkpoint's weights, its inferred spec and where each field of the
    spec came from (``weights``, ``metadata``, ``card``, ``option`` or
    ``default``)."""
    path: Path
    spec: ArchSpec
    state_dict: dict[str, Tensor]
    sources: dict[str, str]
    notes: dict[str, str] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    format: str = 'pytorch'

    def build(self) -> nn.Module:
        """The model with the checkpoint's weights, in eval mode; a new one
        on each call (the first is the one ``load_checkpoint`` checked)."""
        model = self.__dict__.pop('_checked', None)
        return model if model is not None else \
            build_loaded(self.spec, self.state_dict, self.path)


def card_path(path: Path) -> Path:
    """The teacher card that ``train-teacher`` writes next to a checkpoint."""
    return path.with_suffix('.json')


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    """``value`` is none of ``types`` (a bool counts as an int only where
    ``types`` names bool)."""
    return (not isinstance(value, types)
            or (isinstance(value, bool) and bool not in types))


def _type_names(types: tuple[type, ...]) -> str:
    """``types`` as a message names them: ``int or null``."""
    return ' or '.join('null' if t is type(None) else t.__name__
                       for t in types)


def read_card(path: Path) -> dict[str, Any]:
    card_file = card_path(path)
    if not card_file.is_file():
        return {}
    try:
        card = json.loads(card_file.read_text(encoding='utf-8'))
    except (OSError, ValueError, RecursionError) as e:
        # Unreadable, not UTF-8, not JSON or nested too deep: it may be
        # our card, and ignoring it would silently drop its settings.
        reason = e.strerror if isinstance(e, OSError) else \
            'not UTF-8' if isinstance(e, UnicodeDecodeError) else \
            'nested too deeply' if isinstance(e, RecursionError) else \
            'not valid JSON'
        raise CheckpointError(
            f'Teacher card {card_file} cannot be read ({reason}): fix it, or '
            f'move it away to load {path.name} without a card') from None
    if not isinstance(card, dict) or card.get('kind') != CARD_KIND:
        return {}  # another tool's JSON beside the checkpoint
    for key, types in _CARD_TYPES.items():
        value = card.get(key)
        if key in card and _wrong_type(value, types):
            raise CheckpointError(
                f"Teacher card {card_file}: '{key}' must be "
                f"{_type_names(types)} (got "
                f'{value!r:.40}): fix it, or move the card away to load '
                f'{path.name} without it')
    return card


# The fields of a teacher card the tool reads, and their types.
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    'spec': (dict,), 'data': (str, type(None)), 'data_is_file': (bool,),
    'data_root': (str, type(None)), 'test_accuracy': (int, float),
    'val_accuracy': (int, float), 'normalize_features': (bool,),
    'classes': (list,), 'points': (int, type(None)),
    'augment': (list, str, type(None))}


def set_max_checkpoint_gb(gb: float) -> None:
    """The largest checkpoint any later load reads (``--max-checkpoint-gb``;
    default :data:`DEFAULT_MAX_CHECKPOINT_GB`)."""
    if isinstance(gb, bool) or not isinstance(gb, (int, float)) or \
            not math.isfinite(gb) or gb <= 0:
        raise CheckpointError(f'--max-checkpoint-gb must be a positive number '
                              f'of gigabytes (got {gb!r:.40})')
    _LIMIT['gb'] = float(gb)


def _check_size(path: Path, size: int, what: str) -> None:
    limit = _LIMIT['gb']
    if size > limit * 1e9:
        raise CheckpointError(
            f'{path} {what} {size / 1e9:.3g} GB, over the limit of '
            f'{limit:g} GB for checkpoints: if the file is genuine, raise '
            f'it with --max-checkpoint-gb')


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata of a checkpoint file."""
    path = Path(path)
    try:
        if not path.exists():
            raise CheckpointError(f'Checkpoint not found: {path}')
        if not path.is_file():
            raise CheckpointError(f'Checkpoint {path} is not a file')
        _check_size(path, path.stat().st_size, 'is')
        with open(path, 'rb') as f:
            head = f.read(16)
    except OSError as e:
        # a name too long (Errno 36), a link to /proc/self/mem (Errno 5),
        # no permission, ...
        shown = str(path) if len(str(path)) <= 120 else \
            f'{str(path)[:60]}...{str(path)[-40:]}'
        raise CheckpointError(
            f'Checkpoint {shown} cannot be read ({e.strerror or e}): give '
            f'the path of a readable checkpoint file') from None
    if path.suffix == '.safetensors' or _looks_like_safetensors(head):
        tensors, metadata = _read_safetensors(path)
    else:
        tensors, metadata = _unwrap(_read_torch(path, head), path), {}
        check_names(list(tensors), path)
    check_tensors(tensors, path)
    return tensors, metadata


def check_tensors(tensors: dict[str, Tensor], path: Path | str) -> None:
    """Refuse weights no trained model has: complex or exotic dtypes, views
    that claim more elements than their storage holds (a tiny file could
    otherwise make the model reserve terabytes) and NaN or infinite values
    (the teacher diverged, or the file is corrupt: distilling from it would
    only fail later with a misleading message)."""
    for key, value in tensors.items():
        name = f'{key!r:.60}'  # keys may hold anything, newlines included
        if not key.isprintable():
            raise CheckpointError(
                f'Tensor key {name} of {path} holds control characters, '
                f'which no model has: save the state_dict of the model')
        if value.layout != torch.strided:
            layout = str(value.layout).removeprefix('torch.')
            raise CheckpointError(
                f'Tensor {name} of {path} is a {layout} tensor, which no '
                f'model weight is: save the dense weights '
                f'(tensor.to_dense())')
        if value.is_meta:
            raise CheckpointError(
                f'Tensor {name} of {path} is a meta tensor (a shape without '
                f'values): save the model after its weights are '
                f'initialised or loaded')
        if value.is_complex() or value.dtype not in _WEIGHT_DTYPES:
            raise CheckpointError(
                f'Tensor {name} of {path} has dtype {value.dtype}, which no '
                f'model weight has: save the float weights of the model')
        storage = value.untyped_storage().nbytes() // value.element_size()
        if value.numel() > storage:
            raise CheckpointError(
                f'Tensor {name} of {path} claims {value.numel():,} elements '
                f'but stores {storage:,} (an expanded view): save the '
                f'weights with .contiguous()')
        if value.is_floating_point() and not _all_finite(value):
            bad = 'NaN' if bool(torch.isnan(value).any()) else 'infinite'
            raise CheckpointError(
                f'Tensor {name} of {path} holds {bad} values: the teacher '
                f'diverged in training or the file is corrupted; retrain it '
                f'or save it again')


def _check_depth(layers: int, path: Path | str) -> None:
    if layers > MAX_LAYERS:
        raise ArchitectureError(
            f'{path} declares {layers:,} layers, more than the '
            f'{MAX_LAYERS:,} any supported model has: fix the teacher card, '
            f'the metadata or the command line options')


def check_names(names: list[str], path: Path | str) -> None:
    """Refuse, from the tensor names alone (before any tensor is read or
    checked: each costs time), more layers or tensors than any supported
    model has."""
    if len(names) > MAX_TENSORS:
        raise CheckpointError(
            f'{path} holds {len(names):,} tensors, more than the '
            f'{MAX_TENSORS:,} any supported model has: save the state_dict '
            f'of the model')
    layers = {m.group(1) for name in names
              if (m := re.match(r'(?:gnn\.)?convs\.(\d+)\.', name))}
    _check_depth(len(layers), path)


def _all_finite(value: Tensor) -> bool:
    """``isfinite(value).all()`` a few million elements at a time: at once,
    its temporaries take twice the tensor's memory."""
    if value.numel() <= _FINITE_CHUNK:
        return bool(torch.isfinite(value).all())
    flat = value.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + _FINITE_CHUNK]).all())
               for i in range(0, flat.numel(), _FINITE_CHUNK))


def _check_entries(path: Path) -> None:
    """Compare what the zip entries declare with the file before anything
    is unpacked: their total against the limit, each compressed one
    against the inflation weights can have."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError,
            NotImplementedError):
        return  # torch's own reader gives the corruption its message
    _check_size(path, sum(e.file_size for e in entries),
                'declares, once unpacked,')
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED and entry.file_size > \
                MAX_INFLATION * max(entry.compress_size, 1 << 14):
            raise CheckpointError(
                f'{path} holds an entry ({entry.filename!r:.60}) of '
                f'{entry.compress_size:,} compressed bytes that declares '
                f'{entry.file_size:,} once unpacked, which no weights do '
                f'(torch.save does not compress): save the checkpoint again')


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b'{' and \
        int.from_bytes(head[:8], 'little') < 100_000_000


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            check_names(names, path)
            tensors = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f'{path} is not a valid safetensors file '
            f'({clip(str(e), 160)})') from None
    if not tensors:
        raise CheckpointError(f'{path} holds no tensors')
    return tensors, metadata


def _zip_complete(path: Path) -> bool:
    """``zipfile.is_zipfile``, which raises instead of answering on some
    damaged end records (e.g. "zipfiles that span multiple disks")."""
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _read_torch(path: Path, head: bytes) -> Any:
    is_zip = head.startswith(b'PK\x03\x04')
    if is_zip and not _zip_complete(path):
        raise CheckpointError(
            f'{path} is truncated or corrupted (its zip archive is '
            f'incomplete): save or copy the checkpoint again')
    if is_zip:
        _check_entries(path)
        try:
            unsafe = [name for name in
                      torch.serialization.get_unsafe_globals_in_checkpoint(
                          str(path)) if name not in _SAFE_NAMES]
        except Exception as e:  # noqa: BLE001 -- any failure means corrupt
            raise CheckpointError(
                f'{path} is corrupted ({_first_line(e)}): save or copy the '
                f'checkpoint again') from None
        if unsafe:
            shown = ', '.join(unsafe[:3]) + (', ...' if len(unsafe) > 3
                                             else '')
            raise CheckpointError(
                f'{path} contains pickled Python objects ({shown}), which '
                f'gnncompress never unpickles: save the weights alone with '
                f'torch.save(model.state_dict(), PATH)')
    try:
        # torch warns about old pickle protocols and quantised weights just
        # before the one-line error: say it once, in that error.
        with torch.serialization.safe_globals(list(_SAFE_GLOBALS)), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001
        if not is_zip:
            raise CheckpointError(
                f'{path} is not a PyTorch (.pt) or safetensors checkpoint: '
                f'pass a file written by torch.save(model.state_dict()) or '
                f'gnncompress') from None
        raise CheckpointError(
            f'{path} could not be read as a PyTorch checkpoint '
            f'({_first_line(e)}): save or copy it again') from None


def _first_line(e: BaseException) -> str:
    from gnncompress.errors import error_line
    return error_line(e)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(4):  # e.g. {'model': {'state_dict': ...}}
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj, dict) and
                    isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f'{path} holds a {type(obj).__name__}, not a state_dict: save '
            f'model.state_dict()')
    tensors = {k: v for k, v in obj.items()
               if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f'{path} holds no weight tensors')
    return strip_prefixes(tensors)


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


def load_checkpoint(path: Path | str,
                    overrides: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint and its spec; ``overrides`` (CLI options) win over
    the teacher card, which wins over the weights and the defaults."""
    path = Path(path)
    tensors, metadata = read_weights(path)
    try:
        return _load_spec(path, tensors, metadata, overrides)
    except ArchitectureError as error:
        # A known layout keeps its own error; the model is built on meta
        # once more only here, on the way to a refusal or a sequence.
        if SPEC_KEY in metadata or _known_layout(tensors, path):
            raise
        return _load_sequence(path, tensors, overrides, error)


def _known_layout(tensors: dict[str, Tensor], path: Path) -> bool:
    """Whether the spec inferred from the weights alone builds a model
    with exactly these keys and shapes (those load as they always did)."""
    try:
        values = infer_spec(tensors, path)[0]
        with torch.device('meta'):
            model = build_model(ArchSpec.from_dict(values))
    except Exception:  # noqa: BLE001 -- any failure: not a known layout
        return False
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return expected == {k: tuple(v.shape) for k, v in tensors.items()}


def _load_sequence(path: Path, tensors: dict[str, Tensor],
                   overrides: dict[str, Any] | None,
                   error: ArchitectureError) -> Checkpoint:
    """The layers the weights show, under any names, when no known
    layout fits (models/recognise.py). When they match no layer either,
    the first error stands for keys in a known layout."""
    card = read_card(path)
    card_spec = card.get('spec') if isinstance(card.get('spec'), dict) \
        else {}
    try:
        values, sources, notes = sequence_spec(tensors, path, card_spec,
                                               overrides or {})
    except UnknownLayerError:
        if all(k.split('.', 1)[0] in _KNOWN_TOP for k in tensors):
            raise error from None
        raise
    ckpt = Checkpoint(path=path, spec=spec_from_values(values, path),
                      state_dict=tensors, sources=sources, notes=notes,
                      card=card, format='safetensors'
                      if path.suffix == '.safetensors' else 'pytorch')
    ckpt.build()
    return ckpt


# The top-level names of the layouts infer_spec knows.
_KNOWN_TOP = ('convs', 'norms', 'lin', 'jk', 'lins', 'gnn', 'classifier',
              'emb', 'head')


def _load_spec(path: Path, tensors: dict[str, Tensor],
               metadata: dict[str, str],
               overrides: dict[str, Any] | None) -> Checkpoint:
    card = read_card(path)
    if SPEC_KEY in metadata:
        values = _metadata_spec(metadata[SPEC_KEY], path)
        sources = {k: 'metadata' for k in values}
        notes: dict[str, str] = {}
        fmt = 'safetensors'
    else:
        try:
            values, sources, notes = infer_spec(tensors, path)
        except (KeyError, IndexError, AttributeError, ValueError) as e:
            # The keys looked like a known family, but a tensor the family
            # needs is missing or has too few dimensions.
            raise ArchitectureError(
                f'The weights of {path} are incomplete or misshaped for the '
                f'architecture their keys suggest ({type(e).__name__}: '
                f"{clip(str(e), 120)}): save the complete "
                f'state_dict of the model') from None
        if values['arch'] != 'dgcnn':  # DGCNN's activation is fixed
            notes['act'] = ACT_NOTE
        fmt = 'safetensors' if path.suffix == '.safetensors' else 'pytorch'
        card_spec = card.get('spec', {})
        if not isinstance(card_spec, dict):
            card_spec = {}
        for key, value in card_spec.items():
            if key in ArchSpec.NOT_IN_WEIGHTS or key in ('jk', 'norm'):
                if key in ('alpha', 'theta'):
                    notes.pop('alpha', None)
                values[key], sources[key] = value, 'card'
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key], sources[key] = value, 'option'
    notes = {k: n for k, n in notes.items()
             if sources.get(k) not in ('option', 'card')}
    spec = spec_from_values(values, path)
    ckpt = Checkpoint(path=path, spec=spec, state_dict=tensors,
                      sources=sources, notes=notes, card=card, format=fmt)
    # Fail now if the weights do not fit; the first build() returns it.
    ckpt.__dict__['_checked'] = build_loaded(spec, tensors, path,
                                             spec_fix(sources, path))
    return ckpt


def _metadata_spec(text: str, path: Path) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        values = None
    if not isinstance(values, dict):
        raise CheckpointError(
            f"The '{SPEC_KEY}' metadata of {path} is not a JSON object: "
            f'export the model again with gnncompress')
    return values


# The type each ArchSpec field must have when it comes from a file (a card,
# safetensors metadata) rather than from code.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    'arch': (str,), 'act': (str,), 'aggr': (str,),
    'norm': (str, type(None)), 'jk': (str, type(None)),
    'in_channels': (int,), 'hidden_channels': (int,), 'num_layers': (int,),
    'out_channels': (int,), 'heads': (int,), 'dropout': (int, float),
    'alpha': (int, float), 'theta': (int, float), 'train_eps': (bool,),
    'shared_weights': (bool,), 'readout': (str, type(None)),
    'k': (int, type(None)), 'emb_channels': (int, type(None))}
# Fields that hold a list, and the type of its items (DGCNN's widths and
# head, a sequence teacher's layers).
_LIST_FIELDS: dict[str, type] = {'widths': int, 'head': int, 'layers': dict}


# Dropout is a probability; GCNII's alpha is a mixing weight and its theta
# enters log(theta / layer + 1).
_FIELD_RANGES = {'dropout': (0.0, 1.0), 'alpha': (0.0, 1.0),
                 'theta': (0.0, math.inf)}
_REQUIRED_FIELDS = ('arch', 'in_channels', 'hidden_channels', 'num_layers',
                    'out_channels')


def spec_from_values(values: dict[str, Any], path: Path | str) -> ArchSpec:
    """An ArchSpec from values read out of files, with a one-line error for
    a missing field or a value of the wrong type."""
    missing = [f for f in _REQUIRED_FIELDS if f not in values]
    if missing:
        raise ArchitectureError(
            f"The architecture of {path} lacks {', '.join(missing)}: give "
            f'them on the teacher card, the metadata or the command line')
    if isinstance(values['num_layers'], int):
        _check_depth(values['num_layers'], path)
    for key, value in values.items():
        types = _FIELD_TYPES.get(key)
        wrong = types is not None and (
            _wrong_type(value, types) or
            (isinstance(value, float) and not math.isfinite(value)))
        if wrong:
            raise ArchitectureError(
                f"The architecture field '{key}' of {path} must be "
                f"{_type_names(types)} "
                f'(got {value!r:.40}): fix it on the teacher card, the '
                f'metadata or the command line')
        item = _LIST_FIELDS.get(key)
        if item is not None and value is not None and (
                not isinstance(value, list) or
                not all(isinstance(v, item) and not isinstance(v, bool)
                        for v in value)):
            raise ArchitectureError(
                f"The architecture field '{key}' of {path} must be a list "
                f'of {item.__name__} or null (got {value!r:.40}): fix it on '
                f'the teacher card, the metadata or the command line')
        low, high = _FIELD_RANGES.get(key, (None, None))
        if low is not None and not low <= value <= high:
            raise ArchitectureError(
                f"The architecture field '{key}' of {path} must lie in "
                f'[{low:g}, {high:g}] (got {value!r:.40}): fix it on the '
                f'teacher card, the metadata or the command line')
    return ArchSpec.from_dict(values)


# The options whose values decide which tensors a model has, and their shapes.
_SHAPING = ('arch', 'jk', 'norm', 'heads', 'num_layers', 'hidden_channels',
            'in_channels', 'out_channels')


def spec_fix(sources: dict[str, str], path: Path) -> str:
    """What can fix a spec the weights do not fit: the options or the
    teacher card that set some of its fields (options that shape weights
    only: --act or --aggr never made a tensor misfit), else the metadata,
    else the file itself (or the user's own class)."""
    def named(origin: str) -> list[str]:
        return sorted(k for k, v in sources.items() if v == origin and
                      (origin != 'option' or k in _SHAPING))

    if named('option'):
        flags = ', '.join(f"--{k.replace('_', '-')}" for k in named('option'))
        return f'change or drop {flags}'
    if named('card'):
        return (f'fix the spec ({", ".join(named("card"))}) in the teacher '
                f'card {card_path(path).name}')
    if named('metadata'):
        return 'export the model again with gnncompress'
    return f'save the complete state_dict of the model, or {CLASS_FIX}'


def build_loaded(spec: ArchSpec, tensors: dict[str, Tensor],
                 path: Path | str, fix: str | None = None) -> nn.Module:
    """The model of ``spec`` holding ``tensors``, in eval mode. It is built
    once, on the meta device, so that a spec (from metadata, a card or the
    weights' shapes) that declares more parameters than the file holds is
    refused before anything is allocated; then it gets real memory and the
    weights. (Constructing PyG layers is the per-layer cost of loading:
    about 2 ms each, so it is done once.) ``fix``: what the errors
    suggest (:func:`spec_fix`)."""
    fix = fix or ('fix the teacher card, the metadata or the command line '
                  'options')
    total = sum(t.numel() for t in tensors.values())
    widths = (spec.in_channels, spec.hidden_channels, spec.out_channels,
              spec.heads)
    too_big = max(widths) > total or spec.num_layers > len(tensors)
    if not too_big:
        with torch.device('meta'):
            model = build_spec(spec, path)
        too_big = sum(p.numel() for p in model.parameters()) > total
    if too_big:
        raise ArchitectureError(
            f'The architecture given for {path} ({spec.describe()}) needs '
            f'more weights than the file holds ({total:,} numbers): {fix}')
    # Every parameter and buffer of the supported models is in its
    # state_dict, so strict loading leaves nothing uninitialised.
    model = model.to_empty(device='cpu')
    try:
        _load_weights(model, tensors)
    except RuntimeError as e:
        detail = clip(str(e), 300)
        raise ArchitectureError(
            f'The weights of {path} do not fit the architecture '
            f'({spec.describe()}): {detail}: {fix}') from None
    return model.eval()


def _load_weights(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """``model.load_state_dict(tensors, strict=True)`` in time linear in
    the layers: torch's walks every submodule and filters the whole
    state_dict for each (a quarter of a 1,000-layer load). When the names
    and shapes match exactly, each tensor is copied into place as torch
    would; otherwise torch's own call raises its detailed error."""
    own = model.state_dict(keep_vars=True)
    if own.keys() != tensors.keys() or any(
            own[k].shape != tensors[k].shape for k in own):
        model.load_state_dict(tensors, strict=True)
        return
    with torch.no_grad():
        for key, target in own.items():
            target.copy_(tensors[key])


def build_spec(spec: ArchSpec, path: Path | str) -> nn.Module:
    """``build_model(spec)``, with a one-line error for settings that PyG
    does not know (an activation, a normalisation, ...)."""
    try:
        return build_model(spec)
    except (ValueError, KeyError, TypeError, AssertionError,
            NotImplementedError) as e:
        try:
            shown = spec.describe()
        except (ValueError, KeyError, TypeError):  # layers without a kind
            shown = spec.arch
        raise ArchitectureError(
            f'The architecture of {path} ({shown}) cannot be '
            f"built ({type(e).__name__}: {clip(str(e), 160)}): "
            f'fix the teacher card, the metadata or the command line '
            f'options') from None


# An in-memory teacher (the Python API's ``distill(teacher=module)``).
MODULE_PATH = Path('in-memory-teacher')


class ModuleCheckpoint(Checkpoint):
    """A user's ``nn.Module`` as a teacher: the spec is read from its
    weights (it sizes the student and checks the data), but the model the
    run uses is the module itself, so its activation and every other
    detail are exact. Hidden features come from forward hooks
    (models/hooked.py)."""
    module: nn.Module

    def build(self) -> nn.Module:
        from gnncompress.models.hooked import HookedTeacher
        return HookedTeacher(self.module).eval()


def module_checkpoint(module: nn.Module,
                      overrides: dict[str, Any] | None = None,
                      path: Path = MODULE_PATH) -> ModuleCheckpoint:
    """``module`` as a teacher: its layers are recognised from its
    ``state_dict`` as a file's would be (``path``: the file its weights came
    from, for its teacher card)."""
    tensors = {k: v.detach().cpu() for k, v in module.state_dict().items()
               if v.is_floating_point()}
    if not tensors:
        raise ArchitectureError('The teacher module has no floating-point '
                                'weights: pass a trained model')
    try:
        ckpt = _load_spec(path, tensors, {}, overrides)
    except ArchitectureError as error:
        if _known_layout(tensors, path):
            raise
        ckpt = _load_sequence(path, tensors, overrides, error)
    found = ModuleCheckpoint(path=path, spec=ckpt.spec,
                             state_dict=tensors, sources=ckpt.sources,
                             notes=_module_notes(overrides), card=ckpt.card,
                             format='module')
    found.module = module.eval()
    return found


def _module_notes(overrides: dict[str, Any] | None) -> dict[str, str]:
    """A module teacher runs its own forward: nothing about it is assumed
    (no activation note), and the options that would set what a rebuilt
    teacher cannot read from its weights change nothing."""
    given = [k for k, v in (overrides or {}).items() if v is not None]
    if not given:
        return {}
    return {'ignored': (
        f"{', '.join('--' + k for k in given)} ignored: the teacher is "
        f'your module, run by its own forward')}


def user_teacher(path: Path | str, class_path: str,
                 args: dict[str, Any] | None = None) -> nn.Module:
    """The user's own model class (``'package.module:Class'``) built with
    ``args`` and given the weights of ``path`` (read weights-only, as every
    checkpoint). Importing the class runs the user's code: their choice,
    from their environment, never from the file."""
    import importlib
    module_name, _, class_name = class_path.partition(':')
    if not module_name or not class_name:
        raise CheckpointError(f"--teacher-class {class_path!r} is not "
                              f"'module:Class': write it as e.g. "
                              f"mypkg.models:Net")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as e:  # noqa: BLE001 -- any import failure is the user's
        raise CheckpointError(
            f'Cannot import {class_path} ({type(e).__name__}: '
            f'{_first_line(e)}): check the name and that its package is on '
            f'PYTHONPATH') from None
    try:
        model = cls(**(args or {}))
    except Exception as e:  # noqa: BLE001 -- the user's constructor
        raise CheckpointError(
            f'Cannot build {class_path}(**{args or {}}) '
            f'({type(e).__name__}: {_first_line(e)}): give its constructor '
            f'arguments with --teacher-args') from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f'{class_path} is not a torch.nn.Module: name '
                              f'the model class')
    tensors, _ = read_weights(Path(path))
    expected = set(model.state_dict())
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        shown = ', '.join([*(f'missing {k}' for k in missing[:2]),
                           *(f'unexpected {k}' for k in unexpected[:2])])
        raise CheckpointError(
            f'The weights in {Path(path).name} do not fit {class_path} '
            f'({len(missing)} missing, {len(unexpected)} unexpected keys: '
            f'{shown}): check --teacher-args or the class')
    for key, value in model.state_dict().items():
        if tuple(value.shape) != tuple(tensors[key].shape):
            raise CheckpointError(
                f'The weights in {Path(path).name} do not fit {class_path}: '
                f'{key} is {tuple(tensors[key].shape)} in the file but '
                f'{tuple(value.shape)} in the class: check --teacher-args')
    model.load_state_dict(tensors)
    return model.eval()
