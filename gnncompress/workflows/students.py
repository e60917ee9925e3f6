"""The student a run builds: its spec from the teacher's, the width checks, and
the distillation method from its name and options."""
from __future__ import annotations

import inspect as _inspect
import json
import math
import operator
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from gnncompress.core.defaults import DEFAULT_RATIO
from gnncompress.core.errors import ArchitectureError, GnnCompressError
from gnncompress.core.graph import Graph
from gnncompress.core.options import (
    check_memory,
    check_method_name,
    check_ratio,
    training_bytes,
)
from gnncompress.core.timing import phase
from gnncompress.methods import DistillMethod, canonical_name, method_class
from gnncompress.methods.combined import Combined
from gnncompress.models import ArchSpec, count_spec_parameters

STUDENT_DROPOUT = 0.5


def student_spec(teacher: ArchSpec, graph: Graph, *, arch: str = 'gcn',
                 hidden: int | None = None, layers: int = 2, heads: int = 1,
                 ratio: float | None = None,
                 readout: str | None = None) -> ArchSpec:
    """The student: ``hidden`` if given, else the widest one that leaves the
    teacher at least ``ratio`` times more parameters."""
    if arch not in ('gat', 'gatv2'):
        heads = 1

    def make(width: int) -> ArchSpec:
        return ArchSpec(arch=arch, in_channels=graph.num_features,
                        hidden_channels=width, num_layers=layers,
                        out_channels=graph.num_classes, heads=heads,
                        dropout=STUDENT_DROPOUT, readout=readout)

    if hidden is not None:
        if ratio is not None:
            raise GnnCompressError('Give either --hidden or --ratio, not both')
        check_trainable(make(hidden), graph, f'A student of --hidden {hidden}')
        return make(hidden)
    ratio = DEFAULT_RATIO if ratio is None else ratio
    check_ratio(ratio)
    budget = count_spec_parameters(teacher) / ratio
    start = max(teacher.hidden_channels, heads)
    for width in range(start - start % heads, 0, -heads):
        if count_spec_parameters(make(width)) <= budget:
            check_student_width(width, graph, arch, layers, ratio)
            return make(width)
    raise ArchitectureError(
        f'No {layers}-layer {arch} student is {ratio:g}x smaller than the '
        f'teacher ({count_spec_parameters(teacher):,} parameters): lower '
        f'--ratio or --layers')


def check_trainable(spec: ArchSpec, graph: Graph, what: str) -> None:
    """Refuse, before it is built, a model whose training cannot fit in
    memory."""
    # A preview without data (inspect --hidden) knows no node count: the
    # weights and optimiser state alone are checked then.
    nodes = getattr(graph, 'num_nodes', 0)
    check_memory(training_bytes(count_spec_parameters(spec), nodes,
                                spec.hidden_channels, spec.num_layers),
                 what, 'give a smaller --hidden or fewer --layers')


MIN_HIDDEN = 8


def check_student_width(width: int, graph: Graph, arch: str, layers: int,
                        ratio: float) -> None:
    """Refuse a student the ratio squeezed below the number of classes or
    below MIN_HIDDEN: it cannot hold what the teacher knows."""
    floor = max(MIN_HIDDEN, graph.num_classes)
    if width < floor:
        raise ArchitectureError(
            f'A {layers}-layer {arch} student {ratio:g}x smaller than the '
            f'teacher would be {width} wide, below {floor} (the number of '
            f'classes, at least {MIN_HIDDEN}): pass --hidden {floor} or '
            f'more, or a smaller --ratio')


def _accepted(cls: type) -> list[str]:
    return [p for p in _inspect.signature(cls.__init__).parameters
            if p != 'self']


# What a method option of each annotated type takes, and an example.
_TAKES = {'bool': ('true or false', 'true'),
          'int': ('a whole number', '2'),
          'float': ('a finite number', '0.5'),
          'str': ('text', 'name'),
          'Sequence[int]': ('a list of layer indices', '[0,1]')}


def _index(value: Any) -> int:
    """A whole number of any integer type (Python's, numpy's, an integer
    tensor of one element), not a bool; TypeError otherwise."""
    if isinstance(value, bool):
        raise TypeError(value)
    return operator.index(value)


def _number(value: Any) -> float:
    """A finite number of any real type (numpy's, a one-element tensor),
    not a bool or text; TypeError or ValueError otherwise."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _indices(value: Any) -> list[int]:
    """Layer indices: a sequence of whole numbers, or a single one."""
    if isinstance(value, (str, bytes)):
        raise TypeError(value)
    try:
        return [_index(value)]
    except TypeError:
        return [_index(v) for v in value]


def _of_type(kind: type) -> Callable[[Any], Any]:
    def same(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(value)
        return value
    return same


# How a value becomes each annotated type (TypeError or ValueError when
# it cannot).
_AS = {'bool': _of_type(bool), 'str': _of_type(str), 'int': _index,
       'float': _number, 'Sequence[int]': _indices}


def _typed_option(cls: type[DistillMethod], key: str, value: Any,
                  prefix: str = '') -> Any:
    """``value`` as option ``key`` of ``cls`` takes it (a single index
    for a list of layers becomes a list of one; numpy and tensor numbers
    become Python's), or a one-line error that says what it takes.
    Options come from ``-o KEY=VALUE`` as JSON values or text, so a typo
    arrives here as text. ``prefix`` is the part's name in a sum
    (``kd.``)."""
    param = _inspect.signature(cls.__init__).parameters[key]
    annotation = str(param.annotation)
    kind = annotation.removesuffix(' | None')
    if (value is None and annotation.endswith(' | None')) or kind not in _AS:
        return value
    try:
        return _AS[kind](value)
    except (TypeError, ValueError, RuntimeError):  # (a tensor of several)
        pass
    takes, example = _TAKES[kind]
    if isinstance(param.default, str):
        example = param.default
    elif param.default is not None and kind != 'Sequence[int]':
        example = json.dumps(param.default)
    raise GnnCompressError(
        f"Option {prefix}{key} of method '{cls.name}' takes {takes} (got "
        f"{value!r}): give e.g. -o {prefix}{key}={example}")


def _instantiate(cls: type[DistillMethod], options: dict[str, Any],
                 prefix: str = '') -> DistillMethod:
    unknown = [k for k in options if k not in _accepted(cls)]
    if unknown:
        raise GnnCompressError(
            f"Method '{cls.name}' has no option {', '.join(unknown)} "
            f"(accepted: {', '.join(_accepted(cls)) or 'none'})")
    options = {k: _typed_option(cls, k, v, prefix)
               for k, v in options.items()}
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise GnnCompressError(f"Bad option for method '{cls.name}': {e}") \
            from None


def _part_weight(name: str, weight: Any) -> float:
    """``-o NAME.weight=W``, checked as ``--weight`` is."""
    try:
        number = _number(weight)
    except (TypeError, ValueError, RuntimeError):
        number = -1.0
    if number < 0:
        raise GnnCompressError(
            f'-o {name}.weight must be a finite number, 0 or more (got '
            f'{weight!r}): give e.g. -o {name}.weight=0.5')
    return number


def build_method(name: str,
                 options: dict[str, Any] | None = None) -> DistillMethod:
    """The method called ``name``; ``a+b`` combines methods. With several
    methods, ``a.key`` options go to method ``a`` (``a.weight`` is its weight
    in the sum) and plain keys to every method that accepts them."""
    options = dict(options or {})
    check_method_name(name)
    names = [n.strip() for n in name.split('+')]
    if len(names) == 1:
        return _instantiate(method_class(names[0]), options)
    classes = [method_class(n) for n in names]
    keys = {canonical_name(c.name) for c in classes}
    stray = [k for k in options if '.' in k and
             canonical_name(k.split('.', 1)[0]) not in keys]
    if stray:
        raise GnnCompressError(f"Option(s) {', '.join(stray)} name no method "
                               f"of '{name}'")
    plain = {k: v for k, v in options.items() if '.' not in k}
    unused = [k for k in plain
              if not any(k in _accepted(c) for c in classes)]
    if unused:
        raise GnnCompressError(f"No method of '{name}' has option "
                               f"{', '.join(unused)}")
    parts, weights = [], []
    for cls in classes:
        own = {k.split('.', 1)[1]: v for k, v in options.items()
               if '.' in k and
               canonical_name(k.split('.', 1)[0]) == canonical_name(cls.name)}
        weight = own.pop('weight', None)
        if weight is not None:
            weight = _part_weight(cls.name, weight)
        shared = {k: v for k, v in plain.items() if k in _accepted(cls)}
        part = _instantiate(cls, {**shared, **own}, prefix=f'{cls.name}.')
        parts.append(part)
        weights.append(part.default_weight if weight is None else weight)
    return Combined(parts, weights)


def with_student_inputs(distiller: DistillMethod, graph: Graph,
                        student: str, seed: int, sampled: bool = False
                        ) -> tuple[Graph, Tensor | None]:
    """``graph`` with the columns ``distiller`` adds to the student's input
    after ``x`` (computed once, here), and those columns; ``graph`` and
    None when it adds none. Refused in one line where they cannot be fed:
    alone (no loss), a student that is not an MLP, sampled subgraphs, a
    dataset of several graphs."""
    if not distiller.adds_inputs:
        return graph, None
    name = distiller.name
    if '+' not in name:
        raise GnnCompressError(
            f"'{name}' adds input features and no loss: combine it with a "
            f'method, e.g. --method glnn+{name}')
    if student != 'mlp':
        raise ArchitectureError(
            f"'{name}' feeds its features to an MLP student (the student "
            f"reads [x, features]); got '{student}': pass --student mlp")
    if sampled:
        raise GnnCompressError(
            f"'{name}' computes its features once on the whole graph: drop "
            f'--batch-size and --fanout')
    if graph.batch is not None or graph.node_graph is not None:
        raise GnnCompressError(
            f"'{name}' is for one node-classification graph; {graph.name} "
            f'holds several graphs: drop it from --method')
    with phase('student inputs'):
        extra = distiller.student_inputs(graph, seed)
    if extra is None:
        return graph, None
    return replace(graph, x=torch.cat([graph.x, extra], 1)), extra


def minibatch_options(distiller: DistillMethod, batch_size: int | None,
                       fanout: str | list[int] | None,
                       layers: int) -> list[int]:
    """``--batch-size`` and ``--fanout`` checked before any data is
    loaded; the fanout, one count per student layer."""
    from gnncompress.workflows.distill_sampled import check_minibatch

    return check_minibatch(distiller, batch_size, fanout, layers)[1]


# A teacher whose mean top class probability is within this fraction of
# the way from uniform (1 / C) to certain (1) is "flat".
FLAT_FRACTION = 0.2


def flat_teacher_note(logits: Tensor, multilabel: bool = False
                      ) -> str | None:
    """A note for the report when the teacher's soft labels are nearly
    uniform, else None: soft-label losses (KD, GLNN, adv) then teach the
    student little, and weight decay can pull it below the student alone
    (GLNN's PubMed setting: docs/BENCHMARKS.md, NOSMOG section). Rows are
    read in blocks, so memory stays that of one block of the logits."""
    classes = logits.size(-1)
    if multilabel or classes < 2 or logits.size(0) == 0:
        return None
    top = sum(float(block.float().softmax(-1).amax(-1).sum())
              for block in logits.split(65536)) / logits.size(0)
    uniform = 1.0 / classes
    if top >= uniform + FLAT_FRACTION * (1.0 - uniform):
        return None
    return (f"the teacher's outputs are nearly flat (mean top class "
            f"probability {top:.2f} over {classes} classes; uniform is "
            f"{uniform:.2f}): soft-label losses (kd, glnn) carry little "
            f"signal from them. A temperature below 1 sharpens them: "
            f"-o temperature=0.1")
