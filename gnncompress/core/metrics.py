"""Scores of a model's logits against the labels on a mask."""
from __future__ import annotations

from torch import Tensor


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """The score of ``logits`` on ``mask``: accuracy, or micro-F1 when
    ``y`` is a multi-label 0/1 matrix."""
    if y.dim() == 2:
        return micro_f1(logits, y, mask)
    if int(mask.sum()) == 0:
        return float('nan')
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def micro_f1(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Micro-averaged F1 of the predictions ``logits > 0`` against the 0/1
    matrix ``y`` on the rows of ``mask`` (NaN when the mask is empty; 0
    when there is neither a positive label nor a positive prediction)."""
    if int(mask.sum()) == 0:
        return float('nan')
    pred = logits[mask] > 0
    true = y[mask] > 0.5
    tp = int((pred & true).sum())
    wrong = int((pred ^ true).sum())   # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0
