"""train_teacher(ties='last'): the teacher keeps the last of its epochs of
equal best validation accuracy, an equal score restarting the patience
count, as GLNN's and NOSMOG's code select their teachers."""
from __future__ import annotations

import pytest
import torch
from conftest import ring_data

from gnncompress import api
from gnncompress.core.errors import GnnCompressError


@pytest.fixture(scope='module')
def ring(tmp_path_factory):
    """A 40-node ring with chords, two noisy classes: with 10 validation
    nodes, equal validation scores are common."""
    root = tmp_path_factory.mktemp('ties')
    path = root / 'ring.pt'
    torch.save(ring_data(), path)
    return root, path


def _teacher(root, data, ties):
    out = root / f'teacher-{ties}.pt'
    result = api.train_teacher(data, out, arch='gcn', hidden=8, layers=2,
                               epochs=40, patience=5, progress=False,
                               device='cpu', ties=ties)
    return result, torch.load(out, weights_only=True)


def test_last_of_ties_keeps_training_and_keeps_a_later_epoch(ring):
    root, data = ring
    first, first_weights = _teacher(root, data, 'first')
    last, last_weights = _teacher(root, data, 'last')
    # The same seed trains the same steps; an equal score restarts the
    # patience count under 'last' only, so it runs longer, and the epoch
    # it keeps is a later one: other weights, a validation accuracy at
    # least the first rule's.
    assert last.epochs_run > first.epochs_run
    assert last.val_accuracy >= first.val_accuracy
    assert any(not torch.equal(first_weights[k], last_weights[k])
               for k in first_weights)


def test_ties_is_checked(ring, tmp_path):
    _, data = ring
    with pytest.raises(GnnCompressError, match='ties'):
        api.train_teacher(data, tmp_path / 't.pt', arch='gcn', hidden=8,
                          layers=2, epochs=1, progress=False, device='cpu',
                          ties='middle')
    with pytest.raises(GnnCompressError, match='point-cloud'):
        api.train_teacher(data, tmp_path / 't.pt', arch='dgcnn', epochs=1,
                          progress=False, device='cpu', ties='last')
    assert not list(tmp_path.iterdir())
