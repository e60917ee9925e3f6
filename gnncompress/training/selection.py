"""Validation-based model selection with early stopping."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

TIES = ('first', 'last')


def check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f'unknown ties rule {ties!r} (choose from '
                         f"{', '.join(TIES)})")


class Selection:
    """Validation-based model selection with early stopping: remembers the
    weights of ``model`` at its best score so far.

    ``ties`` says which of several epochs with the best score is kept:
    ``'first'`` (a later epoch must score strictly higher), or ``'last'``
    (an equal score replaces the best and restarts the patience count, the
    rule of GLNN's and NOSMOG's public code: on a small validation split,
    where equal scores are common, it keeps later, longer-trained epochs
    and trains on while the score holds)."""

    def __init__(self, model: nn.Module, patience: int | None,
                 ties: str = 'first') -> None:
        check_ties(ties)
        self.model, self.patience, self.ties = model, patience, ties
        self.best_score, self.best_epoch = -math.inf, 0
        self._state: dict[str, Tensor] | None = None

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` of ``epoch``; whether it is a new best."""
        better = score >= self.best_score if self.ties == 'last' \
            else score > self.best_score
        if not better:  # NaN never wins
            return False
        self.best_score, self.best_epoch = score, epoch
        self._state = {k: v.detach().clone()
                       for k, v in self.model.state_dict().items()}
        return True

    def should_stop(self, epoch: int) -> bool:
        return self.patience is not None and \
            epoch - self.best_epoch >= self.patience

    def restore(self) -> None:
        """Put the best weights back (no-op before the first update)."""
        if self._state is not None:
            self.model.load_state_dict(self._state)

    def state_dict(self) -> dict[str, Any]:
        """The selection's state as tensors and plain values (for training
        checkpoints)."""
        return {'best_score': self.best_score, 'best_epoch': self.best_epoch,
                'weights': None if self._state is None else
                {k: v.to('cpu', copy=True) for k, v in self._state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state['best_score'])
        self.best_epoch = int(state['best_epoch'])
        weights = state['weights']
        device = next(iter(self.model.state_dict().values())).device
        self._state = None if weights is None else \
            {k: v.to(device) for k, v in weights.items()}


class PeerSelection:
    """:class:`Selection` of each of several models trained together (the
    peers of online distillation), with its interface: scores come one per
    member, every value it reports is one per member (``best_epoch``,
    ``best_score``), each member keeps its own best weights, and the run
    stops once every member would stop."""

    def __init__(self, models: Iterable[nn.Module],
                 patience: int | None, ties: str = 'first') -> None:
        self.members = [Selection(m, patience, ties) for m in models]

    @property
    def best_epoch(self) -> list[int]:
        return [s.best_epoch for s in self.members]

    @property
    def best_score(self) -> list[float]:
        return [s.best_score for s in self.members]

    def update(self, epoch: int, scores: Sequence[float]) -> bool:
        """Record each member's score; whether any is a new best."""
        news = [s.update(epoch, v) for s, v in zip(self.members, scores,
                                                   strict=True)]
        return any(news)

    def should_stop(self, epoch: int) -> bool:
        return all(s.should_stop(epoch) for s in self.members)

    def restore(self) -> None:
        for s in self.members:
            s.restore()

    def state_dict(self) -> dict[str, Any]:
        return {'members': [s.state_dict() for s in self.members]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        members = state['members']
        if len(members) != len(self.members):
            raise ValueError(f'{len(members)} saved members, '
                             f'{len(self.members)} now')
        for s, saved in zip(self.members, members):
            s.load_state_dict(saved)
