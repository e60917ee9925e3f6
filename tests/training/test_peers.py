"""Cotrain's peers on the one training loop: one Adam over the peers is
one Adam each, the selection of each peer, a resumed run is the
uninterrupted one bit for bit, and a NaN keeps each student's best."""
from __future__ import annotations

import json
import math

import pytest
import torch
from peer_steps import PeerSteps
from safetensors.torch import load_file
from torch import nn
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core.errors import TrainingError
from gnncompress.core.graph import Graph
from gnncompress.methods.mutual import Mutual
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.synthetic import synthetic_ppi
from gnncompress.training import loop, resume
from gnncompress.training.peer_regimes import train_peers
from gnncompress.training.selection import PeerSelection
from gnncompress.workflows.cotrain import build_online_methods

runner = CliRunner()


def _graph(n: int = 48) -> Graph:
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    x = torch.randn(n, 5, generator=gen) + y[:, None].float()
    src = torch.randint(0, n, (4 * n,), generator=gen)
    dst = torch.randint(0, n, (4 * n,), generator=gen)
    split = torch.arange(n) % 3
    return Graph(name='toy', x=x,
                 edge_index=torch.cat([torch.stack([src, dst]),
                                       torch.stack([dst, src])], 1),
                 y=y, train_mask=split == 0, val_mask=split == 1,
                 test_mask=split == 2, num_classes=3)


def _models(graph: Graph, students: int = 3) -> list[nn.Module]:
    spec = ArchSpec('gcn', graph.num_features, 8, 2, graph.num_classes,
                    dropout=0.5)
    torch.manual_seed(0)
    return [build_model(spec) for _ in range(students)]


def test_one_adam_over_the_peers_is_one_adam_each():
    """zero_grad(set_to_none) leaves the peers' gradients None, so Adam
    moves neither them nor their moments (nor applies weight decay)."""
    graph = _graph()
    peers = PeerSteps(_models(graph), graph,
                      build_online_methods('mutual', 3), lr=0.05,
                      weight_decay=5e-4)
    twins = PeerSteps(_models(graph), graph,
                      build_online_methods('mutual', 3), lr=0.05,
                      weight_decay=5e-4)
    own = [torch.optim.Adam([*s.parameters(), *m.parameters()], lr=0.05,
                            weight_decay=5e-4)
           for s, m in zip(twins.students, twins.methods)]
    torch.manual_seed(3)
    for _ in range(3):
        for k in range(3):
            peers.step(k, graph)
    torch.manual_seed(3)
    for _ in range(3):
        for k in range(3):
            own[k].zero_grad(set_to_none=True)
            (loss,) = twins.objective(twins.students, (graph, k))
            loss.loss.backward()
            own[k].step()
    for a, b in zip(peers.students.parameters(),
                    twins.students.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(peers.methods, twins.methods):
        assert torch.equal(a.scores, b.scores)


def test_peer_selection_keeps_each_best_and_stops_when_all_stop():
    models = [nn.Linear(1, 1, bias=False) for _ in range(2)]
    selection = PeerSelection(models, patience=2)
    for epoch, scores in enumerate([(0.5, 0.1), (0.4, 0.2), (0.3, 0.3),
                                    (0.2, 0.2)], 1):
        with torch.no_grad():
            for m in models:
                m.weight.fill_(epoch)
        assert selection.update(epoch, scores) == (epoch != 4)
        # Peer 1 ran out of patience at epoch 3, peer 2 not yet.
        assert not selection.should_stop(epoch)
    assert selection.best_epoch == [1, 3]
    assert selection.should_stop(5)
    state = selection.state_dict()
    again = PeerSelection(models, patience=2)
    again.load_state_dict(state)
    again.restore()
    assert [float(m.weight.detach()) for m in models] == [1.0, 3.0]


def _nan_after(calls: int, monkeypatch) -> None:
    real = Mutual.loss
    seen = []

    def loss(self, peers, out, graph):
        seen.append(1)
        value = real(self, peers, out, graph)
        return value * math.nan if len(seen) > calls else value
    monkeypatch.setattr(Mutual, 'loss', loss)


def test_a_nan_keeps_each_students_best(monkeypatch):
    """A NaN in epoch 4 (student 2's step): every student is back at its
    best of the three good epochs, as a three-epoch run leaves it."""
    graph = _graph()
    args = dict(lr=0.05, weight_decay=5e-4, progress=False)
    good = _models(graph)
    expected = train_peers(good, graph, build_online_methods('mutual', 3),
                           epochs=3, **args)
    _nan_after(3 * 3 + 1, monkeypatch)
    models = _models(graph)
    with pytest.raises(TrainingError) as e:
        train_peers(models, graph, build_online_methods('mutual', 3),
                    epochs=6, **args)
    assert 'The loss of student 2 became nan at epoch 4' in str(e.value)
    assert e.value.best_epoch == [r.best_epoch for r in expected]
    for a, b in zip(models, good):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


@pytest.fixture
def toy_file(tmp_path):
    g = _graph(60)
    path = tmp_path / 'toy.pt'
    torch.save(Data(x=g.x, edge_index=g.edge_index, y=g.y), path)
    return path


def test_cli_nan_writes_the_best_student(toy_file, tmp_path, monkeypatch):
    _nan_after(2 * 2, monkeypatch)   # two students, NaN in epoch 3
    out = tmp_path / 'nan'
    result = runner.invoke(app, [
        'cotrain', '--data', str(toy_file), '--method', 'mutual',
        '--hidden', '8', '--layers', '2', '--epochs', '5', '--out', str(out),
        '--no-progress', '--no-latency'])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert 'The loss of student 1 became nan at epoch 3' in line
    assert f"is in {out / 'student.safetensors'}" in line
    assert (out / 'student.safetensors').is_file()


def _interrupt_at_epoch_3(monkeypatch):
    real = resume.TrainingCheckpoint.after_epoch

    def after_epoch(self, epoch, *args, **kwargs):
        real(self, epoch, *args, **kwargs)
        if epoch == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(resume.TrainingCheckpoint, 'after_epoch',
                        after_epoch)
    return real


def _ppi_file(tmp_path):
    path = tmp_path / 'ppi.pt'
    torch.save(synthetic_ppi(num_graphs=(3, 1, 1), num_nodes=60,
                             num_features=6, num_labels=5,
                             num_communities=12), path)
    return path


@pytest.mark.parametrize('case', ['full', 'sampled', 'several graphs'])
def test_resumed_cotrain_is_the_uninterrupted_run(case, toy_file, tmp_path,
                                                  monkeypatch):
    data, extra = str(toy_file), ['--method', 'alignahead']
    if case == 'sampled':
        extra = ['--method', 'mutual', '--batch-size', '16', '--fanout',
                 '4,3']
    elif case == 'several graphs':
        data, extra = str(_ppi_file(tmp_path)), ['--batch-size', '2']
    args = ['cotrain', '--data', data, '--students', '3', '--hidden', '8',
            '--layers', '2', '--epochs', '5', '--no-progress',
            '--no-latency', *extra]
    whole = runner.invoke(app, [*args, '--out', str(tmp_path / 'whole')])
    assert whole.exit_code == 0, whole.output

    out = tmp_path / 'cut'
    real = _interrupt_at_epoch_3(monkeypatch)
    cut = runner.invoke(app, [*args, '--out', str(out),
                              '--checkpoint-every', '2'])
    assert cut.exit_code == 130, cut.output
    monkeypatch.setattr(resume.TrainingCheckpoint, 'after_epoch', real)
    again = runner.invoke(app, [*args, '--out', str(out), '--resume',
                                str(out)])
    assert again.exit_code == 0, again.output

    reports = [json.loads((d / 'report.json').read_text())
               for d in (tmp_path / 'whole', out)]
    for key in ('students', 'best_student', 'test_accuracy_mean'):
        a, b = (r[key] for r in reports)
        if key == 'students':
            for s in (*a, *b):
                s.pop('file', None)
        assert a == b
    a, b = (r['training'] for r in reports)
    assert a['best_epochs'] == b['best_epochs']
    assert a['histories'] == b['histories']
    assert {'loss_ce', 'loss_bce'} & set(a['histories'][0][0])
    first, second = (load_file(d / 'student.safetensors')
                     for d in (tmp_path / 'whole', out))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not (out / resume.DEFAULT_FOLDER).exists()


def test_folds_and_checkpoints_are_refused(tmp_path):
    out = tmp_path / 'bad'
    result = runner.invoke(app, [
        'cotrain', '--data', 'MUTAG', '--folds', '3', '--checkpoint-every',
        '2', '--out', str(out), '--no-progress'])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert '--folds trains one per fold: drop --folds or the checkpoint' \
        in lines[0]
    assert not out.exists()


def test_a_peers_term_is_averaged_over_its_own_steps():
    """Two peers, two parts: each peer's term over its two steps, as the
    old per-student history had it (not over the epoch's four steps)."""
    means = loop.TermMeans()
    for step in ([('ce/1', 1.0)], [('ce/2', 10.0)], [('ce/1', 3.0)],
                 [('ce/2', 30.0)]):
        means.add({name: torch.tensor(v) for name, v in step})
        means.end_step()
    assert means.entries() == {'loss_ce/1': 2.0, 'loss_ce/2': 20.0}
