"""Training in batches over several processes
(``gnncompress distill|amalgamate|cotrain --batch-size B --nproc N``, or
under ``torchrun``): starting the processes and joining them in one group.
Batches are sampled subgraphs of one graph, or whole graphs (graph
classification, node classification over several graphs, point clouds);
full-graph training takes one step on the whole graph and has no batch to
split (refused once the data are loaded: :func:`check_batches`).
What each rank does in training is the training loop's
(:mod:`gnncompress.training.ranks`), for every command alike.

Every process loads the data and the teacher, computes the teacher's cache
itself (layer-wise inference is deterministic and needs no shared disk, so
the same code runs on one machine or several), and trains the same student
with its gradients averaged over the ranks after every step: per epoch
the seed nodes are shuffled identically on every rank and split into equal
shares, each rank samples its own neighbourhoods, and the average of the
gradients of the student and the method's trainable parts makes every rank
take the same optimiser step. ``--batch-size`` stays the global batch: each
of N ranks takes ``ceil(B / N)`` seeds a step, and an epoch has the steps of
a one-process run. On batches of whole graphs every rank draws the same
batches (of ``--batch-size`` graphs or clouds, or the default size) and
trains on every N-th graph of each. Rank 0 alone validates
(and broadcasts the score, so every rank stops at the same epoch),
evaluates the test split and writes the outputs and the training
checkpoints (``--checkpoint-every``, with every rank's random state; on
``--resume`` every rank reads it). gloo on the CPU, NCCL on GPUs (one
process per GPU)."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from gnncompress.core.errors import GnnCompressError, TrainingError
from gnncompress.core.graph import Graph
from gnncompress.core.out_folder import CLAIMS_ENV, release_abandoned
from gnncompress.outputs import latency as bench
from gnncompress.training.ranks import joined

# What torchrun (and --nproc's workers) set for every process.
ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
# What --nproc's workers set besides (absent under torchrun).
NPROC_ENV = 'GNNCOMPRESS_NPROC'


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or a launcher that
    sets the same variables) and has not joined its group yet."""
    return all(k in os.environ for k in ENV) and not joined()


def several_processes() -> bool:
    """Whether this run trains in several processes: started by torchrun
    and not joined yet, or inside a joined group of more than one (a
    caller's own group). Every rank must then take the same decisions,
    which a time budget (``--method auto``) cannot promise."""
    return under_torchrun() or (
        joined() and dist.get_world_size() > 1)


def check_options(nproc: int | None, params: dict[str, Any]) -> None:
    """What several processes cannot do yet, refused before anything
    starts. (Full-graph training, which has no batch to split, is refused
    once the data are loaded: :func:`check_batches`.)"""
    flag = '--nproc' if nproc is not None else 'torchrun'
    if nproc is not None and under_torchrun():
        raise GnnCompressError('--nproc and torchrun both start processes: '
                               'drop --nproc when running under torchrun')
    if nproc is not None and nproc < 1:
        raise GnnCompressError(f'--nproc must be at least 1 (got {nproc})')
    if params.get('folds') is not None:
        raise GnnCompressError(f'--folds trains one run per fold in one '
                               f'process: drop {flag}, or --folds')
    device = str(params.get('device', 'auto'))
    if device.startswith('cuda:'):
        raise GnnCompressError(f'{flag} puts one process on each GPU: use '
                               f'--device cuda (or auto), not {device}')
    if device == 'cuda' and nproc is not None and torch.cuda.is_available() \
            and nproc > torch.cuda.device_count():
        raise GnnCompressError(
            f'--nproc {nproc} needs {nproc} GPUs but '
            f'{torch.cuda.device_count()} are visible: lower --nproc')


def check_batches(graphs: Sequence[Graph], batch_size: int | None) -> None:
    """In a process group, refuse training that has no batch to split:
    full-graph training on one graph (or one graph per task), where
    ``--batch-size`` is not given. Graph classification, node
    classification over several graphs and point clouds train on batches
    of a default size without it, which the processes share."""
    if not joined() or batch_size is not None or any(
            g.batch is not None or g.node_graph is not None for g in graphs):
        return
    flag = '--nproc' if NPROC_ENV in os.environ else 'torchrun'
    names = ', '.join(dict.fromkeys(g.name for g in graphs))
    raise GnnCompressError(
        f'{flag} splits each training batch between processes, and {names} '
        f'trains full-graph (one step on the whole graph, no batch): add '
        f'--batch-size (seed nodes per step, e.g. --batch-size 1024)')


def launch(fn: Callable[..., Any], params: Any) -> Any:
    """Run ``fn(**params)`` (``params['nproc']`` removed), or ``fn(params)``
    for a command's settings (:mod:`gnncompress.workflows.settings`; their
    ``nproc`` cleared), on every rank: spawned here when ``nproc`` is set,
    else in this torchrun process. What rank 0 returns (None on the other
    ranks under torchrun)."""
    nproc = _options(params).get('nproc')
    params = {k: v for k, v in params.items() if k != 'nproc'} \
        if isinstance(params, dict) else params.with_options(nproc=None)
    check_options(nproc, _options(params))
    # The command's --latency/--latency-budget-s, for the spawned ranks.
    budget = bench.current_budget()
    if nproc is None:
        return _run_rank(fn, params, budget)
    return spawn(_run_rank, nproc, fn, params, budget)[0]


def _options(params: Any) -> dict[str, Any]:
    """A command's options by name, from keywords or settings."""
    return params if isinstance(params, dict) else params.options()


def _with(params: Any, **changes: Any) -> Any:
    return {**params, **changes} if isinstance(params, dict) else \
        params.with_options(**changes)


def spawn(fn: Callable[..., Any], nproc: int, *args: Any) -> list[Any]:
    """``fn(*args)`` in ``nproc`` fresh processes (spawn) joined in one
    process group on a free localhost port; every rank's return value. An
    error raised on any rank is raised here (the others are stopped)."""
    import torch.multiprocessing as mp

    port = _free_port()
    # When a rank fails, torch logs a warning for each rank it stops; the
    # rank's own error is what the user needs.
    logging.getLogger('torch.multiprocessing.spawn').setLevel(logging.ERROR)
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    started = ctx.Array('b', nproc)  # set by each rank as it starts
    fd, claims = tempfile.mkstemp(prefix='gnncompress-claims-')
    os.close(fd)
    try:
        return _join(mp.start_processes(
            _worker, args=(fn, args, nproc, port, queue, started, claims),
            nprocs=nproc, join=False, start_method='spawn'),
            nproc, queue, started, claims)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(claims)


def _join(procs: Any, nproc: int, queue: Any, started: Sequence[int],
          claims: str) -> list[Any]:
    """Every rank's return value, or the error of the first that
    failed; on Ctrl-C or SIGTERM, the ranks interrupted and what a killed
    one left behind removed."""
    messages: dict[int, tuple[bool, Any]] = {}
    failed: Exception | None = None
    try:
        while True:
            while not queue.empty():
                rank, ok, blob = queue.get()
                messages[rank] = (ok, pickle.loads(blob))
            try:
                if procs.join(timeout=0.2):
                    break
            except Exception as e:  # a rank exited non-zero; others stopped
                failed = e
                break
    except BaseException:  # Ctrl-C or SIGTERM reached this process alone
        _interrupt(procs.processes, started)
        release_abandoned(claims)
        raise
    release_abandoned(claims)  # of a rank that died (killed, out of memory)
    while not queue.empty():
        rank, ok, blob = queue.get()
        messages[rank] = (ok, pickle.loads(blob))
    errors = [v for _, (ok, v) in sorted(messages.items()) if not ok]
    user = [e for e in errors if isinstance(e, GnnCompressError)]
    # A rank that fails leaves the others' collectives with a closed
    # connection: its own error is the cause.
    causes = [e for e in errors if 'closed by peer' not in str(e)]
    if user or causes or errors:
        raise (user or causes or errors)[0]
    if failed is not None or len(messages) < nproc:
        raise TrainingError(f'a training process died without a message '
                            f'({failed}): see the output above')
    return [messages[r][1] for r in range(nproc)]


def _interrupt(processes: Sequence[Any], started: Sequence[int],
               wait_s: float = 10.0) -> None:
    """Interrupt each rank still running (SIGINT: it unwinds as Ctrl-C
    does, removing what it was writing; a rank still starting, which has
    written nothing, just ends, SIGTERM, without the traceback an
    interrupt prints there), give them ``wait_s`` seconds, then end those
    left. Without this, the exit of this process would wait for ranks
    that never heard of the signal."""
    alive = [(r, p) for r, p in enumerate(processes) if p.is_alive()]
    for rank, proc in alive:
        try:
            os.kill(proc.pid, signal.SIGINT if started[rank]
                    else signal.SIGTERM)
        except ProcessLookupError:
            pass
    alive = [p for _, p in alive]
    deadline = time.monotonic() + wait_s
    for proc in alive:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _worker(rank: int, fn: Callable[..., Any], args: tuple[Any, ...],
            nproc: int, port: int, queue: Any, started: Any,
            claims: str) -> None:
    started[rank] = 1
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(nproc),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc),
                      **{NPROC_ENV: str(nproc), CLAIMS_ENV: claims})
    # N processes share the cores this one would have used alone.
    torch.set_num_threads(max(1, torch.get_num_threads() // nproc))
    try:
        value, ok = fn(*args), True
    except Exception as e:
        value, ok = e, False
    try:
        blob = pickle.dumps(value)
    except Exception:  # an exception that does not pickle
        blob = pickle.dumps(TrainingError(f'{type(value).__name__}: {value}'))
    queue.put((rank, ok, blob))
    if not ok:
        raise SystemExit(1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def _run_rank(fn: Callable[..., Any], params: Any,
              budget: tuple[float, bool] | None = None) -> Any:
    """Join the group the environment describes, run ``fn(**params)``
    (``fn(params)`` for settings) within the latency ``budget`` (seconds
    and whether to time at all, when given), leave the group."""
    from gnncompress.workflows.runs import resolve_device

    dev = resolve_device(str(_options(params).get('device', 'auto')))
    if dev.type == 'cuda':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    try:
        rank = dist.get_rank()
        if rank != 0:
            params = _with(params, progress=False)
        with contextlib.ExitStack() as stack:
            if budget is not None:
                stack.enter_context(bench.latency_budget(*budget))
            result = fn(**params) if isinstance(params, dict) else \
                fn(params)
        return result if rank == 0 else None
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """The first process of each machine first, then the others: the first
    load of a dataset fills the machine's cache, which the others then
    read."""
    if not joined():
        yield
        return
    first = int(os.environ.get('LOCAL_RANK', dist.get_rank())) == 0
    if not first:
        dist.barrier()
    try:
        yield
    finally:
        if first:
            dist.barrier()
