"""Student files: weights and spec as safetensors, written atomically with the
same bytes for the same contents."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from gnncompress import __version__
from gnncompress.checkpoints.reading import SPEC_KEY, VERSION_KEY, read_weights
from gnncompress.core.errors import CheckpointError, clip
from gnncompress.core.out_folder import atomic_path
from gnncompress.models import ArchSpec
from gnncompress.models.slimmable import (
    SLIMMABLE_KEY,
    SlimmableGNN,
    SlimmableSpec,
)

# Student metadata: the width of the position features (NOSMOG) the
# student reads after x, which its ONNX file takes as a second input.
POSITION_KEY = 'gnncompress.position_dim'


def saved_position_dim(path: Path | str) -> int:
    """The width of the position features a saved student reads after x
    (0: none, or not a safetensors file)."""
    if Path(path).suffix != '.safetensors':
        return 0
    _, metadata = read_weights(Path(path))
    return int(metadata.get(POSITION_KEY, 0))


def save_safetensors(model: nn.Module, spec: ArchSpec, path: Path,
                     extra: dict[str, str] | None = None) -> Path:
    """Weights plus the ArchSpec in the metadata: reloadable with nothing
    else (``gnncompress.checkpoints.teachers.load_checkpoint``)."""
    metadata = {SPEC_KEY: spec.to_json(), VERSION_KEY: __version__,
                **(extra or {})}
    return write_safetensors(model.state_dict(), metadata, path)


def write_safetensors(state_dict: dict[str, Tensor], metadata: dict[str, str],
                      path: Path) -> Path:
    """``state_dict`` and ``metadata`` as a safetensors file, written
    atomically, with the same bytes for the same contents."""
    from safetensors.torch import save

    # save refuses shared and non-contiguous tensors: clone each.
    tensors = {k: v.detach().to('cpu').contiguous().clone()
               for k, v in state_dict.items()}
    data = _sorted_header(save(tensors, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _sorted_header(data: bytes) -> bytes:
    """The safetensors bytes with the metadata keys in sorted order. The
    library writes them in hash order, which changes from one call to the
    next: identical students would give files with different hashes."""
    size = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + size])
    header['__metadata__'] = dict(sorted(header['__metadata__'].items()))
    text = json.dumps(header, separators=(',', ':'),
                      ensure_ascii=False).encode()
    text += b' ' * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return len(text).to_bytes(8, 'little') + text + data[8 + size:]


def save_slimmable(model: SlimmableGNN, path: Path,
                   extra: dict[str, str] | None = None) -> Path:
    """All shared weights plus the spec in the safetensors metadata."""
    metadata = {SLIMMABLE_KEY: model.spec.to_json(),
                VERSION_KEY: __version__, **(extra or {})}
    return write_safetensors(model.state_dict(), metadata, Path(path))


def load_slimmable(path: str | Path) -> tuple[SlimmableGNN, dict[str, Any]]:
    """A slimmable student written by :func:`save_slimmable`, and the file's
    metadata."""

    tensors, metadata = read_weights(Path(path))
    if SLIMMABLE_KEY not in metadata:
        raise CheckpointError(f'{path} holds no slimmable student (no '
                              f"'{SLIMMABLE_KEY}' metadata)")
    model = SlimmableGNN(SlimmableSpec.from_json(metadata[SLIMMABLE_KEY]))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f'The weights of {path} do not fit its '
                              f'spec: {clip(str(e), 200)}') \
            from None
    return model.eval(), metadata
