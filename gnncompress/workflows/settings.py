"""A run's settings: one typed, frozen object per command, built by the CLI
from its options or by a user's script, instead of dozens of keyword
arguments handed from function to function.

The options are grouped by concern (:class:`Training`, :class:`Student`,
:class:`Peers`, :class:`SlimmableStudent`, :class:`Checkpointing`,
:class:`Batching`, :class:`Clouds`, :class:`Outputs`, :class:`Gates`); a
command's settings (:class:`DistillSettings`, :class:`CotrainSettings`,
:class:`AmalgamateSettings`) hold the options of its own and one instance
of each group it takes, which starts from the command's defaults. The
field defaults are the commands' defaults (the one place they are
written). Every option keeps its flat name, unique across
the groups, so ``DistillSettings.from_options(teacher, epochs=5,
batch_size=64)`` builds the same object as the nested form, and
:func:`gnncompress.api.distill` takes either. The objects pickle (the
processes of ``--nproc`` receive them) and import no torch (the command
line builds them before it loads a model)."""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gnncompress.core.defaults import DEFAULT_WIDTHS, REPORT_BUDGET_S
from gnncompress.core.errors import GnnCompressError

S = TypeVar('S', bound='CommandSettings')
F = TypeVar('F', bound=Callable[..., Any])


@dataclass(frozen=True)
class Training:
    """How the students train: optimiser, stopping, seed, progress bar.
    (The loss weights belong to the method: each command's own
    fields.)"""
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    patience: int | None = 100
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Student:
    """The student's shape: ``student`` names its architecture (``None``:
    the method's preferred one, else GCN), ``hidden`` its width (one per
    layer for DGCNN) or ``ratio`` the compression it must reach."""
    student: str | None = None
    hidden: int | list[int] | None = None
    layers: int | None = None
    heads: int = 1
    ratio: float | None = None


@dataclass(frozen=True)
class Checkpointing:
    """Training checkpoints: every ``checkpoint_every`` epochs into
    ``checkpoint_dir`` (default ``out/.gnncompress-checkpoint``);
    ``resume`` continues from one."""
    checkpoint_every: int | None = None
    checkpoint_dir: str | Path | None = None
    resume: str | Path | None = None


@dataclass(frozen=True)
class Batching:
    """Mini-batches (``batch_size`` seed nodes with ``fanout`` neighbours
    per hop, or whole graphs) and ``nproc`` training processes."""
    batch_size: int | None = None
    fanout: str | list[int] | None = None
    nproc: int | None = None


@dataclass(frozen=True)
class Clouds:
    """The options of DGCNN students on point clouds."""
    k: int | None = None
    emb: int | None = None
    head: list[int] | None = None
    points: int | None = None
    augment: str | list[str] | None = None


@dataclass(frozen=True)
class Outputs:
    """What the run writes to ``out``: the student files (``export``), the
    report's latency figures and what it records (``command``,
    ``config``)."""
    out: str | Path | None = None
    export: bool = True
    latency: bool = True
    latency_budget_s: float = REPORT_BUDGET_S
    command: str = ''
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class Gates:
    """Checked after the files are written: the student's test accuracy
    at least ``min_accuracy`` percent, at most ``max_accuracy_drop``
    points below its teacher."""
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None


@dataclass(frozen=True)
class CommandSettings:
    """What every command's settings share: the flat option names, built
    from and turned back into keyword arguments. ``SUBJECT`` names the
    positional argument of the command (the teacher, the data...)."""
    SUBJECT: ClassVar[str] = ''
    COMMAND: ClassVar[str] = ''

    @classmethod
    def _layout(cls) -> dict[str, str | None]:
        """Each flat option name -> the group field holding it (``None``:
        the settings' own field)."""
        layout: dict[str, str | None] = {}
        for f in dataclasses.fields(cls):
            if f.name == cls.SUBJECT:
                continue
            group = _group_default(f)
            if group is None:
                layout[f.name] = None
            else:
                layout.update({g.name: f.name
                               for g in dataclasses.fields(group)})
        return layout

    @classmethod
    def from_options(cls: type[S], subject: Any, /, **options: Any) -> S:
        """The settings of a run given its subject and its options by
        their flat names (as :func:`gnncompress.api` takes them); options
        left out keep their defaults. An unknown name is a one-line
        :class:`GnnCompressError`."""
        layout = cls._layout()
        unknown = [name for name in options if name not in layout]
        if unknown:
            near = difflib.get_close_matches(unknown[0], layout, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ''
            raise GnnCompressError(
                f"{cls.COMMAND} has no option '{unknown[0]}'{hint}: see "
                f'help(gnncompress.api.{cls.__name__}) for its options')
        own: dict[str, Any] = {cls.SUBJECT: subject}
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            group = layout[name]
            if group is None:
                own[name] = value
            else:
                grouped.setdefault(group, {})[name] = value
        for f in dataclasses.fields(cls):
            default = _group_default(f)
            if default is not None and f.name in grouped:
                own[f.name] = dataclasses.replace(default, **grouped[f.name])
        return cls(**own)

    @classmethod
    def given(cls: type[S], subject: Any, options: dict[str, Any]) -> S:
        """``subject`` itself when it is already these settings (and no
        options come with it), else :meth:`from_options`. Another
        command's settings are a one-line :class:`GnnCompressError`."""
        if isinstance(subject, CommandSettings) and \
                not isinstance(subject, cls):
            raise GnnCompressError(
                f'{cls.COMMAND} takes {cls.__name__}, not '
                f'{type(subject).__name__} (the settings of '
                f'{subject.COMMAND}): build {cls.__name__}.from_options('
                f'{cls.SUBJECT}, ...), or call gnncompress.api.'
                f'{subject.COMMAND}')
        if isinstance(subject, cls):
            if options:
                raise GnnCompressError(
                    f"{cls.COMMAND} takes a {cls.__name__} or options, "
                    f"not both: put {', '.join(sorted(options))} in the "
                    f'settings (settings.with_options(...))')
            return subject
        return cls.from_options(subject, **options)

    @property
    def subject(self) -> Any:
        return getattr(self, self.SUBJECT)

    def options(self) -> dict[str, Any]:
        """Every option by its flat name (the subject left out)."""
        flat: dict[str, Any] = {}
        for name, group in self._layout().items():
            holder = self if group is None else getattr(self, group)
            flat[name] = getattr(holder, name)
        return flat

    def with_options(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (flat names) applied."""
        return self.from_options(self.subject,
                                 **{**self.options(), **changes})

    @classmethod
    def signed(cls, returns: Any) -> Callable[[F], F]:
        """Decorate the command function (``fn(subject, **options)``, or
        ``fn(settings)``) so that ``help()`` and :func:`inspect.signature`
        show every option with its default, which the settings hold."""
        def sign(fn: F) -> F:
            fn.__signature__ = cls.signature(returns)  # type: ignore
            return fn
        return sign

    @classmethod
    def signature(cls, returns: Any = inspect.Signature.empty
                  ) -> inspect.Signature:
        """The command function's signature: the subject, then every
        option as a keyword with its default (for ``help()`` and
        :func:`inspect.signature`)."""
        params = [inspect.Parameter(
            cls.SUBJECT, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=f'{_annotation(cls, cls.SUBJECT)} | {cls.__name__}')]
        defaults = cls.from_options(None)
        for name, value in defaults.options().items():
            params.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=value,
                annotation=_annotation(cls, name)))
        return inspect.Signature(params, return_annotation=returns)


def _group_default(f: dataclasses.Field) -> Any:
    """The default instance of a group field (``None`` for a plain
    option)."""
    if f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        return None
    value = f.default_factory()  # type: ignore[misc]
    return value if dataclasses.is_dataclass(value) else None


def _annotation(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        group = _group_default(f)
        holder = type(group) if group is not None else None
        if holder is None and f.name == name:
            return f.type
        if holder is not None and name in {g.name for g in
                                           dataclasses.fields(holder)}:
            return next(g.type for g in dataclasses.fields(holder)
                        if g.name == name)
    return inspect.Parameter.empty


@dataclass(frozen=True)
class DistillSettings(CommandSettings):
    """``gnncompress distill``'s settings (:func:`gnncompress.api.distill`
    documents each option). ``teacher`` is a checkpoint file or a trained
    ``torch.nn.Module``; ``weight`` and ``label_weight`` (``None``: the
    method's own) weigh the method's loss and the labels'."""
    SUBJECT: ClassVar[str] = 'teacher'
    COMMAND: ClassVar[str] = 'distill'

    teacher: str | Path | Any = None
    data: str | Path | None = None
    data_root: str | Path | None = None
    method: str | None = None
    method_options: dict[str, Any] | None = None
    weight: float | None = None
    label_weight: float | None = None
    overrides: dict[str, Any] | None = None
    normalize_features: bool | None = None
    split: str | None = None
    teacher_class: str | None = None
    teacher_args: dict[str, Any] | None = None
    teacher_onnx: bool = False
    baseline: bool = False
    budget_s: float | None = None
    device: str = 'auto'
    training: Training = field(default_factory=Training)
    model: Student = field(default_factory=Student)
    checkpointing: Checkpointing = field(default_factory=Checkpointing)
    batching: Batching = field(default_factory=Batching)
    clouds: Clouds = field(default_factory=Clouds)
    outputs: Outputs = field(default_factory=Outputs)
    gates: Gates = field(default_factory=Gates)


@dataclass(frozen=True)
class Peers:
    """``cotrain``'s students: ``students`` peers of one architecture
    (``readout`` pools them on graph classification)."""
    students: int = 2
    arch: str = 'gcn'
    hidden: int = 128
    layers: int = 3
    heads: int = 1
    readout: str = 'mean'
    dropout: float = 0.5
    norm: str | None = None


@dataclass(frozen=True)
class CotrainSettings(CommandSettings):
    """``gnncompress cotrain``'s settings (:func:`gnncompress.api.cotrain`
    documents each option). ``weight`` weighs the online loss (``None``:
    1); training runs every epoch unless ``patience`` is given."""
    SUBJECT: ClassVar[str] = 'data'
    COMMAND: ClassVar[str] = 'cotrain'

    data: str | Path | None = None
    data_root: str | Path | None = None
    method: str = 'alignahead'
    method_options: dict[str, Any] | None = None
    weight: float | None = None
    folds: int | None = None
    device: str = 'auto'
    training: Training = field(
        default_factory=lambda: Training(patience=None))
    peers: Peers = field(default_factory=Peers)
    checkpointing: Checkpointing = field(default_factory=Checkpointing)
    batching: Batching = field(default_factory=Batching)
    outputs: Outputs = field(default_factory=Outputs)


@dataclass(frozen=True)
class SlimmableStudent:
    """``amalgamate``'s student: one slimmable ``student`` network trained
    at every multiplier of ``widths`` (``'0.5,1'`` or numbers);
    ``export_widths`` (``--width``) get an ONNX file (``None``: all)."""
    student: str = 'gcn'
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    widths: str | Sequence[float] = DEFAULT_WIDTHS
    export_widths: str | Sequence[float] | None = None


@dataclass(frozen=True)
class AmalgamateSettings(CommandSettings):
    """``gnncompress amalgamate``'s settings
    (:func:`gnncompress.api.amalgamate` documents each option).
    ``weight`` is the topology loss weight lambda (``None``: the
    topology's own); ``weight_decay`` defaults to 4e-6 (the authors'
    code)."""
    SUBJECT: ClassVar[str] = 'teachers'
    COMMAND: ClassVar[str] = 'amalgamate'

    teachers: Sequence[str | Path] = ()
    data: str | Sequence[str] | None = None
    tasks: str | Sequence[Sequence[int]] | None = None
    data_root: str | Path | None = None
    weight: float | None = None
    soft: str = 'mse'
    topology: str = 'tam'
    device: str = 'auto'
    training: Training = field(
        default_factory=lambda: Training(weight_decay=4e-6))
    model: SlimmableStudent = field(default_factory=SlimmableStudent)
    checkpointing: Checkpointing = field(default_factory=Checkpointing)
    batching: Batching = field(default_factory=Batching)
    outputs: Outputs = field(default_factory=Outputs)
    gates: Gates = field(default_factory=Gates)
