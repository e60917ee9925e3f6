"""The command line: parse options, call one API function, print."""
from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from gnncompress import __version__
from gnncompress.catalogue import (
    AMALGAMATE_TEACHERS,
    ARCHS,
    BASIC_GNN_ARCHS,
    COTRAIN_METHODS,
    DISTILL_METHODS,
    GRAPH_DATASETS,
    GRAPH_LIST_DATASETS,
    NODE_DATASETS,
    POINT_ARCHS,
    POINT_DATASETS,
    SLIMMABLE_ARCHS,
    STUDENT_ARCHS,
    arch_names,
    dataset_table,
    default_root,
    listed,
)
from gnncompress.defaults import (
    DEFAULT_MAX_CHECKPOINT_GB,
    DEFAULT_RATIO,
    DEFAULT_ROW_BUDGET_S,
    REPORT_BUDGET_S,
)
from gnncompress.errors import (
    GnnCompressError,
    RunInterrupted,
    out_of_memory,
    plural,
)


class _LazyApi:
    """``gnncompress.api``, imported on first use: ``--help`` and usage
    errors answer without importing torch (issue 23). A plain object, not a
    lazy module in ``sys.modules``: code that walks ``sys.modules`` while
    torch_geometric imports would load the API in the middle of that
    import (a circular import)."""

    def __getattr__(self, name: str) -> Any:
        from gnncompress import api as module
        return getattr(module, name)


api = _LazyApi()

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
GATE_EXIT_CODE = 3  # a failed gate, distinct from 1 (bad input)
INTERRUPTED_EXIT_CODE = 130  # Ctrl-C, as shells report SIGINT
# The arguments of this invocation (after the program name), for the
# resume command printed after Ctrl-C.
_ARGV: list[str] = []
T = TypeVar('T')
# Options of every command that writes a report with latency figures.
LatencyOption = Annotated[bool, typer.Option(
    '--latency/--no-latency',
    help="Time the models for the report (--no-latency leaves latency "
    "out, e.g. in CI).")]
LatencyBudgetOption = Annotated[float, typer.Option(
    min=0, help="Seconds for all the report's latency figures together; "
    "each gets at least 5 timed runs.")]


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API call; user errors become one line and exit code 1,
    Ctrl-C in a run with training checkpoints one line that says how to
    resume, and exit code 130."""
    try:
        return fn(*args, **kwargs)
    except GnnCompressError as e:
        _error(str(e))
    except RunInterrupted as e:
        err_console.print(resume_line(e), markup=False)
        raise typer.Exit(code=INTERRUPTED_EXIT_CODE) from None
    except (MemoryError, RuntimeError) as e:
        memory = out_of_memory(e)
        if memory is None:
            raise
        _error(memory)


def resume_line(interrupted: RunInterrupted,
                argv: list[str] | None = None) -> str:
    """The one line printed after Ctrl-C: the command that resumes the
    run (this command's arguments, with ``--resume`` the checkpoint)."""
    if not interrupted.saved:
        return ('Interrupted before the first training checkpoint was '
                'written: run the same command again to start over.')
    args, skip = [], False
    for arg in _ARGV if argv is None else argv:
        if skip:
            skip = False
        elif arg == '--resume':
            skip = True
        elif not arg.startswith('--resume='):
            args.append(arg)
    command = shlex.join(['gnncompress', *args, '--resume',
                          str(interrupted.folder)])
    return f'Interrupted; the training checkpoint is kept. Resume with: ' \
        f'{command}'


def _error(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on one line and exit with ``code``."""
    # Messages quote file contents (tensor names, card values): no markup
    # in them, and one line whatever they hold.
    line = escape(' '.join(message.split()))
    err_console.print(f'[red]Error:[/red] {line}', markup=True)
    raise typer.Exit(code=code) from None


class _OneLineUsage(TyperGroup):
    """Usage errors Click catches (an unknown option, ``--epochs 0``) as
    one ``Error:`` line with exit code 2, instead of a boxed message."""

    def main(self, args: Any = None, *rest: Any,
             standalone_mode: bool = True, **kwargs: Any) -> Any:
        _ARGV[:] = [str(a) for a in (sys.argv[1:] if args is None
                                     else args)]
        try:
            code = super().main(args, *rest, standalone_mode=False,
                                **kwargs)
        except typer.TyperException as e:  # Click's errors (vendored)
            if not standalone_mode:
                raise
            if type(e).__name__ == 'NoArgsIsHelpError':
                e.show()  # the help text itself, as Click prints it
                sys.exit(e.exit_code)
            ctx = getattr(e, 'ctx', None)
            hint = f' (see {ctx.command_path} --help)' if ctx else ''
            message = (e.format_message() if hasattr(e, 'format_message')
                       else str(e))
            line = escape(' '.join((message + hint).split()))
            err_console.print(f'[red]Error:[/red] {line}', markup=True)
            sys.exit(getattr(e, 'exit_code', 2))
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print('Aborted!')
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _argument_name(param: Any) -> str:
    """An argument as the help shows it: TEACHER, MODEL... (no braces)."""
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not name.endswith('...'):
        name += '...'
    return name


class _Command(TyperCommand):
    """Help as the source writes it: ``Usage: gnncompress distill [OPTIONS]
    TEACHER``, arguments listed by name alone (Typer would show
    ``{TEACHER}`` and ``TEACHER... <list[Path]>``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == 'argument':
                name = _argument_name(param)
                pieces.append(name if param.required else f'[{name}]')
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == 'argument':
                args.append((_argument_name(param), record[1]))
            else:
                opts.append(record)
        for title, rows in (('Arguments', args), ('Options', opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(cls=_OneLineUsage, no_args_is_help=True,
                  rich_markup_mode=None,
                  help='Compress pre-trained GNN checkpoints by knowledge '
                  'distillation.')


def _key_values(items: list[str] | None, option: str,
                what: str = 'KEY=VALUE') -> dict[str, Any]:
    """KEY=VALUE items (VALUE read as JSON where it is JSON, else as text);
    a malformed item is a one-line error naming ``option``."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            err_console.print(f"[red]Error:[/red] {option} takes {what} "
                              f"(got '{item}')")
            raise typer.Exit(code=1)
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    return {key.replace('-', '_'): value
            for key, value in _key_values(items, '--option').items()}


def _parse_teacher_args(items: list[str] | None) -> dict[str, Any]:
    """--teacher-args: one JSON object, or KEY=VALUE items (VALUE read as
    JSON where it is JSON, else as text); keys kept as written."""
    if items and len(items) == 1 and items[0].lstrip().startswith('{'):
        try:
            args = json.loads(items[0])
        except json.JSONDecodeError as e:
            args = e
        if not isinstance(args, dict):
            err_console.print(f"[red]Error:[/red] --teacher-args is not a "
                              f"JSON object (got '{items[0]}'): write e.g. "
                              f'\'{{"hidden": 16}}\' or hidden=16')
            raise typer.Exit(code=1)
        return args
    return _key_values(items, '--teacher-args',
                       'KEY=VALUE or one JSON object')


def _overrides(arch: str | None, aggr: str | None, jk: str | None,
               norm: str | None, act: str | None) -> dict[str, Any]:
    return {'arch': arch, 'aggr': aggr, 'jk': jk, 'norm': norm, 'act': act}


def _parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(',')]
    except ValueError:
        err_console.print(f'[red]Error:[/red] layer lists are integers '
                          f"separated by commas, e.g. -1 or 0,1 (got '{text}')")
        raise typer.Exit(code=1) from None


def _list_distill_methods(value: bool) -> None:
    """distill --list-methods: the registered methods that distil a
    teacher (cotrain's online methods are cotrain's)."""
    if not value:
        return
    from gnncompress.methods import canonical_name, list_methods, method_class

    online = {canonical_name(m) for m in COTRAIN_METHODS}
    rows = []
    for name in list_methods():
        if canonical_name(name) in online:
            continue
        cls = method_class(name)
        needs = ', '.join(sorted(cls.requires))
        student = cls.preferred_student or 'any'
        rows.append([name, cls.summary, needs, student,
                     f'{cls.default_weight:g}', cls.paper])
    from tabulate import tabulate
    typer.echo(tabulate(rows, headers=['method', 'what it matches', 'needs',
                                       'student', 'weight', 'paper']))
    typer.echo("\nCombine methods with '+', e.g. --method kd+lsp "
               '(-o lsp.weight=10 sets one term\'s weight). Students that '
               'teach each other, without a teacher: gnncompress cotrain '
               '--list-methods.')
    raise typer.Exit()


def _list_cotrain_methods(value: bool) -> None:
    """cotrain --list-methods, without importing torch."""
    if not value:
        return
    width = max(map(len, COTRAIN_METHODS))
    for name, summary in COTRAIN_METHODS.items():
        typer.echo(f'{name:<{width}}  {summary}')
    raise typer.Exit()


def _config(ctx: typer.Context, param: typer.CallbackParam,
            value: Optional[Path]) -> Optional[Path]:
    """Read ``--config`` before the other options, as their defaults: an
    option given on the command line still wins."""
    if value is None or ctx.resilient_parsing:
        return value
    from gnncompress.config import load_config

    known = config_keys(ctx.command)
    values = _call(load_config, value, ctx.command.name, known)
    lists = {p.name for p in ctx.command.params
             if getattr(p, 'multiple', False) or p.nargs != 1}
    for key, item in values.items():
        # threads = [1, 2] in the file means --threads 1,2.
        if isinstance(item, list) and key not in lists:
            values[key] = ','.join(str(v) for v in item)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def config_keys(command: Any) -> dict[str, str]:
    """Config key -> parameter name for a click command: each parameter's
    name and each of its long option names (``--lambda`` for ``lambda_``)."""
    keys = {}
    for p in command.params:
        if p.name in ('config', 'list_methods'):
            continue
        keys[p.name] = p.name
        for opt in getattr(p, 'opts', []):
            if opt.startswith('--'):
                keys[opt[2:].replace('-', '_')] = p.name
    return keys


def _resolved(ctx: typer.Context) -> dict[str, Any]:
    """The settings the command ran with (file, then command line), for the
    report."""
    from gnncompress.config import plain

    return plain({k: v for k, v in ctx.params.items()
                  if k not in ('list_methods', 'progress')})


def _max_checkpoint_gb(value: float) -> float:
    from gnncompress.checkpoint import set_max_checkpoint_gb

    _call(set_max_checkpoint_gb, value)
    return value


MaxCheckpointGbOpt = Annotated[float, typer.Option(
    '--max-checkpoint-gb', callback=_max_checkpoint_gb,
    help='Refuse, before reading it, a checkpoint larger than this many GB '
    '(its file, or what its archive declares once unpacked).')]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    '--config', callback=_config, is_eager=True,
    help='TOML file of options (keys named like the options; the command '
    'line wins) (default: none).')]
ArchOpt = Annotated[Optional[str], typer.Option(
    '--arch', help='Override the teacher architecture (default: inferred '
    'from the weights).')]
AggrOpt = Annotated[Optional[str], typer.Option(
    help="SAGE aggregation (the weights cannot tell; default 'mean').")]
JkOpt = Annotated[Optional[str], typer.Option(
    help="Jumping knowledge (default: inferred; 'last' and 'max' look "
    "alike in the weights).")]
NormOpt = Annotated[Optional[str], typer.Option(
    help='Normalisation (default: inferred; parameter-free norms leave no '
    'trace in weights).')]
ActOpt = Annotated[Optional[str], typer.Option(
    help="Activation (the weights cannot tell; default 'relu').")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    help='Folder holding datasets in PyG layout (default: a user cache '
    'folder, where PyG downloads when a network exists).')]
DeviceOpt = Annotated[str, typer.Option(help='auto, cpu or cuda.')]
EpochsOpt = Annotated[int, typer.Option(
    min=1, help='Most training epochs (--patience may stop sooner).')]
WeightDecayOpt = Annotated[float, typer.Option(
    help='Adam weight decay (L2 penalty).')]
SeedOpt = Annotated[int, typer.Option(
    help='Random seed (weights, splits, sampling).')]
ProgressOpt = Annotated[bool, typer.Option(help='Show a progress bar.')]
CheckpointEveryOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Save the training state every K epochs (to '
    '--checkpoint-dir), so that --resume can continue the run (default: '
    'no checkpoints).')]
CheckpointDirOpt = Annotated[Optional[Path], typer.Option(
    help='Folder of the training checkpoint (default: '
    'OUT/.gnncompress-checkpoint, removed when the run succeeds).')]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    help='Continue the interrupted run whose checkpoint is in this folder '
    '(its --out or --checkpoint-dir); give the same options (default: a '
    'fresh run).')]
KOpt = Annotated[Optional[int], typer.Option(
    min=1, help="DGCNN: neighbours per point [default: 20; a student: its "
    "teacher's].")]
EmbOpt = Annotated[Optional[int], typer.Option(
    min=1, help='DGCNN: per-point embedding width before pooling '
    "[default: 4 x the last --hidden width, 1024 for 64,64,128,256; a "
    "student: its teacher's, scaled like --hidden].")]
HeadOpt = Annotated[Optional[str], typer.Option(
    help='DGCNN: MLP widths after pooling [default: half and a quarter of '
    "the embedding, e.g. 512,256; a student: its teacher's, scaled like "
    '--hidden].')]
PointsOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Point clouds: keep this many points of each cloud (a '
    'seeded random subset) (default: all).')]
AugmentOpt = Annotated[Optional[str], typer.Option(
    help='Point clouds: training augmentations, comma-separated: rotate '
    '(about z), jitter, scale, subsample (default: none).')]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Point clouds: clouds per training step [default: 32]. '
    'Node classification: train on sampled subgraphs of this many seed '
    'nodes (graphs too large for one full-batch pass).')]
FanoutOpt = Annotated[Optional[str], typer.Option(
    help='With --batch-size: neighbours sampled per node at each hop, one '
    'count per student layer, e.g. 15,10 (-1: all) [default: 15,10, then 5 '
    'per further layer].')]
NprocOpt = Annotated[Optional[int], typer.Option(
    help='With --batch-size: train in N processes with '
    'DistributedDataParallel (one per GPU with --device cuda; gloo on the '
    'CPU). Under torchrun, leave it out (default: one process).')]


def _cloud_options(hidden: str | None, k: int | None, emb: int | None,
                   head: str | None, points: int | None,
                   augment: str | None, batch_size: int | None,
                   ) -> dict[str, Any]:
    """``--hidden`` (one width, or one per DGCNN layer) and the
    point-cloud options, as API keyword arguments."""
    widths = _split_list(hidden, '--hidden', int)
    return {'hidden': None if widths is None else
            widths[0] if len(widths) == 1 and ',' not in str(hidden)
            else widths,
            'k': k, 'emb': emb, 'head': _split_list(head, '--head', int),
            'points': points, 'augment': augment, 'batch_size': batch_size}


@app.command(cls=_Command)
def distill(
    ctx: typer.Context,
    teacher: Annotated[Path, typer.Argument(
        metavar='TEACHER', help='Teacher checkpoint (.pt '
                                            'state_dict or .safetensors).')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    data: Annotated[Optional[str], typer.Option(
        help=f"Dataset name ({', '.join(NODE_DATASETS)}; "
        f"{', '.join(GRAPH_LIST_DATASETS)} for several graphs; "
        f"{', '.join(POINT_DATASETS)} for DGCNN; see gnncompress datasets) "
        "or a saved torch_geometric Data file; default: the one on the "
        "teacher's card.")] = None,
    data_root: DataRootOpt = None,
    method: Annotated[str, typer.Option(
        help=f"Distillation method: {listed(DISTILL_METHODS)}, or several "
        "joined by '+', e.g. kd+lsp (see --list-methods).")] = 'kd',
    option: Annotated[Optional[list[str]], typer.Option(
        '--option', '-o', metavar='KEY=VALUE',
        help='Method option KEY=VALUE, e.g. -o kernel=poly '
        "(repeatable; default: the method's own).")] = None,
    weight: Annotated[Optional[float], typer.Option(
        help="Weight of the method's loss (default: the method's own).")
    ] = None,
    label_weight: Annotated[Optional[float], typer.Option(
        help="Weight of the cross-entropy on labelled nodes (default: the "
        "method's own, 1 for most).")] = None,
    layers_t: Annotated[Optional[str], typer.Option(
        '--layers-t', help='Teacher hidden layers to match, e.g. -1 or 0,1 '
        '(methods that match hidden layers; default: the last).')] = None,
    layers_s: Annotated[Optional[str], typer.Option(
        '--layers-s', help='Student hidden layers paired with --layers-t '
        '(default: the last).')
    ] = None,
    student: Annotated[Optional[str], typer.Option(
        help=f"Student architecture: {', '.join(STUDENT_ARCHS)} (default: "
        "the method's preferred one, else gcn; dgcnn for a DGCNN "
        'teacher).')] = None,
    hidden: Annotated[Optional[str], typer.Option(
        help='Student hidden width (instead of --ratio); a DGCNN student '
        'takes one width per layer, e.g. 32,32,64,128 (default: from '
        "--ratio; DGCNN: half the teacher's).")] = None,
    layers: Annotated[Optional[int], typer.Option(
        min=1, help='Student layers. [default: 2; a DGCNN student: one per '
        '--hidden width]')] = None,
    heads: Annotated[int, typer.Option(
        min=1, help='Student attention heads (GAT students).')] = 1,
    ratio: Annotated[Optional[float], typer.Option(
        help='Pick the widest student with at least RATIO times fewer '
        f'parameters than the teacher (default {DEFAULT_RATIO:g} when '
        'no --hidden).')] = None,
    epochs: EpochsOpt = 200,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.01,
    weight_decay: WeightDecayOpt = 5e-4,
    patience: Annotated[int, typer.Option(
        min=1, help='Stop after this many epochs without a better '
        'validation accuracy.')] = 100,
    seed: SeedOpt = 0,
    device: DeviceOpt = 'auto',
    out: Annotated[Optional[str], typer.Option(  # str: keep an empty --out
        help='Output folder (default: gnncompress-out/<teacher>-<method>).')
    ] = None,
    baseline: Annotated[bool, typer.Option(
        help='Also train the student alone (same seed), report it, and '
        'export it instead when the distilled student scores below it on '
        'validation (report.json: exported).')
    ] = False,
    progress: ProgressOpt = True,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
    min_accuracy: Annotated[Optional[float], typer.Option(
        help='Gate: the student\'s test accuracy at least this, in percent; '
        'exit code 3 when it fails (default: no gate).')] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(
        help='Gate: the student at most this many points below the '
        'teacher; exit code 3 when it fails (default: no gate).')] = None,
    k: KOpt = None, emb: EmbOpt = None, head: HeadOpt = None,
    points: PointsOpt = None, augment: AugmentOpt = None,
    batch_size: BatchSizeOpt = None,
    config: ConfigOpt = None,
    list_methods: Annotated[bool, typer.Option(
        '--list-methods', callback=_list_distill_methods, is_eager=True,
        help="List distill's methods, one line each, and exit.")] = False,
    checkpoint_every: CheckpointEveryOpt = None,
    checkpoint_dir: CheckpointDirOpt = None, resume: ResumeOpt = None,
    fanout: FanoutOpt = None,
    nproc: NprocOpt = None,
    normalize_features: Annotated[Optional[bool], typer.Option(
        '--normalize-features/--raw-features',
        help="Divide each node's features by their sum (default: as the "
        "teacher's card says it was trained).")] = None,
    split: Annotated[Optional[str], typer.Option(
        help='default or glnn (see train-teacher --split) (default: the '
        "split on the teacher's card; a glnn split with the teacher's "
        'seed).')] = None,
    teacher_onnx: Annotated[bool, typer.Option(
        help='Also export the teacher and time it in onnxruntime with the '
        "student's threads: the student's speed-up in the runtime it ships "
        'in (one more export, slow for a large teacher).')] = False,
    teacher_class: Annotated[Optional[str], typer.Option(
        help="The teacher's own model class, as module:Class (e.g. "
        'mypkg.models:Net): the tool imports it from your environment, '
        'which runs your code, builds it with --teacher-args and loads '
        "TEACHER's weights into it (weights-only). The teacher is then "
        'exact: activation, dropout, every detail (default: a PyG model '
        'rebuilt from the weights).')] = None,
    teacher_args: Annotated[Optional[list[str]], typer.Option(
        metavar='KEY=VALUE',
        help="--teacher-class's constructor arguments: KEY=VALUE "
        '(repeatable) or one JSON object (default: none).')] = None,
    latency: LatencyOption = True,
    latency_budget_s: LatencyBudgetOption = REPORT_BUDGET_S,
) -> None:
    """Distill TEACHER into a smaller student; write student.safetensors,
    student.onnx, report.json and report.md."""
    options = _parse_options(option)
    cloud = _cloud_options(hidden, k, emb, head, points, augment, batch_size)
    ctx.params['hidden'] = cloud['hidden']  # the report records numbers
    for key, text in (('teacher_layers', layers_t),
                      ('student_layers', layers_s)):
        if text is not None:
            options[key] = _parse_layers(text)
    report = _call(api.distill, teacher, data=data, data_root=data_root,
                   method=method, method_options=options,
                   student=student, layers=layers, heads=heads,
                   ratio=ratio, epochs=epochs, lr=lr,
                   weight_decay=weight_decay, label_weight=label_weight,
                   weight=weight, patience=patience, seed=seed,
                   device=device, out=out, baseline=baseline,
                   overrides=_overrides(arch, aggr, jk, norm, act),
                   min_accuracy=min_accuracy,
                   max_accuracy_drop=max_accuracy_drop,
                   progress=progress, command=api.command_line(),
                   config=_resolved(ctx), checkpoint_every=checkpoint_every,
                   checkpoint_dir=checkpoint_dir, resume=resume,
                   fanout=fanout, nproc=nproc,
                   normalize_features=normalize_features,
                   split=split,
                   teacher_onnx=teacher_onnx, teacher_class=teacher_class,
                   teacher_args=_parse_teacher_args(teacher_args),
                   latency=latency, latency_budget_s=latency_budget_s,
                   **cloud)
    if report is None:  # a torchrun rank other than 0: rank 0 reports
        return
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")
    _summary(report)
    for note in report.notes:
        if note.startswith('the student collapsed'):
            err_console.print(f'[yellow]Warning:[/yellow] {note}',
                              markup=True)
    if (report.exported or {}).get('model') == 'baseline':
        err_console.print('[yellow]Warning:[/yellow] exported '
                          f"{report.exported['reason']}", markup=True)
    _exit_on_gates(report.gates)


def _summary(report: Any) -> None:
    """The end-of-run lines: load the ONNX student, speed-up, gates."""
    for line in _call(api.run_summary, report):
        typer.echo(line)


def _exit_on_gates(gates: list[Any]) -> None:
    for gate in gates:
        if gate.passed:
            typer.echo(f'gate {gate.name} {gate.limit:g}: passed')
        else:
            err_console.print(f'[red]gate {gate.name} {gate.limit:g} '
                              f"failed:[/red] {'; '.join(gate.failures)}",
                              markup=True)
    if any(not gate.passed for gate in gates):
        raise typer.Exit(code=GATE_EXIT_CODE)


# What an inspected layer sequence prints besides its layers.
_SEQUENCE_FIELDS = ('arch', 'in_channels', 'hidden_channels', 'num_layers',
                    'out_channels', 'act', 'aggr', 'dropout')


@app.command(cls=_Command)
def inspect(
    checkpoint: Annotated[Path, typer.Argument(metavar='CHECKPOINT',
                                               help='Checkpoint file.')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    as_json: Annotated[bool, typer.Option('--json', help='Print JSON.')
                       ] = False,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
    ratio: Annotated[Optional[float], typer.Option(
        help='Also show the student distill --ratio RATIO would build '
        '(layers, width, parameters), without training (default: the '
        'teacher alone).')] = None,
    hidden: Annotated[Optional[int], typer.Option(
        min=1, help='Also show the student distill --hidden H would build '
        '(default: the teacher alone).')
    ] = None,
    student: Annotated[str, typer.Option(
        help='Student architecture for --ratio or --hidden.')] = 'gcn',
    layers: Annotated[int, typer.Option(
        min=1, help='Student layers for --ratio or --hidden.')] = 2,
) -> None:
    """Print the architecture inferred from CHECKPOINT and its size."""
    result = _call(api.inspect, checkpoint,
                   _overrides(arch, aggr, jk, norm, act), ratio=ratio,
                   hidden=hidden, student=student, layers=layers)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f'{result.path} ({result.format})')
    typer.echo(f'  {result.spec.describe()}')
    for line in result.spec.layer_lines():
        typer.echo(f'    {line}')
    typer.echo(f'  parameters: {result.parameters:,}')
    width = max(len(k) for k in result.sources)
    for key, value in result.spec.to_dict().items():
        if result.spec.arch == 'sequence' and key not in _SEQUENCE_FIELDS:
            continue  # the layers are listed above, the rest is unused
        source = result.sources.get(key, 'default')
        typer.echo(f'  {key:<{width}}  {value!s:<12} from {source}')
    for note in result.notes.values():
        typer.echo(f'  note: {note}')
    if result.card.get('data'):
        acc = result.card.get('test_accuracy')
        shown = (f'{100 * acc:.2f}%' if isinstance(acc, (int, float))
                 and not isinstance(acc, bool) else 'not recorded')
        typer.echo(f"  teacher card: trained on {result.card['data']}, test "
                   f"accuracy {shown}")
    if result.student is not None:
        typer.echo(f'student distill would build: '
                   f'{result.student.describe()}, '
                   f'{result.student_parameters:,} parameters '
                   f'({result.parameters / result.student_parameters:.1f}x '
                   f'fewer than the teacher)')


@app.command('train-teacher', cls=_Command)
def train_teacher(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(
        help='Dataset name (see gnncompress datasets) or saved Data file.')],
    out: Annotated[str, typer.Option(help='Output .pt file (a teacher card '
                                     '.json is written beside it).')],
    arch: Annotated[str, typer.Option(
        help=f"{', '.join(ARCHS)} or {listed(POINT_ARCHS)} (point "
        'clouds).')] = 'gat',
    hidden: Annotated[Optional[str], typer.Option(
        help='Hidden width [default: 256]; DGCNN: one width per layer '
        '[default: 64,64,128,256].')] = None,
    layers: Annotated[Optional[int], typer.Option(
        min=1, help='Layers [default: 3; DGCNN: one per --hidden width].')
    ] = None,
    heads: Annotated[int, typer.Option(
        min=1, help='Attention heads (GAT, GATv2).')] = 8,
    dropout: Annotated[Optional[float], typer.Option(
        help='Default 0.6 for GAT, 0.5 otherwise.')] = None,
    norm: Annotated[Optional[str], typer.Option(
        help='batch_norm or layer_norm after every hidden layer (default: '
        'none).')] = None,
    jk: Annotated[Optional[str], typer.Option(
        help='Jumping knowledge over the layers: last, cat, max or lstm '
        '(default: none).')] = None,
    aggr: Annotated[str, typer.Option(help='SAGE aggregation.')] = 'mean',
    alpha: Annotated[float, typer.Option(
        help='GCNII initial-residual strength.')] = 0.1,
    theta: Annotated[float, typer.Option(
        help='GCNII identity-mapping strength.')] = 0.5,
    data_root: DataRootOpt = None,
    epochs: EpochsOpt = 300,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.005,
    weight_decay: WeightDecayOpt = 5e-4,
    patience: Annotated[int, typer.Option(
        min=1, help='Stop after this many epochs without a better '
        'validation accuracy.')] = 100,
    seed: SeedOpt = 0,
    device: DeviceOpt = 'auto',
    progress: ProgressOpt = True,
    classes: Annotated[Optional[str], typer.Option(
        help='Train on a label subset only, e.g. 0-4 (teachers for '
        'amalgamate --tasks) (default: every class).')] = None,
    normalize_features: Annotated[bool, typer.Option(
        help="Divide each node's features by their sum (bag-of-words "
        'counts); recorded on the teacher card, so distill does the same.')]
    = False,
    split: Annotated[str, typer.Option(
        help='default: the dataset\'s own split (Planetoid\'s public one) '
        'or 20/30 nodes per class drawn with --seed; glnn: GLNN\'s setting '
        '(the largest connected component, 20 training and 30 validation '
        'nodes per class drawn with --seed, the rest test). Recorded on the '
        'teacher card, so distill uses the same split.')] = 'default',
    readout: Annotated[Optional[str], typer.Option(
        help='Global pooling on graph-classification data: mean, sum or '
        'max. [default: mean; DGCNN: max]')] = None,
    k: KOpt = None, emb: EmbOpt = None, head: HeadOpt = None,
    points: PointsOpt = None, augment: AugmentOpt = None,
    batch_size: BatchSizeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train a teacher, selected on validation accuracy, and save it as a
    plain PyG state_dict."""
    result = _call(api.train_teacher, data, out, arch=arch,
                   layers=layers, heads=heads, dropout=dropout, norm=norm,
                   jk=jk, aggr=aggr, alpha=alpha, theta=theta,
                   data_root=data_root, epochs=epochs,
                   lr=lr, weight_decay=weight_decay, patience=patience,
                   seed=seed, device=device, progress=progress,
                   classes=classes, normalize_features=normalize_features,
                   readout=readout, split=split,
                   **_cloud_options(hidden, k, emb, head, points, augment,
                                    batch_size))
    typer.echo(f'{result.spec.describe()}: {result.parameters:,} parameters')
    typer.echo(f'validation {100 * result.val_accuracy:.2f}%, test '
               f'{100 * result.test_accuracy:.2f}% '
               f"({plural(result.epochs_run, 'epoch')})")
    typer.echo(f'wrote {result.path} and {result.card}')


@app.command(cls=_Command)
def export(
    checkpoint: Annotated[Path, typer.Argument(metavar='CHECKPOINT',
                                               help='Checkpoint file.')],
    out: Annotated[str, typer.Option(help='Output .onnx file.')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
    quantize: Annotated[Optional[str], typer.Option(
        help='int8: dynamically quantised uint8 weights (onnxruntime), '
        'exact on every x86 CPU; compare its accuracy and predictions '
        'with gnncompress bench --baseline FLOAT.onnx (default: float32).')]
    = None,
    sparse_features: Annotated[bool, typer.Option(
        '--sparse-features',
        help='Take the node features as a CSR matrix (inputs x_indptr, '
        'x_indices, x_values in place of x): faster on wide, mostly-zero '
        'features such as bag-of-words. GCN, GraphSAGE and GIN node '
        'classifiers whose first layer is narrower than the input.')] = False,
) -> None:
    """Export CHECKPOINT to ONNX, checked against PyTorch."""
    parity = _call(api.export, checkpoint, out,
                   _overrides(arch, aggr, jk, norm, act), quantize=quantize,
                   sparse_features=sparse_features)
    if quantize:
        typer.echo(f'wrote {out} ({parity.summary()})')
        return
    worst = max(parity.relative_cases().values())
    typer.echo(f'wrote {out} (max difference to PyTorch {worst:.2e} of the '
               f"output's scale, checked on {len(parity.cases)} graphs)")


def _split_list(text: str | None, what: str, cast: Callable[[str], T]
                ) -> list[T] | None:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(',') if part.strip()]
    except ValueError:
        err_console.print(f"[red]Error:[/red] {what} takes a comma-separated "
                          f"list (got '{text}')")
        raise typer.Exit(code=1) from None


@app.command(cls=_Command)
def bench(
    ctx: typer.Context,
    models: Annotated[list[Path], typer.Argument(
        metavar='MODEL...', help='Model files: .pt, .safetensors or .onnx.')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    row_budget_s: Annotated[float, typer.Option(
        help='Seconds one row (model x runtime x threads) may take; a row '
        'over it is stopped and reported as failed.')]
    = DEFAULT_ROW_BUDGET_S,
    data: Annotated[Optional[str], typer.Option(
        help='Dataset name or saved Data file (accuracy needs its labels) '
        '(default: none; give this or --graph-size).')]
    = None,
    graph_size: Annotated[Optional[str], typer.Option(
        help='A synthetic graph instead: NODES:EDGES:FEATURES, e.g. '
        '169343:1166243:128 (default: none).')] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help='Where datasets are found or downloaded (default: the user '
        'cache folder, see gnncompress datasets).')] = None,
    runtimes: Annotated[Optional[str], typer.Option(
        help='Comma-separated: eager, compile, onnxruntime. [default: all '
        'three]')] = None,
    threads: Annotated[Optional[str], typer.Option(
        help='CPU thread counts, comma-separated. [default: 1 and all '
        'cores]')] = None,
    device: Annotated[str, typer.Option(
        help='auto (CPU, plus CUDA when present), cpu or cuda.')] = 'auto',
    baseline: Annotated[Optional[Path], typer.Option(
        help='Model to compare against: adds speed-up and accuracy-drop '
        'columns (default: none).')] = None,
    warmup: Annotated[int, typer.Option(help='Untimed runs first.')] = 3,
    repeat: Annotated[int, typer.Option(help='Timed runs.')] = 20,
    max_latency_ms: Annotated[Optional[float], typer.Option(
        help='Gate: every non-baseline row\'s median latency at most this '
        '(default: no gate).')]
    = None,
    min_speedup: Annotated[Optional[float], typer.Option(
        help='Gate: every non-baseline row at least this much faster than '
        'the baseline (default: no gate).')] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(
        help='Gate: accuracy at most this many points below the '
        'baseline\'s (default: no gate).')] = None,
    out: Annotated[str, typer.Option(
        help='Folder for bench.json, bench.md and bench.png.')]
    = 'gnncompress-bench',
    seed: Annotated[int, typer.Option(help='Split / synthetic graph seed.')]
    = 0,
    sizes: Annotated[Optional[str], typer.Option(
        help='Also time every model on synthetic graphs of these node counts, '
        'e.g. 1000,10000,100000,1000000, and plot latency against size '
        '(default: none).')]
    = None,
    degree: Annotated[Optional[float], typer.Option(
        help="Edges per node of the --sizes graphs (default: the main "
        "graph's).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Compare the latency, memory and accuracy of MODELS on one graph. A
    failed gate exits with code 3."""
    from tabulate import tabulate

    def progress(text: str) -> None:
        err_console.print(f'[dim]measuring {text}[/dim]', markup=True)

    result = _call(api.bench, list(models), data=data, data_root=data_root,
                   graph_size=graph_size,
                   runtimes=_split_list(runtimes, '--runtimes', str),
                   threads=_split_list(threads, '--threads', int),
                   device=device, baseline=baseline, warmup=warmup,
                   repeat=repeat, max_latency_ms=max_latency_ms,
                   min_speedup=min_speedup,
                   max_accuracy_drop=max_accuracy_drop, out=out, seed=seed,
                   progress=progress, command=api.command_line(),
                   config=_resolved(ctx), sizes=sizes, degree=degree,
                   row_budget_s=row_budget_s)
    headers = result.headers()
    typer.echo(tabulate([r[:len(headers)] for r in result.table_rows()],
                        headers=headers))
    extra = ', bench-sizes.png' if result.scaling else ''
    typer.echo(f'wrote {out}/bench.json, bench.md, bench.png{extra}')
    _exit_on_gates(result.gates)


@app.command(cls=_Command)
def cotrain(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(
        help=f"Dataset: {', '.join(NODE_DATASETS)} (node "
        f"classification), {', '.join(GRAPH_DATASETS)} (graph "
        f"classification), {', '.join(GRAPH_LIST_DATASETS[:2])}, "
        '<TU>-nodes (several graphs, inductive) or a saved Data file or '
        'graph list.')],
    method: Annotated[str, typer.Option(
        help=f'How the students teach each other: {listed(COTRAIN_METHODS)} '
        '(see --list-methods).')] = 'alignahead',
    students: Annotated[int, typer.Option(
        help='Number of peers, 2 to 6.')] = 2,
    arch: Annotated[str, typer.Option(
        '--arch', help=f'{listed(BASIC_GNN_ARCHS)}.')] = 'gcn',
    hidden: Annotated[int, typer.Option(
        min=1, help='Hidden width of every student.')] = 128,
    layers: Annotated[int, typer.Option(
        min=1, help='Layers of every student.')] = 3,
    heads: Annotated[int, typer.Option(min=1, help='GAT heads.')] = 1,
    dropout: Annotated[float, typer.Option(
        min=0.0, max=1.0, help='Dropout between layers.')] = 0.5,
    norm: Annotated[Optional[str], typer.Option(
        help='batch_norm or layer_norm after every hidden layer (default: '
        'none; graph classification: batch_norm only).')] = None,
    readout: Annotated[str, typer.Option(
        help='Global pooling for graph classification: mean, sum or max.')
    ] = 'mean',
    option: Annotated[Optional[list[str]], typer.Option(
        '--option', '-o', metavar='KEY=VALUE',
        help='Method option KEY=VALUE, e.g. -o kernel=rbf '
        "(repeatable; default: the method's own).")] = None,
    weight: Annotated[Optional[float], typer.Option(
        help="Weight of the online loss (alpha; default 1).")] = None,
    folds: Annotated[Optional[int], typer.Option(
        help='Graph classification: k-fold cross-validation instead of one '
        'stratified 80/10/10 split (default: one split).')] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help='Graph classification: graphs per step [default: 32]; '
        'several-graph node data: training graphs per step [default: 10 '
        'steps an epoch]. '
        'Node classification: train on sampled subgraphs of this many seed '
        'nodes (graphs too large for one full-graph pass).')] = None,
    fanout: FanoutOpt = None,
    epochs: EpochsOpt = 200,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.01,
    weight_decay: WeightDecayOpt = 5e-4,
    patience: Annotated[Optional[int], typer.Option(
        min=1, help='Stop when no student improved its validation accuracy '
        'for this many epochs (default: run every epoch).')] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = 'auto',
    data_root: DataRootOpt = None,
    out: Annotated[Optional[str], typer.Option(
        help='Output folder (default: gnncompress-out/<data>-<method>).')
    ] = None,
    progress: ProgressOpt = True,
    config: ConfigOpt = None,
    list_methods: Annotated[bool, typer.Option(
        '--list-methods', callback=_list_cotrain_methods, is_eager=True,
        help="List cotrain's methods, one line each, and exit.")] = False,
    latency: LatencyOption = True,
    latency_budget_s: LatencyBudgetOption = REPORT_BUDGET_S,
    checkpoint_every: CheckpointEveryOpt = None,
    checkpoint_dir: CheckpointDirOpt = None, resume: ResumeOpt = None,
) -> None:
    """Train several students that teach each other (no teacher); export
    the best by validation and report every one."""
    report = _call(api.cotrain, data, data_root=data_root, method=method,
                   method_options=_parse_options(option), students=students,
                   arch=arch, hidden=hidden, layers=layers, heads=heads,
                   readout=readout, dropout=dropout, norm=norm,
                   epochs=epochs, lr=lr,
                   weight_decay=weight_decay, weight=weight,
                   patience=patience, batch_size=batch_size, fanout=fanout,
                   folds=folds, seed=seed, device=device, out=out,
                   progress=progress, latency=latency,
                   latency_budget_s=latency_budget_s,
                   command=api.command_line(), config=_resolved(ctx),
                   checkpoint_every=checkpoint_every,
                   checkpoint_dir=checkpoint_dir, resume=resume)
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")
    _summary(report)


def _version(value: bool) -> None:
    if value:
        typer.echo(f'gnncompress {__version__}')
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        '--version', callback=_version, is_eager=True,
        help='Print the version.')] = False) -> None:
    """Compress pre-trained GNN checkpoints by knowledge distillation."""


@app.command(cls=_Command, help=(
    f'Merge TEACHERS (one per task, any mix of '
    f'{listed(arch_names(AMALGAMATE_TEACHERS))}) into one slimmable student '
    'without labels (TAM); write student.safetensors, one ONNX per task and '
    'width, report.json and report.md.'))
def amalgamate(
    ctx: typer.Context,
    teachers: Annotated[list[Path], typer.Argument(
        metavar='TEACHER...', help='Teacher checkpoints, one per task.')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    data: Annotated[Optional[str], typer.Option(
        help='One dataset per teacher (Cora,CiteSeer,PubMed), or one dataset '
        "with --tasks; default: the datasets on the teachers' cards.")
    ] = None,
    tasks: Annotated[Optional[str], typer.Option(
        help='Label subsets of one graph, one per teacher, e.g. 0-4,5-9 '
        "(default: the classes on the teachers' cards).")] = None,
    data_root: DataRootOpt = None,
    student: Annotated[str, typer.Option(
        help=f'Student layer: {listed(SLIMMABLE_ARCHS)}.')] = 'gcn',
    hidden: Annotated[int, typer.Option(
        min=1, help='Student hidden width at multiplier 1.')] = 64,
    layers: Annotated[int, typer.Option(min=2, help='Student layers.')] = 2,
    heads: Annotated[int, typer.Option(
        min=1, help='Student attention heads (GAT students).')] = 1,
    widths: Annotated[str, typer.Option(
        help='Hidden-width multipliers trained jointly.')
    ] = '0.25,0.5,0.75,1.0',
    width: Annotated[Optional[str], typer.Option(
        help='Width multiplier(s) to export as ONNX, e.g. 0.5 or 0.5,1 '
        '(default: all).')] = None,
    lambda_: Annotated[Optional[float], typer.Option(
        '--lambda', help='Weight of the topology loss (default 0.1 for tam, '
        '100 for lsp); 0 switches it off.')] = None,
    topology: Annotated[str, typer.Option(
        help="'tam' (attribution maps), 'lsp' (local structure) or "
        "'none'.")] = 'tam',
    soft: Annotated[str, typer.Option(
        help="'mse' on logits (paper) or 'bce' to the teacher's thresholded "
        "predictions (authors' code).")] = 'mse',
    epochs: EpochsOpt = 200,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.01,
    weight_decay: WeightDecayOpt = 4e-6,
    patience: Annotated[int, typer.Option(
        min=1, help='Stop after this many epochs without a better agreement '
        'with the teachers.')] = 100,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help='Train on sampled subgraphs of this many seed nodes of '
        'each graph per step (graphs too large for one full-graph pass) '
        '(default: full graph).')
    ] = None,
    fanout: FanoutOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = 'auto',
    out: Annotated[Optional[str], typer.Option(
        help='Output folder (default: gnncompress-out/amalgamate).')] = None,
    progress: ProgressOpt = True,
    min_accuracy: Annotated[Optional[float], typer.Option(
        help='Gate: every task at every exported width at least this test '
        'accuracy, in percent; exit code 3 when it fails (default: no '
        'gate).')] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(
        help="Gate: at most this many points below each task's teacher; "
        'exit code 3 when it fails (default: no gate).')] = None,
    config: ConfigOpt = None,
    latency: LatencyOption = True,
    latency_budget_s: LatencyBudgetOption = REPORT_BUDGET_S,
    checkpoint_every: CheckpointEveryOpt = None,
    checkpoint_dir: CheckpointDirOpt = None, resume: ResumeOpt = None,
) -> None:
    """Merge TEACHERS into one slimmable student (help: above)."""
    report = _call(api.amalgamate, teachers, data=data, tasks=tasks,
                   data_root=data_root, student=student, hidden=hidden,
                   layers=layers, heads=heads, widths=widths,
                   export_widths=width, weight=lambda_, soft=soft,
                   topology=topology, epochs=epochs, lr=lr,
                   weight_decay=weight_decay, patience=patience,
                   batch_size=batch_size, fanout=fanout, seed=seed,
                   device=device, out=out, progress=progress,
                   min_accuracy=min_accuracy,
                   max_accuracy_drop=max_accuracy_drop, latency=latency,
                   latency_budget_s=latency_budget_s,
                   command=api.command_line(), config=_resolved(ctx),
                   checkpoint_every=checkpoint_every,
                   checkpoint_dir=checkpoint_dir, resume=resume)
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")
    _summary(report)
    _exit_on_gates(report.gates)


@app.command(cls=_Command)
def datasets(
    data_root: Annotated[Optional[Path], typer.Option(
        help='Look in this folder (PyG layout) instead of the cache '
        '(default: the cache, $GNNCOMPRESS_CACHE/datasets or the user cache '
        'folder).')] = None,
) -> None:
    """List the dataset names --data takes, where each is kept and whether
    it is there (a missing one downloads on first use when a network
    exists)."""
    from tabulate import tabulate

    base = default_root() if data_root is None else data_root.expanduser()
    rows = [[e.name, e.task, e.here, '-' if e.folder is None else str(e.folder)]
            for e in dataset_table(base)]
    typer.echo(tabulate(rows, headers=['dataset', 'task', 'here', 'folder']))
    where = ('--data-root' if data_root is not None else
             '$GNNCOMPRESS_CACHE' if os.environ.get('GNNCOMPRESS_CACHE')
             else 'the default cache; set GNNCOMPRESS_CACHE to move it')
    typer.echo(f'\n{base} ({where}). --data also takes a saved '
               'torch_geometric Data file.')
