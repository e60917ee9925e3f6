"""Which features a teacher without a card was trained on.

PyG's examples train on row-normalised features (``NormalizeFeatures``);
the weights do not say so. Without a teacher card the loaded teacher is
scored on the validation nodes under raw and under row-normalised
features, and the normalised ones are used only when the teacher is
clearly better with them: it must get significantly more of the nodes on
which the two disagree right (a sign test at two standard deviations).
When neither is clearly better, raw features are kept if the choice
changes little (the predictions differ on few nodes, or the teacher is no
better than always predicting the most common class under either, so it
teaches nothing either way); otherwise the check cannot settle what
matters, and the run stops with a one-line error naming both candidates
and the options that choose.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gnncompress.core.errors import DataError
from gnncompress.core.graph import Graph
from gnncompress.tasks.datasets import normalize_features as normalize_graph
from gnncompress.training.train import forward_frozen

SIGMAS = 2.0
# Predictions differing on more than this share of the validation nodes,
# neither preprocessing clearly better: the check cannot settle the choice.
AMBIGUOUS_SHARE = 0.10


def pick_features(teacher: nn.Module, graph: Graph,
                  device: torch.device) -> tuple[Graph, str | None]:
    """``graph`` with the features the teacher scores clearly better on,
    and one line saying which and why (None when there was nothing to
    check: graph classification, already normalised or negative features,
    no validation nodes, multi-label targets)."""
    mask = graph.val_mask
    if graph.batch is not None or graph.feature_norm == 'row' or \
            graph.y.dim() != 1 or mask is None or not bool(mask.any()) or \
            bool((graph.x < 0).any()):
        return graph, None
    normalised = normalize_graph(graph)
    teacher = teacher.to(device)
    right, predicted = {}, {}
    for name, candidate in (('raw', graph), ('normalised', normalised)):
        logits = forward_frozen(teacher, candidate.to(device)).logits
        predicted[name] = logits.argmax(-1).cpu()[mask]
        right[name] = predicted[name] == graph.y[mask]
    gained = int((right['normalised'] & ~right['raw']).sum())
    lost = int((right['raw'] & ~right['normalised']).sum())
    raw, norm = (100 * float(right[k].float().mean())
                 for k in ('raw', 'normalised'))
    better = gained - lost > SIGMAS * math.sqrt(gained + lost)
    why = 'no teacher card says which features the teacher was trained on'
    if better:
        return normalised, (
            f'features: row-normalised, because the teacher scores '
            f'{norm:.1f}% on the validation nodes with them against '
            f'{raw:.1f}% with raw features ({why}; --raw-features keeps '
            f'them raw)')
    worse = lost - gained > SIGMAS * math.sqrt(gained + lost)
    differ = float((predicted['raw'] != predicted['normalised']).float()
                   .mean())
    if not worse and differ > AMBIGUOUS_SHARE and \
            _beats_majority(max(raw, norm) / 100, graph.y[mask]):
        raise DataError(
            f'Cannot tell which features the teacher was trained on: on the '
            f'validation nodes it scores {raw:.1f}% with raw features and '
            f'{norm:.1f}% row-normalised, neither clearly better, and its '
            f'predictions differ on {100 * differ:.0f}% of them ({why}): '
            f'choose with --raw-features or --normalize-features')
    versus = f'against {norm:.1f}% row-normalised' if raw >= norm else \
        f'and row-normalised ones are not clearly better ({norm:.1f}%)'
    return graph, (
        f'features: raw, because the teacher scores {raw:.1f}% on the '
        f'validation nodes with them {versus} ({why}; '
        f'--normalize-features row-normalises them)')


def _beats_majority(accuracy: float, labels: torch.Tensor) -> bool:
    """Whether ``accuracy`` on ``labels`` is clearly (two standard
    deviations of a binomial) above always predicting the most common
    label."""
    majority = float(torch.bincount(labels).max()) / labels.numel()
    spread = math.sqrt(majority * (1 - majority) / labels.numel())
    return accuracy > majority + SIGMAS * spread
