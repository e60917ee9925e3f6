"""This process's part in a training run over several processes (DDP).

:func:`gnncompress.training.loop.fit` asks :func:`current` for its hooks:
no-ops in one process (:class:`Solo`), and in a joined process group
(:class:`Ranks`; ``gnncompress.workflows.distributed`` starts the processes) the
steps of data parallelism: every rank starts from rank 0's weights,
averages its gradients with the others' after each backward pass (so every
rank takes the same optimiser step), sums the loss to check it (a NaN on
any rank stops them all), and takes rank 0's validation score (so every
rank selects and stops alike). Rank 0 alone shows progress, writes
checkpoints and scores the test split; a checkpoint holds every rank's
random state (:meth:`Solo.gathered`), and each rank resumes from its own
(:meth:`Solo.resumed`). A regime that splits its epoch between ranks
(sampled subgraphs: each rank a share of every batch's seeds, its own
generator for the neighbourhoods) asks the same hooks for its share."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gnncompress.core.errors import CheckpointError, TrainingError


def joined() -> bool:
    """Whether this process is in a process group."""
    return dist.is_available() and dist.is_initialized()


class Solo:
    """One process: every hook as a no-op."""
    rank, world = 0, 1

    def share(self, batch_size: int) -> int:
        """This rank's part of a global batch of ``batch_size``."""
        return batch_size

    def sampler_seed(self, seed: int) -> int:
        return seed

    def draws(self, order: torch.Generator, seed: int) -> torch.Generator:
        """The generator that samples this rank's neighbourhoods, given the
        one that orders the seeds (``order``, seeded with ``seed``): in one
        process that same generator."""
        return order

    def epoch_seeds(self, seeds: Tensor,
                    order: torch.Generator) -> tuple[Tensor, bool]:
        """This rank's seeds for one epoch, and whether the sampler still
        has to shuffle them."""
        return seeds, True

    def split(self, seeds: Tensor) -> Tensor:
        """This rank's part of one global batch of ``seeds``."""
        return seeds

    def described(self) -> dict[str, int]:
        """What a report's ``training`` entry says of the processes: their
        number, 1 included. Every command writes it on every path (full
        graph, sampled subgraphs, batches of graphs, point clouds), so
        ``training.processes`` is always there and never inferred from its
        absence."""
        return {'processes': self.world}

    def gathered(self, state: dict[str, Any]) -> dict[str, Any]:
        """What a training checkpoint adds to hold every rank's random
        ``state`` (the regime's generators): nothing in one process, whose
        checkpoint holds it already."""
        return {}

    def resumed(self, extra: dict[str, Any]) -> dict[str, Any]:
        """This rank's regime state in a checkpoint's ``extra`` (its
        random generators put back), refused when the checkpoint was
        written by another number of processes."""
        self._check_world(len(extra.get('ranks', [None])))
        return extra['regime']

    def _check_world(self, saved: int) -> None:
        if saved != self.world:
            fix = 'without --nproc' if saved == 1 else f'with --nproc {saved}'
            raise CheckpointError(
                f'The training checkpoint was written by {saved} '
                f'process(es), this run has {self.world}: resume it {fix}')

    def start(self, modules: Iterable[nn.Module | None]) -> None:
        """Before the first step: every rank holds rank 0's weights."""

    def before_step(self, modules: Iterable[nn.Module | None]) -> None:
        """Before each forward pass: rank 0's buffers (batch norm's running
        statistics) on every rank."""

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """After each backward pass: the gradients averaged over ranks."""

    def total(self, loss: Tensor) -> Tensor:
        return loss

    def mean_loss(self, total: float, steps: int) -> float:
        return total / max(steps, 1)

    def score(self, compute: Callable[[], Any]) -> Any:
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

    def draws(self, order: torch.Generator, seed: int) -> torch.Generator:
        """A generator of this rank's own (different neighbourhoods on each
        rank), apart from ``order``, which must advance alike on every
        rank."""
        return torch.Generator().manual_seed(self.sampler_seed(seed))

    def epoch_seeds(self, seeds: Tensor,
                    order: torch.Generator) -> tuple[Tensor, bool]:
        """One shuffle shared by every rank (``order`` advances the same
        way on each), split by :meth:`split`: every rank then takes the
        same number of steps, as the gradient average needs."""
        return self.split(seeds[torch.randperm(seeds.numel(),
                                               generator=order)]), False

    def split(self, seeds: Tensor) -> Tensor:
        """Every ``world``-th seed from this rank's position, the seeds
        first padded by wrapping around to equal shares (no rank is left
        without a seed)."""
        n = seeds.numel()
        if n == 0:
            return seeds
        per_rank = -(-n // self.world)
        padded = seeds.repeat(-(-per_rank * self.world // n))
        return padded[:per_rank * self.world][self.rank::self.world]

    def gathered(self, state: dict[str, Any]) -> dict[str, Any]:
        """Every rank's ``state`` and torch generators, in rank order (a
        collective: every rank calls it at the same epoch)."""
        mine = {'regime': state, 'rng': torch.get_rng_state(),
                'cuda': torch.cuda.get_rng_state()
                if self.dev.type == 'cuda' else None}
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return {'ranks': states}

    def resumed(self, extra: dict[str, Any]) -> dict[str, Any]:
        saved = extra.get('ranks', [None])
        self._check_world(len(saved))
        mine = saved[self.rank]
        torch.set_rng_state(mine['rng'])
        if mine['cuda'] is not None and self.dev.type == 'cuda':
            torch.cuda.set_rng_state(mine['cuda'])
        return mine['regime']

    def start(self, modules: Iterable[nn.Module | None]) -> None:
        for module in modules:
            if module is not None:
                for tensor in module.state_dict().values():
                    self._broadcast(tensor)

    def before_step(self, modules: Iterable[nn.Module | None]) -> None:
        for module in modules:
            if module is not None:
                for buffer in module.buffers():
                    self._broadcast(buffer)

    def _broadcast(self, tensor: Tensor) -> None:
        """Rank 0's values of ``tensor`` in place (through this rank's
        device when the tensor lives elsewhere)."""
        if tensor.device == self.dev:
            dist.broadcast(tensor.data, 0)
            return
        moved = tensor.detach().to(self.dev)
        dist.broadcast(moved, 0)
        tensor.data.copy_(moved)

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Each gradient divided by the number of ranks, then summed over
        them (what DistributedDataParallel does). A parameter without a
        gradient here but with one on another rank gets zeros; one without
        a gradient anywhere keeps none."""
        params = [p for group in optimizer.param_groups
                  for p in group['params']]
        used = torch.tensor([p.grad is not None for p in params],
                            dtype=torch.float64, device=self.dev)
        dist.all_reduce(used)
        for p, anywhere in zip(params, used.tolist()):
            if not anywhere:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grad = p.grad.to(self.dev).div_(self.world)
            dist.all_reduce(grad)
            if grad is not p.grad:
                p.grad.copy_(grad)

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

    def score(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` on rank 0 (a number, or one per peer), broadcast:
        every rank selects and stops early on the same numbers (GPU kernels
        need not be bit-identical across ranks)."""
        box = [compute() if self.rank == 0 else None]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def check_in_sync(self, model: nn.Module) -> None:
        """Every rank holds the same weights (what the gradient average
        promises), checked once at the end."""
        flat = torch.cat([p.detach().reshape(-1).float()
                          for p in model.parameters()]).to(self.dev)
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            raise TrainingError('the training processes ended with different '
                                'student weights: please report this bug')


def current() -> Solo:
    """The hooks of this process: a DDP rank's once the process group is
    joined, else no-ops."""
    return Ranks() if joined() else Solo()
