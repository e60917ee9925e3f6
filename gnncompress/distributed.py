"""Mini-batch distillation over several processes
(``gnncompress distill --batch-size B --nproc N``, or under ``torchrun``).

Every process loads the data and the teacher, computes the teacher's cache
itself (layer-wise inference is deterministic and needs no shared disk, so
the same code runs on one machine or several), and trains the same student
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`: per epoch
the seed nodes are shuffled identically on every rank and split into equal
shares, each rank samples its own neighbourhoods, and DDP averages the
gradients of the student and the method's trainable parts, so every rank
takes the same optimiser step. ``--batch-size`` stays the global batch: each
of N ranks takes ``ceil(B / N)`` seeds a step, and an epoch has the steps of
a one-process run. Rank 0 alone validates (and broadcasts the score, so
every rank stops at the same epoch), evaluates the test split and writes
the outputs. gloo on the CPU, NCCL on GPUs (one process per GPU)."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gnncompress.errors import GnnCompressError, TrainingError

# What torchrun (and --nproc's workers) set for every process.
ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or a launcher that
    sets the same variables) and has not joined its group yet."""
    return all(k in os.environ for k in ENV) and not _joined()


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def check_options(nproc: int | None, params: dict[str, Any]) -> None:
    """What several processes cannot do yet, refused before anything
    starts."""
    flag = '--nproc' if nproc is not None else 'torchrun'
    if nproc is not None and under_torchrun():
        raise GnnCompressError('--nproc and torchrun both start processes: '
                               'drop --nproc when running under torchrun')
    if nproc is not None and nproc < 1:
        raise GnnCompressError(f'--nproc must be at least 1 (got {nproc})')
    if params.get('batch_size') is None:
        raise GnnCompressError(f'{flag} trains on sampled subgraphs: add '
                               f'--batch-size, e.g. --batch-size 1024')
    if params.get('resume') is not None or \
            params.get('checkpoint_every') is not None:
        raise GnnCompressError(f'--checkpoint-every and --resume do not work '
                               f'with {flag} yet: drop them')
    device = str(params.get('device', 'auto'))
    if device.startswith('cuda:'):
        raise GnnCompressError(f'{flag} puts one process on each GPU: use '
                               f'--device cuda (or auto), not {device}')
    if device == 'cuda' and nproc is not None and torch.cuda.is_available() \
            and nproc > torch.cuda.device_count():
        raise GnnCompressError(
            f'--nproc {nproc} needs {nproc} GPUs but '
            f'{torch.cuda.device_count()} are visible: lower --nproc')


def launch(fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Run ``fn(**params)`` (``params['nproc']`` removed) on every rank:
    spawned here when ``nproc`` is set, else in this torchrun process.
    What rank 0 returns (None on the other ranks under torchrun)."""
    params = dict(params)
    nproc = params.pop('nproc', None)
    check_options(nproc, params)
    if nproc is None:
        return _run_rank(fn, params)
    return spawn(_run_rank, nproc, fn, params)[0]


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
    procs = mp.start_processes(_worker, args=(fn, args, nproc, port, queue),
                               nprocs=nproc, join=False,
                               start_method='spawn')
    messages: dict[int, tuple[bool, Any]] = {}
    failed: Exception | None = None
    while True:
        while not queue.empty():
            rank, ok, blob = queue.get()
            messages[rank] = (ok, pickle.loads(blob))
        try:
            if procs.join(timeout=0.2):
                break
        except Exception as e:  # a rank exited non-zero; the rest stopped
            failed = e
            break
    while not queue.empty():
        rank, ok, blob = queue.get()
        messages[rank] = (ok, pickle.loads(blob))
    errors = [v for _, (ok, v) in sorted(messages.items()) if not ok]
    user = [e for e in errors if isinstance(e, GnnCompressError)]
    if user:
        raise user[0]
    if errors:
        raise errors[0]
    if failed is not None or len(messages) < nproc:
        raise TrainingError(f'a training process died without a message '
                            f'({failed}): see the output above')
    return [messages[r][1] for r in range(nproc)]


def _worker(rank: int, fn: Callable[..., Any], args: tuple[Any, ...],
            nproc: int, port: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(nproc),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc))
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


def _run_rank(fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Join the group the environment describes, run ``fn(**params)``,
    leave the group."""
    from gnncompress.api import resolve_device

    dev = resolve_device(str(params.get('device', 'auto')))
    if dev.type == 'cuda':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    try:
        rank = dist.get_rank()
        if rank != 0:
            params = {**params, 'progress': False}
        result = fn(**params)
        return result if rank == 0 else None
    finally:
        dist.destroy_process_group()


class Solo:
    """One process: every hook of :func:`current` as a no-op."""
    rank, world = 0, 1

    def share(self, batch_size: int) -> int:
        return batch_size

    def sampler_seed(self, seed: int) -> int:
        return seed

    def epoch_seeds(self, seeds: Tensor,
                    order: torch.Generator) -> tuple[Tensor, bool]:
        """This rank's seeds for one epoch, and whether the sampler still
        has to shuffle them."""
        return seeds, True

    def wrap(self, student: nn.Module,
             method: nn.Module | None) -> Callable[..., Any]:
        return lambda step, *args: step(*args)

    def total(self, loss: Tensor) -> Tensor:
        return loss

    def mean_loss(self, total: float, steps: int) -> float:
        return total / max(steps, 1)

    def score(self, compute: Callable[[], float]) -> float:
        return compute()

    def check_in_sync(self, model: nn.Module) -> None:
        pass


class Ranks(Solo):
    """This process's part in a DDP run (the group already joined)."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.dev = torch.device('cuda', torch.cuda.current_device()) \
            if dist.get_backend() == 'nccl' else torch.device('cpu')

    def share(self, batch_size: int) -> int:
        return -(-batch_size // self.world)

    def sampler_seed(self, seed: int) -> int:
        # Different neighbourhoods on each rank, reproducible per run.
        return seed + 7919 * self.rank

    def epoch_seeds(self, seeds: Tensor,
                    order: torch.Generator) -> tuple[Tensor, bool]:
        """One shuffle shared by every rank (``order`` advances the same
        way on each), padded by wrapping around to equal shares: every rank
        then takes the same number of steps, as DDP needs."""
        n = seeds.numel()
        shuffled = seeds[torch.randperm(n, generator=order)]
        per_rank = -(-n // self.world)
        padded = shuffled.repeat(-(-per_rank * self.world // n))
        return padded[:per_rank * self.world][self.rank::self.world], False

    def wrap(self, student: nn.Module,
             method: nn.Module | None) -> Callable[..., Any]:
        """A DDP module over the student and the method's trainable parts:
        the step runs inside its forward, so the backward pass all-reduces
        (averages) the gradients of both. Building it broadcasts rank 0's
        weights to every rank."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(_Together(student, method))

    def total(self, loss: Tensor) -> Tensor:
        """The loss summed over ranks: a NaN on any rank stops them all at
        the same step (a rank left waiting in an all-reduce would hang)."""
        summed = loss.detach().to(self.dev, torch.float64).clone()
        dist.all_reduce(summed)
        return summed

    def mean_loss(self, total: float, steps: int) -> float:
        both = torch.tensor([total, float(steps)], dtype=torch.float64,
                            device=self.dev)
        dist.all_reduce(both)
        return float(both[0] / both[1].clamp(min=1))

    def score(self, compute: Callable[[], float]) -> float:
        """``compute()`` on rank 0, broadcast: every rank selects and stops
        early on the same number (GPU kernels need not be bit-identical
        across ranks)."""
        value = torch.tensor([compute() if self.rank == 0 else 0.0],
                             dtype=torch.float64, device=self.dev)
        dist.broadcast(value, 0)
        return float(value)

    def check_in_sync(self, model: nn.Module) -> None:
        """Every rank holds the same weights (what DDP promises), checked
        once at the end."""
        flat = torch.cat([p.detach().reshape(-1).float()
                          for p in model.parameters()]).to(self.dev)
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            raise TrainingError('the training processes ended with different '
                                'student weights: please report this bug')


class _Together(nn.Module):
    """The student and the method under one module, for DDP."""

    def __init__(self, student: nn.Module, method: nn.Module | None) -> None:
        super().__init__()
        self.student, self.method = student, method

    def forward(self, step: Callable[..., Any], *args: Any) -> Any:
        return step(*args)


def refuse(what: str) -> None:
    """A one-line error when a path without DDP support is reached in a
    process group."""
    if _joined():
        raise GnnCompressError(f'--nproc and torchrun do not support {what} '
                               f'yet: run it in one process')


def current() -> Solo:
    """The hooks :func:`gnncompress.minibatch.fit_minibatch` calls: a DDP
    rank's once the process group is joined, else no-ops."""
    return Ranks() if _joined() else Solo()


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """The first process of each machine first, then the others: the first
    load of a dataset fills the machine's cache, which the others then
    read."""
    if not _joined():
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
