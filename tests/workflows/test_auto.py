"""distill --method auto: the choice on validation alone, the budget, and
what it refuses."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import SAMPLE_TEACHER, SAMPLES
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.errors import GnnCompressError
from gnncompress.tasks.datasets import load_graph
from gnncompress.workflows.auto import CANDIDATES, choose


def _fake(scores, seconds):
    """train(name) for choose(): a fixed validation score and time per
    candidate, on a clock the fake advances."""
    now = [0.0]
    trained = []

    def clock():
        return now[0]

    def train(name):
        trained.append(name)
        now[0] += seconds[name]
        return (SimpleNamespace(name=name),
                SimpleNamespace(val_accuracy=scores[name], epochs_run=3))
    return train, clock, trained


def test_choose_keeps_the_best_validation_score_and_first_of_ties():
    scores = {'kd': 0.70, 'at': 0.75, 'alone': 0.75, 'gsp': 0.60,
              'fitnet': 0.74}
    train, clock, trained = _fake(scores, dict.fromkeys(scores, 1.0))
    choice = choose(train, budget_s=100, clock=clock)
    assert choice.method == 'at'  # 'alone' ties it later
    assert choice.model.name == 'at'
    assert trained == list(CANDIDATES)
    assert [t.status for t in choice.tried] == [
        'trained', 'chosen', 'trained', 'trained', 'trained']
    assert [t.val_accuracy for t in choice.tried] == [
        scores[n] for n in CANDIDATES]
    assert 'chose at' in choice.note() and 'gsp 60.0' in choice.note()


def test_choose_stops_at_the_budget_and_defaults_it_from_the_first():
    scores = dict(zip(CANDIDATES, (0.5, 0.6, 0.7, 0.8, 0.9)))
    # 4 s each: after 3 candidates (12 s), a 4th would end at 16 s > 14.
    train, clock, trained = _fake(scores, dict.fromkeys(scores, 4.0))
    choice = choose(train, budget_s=14, clock=clock)
    assert trained == list(CANDIDATES[:3])
    assert choice.method == CANDIDATES[2]
    assert [t.status for t in choice.tried[3:]] == ['skipped: budget'] * 2
    assert choice.tried[3].val_accuracy is None
    # No budget: 10x the first candidate's time (here 40 s: all five fit).
    train, clock, trained = _fake(scores, dict.fromkeys(scores, 4.0))
    choice = choose(train, clock=clock)
    assert trained == list(CANDIDATES) and choice.budget_s == 40
    # The first candidate always runs, whatever the budget.
    train, clock, trained = _fake(scores, dict.fromkeys(scores, 4.0))
    assert choose(train, budget_s=0.001, clock=clock).method == CANDIDATES[0]
    assert trained == [CANDIDATES[0]]


def _cora_file(path, permute_test):
    graph = load_graph('Cora', root=SAMPLES)
    y = graph.y.clone()
    if permute_test:
        test = graph.test_mask.nonzero().view(-1)
        gen = torch.Generator().manual_seed(1)
        y[test] = y[test[torch.randperm(test.numel(), generator=gen)]]
        assert not torch.equal(y, graph.y)
    torch.save(Data(x=graph.x, edge_index=graph.edge_index, y=y,
                    train_mask=graph.train_mask, val_mask=graph.val_mask,
                    test_mask=graph.test_mask), path)
    return path


def test_test_labels_cannot_change_the_choice(tmp_path, fast_latency):
    # The same run on Cora with the test labels shuffled: every
    # candidate's validation score and the choice stay the same; only the
    # chosen student's test score moves.
    runs = {}
    for permuted in (False, True):
        data = _cora_file(tmp_path / f'cora-{permuted}.pt', permuted)
        # a budget every candidate fits in: which ones run does not
        # depend on the machine's speed
        report = api.distill(SAMPLE_TEACHER, data=data, method='auto',
                             budget_s=1e6,
                             epochs=4, patience=None, progress=False,
                             export=False, latency=False,
                             out=tmp_path / f'out-{permuted}')
        runs[permuted] = report
    plain, shuffled = runs[False], runs[True]
    assert plain.auto['chosen'] == shuffled.auto['chosen']
    assert [c['val_accuracy'] for c in plain.auto['candidates']] == \
        [c['val_accuracy'] for c in shuffled.auto['candidates']]
    assert [c['method'] for c in plain.auto['candidates']] == \
        list(CANDIDATES)
    assert plain.student.test_accuracy != shuffled.student.test_accuracy
    assert plain.method == f"auto: {plain.auto['chosen']}"
    saved = json.loads((tmp_path / 'out-False' / 'report.json').read_text())
    assert saved['auto']['chosen'] == plain.auto['chosen']
    chosen = max(plain.auto['candidates'], key=lambda c: c['val_accuracy'])
    assert chosen['method'] == plain.auto['chosen']
    assert math.isclose(plain.student.val_accuracy, chosen['val_accuracy'])


@pytest.mark.parametrize('args, message', [
    (['--batch-size', '64'], '--method auto trains full-graph without '
     'checkpoints for now: drop --batch-size, or pick a method'),
    (['--checkpoint-every', '2'], 'drop --checkpoint-every'),
    (['--weight', '2'], '--weight sets one method, and --method auto tries '
     'several with their defaults: drop --weight, or pick that method'),
    (['-o', 'temperature=2'], '-o sets one method'),
    (['--budget-s', '0'], '--budget-s must be a positive number of seconds'),
    (['--nproc', '2', '--batch-size', '64'], '--method auto trains in one '
     'process: drop --nproc'),
    (['--nproc', '2'], '--method auto trains in one process: drop --nproc'),
])
def test_auto_refuses_what_it_cannot_take(tmp_path, args, message):
    result = CliRunner().invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--method', 'auto',
        '--out', str(tmp_path / 'out'), *args])
    assert result.exit_code == 1, result.output
    assert message in ' '.join(result.output.split())
    assert not (tmp_path / 'out').exists()


def test_budget_needs_auto(tmp_path):
    with pytest.raises(GnnCompressError, match='--budget-s is the time '
                                               'budget of --method auto'):
        api.distill(SAMPLE_TEACHER, method='kd', budget_s=10,
                    out=tmp_path / 'o')


def test_a_diverging_candidate_drops_out_and_the_others_go_on():
    from gnncompress.core.errors import TrainingError
    scores = dict(zip(CANDIDATES, (0.9, 0.6, 0.7, 0.8, 0.5)))
    train, clock, trained = _fake(scores, dict.fromkeys(scores, 1.0))

    def diverging(name):
        if name == 'kd':  # the best on paper, but its loss blew up
            raise TrainingError('The loss became inf at epoch 2 (ce=3.0, '
                                'kd=inf): lower --lr or the method weight')
        return train(name)
    choice = choose(diverging, budget_s=100, clock=clock)
    assert choice.method == 'gsp'
    assert choice.tried[0].status == ('failed: The loss became inf at epoch '
                                      '2 (ce=3.0, kd=inf)')
    assert choice.tried[0].val_accuracy is None
    assert 'kd (failed: The loss became inf' in choice.note()


def test_when_every_candidate_diverges_the_last_failure_is_raised():
    from gnncompress.core.errors import TrainingError

    def always(name):
        raise TrainingError(f'The loss became nan at epoch 1 ({name})')
    with pytest.raises(TrainingError, match=r'\(fitnet\)'):
        choose(always, budget_s=100)


@pytest.mark.parametrize('joined, world, env, several', [
    (False, 1, False, False), (True, 1, False, False),
    (True, 2, False, True), (False, 1, True, True)])
def test_several_processes(monkeypatch, joined, world, env, several):
    from gnncompress.workflows import distributed

    monkeypatch.setattr(distributed, 'joined', lambda: joined)
    monkeypatch.setattr(distributed.dist, 'get_world_size', lambda: world)
    for key in distributed.ENV:
        if env:
            monkeypatch.setenv(key, '1')
        else:
            monkeypatch.delenv(key, raising=False)
    assert distributed.several_processes() is several


def test_no_method_in_a_group_of_processes_is_kd(tmp_path, monkeypatch,
                                                 fast_latency):
    # In a caller's own group of processes (joined before distill, so not
    # "under torchrun"), each rank ran auto with its own time budget: under
    # load two ranks chose differently, and one waited forever in a
    # collective the other never reached. Several processes take kd.
    from gnncompress.workflows import distill as workflow

    monkeypatch.setattr(workflow, 'several_processes', lambda: True)
    report = api.distill(SAMPLE_TEACHER, epochs=1, progress=False,
                         export=False, latency=False, out=tmp_path / 'out')
    assert report.method == 'kd'
    assert any('auto, trains in one process' in note
               for note in report.notes)


def test_auto_named_in_a_group_of_processes_is_refused(tmp_path,
                                                       monkeypatch):
    from gnncompress.workflows import distill as workflow

    monkeypatch.setattr(workflow, 'several_processes', lambda: True)
    with pytest.raises(GnnCompressError,
                       match='--method auto trains in one process'):
        api.distill(SAMPLE_TEACHER, method='auto', epochs=1, progress=False,
                    out=tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
