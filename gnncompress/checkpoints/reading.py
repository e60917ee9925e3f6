"""Reading checkpoint files without running code from them: safetensors, or
torch files unpickled with an allow-list of plain types; limits on size,
depth and tensor count; the checks that every weight is finite."""
from __future__ import annotations

import argparse
import math
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gnncompress.core.defaults import DEFAULT_MAX_CHECKPOINT_GB
from gnncompress.core.errors import ArchitectureError, CheckpointError, clip
from gnncompress.core.finite import all_finite
from gnncompress.models.recognise import (
    strip_prefixes,
)

SPEC_KEY = 'gnncompress.spec'


VERSION_KEY = 'gnncompress.version'


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




# More layers than any GNN in use; building each costs about 2 ms, so a
# small file declaring 10^6 layers would otherwise take half an hour.
MAX_LAYERS = 1000


# Tensors: a 1,000-layer GIN with norms has about 10,000.
MAX_TENSORS = 50_000


_WEIGHT_DTYPES = (torch.float32, torch.float64, torch.float16,
                  torch.bfloat16, torch.int64, torch.int32, torch.int16,
                  torch.int8, torch.uint8, torch.bool)


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
            raise CheckpointError(f'Checkpoint not found: {path}: check the '
                                  f'path (a .pt or .safetensors file)')
        if not path.is_file():
            raise CheckpointError(
                f'Checkpoint {path} is a folder: give the .pt or '
                f'.safetensors file inside it' if path.is_dir() else
                f'Checkpoint {path} is not a file: give a .pt or '
                f'.safetensors file')
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
    otherwise make the model reserve terabytes), NaN or infinite values
    (the teacher diverged, or the file is corrupt: distilling from it would
    only fail later with a misleading message) and negative running
    variances of a batch norm (every output would be NaN)."""
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
        if any(d > MAX_DIMENSION for d in value.shape):
            raise CheckpointError(
                f'Tensor {name} of {path} declares a dimension of '
                f'{max(value.shape):,}, more than any model weight has '
                f'({MAX_DIMENSION:,}): the file is corrupted; save the '
                f'weights again')
        if value.is_floating_point() and not all_finite(value):
            bad = 'NaN' if bool(torch.isnan(value).any()) else 'infinite'
            raise CheckpointError(
                f'Tensor {name} of {path} holds {bad} values: the teacher '
                f'diverged in training or the file is corrupted; retrain it '
                f'or save it again')
        if key.endswith('running_var') and value.is_floating_point() and \
                bool((value < 0).any()):
            # A batch norm divides by sqrt(running_var): every output NaN.
            raise CheckpointError(
                f'Tensor {name} of {path} holds negative variances, which '
                f'no batch norm has: the file is corrupted; save the '
                f'weights again')


# No weight of a supported model has a dimension near this (the widest is
# an input layer as wide as the features); torch's stride arithmetic
# overflows on empty tensors whose other dimensions multiply past 2**63.
MAX_DIMENSION = 2 ** 31


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
            f'({clip(str(e), 160)}): save or copy it again') from None
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
    from gnncompress.core.errors import error_line
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
