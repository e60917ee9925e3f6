"""The distillation-method interface and its registry."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gnncompress.core.errors import ArchitectureError, UnknownMethodError
from gnncompress.core.graph import Graph
from gnncompress.models import ModelOutput

_REGISTRY: dict[str, type[DistillMethod]] = {}


@dataclass(frozen=True)
class StudentInputs:
    """The student's input node features on one training step (``x``) and
    its output on other features of the same shape (``rerun``: same step,
    same graph, the student in train mode, with gradients), for a method
    that trains on perturbed inputs (:class:`~gnncompress.methods.adv.Adv`).
    """
    x: Tensor
    rerun: Callable[[Tensor], ModelOutput]


class DistillMethod(nn.Module):
    """A loss that moves a student towards its teacher(s).

    Subclasses set ``requires`` (what the engine must compute: ``logits``,
    ``hiddens``), ``default_weight`` and ``default_label_weight`` (the
    weights in the total ``label_weight * CE + weight * loss``), where it
    differs from the default the weight the paper uses (``paper_weight``,
    for ``--weight``), ``paper``,
    ``summary`` (one line for ``--list-methods``) and, where the method is
    made for one kind of student, ``preferred_student``. On a sampled
    subgraph (:mod:`gnncompress.training.regimes.sampled`) a loss sees the
    logits of the seed nodes alone, or with ``batch_logits = 'nodes'``
    those of every sampled node (a structure over the logits needs both
    ends of each edge), and the hidden features of the seeds alone, or
    with ``batch_hiddens = 'nodes'`` those of every sampled node that the
    edges into the seeds reach (a structure over hidden features). Being a
    module, a method may own trainable parts; the engine optimises them
    with the student and never exports them. A method that sets
    ``reruns_student`` is handed, before each ``loss``, the step's
    :class:`StudentInputs` through :meth:`see_inputs` (the regimes of one
    node-classification graph provide them; the others refuse such a
    method).
    """
    name: ClassVar[str] = ''
    requires: ClassVar[frozenset[str]] = frozenset({'logits'})
    default_weight: ClassVar[float] = 1.0
    default_label_weight: ClassVar[float] = 1.0
    paper_weight: ClassVar[float | None] = None
    paper: ClassVar[str] = ''
    summary: ClassVar[str] = ''
    preferred_student: ClassVar[str | None] = None
    batch_logits: ClassVar[str] = 'seeds'
    batch_hiddens: ClassVar[str] = 'seeds'
    # Whether :meth:`student_inputs` adds columns to the student's input
    # (known before they are computed, so that a run that cannot feed them
    # refuses at once).
    adds_inputs: ClassVar[bool] = False

    def student_inputs(self, graph: Graph, seed: int) -> Tensor | None:
        """``[N, k]`` columns the student reads after ``graph.x`` (fixed
        tensors, computed once per run before the student is built, so its
        input width grows by ``k``); None: ``graph.x`` alone."""
        return None
    reruns_student: ClassVar[bool] = False

    def see_inputs(self, inputs: StudentInputs) -> None:
        """The student's inputs of the step whose ``loss`` comes next
        (called only when ``reruns_student`` is set)."""

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        """Called once before the optimiser is built, with the teachers'
        (fixed) outputs and one student output: create trainable parts sized
        from them, and precompute what depends only on the teachers."""

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        raise NotImplementedError


class TeacherCache:
    """What a method derives from the teachers' fixed tensors, computed once
    in ``prepare`` and found again by identity in ``loss``. A tensor it has
    not seen (new teacher outputs) is derived on the spot, without gradient.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[Tensor, Tensor]] = []

    def clear(self) -> None:
        self._entries = []

    def remember(self, tensor: Tensor,
                 derive: Callable[[Tensor], Tensor]) -> Tensor:
        with torch.no_grad():
            value = derive(tensor.detach())
        self._entries.append((tensor, value))
        return value

    def lookup(self, tensor: Tensor,
               derive: Callable[[Tensor], Tensor]) -> Tensor:
        for known, value in self._entries:
            if known is tensor:
                return value
        with torch.no_grad():
            return derive(tensor.detach())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._entries[index]


class MissingLayerError(ArchitectureError, ValueError):
    """A matched hidden layer the model lacks (a ValueError too, as it
    was before the CLI made it a one-line error)."""


def hidden_layer(out: ModelOutput, index: int, who: str) -> Tensor:
    """``out.hiddens[index]`` with an error that says what exists."""
    if not out.hiddens:
        raise MissingLayerError(f'The {who} has no hidden layer to match: '
                                f'give it at least 2 layers')
    try:
        return out.hiddens[index]
    except IndexError:
        n = len(out.hiddens)
        flag = '--layers-t' if who == 'teacher' else '--layers-s'
        raise MissingLayerError(f'The {who} has {n} hidden layers; layer '
                                f'{index} does not exist: give {flag} '
                                f'between {-n} and {n - 1}') from None


def layer_pairs(teacher_layers: Sequence[int],
                student_layers: Sequence[int]) -> list[tuple[int, int]]:
    """Matched (teacher, student) hidden-layer indices; a single index on
    one side pairs with every index on the other."""
    t, s = list(teacher_layers), list(student_layers)
    if not t or not s:
        raise ValueError('layer lists must not be empty')
    if len(t) == 1:
        t = t * len(s)
    if len(s) == 1:
        s = s * len(t)
    if len(t) != len(s):
        raise ValueError(f'teacher_layers {list(teacher_layers)} and '
                         f'student_layers {list(student_layers)} differ in '
                         f'length')
    return list(zip(t, s))


def canonical_name(name: str) -> str:
    return re.sub(r'[-_\s]', '', name.lower())


def register_method(name: str) -> Callable[[type[DistillMethod]],
                                           type[DistillMethod]]:
    def wrap(cls: type[DistillMethod]) -> type[DistillMethod]:
        key = canonical_name(name)
        if key in _REGISTRY:
            raise ValueError(f"Method '{name}' is registered twice")
        cls.name = name
        _REGISTRY[key] = cls
        return cls
    return wrap


def list_methods() -> list[str]:
    return sorted(cls.name for cls in _REGISTRY.values())


def method_class(name: str) -> type[DistillMethod]:
    cls = _REGISTRY.get(canonical_name(name))
    if cls is None:
        raise UnknownMethodError(f"Unknown method '{name}' "
                                 f"(choose from {', '.join(list_methods())})")
    return cls


def resolve_method(name: str, **kwargs: Any) -> DistillMethod:
    """An instance of the method registered as ``name`` (case, ``-`` and
    ``_`` ignored)."""
    return method_class(name)(**kwargs)
