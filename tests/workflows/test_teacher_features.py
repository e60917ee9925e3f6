"""Without a teacher card, the features the teacher scores clearly better
on are used, and one line says which and why."""
from __future__ import annotations

import pytest
import torch

from gnncompress.core.errors import DataError
from gnncompress.core.graph import Graph
from gnncompress.models import ArchSpec, build_model
from gnncompress.workflows.teacher_features import pick_features

NODES = 40


def _graph() -> Graph:
    """Two count features; class 0 nodes hold 90% of their counts in the
    first, class 1 nodes 20%. Totals of 10 to 19 counts."""
    y = torch.arange(NODES) % 2
    total = 10 + torch.arange(NODES).float() % 10
    share = torch.where(y == 0, 0.9, 0.2)
    x = torch.stack([share * total, (1 - share) * total], dim=1)
    mask = torch.ones(NODES, dtype=torch.bool)
    return Graph(name='counts', x=x, edge_index=torch.zeros(2, 0).long(),
                 y=y, train_mask=mask, val_mask=mask, test_mask=mask,
                 num_classes=2)


def _threshold_teacher(threshold: float) -> torch.nn.Module:
    """Class 0 where the first feature exceeds ``threshold``: logits
    ``(x0 - threshold, 0)``."""
    model = build_model(ArchSpec(arch='mlp', in_channels=2,
                                 hidden_channels=2, num_layers=1,
                                 out_channels=2))
    with torch.no_grad():
        model.lins[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        model.lins[0].bias.copy_(torch.tensor([-threshold, 0.0]))
    return model.eval()


def test_a_teacher_of_normalised_features_gets_them():
    # On shares (0.9 vs 0.2) x0 > 0.5 is right for every node; on raw
    # counts x0 >= 2 > 0.5 everywhere: every node is called class 0.
    graph, note = pick_features(_threshold_teacher(0.5), _graph(),
                                torch.device('cpu'))

    assert graph.feature_norm == 'row'
    torch.testing.assert_close(graph.x.sum(1), torch.ones(NODES))
    assert note == (
        'features: row-normalised, because the teacher scores 100.0% on '
        'the validation nodes with them against 50.0% with raw features '
        '(no teacher card says which features the teacher was trained '
        'on; --raw-features keeps them raw)')


def test_a_teacher_of_raw_features_keeps_them():
    # Raw counts: class 0 has x0 >= 9, class 1 x0 <= 3.8; shares are all
    # below 5, so normalised every node is called class 1.
    raw = _graph()
    graph, note = pick_features(_threshold_teacher(5.0), raw,
                                torch.device('cpu'))

    assert graph is raw
    assert note.startswith('features: raw, because the teacher scores '
                           '100.0% on the validation nodes with them '
                           'against 50.0% row-normalised')
    assert note.endswith('--normalize-features row-normalises them)')


@pytest.mark.parametrize('change', ['negative', 'normalised'])
def test_nothing_to_check(change):
    raw = _graph()
    if change == 'negative':
        raw.x[0, 0] = -1.0
    else:
        raw.feature_norm = 'row'

    graph, note = pick_features(_threshold_teacher(0.5), raw,
                                torch.device('cpu'))

    assert graph is raw and note is None


def _split_graph(a: int, b: int, c: int, d: int) -> Graph:
    """Four groups for a teacher calling class 0 where x0 > 0.5: ``a``
    class-0 nodes right either way, ``b`` class-0 nodes right on raw
    features only, ``c`` class-0 nodes right row-normalised only, ``d``
    class-1 nodes right either way."""
    rows = [[0.8, 0.2]] * a + [[0.6, 5.4]] * b + [[0.3, 0.0]] * c + \
        [[0.1, 0.9]] * d
    y = torch.tensor([0] * (a + b + c) + [1] * d)
    mask = torch.ones(len(rows), dtype=torch.bool)
    return Graph(name='split', x=torch.tensor(rows),
                 edge_index=torch.zeros(2, 0).long(), y=y, train_mask=mask,
                 val_mask=mask, test_mask=mask, num_classes=2)


def test_a_choice_the_check_cannot_settle_is_an_error():
    # 87.5% either way, on different nodes: a quarter of them change.
    with pytest.raises(DataError) as info:
        pick_features(_threshold_teacher(0.5), _split_graph(10, 5, 5, 20),
                      torch.device('cpu'))

    assert str(info.value) == (
        'Cannot tell which features the teacher was trained on: on the '
        'validation nodes it scores 87.5% with raw features and 87.5% '
        'row-normalised, neither clearly better, and its predictions '
        'differ on 25% of them (no teacher card says which features the '
        'teacher was trained on): choose with --raw-features or '
        '--normalize-features')


@pytest.mark.parametrize('groups', [
    (18, 1, 1, 20),     # 2 of 40 predictions change: the choice hardly matters
    (0, 5, 5, 30),      # 87.5%: not clearly above always calling class 1
])
def test_a_choice_that_changes_little_keeps_raw_features(groups):
    raw = _split_graph(*groups)

    graph, note = pick_features(_threshold_teacher(0.5), raw,
                                torch.device('cpu'))

    assert graph is raw
    assert note.startswith('features: raw, because the teacher scores ')
