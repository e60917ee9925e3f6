"""`gnncompress bench`."""
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
)
from gnncompress.cli.options import ConfigOpt, MaxCheckpointGbOpt
from gnncompress.cli.parsing import resolved, split_list
from gnncompress.core.defaults import (
    DEFAULT_MAX_CHECKPOINT_GB,
    DEFAULT_ROW_BUDGET_S,
)


@app.command(cls=Command)
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
        help='Comma-separated: eager, compile, onnxruntime, or cuda-graph '
        '(with --device cuda: the model replayed as one captured CUDA '
        'graph, one launch per forward). [default: eager, compile, '
        'onnxruntime]')] = None,
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

    result = call(api.bench, list(models), data=data, data_root=data_root,
                   graph_size=graph_size,
                   runtimes=split_list(runtimes, '--runtimes', str),
                   threads=split_list(threads, '--threads', int),
                   device=device, baseline=baseline, warmup=warmup,
                   repeat=repeat, max_latency_ms=max_latency_ms,
                   min_speedup=min_speedup,
                   max_accuracy_drop=max_accuracy_drop, out=out, seed=seed,
                   progress=progress, command=api.command_line(),
                   config=resolved(ctx), sizes=sizes, degree=degree,
                   row_budget_s=row_budget_s)
    headers = result.headers()
    typer.echo(tabulate([r[:len(headers)] for r in result.table_rows()],
                        headers=headers))
    extra = ', bench-sizes.png' if result.scaling else ''
    typer.echo(f'wrote {out}/bench.json, bench.md, bench.png{extra}')
    exit_on_gates(result.gates)
