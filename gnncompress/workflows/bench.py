"""`gnncompress bench`: latency, throughput, memory and accuracy of several
models, with CI gates."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gnncompress.core import out_folder as outputs
from gnncompress.core.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
    plural,
)
from gnncompress.core.graph import Graph
from gnncompress.core.options import check_out
from gnncompress.outputs import plots
from gnncompress.tasks.datasets import load_graph
from gnncompress.workflows.runs import (
    check_writable,
    resolve_device,
    staged_output,
    versions,
)


def _sizes_shape(entries: list[Any], graph: Graph, degree: float | None
                 ) -> tuple[float, int]:
    """The edges per node and the features of ``--sizes``' graphs: by
    default the main graph's degree, and the models' input width."""
    degree = degree or graph.edge_index.size(1) / graph.num_nodes
    widths = {e.in_channels for e in entries if e.in_channels}
    if len(widths) > 1:
        raise ArchitectureError(
            f'--sizes needs models that take the same number of features '
            f'(got {sorted(widths)})')
    return degree, widths.pop() if widths else graph.num_features


def _bench_rows(entries: list[Any], graph: Graph, sizes: list[int] | None,
                degree: float | None, workdir: Path, seed: int,
                **kwargs: Any) -> tuple[list[Any], dict[int, list[Any]]]:
    """The main graph's rows, then each ``sizes`` graph's."""
    from gnncompress.workflows.bench_rows import run_bench, synthetic_graph

    rows = run_bench(entries, graph, workdir=workdir, **kwargs)
    scaling: dict[int, list[Any]] = {}
    if sizes is None:
        return rows, scaling
    degree, width = _sizes_shape(entries, graph, degree)
    for n in sizes:
        synthetic = synthetic_graph(n, round(n * degree), width,
                                        seed=seed)
        scaling[n] = run_bench(entries, synthetic, workdir=workdir,
                                   **kwargs)
    return rows, scaling


@outputs.one_run
def bench(models: list[str | Path], *, data: str | Path | None = None,
          data_root: str | Path | None = None,
          graph_size: str | None = None, runtimes: list[str] | None = None,
          threads: list[int] | None = None, device: str = 'auto',
          baseline: str | Path | None = None, warmup: int = 3,
          repeat: int = 20, max_latency_ms: float | None = None,
          min_speedup: float | None = None,
          max_accuracy_drop: float | None = None,
          out: str | Path | None = 'gnncompress-bench', seed: int = 0,
          progress: Any = None, command: str = '',
          config: dict[str, Any] | None = None,
          sizes: str | list[int] | None = None, degree: float | None = None,
          row_budget_s: float | None = None):
    """Every model on one graph (``data`` or a synthetic ``graph_size``),
    under each runtime that applies, on the CPU at each thread count and on
    CUDA when ``device`` allows; writes ``bench.json``, ``bench.md`` and
    ``bench.png`` to ``out`` (``None``: nothing written). Failed gates are
    in the result (``failed_gates``); choosing an exit code is the
    caller's business. ``sizes`` (node counts) also times every model on
    synthetic graphs of those sizes with ``degree`` edges per node (default:
    the main graph's) and plots latency against size
    (``bench-sizes.png``). A row (model x runtime x threads) that takes
    longer than ``row_budget_s`` seconds (default
    :data:`~gnncompress.core.defaults.DEFAULT_ROW_BUDGET_S`) is stopped and
    reported as failed."""
    from gnncompress.workflows.bench_plots import plot, plot_scaling
    from gnncompress.workflows.bench_rows import (
        DEFAULT_ROW_BUDGET_S,
        check_synthetic,
        load_models,
        parse_graph_size,
        parse_sizes,
        synthetic_graph,
    )
    from gnncompress.workflows.bench_table import (
        KNOWN_RUNTIMES,
        RUNTIMES,
        BenchResult,
        check_gates,
        compare_to_baseline,
        timestamp,
    )

    if row_budget_s is None:
        row_budget_s = DEFAULT_ROW_BUDGET_S
    if not math.isfinite(row_budget_s) or row_budget_s <= 0:
        raise GnnCompressError(f'--row-budget-s must be a positive number of '
                               f'seconds (got {row_budget_s})')

    # Gates and sizes: (flag, value, an example). A negative accuracy
    # drop asks the model to beat its baseline, as distill's gate does.
    if max_accuracy_drop is not None and not math.isfinite(
            max_accuracy_drop):
        raise GnnCompressError(f'--max-accuracy-drop must be a finite '
                               f'number (got {max_accuracy_drop}): give '
                               f'e.g. --max-accuracy-drop 1')
    for flag, value, example in (('--degree', degree, '5'),
                                 ('--max-latency-ms', max_latency_ms, '10'),
                                 ('--min-speedup', min_speedup, '2')):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise GnnCompressError(f'{flag} must be a finite number above 0 '
                                   f'(got {value}): give e.g. {flag} '
                                   f'{example}')
    runtimes = list(runtimes or RUNTIMES)
    unknown = [r for r in runtimes if r not in KNOWN_RUNTIMES]
    if unknown:
        raise GnnCompressError(f"Unknown runtime '{unknown[0]}' (choose from "
                               f"{', '.join(KNOWN_RUNTIMES)})")
    if threads and min(threads) < 1:
        raise GnnCompressError(f'--threads must be positive (got {threads})')
    if warmup < 0 or repeat < 1:
        raise GnnCompressError(f'--warmup must be at least 0 and --repeat at '
                               f'least 1 (got {warmup}, {repeat})')
    if not models:
        raise GnnCompressError('bench needs at least one model file')
    if (data is None) == (graph_size is None):
        raise DataError('bench needs exactly one of --data NAME and '
                        '--graph-size NODES:EDGES:FEATURES')
    if min_speedup is not None and baseline is None:
        raise GnnCompressError('--min-speedup needs --baseline MODEL')
    if max_accuracy_drop is not None and baseline is None:
        raise GnnCompressError('--max-accuracy-drop needs --baseline MODEL')
    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    if out is not None:
        check_out(out)
        check_writable(Path(out))
        outputs.claim(out)
    paths = [Path(m) for m in models]
    if baseline is not None and Path(baseline) not in paths:
        paths.insert(0, Path(baseline))
    entries = load_models(paths)
    base_name = None
    if baseline is not None:
        base_name = entries[paths.index(Path(baseline))].name

    if graph_size is not None:
        graph = synthetic_graph(*parse_graph_size(graph_size),
                                    seed=seed)
        if max_accuracy_drop is not None:
            raise DataError('--max-accuracy-drop needs labels: use --data '
                            'with a labelled dataset, not --graph-size')
    else:
        graph = load_graph(data, data_root, seed=seed)
    for entry in entries:
        width = entry.in_channels
        if width is not None and width != graph.num_features:
            raise ArchitectureError(
                f'{entry.path} takes {width} input features but the graph has '
                f'{graph.num_features}: bench models on the data they were '
                f'trained for')
    devices = [torch.device('cpu')]
    if device in ('auto', 'cuda') or device.startswith('cuda:'):
        if torch.cuda.is_available():
            devices.append(resolve_device('cuda' if device == 'auto'
                                          else device))
        elif device != 'auto':
            resolve_device(device)  # raises: CUDA asked for, not there
    if sizes:  # before any row runs: the largest graph must fit
        size_degree, width = _sizes_shape(entries, graph, degree)
        n = max(sizes)
        check_synthetic(n, round(n * size_degree), width,
                        f'--sizes {n} (--degree {size_degree:g})',
                        'give smaller --sizes or a smaller --degree')
    workdir = Path(tempfile.mkdtemp(prefix='gnncompress-bench-'))
    try:
        rows, scaling = _bench_rows(entries, graph, sizes, degree, workdir,
                                    runtimes=runtimes, threads=threads,
                                    devices=devices, warmup=warmup,
                                    repeat=repeat, progress=progress,
                                    seed=seed, row_budget_s=row_budget_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not any(row.latency for row in rows):
        first = rows[0]
        more = f' (and {plural(len(rows) - 1, "more failed row")})' \
            if len(rows) > 1 else ''
        raise GnnCompressError(
            f'No bench row ran, nothing was written: {first.model} '
            f'{first.runtime} {first.device} failed ({first.error}){more}: '
            f'bench models that take this graph, or try other --runtimes')
    degree = degree or graph.edge_index.size(1) / graph.num_nodes
    if base_name is not None:
        compare_to_baseline(rows, base_name)
    gates = check_gates(rows, base_name, max_latency_ms=max_latency_ms,
                            min_speedup=min_speedup,
                            max_accuracy_drop=max_accuracy_drop)
    result = BenchResult(
        graph={'name': graph.name, 'num_nodes': graph.num_nodes,
               'num_edges': int(graph.edge_index.size(1)),
               'num_features': graph.num_features,
               'labelled': bool(graph.test_mask.any())},
        models=[{'name': e.name, 'file': str(e.path),
                 'format': 'onnx' if e.is_onnx else 'pytorch',
                 'parameters': e.parameters, 'file_bytes': e.file_bytes}
                for e in entries],
        rows=rows, baseline=base_name, gates=gates, scaling=scaling,
        settings={'warmup': warmup, 'repeat': repeat, 'runtimes': runtimes,
                  'threads': threads or sorted({1, os.cpu_count() or 1}),
                  'devices': [str(d) for d in devices], 'seed': seed,
                  'sizes': list(scaling), 'degree': degree,
                  'command': command, 'config': config or {},
                  'versions': versions(),
                  'cpu_count': os.cpu_count(), 'time': timestamp()})
    if out is not None:
        with staged_output(Path(out), outputs.BENCH_FILES) as stage:
            (stage / 'bench.json').write_text(
                json.dumps(result.to_dict(), indent=2) + '\n')
            (stage / 'bench.md').write_text(result.markdown())
            plots.drawn('bench.png', plot, result, stage / 'bench.png')
            if scaling:
                plots.drawn('bench-sizes.png', plot_scaling, result,
                            stage / 'bench-sizes.png')
    return result
