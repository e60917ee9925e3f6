"""The objective of peers that learn from each other (``cotrain``): on a
step ``(part, k)`` of :class:`~gnncompress.training.regimes.peers.Peers`,
student k's supervised loss plus ``weight`` times its online method's loss
against its peers' current outputs; and each peer's result read back from
the loop's one."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from gnncompress.methods import DistillMethod
from gnncompress.training.loop import FitResult, Objective, StepLoss
from gnncompress.training.regimes.peers import Peers


def prepare_peers(regime: Peers, methods: Sequence[DistillMethod],
                  probe: Any) -> None:
    """Prepare student k's method on ``probe`` (a part of the regime) with
    every student's eval-mode output there, and move it to the device."""
    outs = [regime.output(k, probe) for k in range(len(regime.students))]
    for k, method in enumerate(methods):
        method.prepare(*regime.method_inputs(
            method, outs[:k] + outs[k + 1:], outs[k], probe))
        method.to(regime.device)


def peer_objective(regime: Peers, methods: Sequence[DistillMethod] | None,
                   label_weight: float, weight: float) -> Objective:
    """Student k's loss on a step ``(part, k)``: ``label_weight`` times its
    supervised loss plus ``weight`` times its own method's loss against its
    peers (alone with ``methods`` None). Its terms carry the student's
    number (``ce/2``, ``mutual/2``, and the loss itself as ``loss/2``), so
    that :func:`peer_results` rebuilds each peer's history."""
    def losses(students: nn.Module, step: tuple[Any, int]
               ) -> Iterator[StepLoss]:
        part, k = step
        peers = [regime.peer_output(j, part) for j in range(len(students))
                 if j != k] if methods else []
        student = students[k].train()
        regime.forget(k)
        out = regime.parts.forward(student, part)
        tag = f'/{k + 1}'
        label = regime.label_loss(out, part)
        terms = {regime.term + tag: label}
        loss = label_weight * label
        if methods:
            method = methods[k].train()
            terms[method.name + tag] = method.loss(
                *regime.method_inputs(method, peers, out, part))
            loss = loss + weight * terms[method.name + tag]
        terms['loss' + tag] = loss
        yield StepLoss(loss, terms, f' of student {k + 1}')
    return losses


def peer_results(result: FitResult, peers: int) -> list[FitResult]:
    """Each peer's FitResult from the loop's (whose best epochs, scores
    and history values are one per peer): its best epoch, validation
    score (NaN before any epoch), test score, and its history of
    ``loss``, ``val`` and its unweighted terms (``loss_ce``, ...). Off
    rank 0 of a process group, where nothing is tested, every test score
    is NaN."""
    tests = result.test_accuracy if isinstance(result.test_accuracy, list) \
        else [math.nan] * peers
    results = []
    for k in range(peers):
        tag = f'/{k + 1}'
        own = f'loss_loss{tag}'
        history = [{'epoch': h['epoch'], 'loss': h.get(own, 0.0),
                    'val': h['val'][k],
                    **{key[:-len(tag)]: value for key, value in h.items()
                       if key.endswith(tag) and key != own}}
                   for h in result.history]
        best = result.best_epoch[k]  # type: ignore[index]
        results.append(FitResult(
            best_epoch=best,
            val_accuracy=result.val_accuracy[k]  # type: ignore[index]
            if best else math.nan,
            test_accuracy=tests[k],
            epochs_run=result.epochs_run, seconds=result.seconds,
            history=history))
    return results
