"""`gnncompress cotrain`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from gnncompress.cli.common import Command, api, app, call, print_run
from gnncompress.cli.options import (
    CheckpointDirOpt,
    CheckpointEveryOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    EpochsOpt,
    FanoutOpt,
    LatencyBudgetOption,
    LatencyOption,
    NprocOpt,
    ProgressOpt,
    ResumeOpt,
    SeedOpt,
    WeightDecayOpt,
)
from gnncompress.cli.parsing import parse_options, run_groups
from gnncompress.core.catalogue import (
    BASIC_GNN_ARCHS,
    COTRAIN_METHODS,
    GRAPH_DATASETS,
    GRAPH_LIST_DATASETS,
    NODE_DATASETS,
    listed,
)
from gnncompress.core.defaults import REPORT_BUDGET_S


def _list_cotrain_methods(value: bool) -> None:
    """cotrain --list-methods, without importing torch."""
    if not value:
        return
    width = max(map(len, COTRAIN_METHODS))
    for name, summary in COTRAIN_METHODS.items():
        typer.echo(f'{name:<{width}}  {summary}')
    raise typer.Exit()


@app.command(cls=Command)
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
    nproc: NprocOpt = None,
) -> None:
    """Train several students that teach each other (no teacher); export
    the best by validation and report every one."""
    settings = api.CotrainSettings(
        data, data_root=data_root, method=method,
        method_options=parse_options(option), weight=weight, folds=folds,
        device=device,
        peers=api.Peers(students=students, arch=arch, hidden=hidden,
                        layers=layers, heads=heads, readout=readout,
                        dropout=dropout, norm=norm),
        **run_groups(ctx))
    report = call(api.cotrain, settings)
    if not print_run(report):
        return
