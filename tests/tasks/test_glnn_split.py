"""GLNN's split (--split glnn): the largest connected component, 20/30
nodes per class, the rest test; seeded; carried from the teacher card to
distill."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import DataError
from gnncompress.tasks.datasets import glnn_split, largest_component, load_graph
from tests.conftest import SAMPLES

runner = CliRunner()


def _two_components(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A path over the first 3 * per_class nodes (labels 0, 1, 2 in turn)
    and a separate path over 10 more nodes of class 0."""
    big = 3 * per_class
    src = list(range(big - 1)) + list(range(big, big + 9))
    edges = torch.tensor([src, [s + 1 for s in src]])
    edges = torch.cat([edges, edges.flip(0)], 1)
    y = torch.cat([torch.arange(big) % 3, torch.zeros(10, dtype=torch.long)])
    return y, edges


def test_counts_disjoint_and_inside_the_largest_component():
    y, edges = _two_components(60)
    train, val, test = glnn_split(y, edges, seed=0)
    inside = torch.arange(y.numel()) < 180
    assert torch.equal(largest_component(edges, y.numel()), inside)
    for c in range(3):
        assert int((train & (y == c)).sum()) == 20
        assert int((val & (y == c)).sum()) == 30
    assert not bool((train & val).any() | (train & test).any()
                    | (val & test).any())
    # Every node of the component is in exactly one split, none outside.
    assert torch.equal(train | val | test, inside)
    assert int(test.sum()) == 180 - 150


def test_seeded_and_deterministic():
    y, edges = _two_components(60)
    first = glnn_split(y, edges, seed=3)
    again = glnn_split(y, edges, seed=3)
    other = glnn_split(y, edges, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_a_class_with_too_few_nodes_is_a_one_line_error():
    y, edges = _two_components(49)    # 49 nodes of each class inside
    with pytest.raises(DataError) as err:
        glnn_split(y, edges, seed=0, name='toy')
    message = str(err.value)
    assert '\n' not in message
    assert 'Class 0 of toy has 49 nodes' in message and '50' in message


def test_bundled_cora(tmp_path):
    graph = load_graph('Cora', SAMPLES, seed=1, split='glnn')
    assert graph.split['kind'] == 'glnn' and graph.split['seed'] == 1
    # Cora's largest component has 2485 of its 2708 nodes (as in CPF).
    assert int((graph.train_mask | graph.val_mask | graph.test_mask).sum()
               ) == 2485
    assert graph.split['train'] == 140 and graph.split['val'] == 210


def test_unknown_split_is_refused():
    with pytest.raises(DataError, match="Unknown split 'public'"):
        load_graph('Cora', SAMPLES, split='public')


def test_teacher_card_carries_the_split_to_distill(tmp_path):
    teacher = tmp_path / 't.pt'
    result = runner.invoke(app, [
        'train-teacher', '--data', 'Cora', '--data-root', str(SAMPLES),
        '--arch', 'sage', '--hidden', '8', '--layers', '2', '--epochs', '2',
        '--split', 'glnn', '--seed', '2', '--out', str(teacher),
        '--no-progress'])
    assert result.exit_code == 0, result.output
    card = json.loads(teacher.with_suffix('.json').read_text())
    assert card['split']['kind'] == 'glnn' and card['split']['seed'] == 2
    ckpt = load_checkpoint(teacher)
    # distill with another seed still sees the teacher's split ...
    graph = api.resolve_data(None, None, ckpt, seed=0)
    expected = load_graph('Cora', SAMPLES, seed=2, split='glnn')
    assert torch.equal(graph.train_mask, expected.train_mask)
    assert torch.equal(graph.test_mask, expected.test_mask)
    # ... unless told otherwise.
    public = api.resolve_data(None, None, ckpt, seed=0, split='default')
    assert public.split['kind'] == 'given'


def test_cli_bad_split_is_one_line(tmp_path):
    result = runner.invoke(app, [
        'train-teacher', '--data', 'Cora', '--data-root', str(SAMPLES),
        '--split', 'nope', '--out', str(tmp_path / 't.pt'), '--no-progress'])
    assert result.exit_code == 1
    assert "Unknown split 'nope'" in result.output
    assert 'Traceback' not in result.output


def test_report_names_the_split():
    from gnncompress.outputs.report import _split
    split = {'kind': 'glnn', 'seed': 4, 'train_per_class': 20,
             'val_per_class': 30, 'train': 140, 'val': 210, 'test': 2135}
    assert _split({'split': split}) == (
        "GLNN's, 20/30 per class in the largest connected component, seed 4 "
        '(140/210/2135)')
