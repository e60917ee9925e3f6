"""`gnncompress amalgamate`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.common import (
    Command,
    api,
    app,
    call,
    exit_on_gates,
    print_run,
)
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
    MaxCheckpointGbOpt,
    NprocOpt,
    ProgressOpt,
    ResumeOpt,
    SeedOpt,
    WeightDecayOpt,
)
from gnncompress.cli.parsing import run_groups
from gnncompress.core.catalogue import (
    AMALGAMATE_TEACHERS,
    SLIMMABLE_ARCHS,
    arch_names,
    listed,
)
from gnncompress.core.defaults import (
    DEFAULT_MAX_CHECKPOINT_GB,
    DEFAULT_WIDTHS,
    REPORT_BUDGET_S,
)


@app.command(cls=Command, help=(
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
    ] = ','.join(map(str, DEFAULT_WIDTHS)),
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
        min=1, help='Several-graph node data: training graphs per step '
        '[default: 10 steps an epoch]. One graph per dataset: train on '
        'sampled subgraphs of this many seed nodes of each graph per step '
        '(graphs too large for one full-graph pass) (default: full '
        'graph).')
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
    nproc: NprocOpt = None,
) -> None:
    """Merge TEACHERS into one slimmable student (help: above)."""
    settings = api.AmalgamateSettings(
        teachers, data=data, tasks=tasks, data_root=data_root,
        weight=lambda_, soft=soft, topology=topology, device=device,
        model=api.SlimmableStudent(student=student, hidden=hidden,
                                   layers=layers, heads=heads,
                                   widths=widths, export_widths=width),
        gates=api.Gates(min_accuracy=min_accuracy,
                        max_accuracy_drop=max_accuracy_drop),
        **run_groups(ctx))
    report = call(api.amalgamate, settings)
    if not print_run(report):
        return
    exit_on_gates(report.gates)
