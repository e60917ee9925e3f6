"""Load teacher checkpoints safely and infer their ArchSpec from the weights.

Only tensors are ever read: ``.pt`` files go through
``torch.load(weights_only=True)`` after their pickled globals are listed, and
``.safetensors`` files hold nothing but tensors and string metadata.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.checkpoints.cards import (
    _type_names,
    _wrong_type,
    card_path,
    read_card,
)
from gnncompress.checkpoints.inference import infer_spec
from gnncompress.checkpoints.reading import (
    SPEC_KEY,
    _check_depth,
    _first_line,
    read_weights,
)
from gnncompress.core.errors import ArchitectureError, CheckpointError, clip
from gnncompress.models import ArchSpec, build_model
from gnncompress.models.recognise import (
    ACT_NOTE,
    CLASS_FIX,
    UnknownLayerError,
    sequence_spec,
)
from gnncompress.models.slimmable import SLIMMABLE_KEY


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


def load_checkpoint(path: Path | str,
                    overrides: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint and its spec; ``overrides`` (CLI options) win over
    the teacher card, which wins over the weights and the defaults."""
    path = Path(path)
    tensors, metadata = read_weights(path)
    if SLIMMABLE_KEY in metadata:
        onnx = path.parent / 'onnx'
        raise CheckpointError(
            f'{path} is a slimmable student written by gnncompress '
            f'amalgamate (one body, a head per task, several widths), not '
            f'one model: use its ONNX files, one per task and width '
            f'({onnx}/*.onnx, which bench and onnxruntime take), or load '
            f'it in Python with gnncompress.checkpoints.students.'
            f'load_slimmable')
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
