"""`gnncompress distill`: its options, parsed and passed to
:func:`gnncompress.api.distill`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.common import (
    Command,
    api,
    app,
    call,
    err_console,
    exit_on_gates,
    print_run,
)
from gnncompress.cli.options import (
    ActOpt,
    AggrOpt,
    ArchOpt,
    AugmentOpt,
    BatchSizeOpt,
    CheckpointDirOpt,
    CheckpointEveryOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    EmbOpt,
    EpochsOpt,
    FanoutOpt,
    HeadOpt,
    JkOpt,
    KOpt,
    LatencyBudgetOption,
    LatencyOption,
    MaxCheckpointGbOpt,
    NormOpt,
    NprocOpt,
    PointsOpt,
    ProgressOpt,
    ResumeOpt,
    SeedOpt,
    WeightDecayOpt,
)
from gnncompress.cli.parsing import (
    cloud_options,
    overrides,
    parse_layers,
    parse_options,
    parse_teacher_args,
    run_groups,
)
from gnncompress.core.catalogue import (
    COTRAIN_METHODS,
    DISTILL_METHODS,
    GRAPH_LIST_DATASETS,
    NODE_DATASETS,
    POINT_DATASETS,
    STUDENT_ARCHS,
    listed,
)
from gnncompress.core.defaults import (
    DEFAULT_MAX_CHECKPOINT_GB,
    DEFAULT_RATIO,
    REPORT_BUDGET_S,
)


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
        weight = f'{cls.default_weight:g}'
        if cls.paper_weight is not None:
            weight += f' (paper: {cls.paper_weight:g})'
        rows.append([name, cls.summary, needs, student, weight, cls.paper])
    from tabulate import tabulate
    typer.echo(tabulate(rows, headers=['method', 'what it matches', 'needs',
                                       'student', 'weight', 'paper']))
    typer.echo("\nCombine methods with '+', e.g. --method kd+lsp "
               '(-o lsp.weight=10 sets one term\'s weight). Students that '
               'teach each other, without a teacher: gnncompress cotrain '
               '--list-methods.')
    raise typer.Exit()


@app.command(cls=Command)
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
    method: Annotated[Optional[str], typer.Option(
        help=f"Distillation method: {listed(DISTILL_METHODS)}, or several "
        "joined by '+', e.g. kd+lsp (see --list-methods); auto tries "
        "kd, at, gsp, fitnet and the student alone within --budget-s and "
        "keeps the best on validation. Default: auto; kd where auto cannot "
        "run (--batch-size, --nproc, checkpoints, point clouds) or with "
        "-o, --weight or --label-weight, which the report notes.")] = None,
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
    budget_s: Annotated[Optional[float], typer.Option(
        help='With --method auto: seconds for all the candidates together '
        "(default: about 10x the first candidate's training).")] = None,
) -> None:
    """Distill TEACHER into a smaller student; write student.safetensors,
    student.onnx, report.json and report.md."""
    options = parse_options(option)
    cloud = cloud_options(hidden, k, emb, head, points, augment, batch_size)
    ctx.params['hidden'] = cloud['hidden']  # the report records numbers
    for key, text in (('teacher_layers', layers_t),
                      ('student_layers', layers_s)):
        if text is not None:
            options[key] = parse_layers(text)
    settings = api.DistillSettings(
        teacher, data=data, data_root=data_root, method=method,
        method_options=options, weight=weight, label_weight=label_weight,
        overrides=overrides(arch, aggr, jk, norm, act),
        normalize_features=normalize_features, split=split,
        teacher_class=teacher_class,
        teacher_args=parse_teacher_args(teacher_args),
        teacher_onnx=teacher_onnx, baseline=baseline, budget_s=budget_s,
        device=device,
        model=api.Student(student=student, hidden=cloud['hidden'],
                          layers=layers, heads=heads, ratio=ratio),
        clouds=api.Clouds(k=cloud['k'], emb=cloud['emb'], head=cloud['head'],
                          points=cloud['points'], augment=cloud['augment']),
        gates=api.Gates(min_accuracy=min_accuracy,
                        max_accuracy_drop=max_accuracy_drop),
        **run_groups(ctx))
    report = call(api.distill, settings)
    if not print_run(report):
        return
    for note in report.notes:
        if note.startswith('the student collapsed'):
            err_console.print(f'[yellow]Warning:[/yellow] {note}',
                              markup=True)
    if (report.exported or {}).get('model') == 'baseline':
        err_console.print('[yellow]Warning:[/yellow] exported '
                          f"{report.exported['reason']}", markup=True)
    exit_on_gates(report.gates)
