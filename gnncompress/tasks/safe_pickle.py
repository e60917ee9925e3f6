"""Read dataset files without running code from them.

PyG reads the raw files of its Planetoid datasets with ``pickle.load``, its
processed caches with ``torch.load`` (falling back to a full unpickle when
``weights_only=True`` fails), and hands the arrays of raw files to scipy's
C++ routines, which trust them. A dataset folder could therefore run code
or write outside an array. While :func:`pyg_reading` is active:

- pickled raw files go through :class:`RestrictedUnpickler`, which builds
  only numpy arrays, csr/csc/coo matrices, lists and the graph file's
  defaultdict;
- every sparse matrix a raw file holds (pickled or in an ``.npz``) is
  rebuilt from its arrays and checked in full before scipy expands it;
- every ``torch.load`` is weights-only with :data:`PROCESSED_GLOBALS` as its
  only allow-list, so PyG's fallback cannot unpickle anything else;
- a processed cache is read with its tensors mapped from the file
  (:func:`load_mapped`) and written whole, to a temporary file then renamed
  (:func:`save_whole`), so that a file another run has mapped is never
  truncated under it.

:func:`build_pyg_dataset` adds the rest: a processed cache that does not
load that way is deleted and rebuilt from the raw files.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import mmap as mmap_module
import os
import pickle
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch

from gnncompress.core.errors import DataError, GnnCompressError

T = TypeVar('T')
_FORCE = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_NO_FORCE = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
_LOCK = threading.RLock()
# Values a raw pickle may hold besides arrays and containers.
_LEAVES = (int, float, bool, str, bytes, bytearray, type(None), np.generic,
           np.dtype)
_FIX = 'replace it with a clean copy of the dataset'


def _latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of Python 3 use it (bytes
    written as latin-1 text), with that codec only."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'_codecs.encode with {encoding!r}')
    return text.encode('latin-1')


@functools.cache
def allowed_globals() -> dict[tuple[str, str], Any]:
    """``(module, name)`` -> object: everything a raw dataset pickle may
    name. Old and new module paths of numpy and scipy are listed because
    the files were written by many versions (Planetoid's by Python 2)."""
    import scipy.sparse as sp

    core = getattr(np, '_core', None) or np.core
    allowed: dict[tuple[str, str], Any] = {
        ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
        ('numpy', 'frombuffer'): np.frombuffer,
        ('collections', 'defaultdict'): defaultdict,
        ('_codecs', 'encode'): _latin1_encode,
    }
    for package in ('numpy.core', 'numpy._core'):
        allowed[package + '.multiarray', '_reconstruct'] = \
            core.multiarray._reconstruct
        allowed[package + '.multiarray', 'scalar'] = core.multiarray.scalar
        allowed[package + '.numeric', '_frombuffer'] = \
            core.numeric._frombuffer
    for module in ('builtins', '__builtin__'):
        allowed[module, 'list'] = list
        allowed[module, 'bytearray'] = bytearray
    for kind in ('csr', 'csc', 'coo'):
        for form in ('matrix', 'array'):
            cls = getattr(sp, f'{kind}_{form}')
            for module in ('scipy.sparse', f'scipy.sparse.{kind}',
                           f'scipy.sparse._{kind}'):
                allowed[module, cls.__name__] = cls
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names of
    :func:`allowed_globals`; any other name ends the load."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return allowed_globals()[module, name]
        except (KeyError, TypeError):
            raise _Refused(f'a pickled {module}.{name}') from None


class _Refused(pickle.UnpicklingError):
    """A raw file holds something no dataset format needs."""


def load_pickle(file: IO[bytes], name: str, encoding: str = 'ASCII') -> Any:
    """The object pickled in ``file`` (called ``name`` in errors), built by
    :class:`RestrictedUnpickler`; sparse matrices rebuilt and checked."""
    from gnncompress.core.errors import error_line

    try:
        obj = RestrictedUnpickler(file, encoding=encoding).load()
        return _checked(obj)
    except _Refused as e:
        raise DataError(f'{name} holds {e}, which no dataset file needs and '
                        f'gnncompress never unpickles: {_FIX}') from None
    except Exception as e:  # noqa: BLE001 -- truncated or corrupt
        raise DataError(f'{name} is not a readable dataset file '
                        f'({error_line(e)}): {_FIX}') from None


def _checked(obj: Any) -> Any:
    """``obj`` if it holds only arrays of numbers, numbers, strings, lists
    and dicts (a defaultdict of lists at most); a sparse matrix at the top
    rebuilt from its arrays and checked (see :func:`checked_sparse`)."""
    import scipy.sparse as sp

    if sp.issparse(obj):
        return checked_sparse(obj)
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (np.ndarray, np.generic)):
            if item.dtype.hasobject:
                raise _Refused('an array of Python objects')
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            factory = getattr(item, 'default_factory', None)
            if factory not in (None, list):
                raise _Refused(f'a defaultdict of {factory!r:.40}')
            stack.extend(item.keys())
            stack.extend(item.values())
        elif not isinstance(item, _LEAVES):
            raise _Refused(f'a {type(item).__name__} inside a container')
    return obj


def checked_sparse(matrix: Any) -> Any:
    """A fresh csr/csc/coo matrix of the same class built from
    ``matrix``'s arrays, each index checked against the shape: scipy's
    C++ routines trust them, and an index out of range writes outside
    the dense array (a crash, or worse). Raises ``ValueError``."""
    import scipy.sparse as sp

    state = vars(matrix)  # the pickled attributes, no class properties
    shape = tuple(int(s) for s in state.get('_shape', ()))
    cls = type(matrix)
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f'a sparse matrix of shape {shape}')
    if issubclass(cls, (sp.coo_matrix, sp.coo_array)):
        coords = state.get('coords') or (state.get('row'), state.get('col'))
        arrays = [state.get('data'), *coords]
        _numeric(arrays)
        # coo's constructor checks every index against the shape.
        return cls((arrays[0], tuple(arrays[1:])), shape=shape)
    arrays = [state.get(k) for k in ('data', 'indices', 'indptr')]
    _numeric(arrays)
    rebuilt = cls(tuple(arrays), shape=shape)
    rebuilt.check_format(full_check=True)
    return rebuilt


def _numeric(arrays: list[Any]) -> None:
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 and
               not a.dtype.hasobject for a in arrays):
        raise ValueError('a sparse matrix without its 1-d number arrays')


def _checked_npz(parse: Callable[..., T],
                 shown: Callable[[str], str]) -> Callable[..., T]:
    """PyG's ``parse_npz``, after the two csr matrices of the ``.npz``
    (features and adjacency) are checked like pickled ones."""
    import scipy.sparse as sp

    from gnncompress.core.errors import error_line

    @functools.wraps(parse)
    def checked(f: Any, *args: Any, **kwargs: Any) -> T:
        name = shown(str(getattr(getattr(f, 'zip', None), 'filename', '')))
        try:
            for part in ('attr', 'adj'):
                shape = tuple(int(s) for s in f[f'{part}_shape'])
                matrix = sp.csr_matrix(
                    (f[f'{part}_data'], f[f'{part}_indices'],
                     f[f'{part}_indptr']), shape=shape)
                matrix.check_format(full_check=True)
        except Exception as e:  # noqa: BLE001 -- any failure: a bad file
            raise DataError(f'{name} is not a readable dataset file '
                            f'({error_line(e)}): {_FIX}') from None
        return parse(f, *args, **kwargs)

    return checked


class _PickleModule:
    """What PyG's Planetoid reader sees as ``pickle``: only ``load``,
    through :func:`load_pickle`."""

    def __init__(self, shown: Callable[[str], str]) -> None:
        self._shown = shown

    def load(self, file: IO[bytes], encoding: str = 'ASCII',
             **_: Any) -> Any:
        path = getattr(file, 'path', None) or getattr(file, 'name', '')
        return load_pickle(file, self._shown(str(path)), encoding)


def processed_globals() -> list[Any]:
    """The allow-list of processed caches: PyG writes each as
    ``(data.to_dict(), slices, Data)``, tensors in plain containers and
    the ``Data`` class by name."""
    from torch_geometric.data import Data
    return [Data]


def load_mapped(path: str, map_location: Any = None) -> Any:
    """PyG's ``fs.torch_load`` for a processed cache: weights-only, with the
    tensors mapped from the file instead of copied out of it, so the
    process holds no second copy of them (Physics: 1.16 GB of features)
    and the read itself takes a millisecond, the pages coming from the
    page cache as they are first used. The mapping is private: writing to
    a loaded tensor copies the page and leaves the file as it was. Where
    that cannot be had (Windows, where a mapped file cannot be replaced
    either; torch's mmap option set to shared by the caller) or the file
    cannot be mapped, the file is read as before."""
    if os.name != 'nt' and mmap_module.MAP_PRIVATE == \
            torch.serialization.get_default_mmap_options():
        try:
            return torch.load(path, map_location, weights_only=True,
                              mmap=True)
        except RuntimeError:
            pass
    return torch.load(path, map_location, weights_only=True)


def save_whole(data: Any, path: str) -> None:
    """PyG's ``fs.torch_save`` for a processed cache, written to a temporary
    file in the same folder and renamed over ``path``: a run that has the
    old file mapped keeps reading it (writing in place would truncate it
    under that run), and an interrupted write leaves no partial cache."""
    from gnncompress.core.out_folder import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save(data, tmp)


@contextlib.contextmanager
def pyg_reading(work: Path | None = None,
                source: Path | None = None) -> Iterator[None]:
    """PyG's dataset readers made safe for the duration (see the module
    docstring); errors name files under ``source`` where PyG read their
    copies under ``work``. Everything is restored on exit."""
    import torch_geometric.io.fs as fs_io
    import torch_geometric.io.npz as npz_io
    import torch_geometric.io.planetoid as planetoid_io

    def shown(path: str) -> str:
        if work is not None and source is not None:
            with contextlib.suppress(ValueError):
                return str(source / Path(path).relative_to(work))
        return path

    with _LOCK:
        allow = inspect.signature(np.load).parameters.get('allow_pickle')
        if getattr(planetoid_io, 'pickle', None) is not pickle or \
                not hasattr(npz_io, 'parse_npz') or allow is None or \
                allow.default is not False or \
                not hasattr(fs_io, 'torch_load') or \
                not hasattr(fs_io, 'torch_save'):
            raise DataError('This torch_geometric or numpy reads dataset '
                            'files in a way gnncompress cannot make safe: '
                            'install the versions in constraints.txt')
        env = {k: os.environ.get(k) for k in (_FORCE, _NO_FORCE)}
        safe = torch.serialization.get_safe_globals()
        parse = npz_io.parse_npz
        load, save = fs_io.torch_load, fs_io.torch_save
        try:
            planetoid_io.pickle = _PickleModule(shown)
            npz_io.parse_npz = _checked_npz(parse, shown)
            fs_io.torch_load, fs_io.torch_save = load_mapped, save_whole
            os.environ.pop(_NO_FORCE, None)
            os.environ[_FORCE] = '1'
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(processed_globals())
            yield
        finally:
            # Keep what modules imported meanwhile registered for later.
            ours = processed_globals()
            added = [g for g in torch.serialization.get_safe_globals()
                     if g not in ours]
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(safe + added)
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            npz_io.parse_npz = parse
            fs_io.torch_load, fs_io.torch_save = load, save
            planetoid_io.pickle = pickle


def build_pyg_dataset(construct: Callable[[], T], processed: Path,
                      work: Path | None = None,
                      source: Path | None = None) -> T:
    """``construct()`` (a PyG dataset) inside :func:`pyg_reading`. When its
    processed cache ``processed`` was there and the dataset fails to load
    (a cache that needs more than :func:`processed_globals`, a truncated
    one, one from another PyG), the cache is deleted and built again from
    the raw files, once."""
    cached = processed.is_dir()
    with pyg_reading(work, source):
        try:
            return construct()
        except GnnCompressError:
            raise
        except Exception:  # noqa: BLE001 -- rebuilt below, or raised
            if not cached:
                raise
        shutil.rmtree(processed, ignore_errors=True)
        return construct()
