"""Validation-based selection: which of several epochs with the best score
is kept (``ties``), and how equal scores drive the patience count."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gnncompress.core.graph import Graph
from gnncompress.models import ArchSpec, build_model
from gnncompress.training.selection import PeerSelection, Selection
from gnncompress.training.train import fit

SCORES = [0.5, 0.7, 0.6, 0.7, 0.7, 0.6, 0.6, 0.6]


def _run(selection: Selection, model: nn.Linear) -> int:
    """Feed SCORES, the weight set to the epoch before each; the epoch it
    stopped at."""
    for epoch, score in enumerate(SCORES, start=1):
        model.weight.data.fill_(float(epoch))
        selection.update(epoch, score)
        if selection.should_stop(epoch):
            return epoch
    return len(SCORES)


@pytest.mark.parametrize('ties, best, stopped', [
    ('first', 2, 4),   # 0.7 at 2; nothing above it; 2 epochs later: stop
    ('last', 5, 7),    # 0.7 again at 4 and 5; 2 epochs after 5: stop
])
def test_ties_pick_the_first_or_last_best_epoch(ties, best, stopped):
    model = nn.Linear(1, 1)
    selection = Selection(model, patience=2, ties=ties)
    assert _run(selection, model) == stopped
    assert (selection.best_epoch, selection.best_score) == (best, 0.7)
    selection.restore()
    assert model.weight.item() == float(best)


def test_nan_never_wins_under_either_rule():
    for ties in ('first', 'last'):
        selection = Selection(nn.Linear(1, 1), patience=None, ties=ties)
        selection.update(1, 0.4)
        assert not selection.update(2, float('nan'))
        assert selection.best_epoch == 1


def test_peer_selection_passes_the_rule_to_each_member():
    peers = PeerSelection([nn.Linear(1, 1), nn.Linear(1, 1)], None, 'last')
    peers.update(1, [0.5, 0.5])
    peers.update(2, [0.5, 0.4])
    assert peers.best_epoch == [2, 1]


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown ties rule 'middle'"):
        Selection(nn.Linear(1, 1), patience=None, ties='middle')


def _graph() -> Graph:
    gen = torch.Generator().manual_seed(0)
    n = 30
    src = torch.arange(n)
    ring = torch.stack([src, (src + 1) % n])
    split = torch.arange(n) % 3
    return Graph(name='ring', x=torch.randn(n, 4, generator=gen),
                 edge_index=torch.cat([ring, ring.flip(0)], 1),
                 y=torch.arange(n) % 2, train_mask=split == 0,
                 val_mask=split == 1, test_mask=split == 2, num_classes=2)


@pytest.mark.parametrize('ties, best, run', [('first', 1, 4),
                                             ('last', 10, 10)])
def test_fit_under_a_frozen_student_keeps_the_first_or_last_epoch(
        ties, best, run):
    """At a learning rate of 0 every epoch scores the same: the first rule
    keeps epoch 1 and stops after the patience; the last keeps the final
    epoch, each equal score restarting the count."""
    torch.manual_seed(0)
    model = build_model(ArchSpec('mlp', 4, 8, 2, 2))
    result = fit(model, _graph(), epochs=10, lr=0.0, weight_decay=0.0,
                 patience=3, progress=False, ties=ties)
    assert (result.best_epoch, result.epochs_run) == (best, run)


def test_fit_refuses_an_unknown_rule_before_any_work():
    torch.manual_seed(0)
    model = build_model(ArchSpec('mlp', 4, 8, 2, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="unknown ties rule 'latest'"):
        fit(model, _graph(), epochs=2, progress=False, ties='latest')
    assert all(torch.equal(v, model.state_dict()[k])
               for k, v in before.items())
