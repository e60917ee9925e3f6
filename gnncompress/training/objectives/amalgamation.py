"""Amalgamation's objective: every width of a slimmable student on every
group of tasks in each step (TAM, ``gnncompress amalgamate``)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn

from gnncompress.training.loop import Objective, StepLoss

# A step of amalgamation: the loss and its terms of one (width, group of
# tasks that share one student forward) on that step's graphs.
GroupLoss = Callable[[nn.Module, float, list[int]],
                     tuple[Tensor, dict[str, Tensor]]]


def amalgamation_objective(widths: Sequence[float],
                           groups: Sequence[list[int]]) -> Objective:
    """Each step yields the loss of every width on every group of tasks,
    one forward each (the loop backpropagates each before the next
    forward, so gradients accumulate into one optimiser step); the steps
    are :data:`GroupLoss` callables."""
    def losses(student: nn.Module, step: GroupLoss) -> Iterator[StepLoss]:
        for width in widths:
            for group in groups:
                loss, terms = step(student, width, group)
                yield StepLoss(loss, terms, f' (width {width:g})')
    return losses
