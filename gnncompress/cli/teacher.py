"""`gnncompress inspect` and `gnncompress train-teacher`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.common import Command, api, app, call
from gnncompress.cli.options import (
    ActOpt,
    AggrOpt,
    ArchOpt,
    AugmentOpt,
    BatchSizeOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    EmbOpt,
    EpochsOpt,
    HeadOpt,
    JkOpt,
    KOpt,
    MaxCheckpointGbOpt,
    NormOpt,
    PointsOpt,
    ProgressOpt,
    SeedOpt,
    WeightDecayOpt,
)
from gnncompress.cli.parsing import cloud_options, overrides
from gnncompress.core.catalogue import ARCHS, POINT_ARCHS, listed
from gnncompress.core.defaults import DEFAULT_MAX_CHECKPOINT_GB
from gnncompress.core.errors import plural

# What an inspected layer sequence prints besides its layers.
_SEQUENCE_FIELDS = ('arch', 'in_channels', 'hidden_channels', 'num_layers',
                    'out_channels', 'act', 'aggr', 'dropout')


@app.command(cls=Command)
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
    result = call(api.inspect, checkpoint,
                   overrides(arch, aggr, jk, norm, act), ratio=ratio,
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


@app.command('train-teacher', cls=Command)
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
    aggr: Annotated[str, typer.Option(
        help="SAGE aggregation: mean (PyG's: the mean of the neighbours "
        'plus a separate weight on the node), sum, max, min, mul, std, var, '
        "or gcn (one weight on the mean over the node and its neighbours, "
        "GLNN's SAGE teacher).")] = 'mean',
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
    result = call(api.train_teacher, data, out, arch=arch,
                   layers=layers, heads=heads, dropout=dropout, norm=norm,
                   jk=jk, aggr=aggr, alpha=alpha, theta=theta,
                   data_root=data_root, epochs=epochs,
                   lr=lr, weight_decay=weight_decay, patience=patience,
                   seed=seed, device=device, progress=progress,
                   classes=classes, normalize_features=normalize_features,
                   readout=readout, split=split,
                   **cloud_options(hidden, k, emb, head, points, augment,
                                    batch_size))
    typer.echo(f'{result.spec.describe()}: {result.parameters:,} parameters')
    typer.echo(f'validation {100 * result.val_accuracy:.2f}%, test '
               f'{100 * result.test_accuracy:.2f}% '
               f"({plural(result.epochs_run, 'epoch')})")
    typer.echo(f'wrote {result.path} and {result.card}')
