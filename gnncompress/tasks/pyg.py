"""PyG datasets read safely: processed in a working copy inside the cache (a
source folder may be read-only, and PyG must not read a processed file
someone else wrote), unpickled through an allow-list, and checked field by
field before any task uses them."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from gnncompress.core.catalogue import default_root
from gnncompress.core.errors import DataError, GnnCompressError, error_line
from gnncompress.core.finite import all_finite


def load_pyg_dataset(cls_name: str, name: str, root: str | Path | None):
    """A PyG dataset, processed in the cache (a source folder outside it
    is copied there first) and read without unpickling anything beyond an
    allow-list (gnncompress.tasks.safe_pickle)."""
    import torch_geometric.datasets as pyg_datasets

    cache = default_root()
    source = Path(root).expanduser() if root is not None else cache
    folder = _folder(cls_name, name)
    if (source / folder / 'raw').is_dir():
        work = working_copy(source / folder)
    elif root is not None:
        raise DataError(f"Dataset '{name}' not found under {source} (expected "
                        f'{source / folder / "raw"}): fix --data-root')
    else:
        work = cache / folder
    return build_dataset(
        lambda: getattr(pyg_datasets, cls_name)(str(work.parent), name),
        name, work, source / folder)


def working_copy(folder: Path) -> Path:
    """Where PyG may process the dataset whose raw files are in
    ``folder/raw``: ``folder`` itself inside the cache, else a copy of its
    raw files in the cache (the source may be read-only, and PyG must not
    read a processed cache that someone else wrote)."""
    cache = default_root()
    if folder.resolve().is_relative_to(cache.resolve()):
        return folder
    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    work = cache / 'copies' / tag / folder.name
    if not (work / 'raw').is_dir():
        work.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=work, prefix='.copy-'))
        try:
            shutil.copytree(folder / 'raw', tmp / 'raw',
                            copy_function=_copy_regular)
            os.chmod(tmp / 'raw', 0o755)  # the source may be read-only
            with contextlib.suppress(OSError):  # another process was first
                os.replace(tmp / 'raw', work / 'raw')
        except OSError as e:
            raise DataError(f'{folder / "raw"} cannot be copied to the '
                            f'cache {cache} ({error_line(e)}): check that '
                            f'its files are readable') from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return work


def _copy_regular(src: str, dst: str) -> None:
    """``shutil.copyfile`` for regular files only: a link to a device
    (/dev/zero) would copy forever."""
    if not stat.S_ISREG(os.stat(src).st_mode):
        raise DataError(f'{src} is not a regular file: a dataset folder '
                        f'holds files only')
    shutil.copyfile(src, dst)


def build_dataset(construct: Callable[[], Any], name: str, work: Path,
                  source: Path) -> Any:
    """``construct()``, a PyG dataset with its files in ``work`` (copied
    from ``source``), read safely; any failure is a one-line DataError."""
    from gnncompress.tasks.safe_pickle import build_pyg_dataset

    try:
        work.mkdir(parents=True, exist_ok=True)
        # PyG prints 'Processing...' the first time, and warns when it
        # reloads its cache: keep stdout for results.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return build_pyg_dataset(construct, work / 'processed', work,
                                     source)
    except GnnCompressError:
        raise
    except Exception as e:  # noqa: BLE001 -- whatever the files make PyG do
        raise DataError(f"Dataset '{name}' could not be loaded from {source} "
                        f'({error_line(e)}): pass --data-root with a folder '
                        f'that holds {source.name}/raw') from None


def _folder(cls_name: str, name: str) -> str:
    return name.capitalize() if cls_name == 'Amazon' else name


def check_labels(y: Tensor, name: str) -> None:
    """Class labels must be integers 0..C-1 (any dtype that holds them)."""
    if y.is_complex() or y.dtype == torch.bool or (
            y.is_floating_point() and
            not bool((torch.isfinite(y) & (y == y.round())).all())):
        raise DataError(f"Dataset '{name}': labels 'y' must be integers "
                        f'(got {y.dtype}): convert them with .long()')
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"Dataset '{name}': labels 'y' must be 0..C-1 (found "
                        f'{int(y.min())}): relabel or drop unlabelled nodes')


def check_data(data: Data, name: str) -> None:
    """Refuse, with a one-line error, a ``Data`` the engine cannot train on:
    every field the loader reads must have the right type, shape and range
    (edge indices inside the graph, one non-negative integer label per node,
    finite features, boolean masks of the right length)."""
    store = data._store  # plain attribute access, no PyG inference
    x, edge_index = store.get('x'), store.get('edge_index')
    if not isinstance(x, Tensor) or not isinstance(edge_index, Tensor):
        raise DataError(f"Dataset '{name}' has no node features 'x' or no "
                        f"'edge_index' tensor")
    for field, value in (('x', x), ('edge_index', edge_index)):
        if value.layout != torch.strided:
            raise DataError(f"Dataset '{name}': '{field}' is a "
                            f"{str(value.layout).removeprefix('torch.')} "
                            f'tensor: save it dense (.to_dense())')
    if x.dim() != 2 or x.size(0) < 1 or x.size(1) < 1 or x.is_complex():
        raise DataError(f"Dataset '{name}': 'x' must be a real [nodes, "
                        f'features] matrix (got shape {list(x.shape)}, '
                        f'{x.dtype})')
    n = x.size(0)
    declared = store.get('num_nodes')
    if declared is not None and declared != n:
        raise DataError(f"Dataset '{name}' declares num_nodes={declared!r:.30}"
                        f" but 'x' has {n} rows: drop num_nodes or fix 'x'")
    if not all_finite(x.float()):
        raise DataError(f"Dataset '{name}': 'x' holds NaN or infinite "
                        f'values (or values too large for float32): clean '
                        f'the features')
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise DataError(f"Dataset '{name}': 'edge_index' must have shape "
                        f'[2, edges] (got {list(edge_index.shape)})')
    if edge_index.is_floating_point() or edge_index.is_complex() or \
            edge_index.dtype == torch.bool:
        raise DataError(f"Dataset '{name}': 'edge_index' must hold integers "
                        f'(got {edge_index.dtype}): convert it with .long()')
    low, high = (int(edge_index.min()), int(edge_index.max())) \
        if edge_index.numel() else (0, 0)
    if low < 0 or high >= n:
        raise DataError(f"Dataset '{name}': 'edge_index' refers to node "
                        f'{low if low < 0 else high} but the graph has nodes '
                        f"0-{n - 1}: fix the edges or 'x'")
    y = store.get('y')
    if not isinstance(y, Tensor) or y.dim() != 1 or y.numel() != n:
        raise DataError(f"Dataset '{name}' needs one integer label per node "
                        f"in 'y'")
    check_labels(y, name)
    if int(y.max()) >= n:
        raise DataError(f"Dataset '{name}': label {int(y.max())} is not "
                        f'below the number of nodes ({n}): number the '
                        f'classes 0..C-1')
    masks = [store.get(m) for m in ('train_mask', 'val_mask', 'test_mask')]
    if all(isinstance(m, Tensor) and m.dim() == 1 for m in masks):
        for label, mask in zip(('train_mask', 'val_mask', 'test_mask'),
                               masks):
            if mask.numel() != n or not (
                    mask.dtype == torch.bool or
                    bool(((mask == 0) | (mask == 1)).all())):
                raise DataError(
                    f"Dataset '{name}': '{label}' must be a boolean mask of "
                    f'{n} nodes (got {mask.numel()} values of {mask.dtype})')
        if not bool(masks[0].bool().any()):
            raise DataError(f"Dataset '{name}': 'train_mask' selects no "
                            f'node: mark the labelled training nodes')
