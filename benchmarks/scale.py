"""Scale: full-batch against mini-batch distillation on synthetic graphs.

Graphs: a stochastic block model (10 blocks of equal size, each node with
about ``DEGREE`` edges, both directions, 80% of them inside its block)
whose features are the block's mean vector plus Gaussian noise, so that
accuracy means something (features alone are not enough; neighbours
help). Sizes 100k, 1M and 3M nodes (about 1.6M, 16M and 48M directed
edges). 10% of the nodes train, 10% validate, the rest test.

Teacher: GraphSAGE, 2 layers x 128, trained full-batch on the 100k graph
(the generator's class means are fixed, so it applies to every size).
Student: GCN, 2 layers x 32. Methods: KD and LSP, each in two modes:
``full`` (engine.fit, one pass over the whole graph per epoch) and
``mini`` (minibatch.fit_minibatch, batches of 4,096 seeds, fanout 15,10,
teacher cached once layer-wise, evaluation layer-wise). Rows: wall time
per epoch (training and validation), the teacher's one-off cost, peak
resident memory of the run's process, test accuracy after the epochs run.

Every size x mode x method is its own process (its peak memory is its
own) and writes one JSON file; present files are skipped, so an
interrupted run resumes. A run that fails (e.g. out of memory) is recorded
with its exit status. The figure ``docs/scale.png`` plots time per epoch
and peak memory against the edge count.

    python benchmarks/scale.py                  # 100k, 1M, 3M nodes
    python benchmarks/scale.py --sizes 3000000 --epochs 1   # one size
    python benchmarks/scale.py --quick          # tiny sizes, 1 epoch
    python benchmarks/scale.py --report         # only the doc and PNG
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine, read_rows, update_doc, write_json

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.graph import Graph
from gnncompress.core.metrics import accuracy
from gnncompress.models import ArchSpec, build_model
from gnncompress.training.sampling import CSR, NeighborSampler, TensorStore
from gnncompress.training.train import fit, forward_frozen
from gnncompress.workflows.distill_sampled import fit_minibatch, teacher_cache

SIZES = (100_000, 1_000_000, 3_000_000)
QUICK_SIZES = (2_000, 6_000)
MODES = ('full', 'mini')
METHODS = ('kd', 'lsp')
BLOCKS, FEATURES, DEGREE, P_IN = 10, 32, 16, 0.8
BATCH_SIZE, FANOUT = 4096, [15, 10]
TEACHER = dict(arch='sage', hidden=128, layers=2, epochs=100)
STUDENT_HIDDEN = 32
DOC_PNG = Path(__file__).resolve().parent.parent / 'docs' / 'scale.png'


def make_sbm(num_nodes: int, seed: int = 0) -> Graph:
    """The stochastic block model graph (vectorised; a few seconds per
    million nodes)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(BLOCKS, FEATURES,
                        generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, BLOCKS, (num_nodes,), generator=gen)
    x = 0.35 * means[y] + torch.randn(num_nodes, FEATURES, generator=gen)
    # Nodes of each block, to draw same-block partners from.
    order = torch.argsort(y)
    counts = torch.bincount(y, minlength=BLOCKS)
    starts = torch.cumsum(counts, 0) - counts
    src = torch.arange(num_nodes).repeat_interleave(DEGREE // 2)
    inside = torch.rand(src.numel(), generator=gen) < P_IN
    pick = (torch.rand(src.numel(), generator=gen) *
            counts[y[src]]).long()
    same = order[starts[y[src]] + pick]
    other = torch.randint(0, num_nodes, (src.numel(),), generator=gen)
    dst = torch.where(inside, same, other)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    part = torch.rand(num_nodes, generator=gen)
    return Graph(name=f'sbm-{num_nodes}', x=x, edge_index=edge_index, y=y,
                 train_mask=part < 0.1, val_mask=(part >= 0.1) & (part < 0.2),
                 test_mask=part >= 0.2, num_classes=BLOCKS,
                 split={'kind': 'random', 'train': 0.1, 'val': 0.1})


def _teacher_path(out: Path, size: int) -> Path:
    return out / f'teacher-sage-{size}.pt'


def run_teacher(out: Path, size: int, epochs: int) -> dict[str, Any]:
    graph = make_sbm(size)
    data_file = out / f'sbm-{size}.pt'
    from torch_geometric.data import Data
    torch.save(Data(x=graph.x, edge_index=graph.edge_index, y=graph.y,
                    train_mask=graph.train_mask, val_mask=graph.val_mask,
                    test_mask=graph.test_mask), data_file)
    result = api.train_teacher(data_file, _teacher_path(out, size),
                               arch=TEACHER['arch'], hidden=TEACHER['hidden'],
                               layers=TEACHER['layers'], epochs=epochs,
                               patience=None, progress=False, dropout=0.2)
    data_file.unlink()
    return {'size': size, 'test_accuracy': result.test_accuracy,
            'epochs': result.epochs_run}


@contextlib.contextmanager
def _counting_samples() -> Iterator[dict[str, int]]:
    """Sum the nodes and edges of every subgraph the sampler draws."""
    counts = {'nodes': 0, 'edges': 0}
    original = NeighborSampler.sample

    def sample(self, seeds):
        batch = original(self, seeds)
        counts['nodes'] += int(batch.n_id.numel())
        counts['edges'] += int(batch.edge_index.size(1))
        return batch

    NeighborSampler.sample = sample
    try:
        yield counts
    finally:
        NeighborSampler.sample = original


def run_student(out: Path, teacher_size: int, size: int, mode: str,
                method: str, epochs: int) -> dict[str, Any]:
    graph = make_sbm(size)
    ckpt = load_checkpoint(_teacher_path(out, teacher_size))
    teacher = ckpt.build().eval()
    spec = ArchSpec(arch='gcn', in_channels=FEATURES,
                    hidden_channels=STUDENT_HIDDEN, num_layers=2,
                    out_channels=BLOCKS, dropout=0.5)
    distiller = api.build_method(method)
    api.seed_everything(0)
    student = build_model(spec)
    start = time.perf_counter()
    sampled = {'nodes': 0, 'edges': 0}
    if mode == 'full':
        cached = forward_frozen(teacher, graph)
        teacher_seconds = time.perf_counter() - start
        result = fit(student, graph, method=distiller,
                     teacher_outputs=[cached], epochs=epochs, patience=None,
                     progress=False)
        teacher_acc = accuracy(cached.logits, graph.y, graph.test_mask)
    else:
        csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
        store = TensorStore(folder=out)
        cached = teacher_cache(teacher, graph, csr, distiller, store)
        teacher_seconds = time.perf_counter() - start
        with _counting_samples() as sampled:
            result = fit_minibatch(student, graph, csr, fanout=FANOUT,
                                   batch_size=BATCH_SIZE, method=distiller,
                                   teacher_outputs=[cached], epochs=epochs,
                                   patience=None, progress=False)
        teacher_acc = accuracy(cached.logits, graph.y, graph.test_mask)
        store.close()
    runs = max(1, result.epochs_run)
    return {'size': size, 'mode': mode, 'method': method,
            'nodes': graph.num_nodes, 'edges': int(graph.edge_index.size(1)),
            # Mini-batch work per epoch: the sampled subgraphs' sizes.
            'sampled_edges_per_epoch': sampled['edges'] / runs
            if mode == 'mini' else None,
            'sampled_nodes_per_epoch': sampled['nodes'] / runs
            if mode == 'mini' else None,
            'epochs': result.epochs_run,
            'seconds_per_epoch': result.seconds / max(1, result.epochs_run),
            'teacher_seconds': teacher_seconds,
            'test_accuracy': result.test_accuracy,
            'teacher_test_accuracy': teacher_acc,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, 'threads': torch.get_num_threads(),
            'batch_size': BATCH_SIZE if mode == 'mini' else None,
            'fanout': FANOUT if mode == 'mini' else None,
            'machine': machine(), 'status': 'ok'}


def _spawn(argv: list[str], job: list[str]) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, '--job',
           *job]
    return subprocess.run(cmd).returncode


def report(out: Path) -> str:
    rows = [r for r in read_rows(out) if 'mode' in r]
    if not rows:
        return 'No results yet.'
    lines = ['Stochastic block model, 10 blocks, 32 features; teacher '
             'GraphSAGE 2x128 trained on the smallest graph; student GCN '
             f'2x{STUDENT_HIDDEN}; mini-batch: {BATCH_SIZE} seeds, fanout '
             f"{','.join(map(str, FANOUT))}. One run (seed 0) per row.", '',
             '| nodes | edges | mode | method | s / epoch | sampled edges / '
             'epoch | µs / sampled edge | teacher (s, once) '
             '| peak memory (GB) | test acc (%) | teacher acc (%) | '
             'epochs |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in sorted(rows, key=lambda r: (r['size'], r['mode'],
                                         r['method'])):
        if r.get('status') != 'ok':
            lines.append(f"| {r['size']:,} | - | {r['mode']} | "
                         f"{r['method']} | failed (exit {r['exit']}) | | | "
                         '| | | | |')
            continue
        work = r.get('sampled_edges_per_epoch')
        per_edge = f"{1e6 * r['seconds_per_epoch'] / work:.2f}" if work \
            else '-'
        lines.append(
            f"| {r['nodes']:,} | {r['edges']:,} | {r['mode']} | "
            f"{r['method']} | {r['seconds_per_epoch']:.2f} | "
            f"{f'{work / 1e6:.1f}M' if work else '-'} | {per_edge} | "
            f"{r['teacher_seconds']:.1f} | {r['peak_rss_mb'] / 1024:.2f} | "
            f"{100 * r['test_accuracy']:.1f} | "
            f"{100 * r['teacher_test_accuracy']:.1f} | {r['epochs']} |")
    threads = sorted({r['threads'] for r in rows if 'threads' in r})
    lines += ['', 'Read with care: a row is one process at '
              f"{', '.join(map(str, threads))} thread(s), and every run "
              'does only a few epochs, so the accuracies say how far that '
              'many steps get (a full-batch epoch is one optimiser step, a '
              'mini-batch epoch one per batch), not what either mode '
              'reaches. Peak memory is the whole process (graph, teacher, '
              'student, caches).',
              '', f"Machine: {rows[0].get('machine', machine())}.",
              '', '![time per epoch and peak memory against edges]'
              f'({DOC_PNG.name})']
    return '\n'.join(lines)


def _edge_label(edges: float) -> str:
    """1599874 -> '1.6M': short enough for three ticks not to collide."""
    return f'{edges / 1e6:.2g}M' if edges >= 1e6 else f'{edges / 1e3:.3g}k'


def plot(out: Path, png: Path) -> None:
    """Two panels against the edge count: seconds per epoch (with a line
    of slope 1 for reference) and the process's peak memory."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    rows = [r for r in read_rows(out)
            if 'mode' in r and r.get('status') == 'ok']
    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    styles = {'full': '-', 'mini': '--'}
    colours = {'kd': 'tab:blue', 'lsp': 'tab:orange'}
    for mode in MODES:
        for method in METHODS:
            mine = sorted((r['edges'], r['seconds_per_epoch'],
                           r['peak_rss_mb'] / 1024) for r in rows
                          if r['mode'] == mode and r['method'] == method)
            if not mine:
                continue
            edges, seconds, gigabytes = zip(*mine)
            style = dict(marker='o', linestyle=styles[mode],
                         color=colours[method],
                         label=f'{mode}-batch {method.upper()}')
            time_ax.plot(edges, seconds, **style)
            mem_ax.plot(edges, gigabytes, **style)
    if rows:
        # A line of slope 1 through the fastest run on the smallest graph.
        e0 = min(r['edges'] for r in rows)
        t0 = min(r['seconds_per_epoch'] for r in rows if r['edges'] == e0)
        e1 = max(r['edges'] for r in rows)
        time_ax.plot([e0, e1], [t0, t0 * e1 / e0], 'k:',
                     label='linear in edges')
    ticks = sorted({r['edges'] for r in rows})
    for ax in (time_ax, mem_ax):
        ax.set_xscale('log')
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ticks, [_edge_label(e) for e in ticks])
        ax.set_xlabel('edges (directed)')
        ax.grid(True, which='major', alpha=0.3)
    time_ax.set_yscale('log')
    time_ax.set_ylabel('seconds per epoch (log)')
    time_ax.set_title('Time per epoch')
    time_ax.legend(fontsize='small')
    mem_ax.set_ylabel('peak resident memory (GB)')
    mem_ax.set_ylim(bottom=0)
    mem_ax.set_title('Peak memory of the process')
    mem_ax.legend(fontsize='small')
    threads = sorted({r.get('threads') for r in rows if r.get('threads')})
    fig.suptitle('Full-batch against mini-batch distillation, GCN 2x'
                 f'{STUDENT_HIDDEN} student'
                 + (f", {'/'.join(map(str, threads))} CPU thread"
                    + ('s' if threads != [1] else '') if threads else ''))
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.stem + '.tmp.png')
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default=None,
                        help='Node counts, comma-separated (default '
                        '100000,1000000,3000000; --quick: 2000,6000).')
    parser.add_argument('--epochs', type=int, default=None,
                        help='Student epochs per run (default 3; --quick 1).')
    parser.add_argument('--teacher-epochs', type=int, default=None)
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--modes', default=','.join(MODES))
    parser.add_argument('--quick', action='store_true',
                        help='Tiny sizes, results kept apart, the doc left '
                        'alone: a smoke test.')
    parser.add_argument('--report', action='store_true',
                        help='Only rewrite docs/BENCHMARKS.md and the PNG.')
    parser.add_argument('--job', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = RESULTS / ('scale-quick' if args.quick else 'scale')
    sizes = [int(s) for s in args.sizes.split(',')] if args.sizes else \
        list(QUICK_SIZES if args.quick else SIZES)
    epochs = args.epochs or (1 if args.quick else 3)
    teacher_epochs = args.teacher_epochs or (5 if args.quick
                                             else TEACHER['epochs'])
    # The teacher is trained on the smallest default size, whichever sizes
    # this invocation runs (e.g. --sizes 3000000 --epochs 1 on its own).
    teacher_size = min(QUICK_SIZES if args.quick else SIZES)
    out.mkdir(parents=True, exist_ok=True)
    if args.job:
        torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '0'))
                              or torch.get_num_threads())
        if args.job[0] == 'teacher':
            write_json(out / 'teacher.json',
                       run_teacher(out, teacher_size, teacher_epochs))
        else:
            size, mode, method = int(args.job[0]), args.job[1], args.job[2]
            write_json(out / f'{size}-{mode}-{method}.json',
                       run_student(out, teacher_size, size, mode, method,
                                   epochs))
        return
    if not args.report:
        passed = list(argv if argv is not None else sys.argv[1:])
        if not _teacher_path(out, teacher_size).exists():
            _spawn(passed, ['teacher'])
        for size in sizes:
            for mode in args.modes.split(','):
                for method in args.methods.split(','):
                    path = out / f'{size}-{mode}-{method}.json'
                    if path.exists():
                        continue
                    code = _spawn(passed, [str(size), mode, method])
                    if not path.exists():
                        write_json(path, {'size': size, 'mode': mode,
                                          'method': method, 'exit': code,
                                          'status': 'failed'})
    text = report(out)
    if args.quick:
        plot(out, out / 'scale.png')
        print(text)
        return
    plot(out, DOC_PNG)
    update_doc('scale', '## Scale: full-batch and mini-batch distillation\n\n'
               'Made by `python benchmarks/scale.py`.\n\n' + text)
    print(text)


if __name__ == '__main__':
    main()
