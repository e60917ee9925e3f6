"""The command line: parse options, call one API function, print."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console

from gnncompress import __version__, api
from gnncompress.errors import GnnCompressError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help='Compress pre-trained GNN checkpoints by knowledge '
                  'distillation.')
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar('T')


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API call; user errors become one line and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except GnnCompressError as e:
        err_console.print(f'[red]Error:[/red] {e}', markup=True)
        raise typer.Exit(code=1) from None


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            err_console.print(f"[red]Error:[/red] --option takes KEY=VALUE "
                              f"(got '{item}')")
            raise typer.Exit(code=1)
        try:
            options[key.replace('-', '_')] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace('-', '_')] = value
    return options


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


def _list_methods(value: bool) -> None:
    if not value:
        return
    from gnncompress.methods import list_methods, method_class

    rows = []
    for name in list_methods():
        cls = method_class(name)
        needs = ', '.join(sorted(cls.requires))
        student = cls.preferred_student or 'any'
        rows.append([name, cls.summary, needs, student,
                     f'{cls.default_weight:g}', cls.paper])
    from tabulate import tabulate
    typer.echo(tabulate(rows, headers=['method', 'what it matches', 'needs',
                                       'student', 'weight', 'paper']))
    typer.echo("\nCombine methods with '+', e.g. --method kd+lsp "
               '(-o lsp.weight=10 sets one term\'s weight).')
    raise typer.Exit()


ArchOpt = Annotated[Optional[str], typer.Option(
    '--arch', help='Override the inferred teacher architecture.')]
AggrOpt = Annotated[Optional[str], typer.Option(
    help="SAGE aggregation (the weights cannot tell; default 'mean').")]
JkOpt = Annotated[Optional[str], typer.Option(
    help="Jumping knowledge ('last' and 'max' look alike in the weights).")]
NormOpt = Annotated[Optional[str], typer.Option(
    help='Normalisation (parameter-free norms leave no trace in weights).')]
ActOpt = Annotated[Optional[str], typer.Option(
    help="Activation (the weights cannot tell; default 'relu').")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    help='Folder holding datasets in PyG layout (default: a user cache '
    'folder, where PyG downloads when a network exists).')]
DeviceOpt = Annotated[str, typer.Option(help='auto, cpu or cuda.')]


@app.command()
def distill(
    teacher: Annotated[Path, typer.Argument(help='Teacher checkpoint (.pt '
                                            'state_dict or .safetensors).')],
    data: Annotated[Optional[str], typer.Option(
        help='Dataset name (Cora, CiteSeer, PubMed, Computers, Photo, CS, '
        'Physics) or a saved torch_geometric Data file; default: the one '
        "on the teacher's card.")] = None,
    data_root: DataRootOpt = None,
    method: Annotated[str, typer.Option(help='Distillation method.')] = 'kd',
    option: Annotated[Optional[list[str]], typer.Option(
        '--option', '-o', help='Method option KEY=VALUE, e.g. -o kernel=poly '
        '(repeatable).')] = None,
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
        '--layers-s', help='Student hidden layers paired with --layers-t.')
    ] = None,
    student: Annotated[Optional[str], typer.Option(
        help='Student architecture: gcn, gat, gatv2, sage, gin, gcnii, mlp '
        "(default: the method's preferred one, else gcn).")] = None,
    hidden: Annotated[Optional[int], typer.Option(
        min=1, help='Student hidden width (instead of --ratio).')] = None,
    layers: Annotated[int, typer.Option(min=1, help='Student layers.')] = 2,
    heads: Annotated[int, typer.Option(
        min=1, help='Student attention heads (GAT students).')] = 1,
    ratio: Annotated[Optional[float], typer.Option(
        help='Pick the widest student with at least RATIO times fewer '
        f'parameters than the teacher (default {api.DEFAULT_RATIO:g} when '
        'no --hidden).')] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.01,
    weight_decay: Annotated[float, typer.Option()] = 5e-4,
    patience: Annotated[int, typer.Option(
        min=1, help='Stop after this many epochs without a better '
        'validation accuracy.')] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = 'auto',
    out: Annotated[Optional[Path], typer.Option(
        help='Output folder (default: gnncompress-out/<teacher>-<method>).')
    ] = None,
    baseline: Annotated[bool, typer.Option(
        help='Also train the student alone (same seed) and report it.')
    ] = False,
    progress: Annotated[bool, typer.Option(help='Show a progress bar.')
                        ] = True,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
    list_methods: Annotated[bool, typer.Option(
        '--list-methods', callback=_list_methods, is_eager=True,
        help='List the methods and exit.')] = False,
) -> None:
    """Distill TEACHER into a smaller student; write student.safetensors,
    student.onnx, report.json and report.md."""
    options = _parse_options(option)
    for key, text in (('teacher_layers', layers_t),
                      ('student_layers', layers_s)):
        if text is not None:
            options[key] = _parse_layers(text)
    report = _call(api.distill, teacher, data=data, data_root=data_root,
                   method=method, method_options=options,
                   student=student, hidden=hidden, layers=layers, heads=heads,
                   ratio=ratio, epochs=epochs, lr=lr,
                   weight_decay=weight_decay, label_weight=label_weight,
                   weight=weight, patience=patience, seed=seed,
                   device=device, out=out, baseline=baseline,
                   overrides=_overrides(arch, aggr, jk, norm, act),
                   progress=progress, command=api.command_line())
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")


@app.command()
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help='Checkpoint file.')],
    as_json: Annotated[bool, typer.Option('--json', help='Print JSON.')
                       ] = False,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
) -> None:
    """Print the architecture inferred from CHECKPOINT and its size."""
    result = _call(api.inspect, checkpoint,
                   _overrides(arch, aggr, jk, norm, act))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f'{result.path} ({result.format})')
    typer.echo(f'  {result.spec.describe()}')
    typer.echo(f'  parameters: {result.parameters:,}')
    width = max(len(k) for k in result.sources)
    for key, value in result.spec.to_dict().items():
        source = result.sources.get(key, 'default')
        typer.echo(f'  {key:<{width}}  {value!s:<12} from {source}')
    for note in result.notes.values():
        typer.echo(f'  note: {note}')
    if result.card.get('data'):
        typer.echo(f"  teacher card: trained on {result.card['data']}, test "
                   f"accuracy {100 * result.card['test_accuracy']:.2f}%")


@app.command('train-teacher')
def train_teacher(
    data: Annotated[str, typer.Option(help='Dataset name or Data file.')],
    out: Annotated[Path, typer.Option(help='Output .pt file (a teacher card '
                                      '.json is written beside it).')],
    arch: Annotated[str, typer.Option(
        help='gcn, gat, gatv2, sage, gin, gcnii or mlp.')] = 'gat',
    hidden: Annotated[int, typer.Option(min=1)] = 256,
    layers: Annotated[int, typer.Option(min=1)] = 3,
    heads: Annotated[int, typer.Option(min=1)] = 8,
    dropout: Annotated[Optional[float], typer.Option(
        help='Default 0.6 for GAT, 0.5 otherwise.')] = None,
    norm: Annotated[Optional[str], typer.Option()] = None,
    jk: Annotated[Optional[str], typer.Option()] = None,
    aggr: Annotated[str, typer.Option(help='SAGE aggregation.')] = 'mean',
    alpha: Annotated[float, typer.Option(
        help='GCNII initial-residual strength.')] = 0.1,
    theta: Annotated[float, typer.Option(
        help='GCNII identity-mapping strength.')] = 0.5,
    data_root: DataRootOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    lr: Annotated[float, typer.Option()] = 0.005,
    weight_decay: Annotated[float, typer.Option()] = 5e-4,
    patience: Annotated[int, typer.Option(min=1)] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = 'auto',
    progress: Annotated[bool, typer.Option()] = True,
    readout: Annotated[str, typer.Option(
        help='Global pooling on graph-classification data: mean, sum or '
        'max.')] = 'mean',
) -> None:
    """Train a teacher, selected on validation accuracy, and save it as a
    plain PyG state_dict."""
    result = _call(api.train_teacher, data, out, arch=arch, hidden=hidden,
                   layers=layers, heads=heads, dropout=dropout, norm=norm,
                   jk=jk, aggr=aggr, alpha=alpha, theta=theta,
                   data_root=data_root, epochs=epochs,
                   lr=lr, weight_decay=weight_decay, patience=patience,
                   seed=seed, device=device, progress=progress,
                   readout=readout)
    typer.echo(f'{result.spec.describe()}: {result.parameters:,} parameters')
    typer.echo(f'validation {100 * result.val_accuracy:.2f}%, test '
               f'{100 * result.test_accuracy:.2f}% '
               f'({result.epochs_run} epochs)')
    typer.echo(f'wrote {result.path} and {result.card}')


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help='Checkpoint file.')],
    out: Annotated[Path, typer.Option(help='Output .onnx file.')],
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
) -> None:
    """Export CHECKPOINT to ONNX, checked against PyTorch."""
    parity = _call(api.export, checkpoint, out,
                   _overrides(arch, aggr, jk, norm, act))
    typer.echo(f'wrote {out} (max abs difference to PyTorch '
               f'{parity.max_abs_diff:.2e})')


@app.command()
def cotrain(
    data: Annotated[str, typer.Option(
        help='Dataset: Cora, CiteSeer, PubMed, Computers, Photo, CS, '
        'Physics (node classification), MUTAG, PROTEINS, ENZYMES, NCI1, '
        'IMDB-BINARY (graph classification) or a saved Data file.')],
    method: Annotated[str, typer.Option(
        help='alignahead (cross-layer), oc (same-depth ablation), mutual, '
        'or self (students trained alone).')] = 'alignahead',
    students: Annotated[int, typer.Option(
        help='Number of peers, 2 to 6.')] = 2,
    arch: Annotated[str, typer.Option(
        '--arch', help='gcn, gat, gatv2, sage or gin.')] = 'gcn',
    hidden: Annotated[int, typer.Option(min=1)] = 128,
    layers: Annotated[int, typer.Option(min=1)] = 3,
    heads: Annotated[int, typer.Option(min=1, help='GAT heads.')] = 1,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    readout: Annotated[str, typer.Option(
        help='Global pooling for graph classification: mean, sum or max.')
    ] = 'mean',
    option: Annotated[Optional[list[str]], typer.Option(
        '--option', '-o', help='Method option KEY=VALUE, e.g. -o kernel=rbf '
        '(repeatable).')] = None,
    weight: Annotated[Optional[float], typer.Option(
        help="Weight of the online loss (alpha; default 1).")] = None,
    folds: Annotated[Optional[int], typer.Option(
        help='Graph classification: k-fold cross-validation instead of one '
        'stratified 80/10/10 split.')] = None,
    batch_size: Annotated[int, typer.Option(
        help='Graphs per step (graph classification).')] = 32,
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    lr: Annotated[float, typer.Option(help='Adam learning rate.')] = 0.01,
    weight_decay: Annotated[float, typer.Option()] = 5e-4,
    patience: Annotated[Optional[int], typer.Option(
        min=1, help='Stop when no student improved its validation accuracy '
        'for this many epochs (default: run every epoch).')] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = 'auto',
    data_root: DataRootOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        help='Output folder (default: gnncompress-out/<data>-<method>).')
    ] = None,
    progress: Annotated[bool, typer.Option(help='Show a progress bar.')
                        ] = True,
) -> None:
    """Train several students that teach each other (no teacher); export
    the best by validation and report every one."""
    report = _call(api.cotrain, data, data_root=data_root, method=method,
                   method_options=_parse_options(option), students=students,
                   arch=arch, hidden=hidden, layers=layers, heads=heads,
                   readout=readout, dropout=dropout, epochs=epochs, lr=lr,
                   weight_decay=weight_decay, weight=weight,
                   patience=patience, batch_size=batch_size, folds=folds,
                   seed=seed, device=device, out=out, progress=progress,
                   command=api.command_line())
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")


def _version(value: bool) -> None:
    if value:
        typer.echo(f'gnncompress {__version__}')
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        '--version', callback=_version, is_eager=True,
        help='Print the version.')] = False) -> None:
    """Compress pre-trained GNN checkpoints by knowledge distillation."""
