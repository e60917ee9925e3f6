"""The one training loop under each regime: a NaN after good epochs keeps
the best student, and an interrupted run resumes to the very student an
uninterrupted one gives."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gnncompress.core.errors import TrainingError
from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.models import ArchSpec, ModelOutput, build_model
from gnncompress.tasks.cloud_training import augment, evaluate
from gnncompress.tasks.point_clouds import cloud_points
from gnncompress.training import loop
from gnncompress.training.regimes.clouds import AugmentedClouds
from gnncompress.training.regimes.full_graph import FullGraph
from gnncompress.training.regimes.graph_batches import GraphBatches, GraphParts
from gnncompress.training.regimes.sampled import SampledSubgraphs
from gnncompress.training.resume import TrainingCheckpoint
from gnncompress.training.sampling import CSR
from gnncompress.training.train import fit as engine_fit


class _NaNAfter(DistillMethod):
    """A zero loss for the first ``finite_calls`` calls, then NaN."""
    name = 'nanloss'
    paper = 'test'

    def __init__(self, finite_calls: int) -> None:
        super().__init__()
        self.finite_calls, self.calls = finite_calls, 0

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        self.calls += 1
        value = 0.0 if self.calls <= self.finite_calls else float('nan')
        return student_output.logits.sum() * 0.0 + value


def _node_graph() -> Graph:
    """40 nodes on a ring, 2 classes by feature sign (noisy), 10/10/20."""
    gen = torch.Generator().manual_seed(0)
    n = 40
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=gen) + y[:, None] * 0.7
    src = torch.arange(n)
    ring = torch.stack([src, (src + 1) % n])
    split = torch.arange(n) % 4
    return Graph(name='ring', x=x, edge_index=torch.cat([ring, ring.flip(0)],
                                                       1),
                 y=y, train_mask=split == 0, val_mask=split == 1,
                 test_mask=split >= 2, num_classes=2)


def _graph_set(graphs: int = 24) -> Graph:
    """``graphs`` triangles with noisy features, the class by their sign;
    the union with per-graph ``y`` and masks (12/6/6)."""
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(graphs) % 2
    batch = torch.arange(graphs).repeat_interleave(3)
    x = torch.randn(3 * graphs, 3, generator=gen) + \
        (y[batch][:, None] * 2 - 1) * 0.3
    tri = torch.tensor([[0, 1, 2, 1, 2, 0], [1, 2, 0, 0, 1, 2]])
    edge_index = torch.cat([tri + 3 * g for g in range(graphs)], 1)
    part = torch.arange(graphs) % 4
    return Graph(name='triangles', x=x, edge_index=edge_index, y=y,
                 train_mask=part < 2, val_mask=part == 2,
                 test_mask=part == 3, num_classes=2, batch=batch)


def _graph_list(graphs: int = 8, size: int = 5) -> Graph:
    """``graphs`` rings of ``size`` nodes as one union (``node_graph``
    set), node classes by feature sign (noisy); graphs 0-3 train, 4-5
    validate, 6-7 test."""
    gen = torch.Generator().manual_seed(2)
    n = graphs * size
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 4, generator=gen) + y[:, None] * 0.7
    local = torch.arange(size)
    ring = torch.stack([local, (local + 1) % size])
    ring = torch.cat([ring, ring.flip(0)], 1)
    edge_index = torch.cat([ring + size * g for g in range(graphs)], 1)
    node_graph = torch.arange(graphs).repeat_interleave(size)
    return Graph(name='rings', x=x, edge_index=edge_index, y=y,
                 train_mask=node_graph < 4,
                 val_mask=(node_graph >= 4) & (node_graph < 6),
                 test_mask=node_graph >= 6, num_classes=2,
                 node_graph=node_graph)


def _clouds(clouds: int = 24, points: int = 16) -> Graph:
    """``clouds`` blobs of ``points`` points stretched by class (3
    classes); 12 train, 6 validate, 6 test."""
    gen = torch.Generator().manual_seed(3)
    y = torch.arange(clouds) % 3
    stretch = torch.stack([1.0 + y, torch.ones(clouds), 0.3 + 0.5 * y], 1)
    pos = torch.randn(clouds, points, 3, generator=gen) * stretch[:, None]
    part = torch.arange(clouds) % 4
    return Graph(name='blobs', x=pos.reshape(-1, 3),
                 edge_index=torch.zeros(2, 0, dtype=torch.long), y=y,
                 train_mask=part < 2, val_mask=part == 2,
                 test_mask=part == 3, num_classes=3,
                 split={'points': points})


def _dgcnn(widths=(4, 8), k=3) -> torch.nn.Module:
    return build_model(ArchSpec('dgcnn', 3, widths[-1], len(widths), 3,
                                widths=list(widths), k=k, emb_channels=8,
                                head=[8]))


def _cloud_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return _dgcnn()


def _cloud_regime(graph: Graph, teacher: bool) -> AugmentedClouds:
    if teacher:
        torch.manual_seed(5)
    return AugmentedClouds(
        graph, cloud_points(graph), teacher=_dgcnn((8, 8), 4).eval()
        if teacher else None, edges=False, batch_size=5,
        augment=lambda pos, gen: augment(pos, ['jitter', 'rotate'], gen),
        score=lambda model, mask: evaluate(model, graph, mask)[0], seed=1)


def _node_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ArchSpec('gcn', 4, 8, 2, 2, dropout=0.5))


def _graph_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ArchSpec('gin', 3, 8, 2, 2, readout='sum',
                                dropout=0.5))


def _teachers(graph: Graph, teacher: bool) -> list[ModelOutput]:
    """Zero logits as the teachers' outputs, or none."""
    if not teacher:
        return []
    return [ModelOutput(logits=torch.zeros(graph.y.numel(),
                                           graph.num_classes))]


# name: (data, student, regime(graph, with a teacher?) for loop.fit,
#        optimiser steps per epoch)
REGIMES: dict[str, tuple[Callable, Callable, Callable, int]] = {
    'full graph': (_node_graph, _node_student,
                   lambda g, t: FullGraph(g, _teachers(g, t)), 1),
    'graph batches': (_graph_set, _graph_student,
                      lambda g, t: GraphBatches(g, _teachers(g, t),
                                                batch_size=5), 3),
    'several graphs': (_graph_list, _node_student,
                       lambda g, t: GraphParts(
                           g, _teachers(g, t), label_loss=F.cross_entropy,
                           loss_name='ce', batch_size=1), 4),
    'augmented clouds': (_clouds, _cloud_student, _cloud_regime, 3),
    # With a teacher every node is a seed: 40 in batches of 16.
    'sampled subgraphs': (_node_graph, _node_student,
                          lambda g, t: SampledSubgraphs(
                              g, CSR.from_edges(g.edge_index, g.num_nodes),
                              _teachers(g, t), fanout=[3, 2], batch_size=16,
                              trim=True, device=torch.device('cpu'),
                              all_nodes=t, seed=1), 3),
}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k])
                                          for k in sa)


@pytest.mark.parametrize('name', REGIMES)
def test_nan_after_good_epochs_keeps_the_best_student(name):
    data, make, regime, steps = REGIMES[name]
    graph = data()
    good = 6  # epochs before the loss turns NaN (at epoch 7's first step)
    reference = make()
    ref = loop.fit(reference, regime(graph, True),
                   method=_NaNAfter(10 ** 9), epochs=good, patience=None,
                   lr=0.05, progress=False)
    # The best epoch is not the last one, so keeping the last weights
    # would not pass.
    assert 1 <= ref.best_epoch < good, ref.history

    student = make()
    with pytest.raises(TrainingError) as info:
        loop.fit(student, regime(graph, True),
                 method=_NaNAfter(good * steps), epochs=20, patience=None,
                 lr=0.05, progress=False)

    error = info.value
    assert f'at epoch {good + 1} (' in str(error)
    assert 'nanloss=nan' in str(error)
    assert error.best_epoch == ref.best_epoch
    assert error.val_accuracy == ref.val_accuracy
    assert _same(student, reference)


def test_graph_classification_nan_through_engine_fit_keeps_the_best():
    # engine.fit used to run graph classification with a check that kept
    # no best epoch: the error said no student was kept.
    graph = _graph_set()
    student = _graph_student()
    with pytest.raises(TrainingError) as info:
        engine_fit(student, graph, method=_NaNAfter(3),
                   teacher_outputs=_teachers(graph, True), epochs=10, lr=0.05,
                   progress=False)
    assert 'at epoch 4 (' in str(info.value)
    assert 1 <= info.value.best_epoch <= 3


class _Counter(DistillMethod):
    """A loss equal to how many times it has been called."""
    name = 'counter'
    paper = 'test'

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        self.calls += 1
        return student_output.logits.sum() * 0.0 + self.calls


@pytest.mark.parametrize('name', REGIMES)
def test_history_holds_each_terms_mean_over_the_epoch(name):
    data, make, regime, steps = REGIMES[name]
    graph = data()
    result = loop.fit(make(), regime(graph, True), method=_Counter(),
                      epochs=3, patience=None, weight=2.0, progress=False)
    assert [h['epoch'] for h in result.history] == [1, 2, 3]
    for h in result.history:
        # Calls (e - 1) * steps + 1 .. e * steps in epoch e.
        assert h['loss_counter'] == pytest.approx(
            (h['epoch'] - 1) * steps + (steps + 1) / 2)
        (label,) = set(h) - {'epoch', 'loss', 'val', 'loss_counter'}
        assert label.startswith('loss_')
        assert h['loss'] == pytest.approx(h[label] + 2.0 * h['loss_counter'],
                                          rel=1e-5)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize('name', REGIMES)
def test_resumed_run_matches_an_uninterrupted_one(name, tmp_path,
                                                  monkeypatch):
    data, make, regime, _ = REGIMES[name]
    graph = data()
    settings = dict(method=None, epochs=7, patience=None, lr=0.05,
                    progress=False, schedule='cosine')
    whole = make()
    full = loop.fit(whole, regime(graph, False), **settings)

    real = loop.check_finite

    def check(loss, terms, epoch, who=''):
        if epoch == 6:
            raise _Interrupted
        return real(loss, terms, epoch, who)

    cut = make()
    with monkeypatch.context() as mp:
        mp.setattr(loop, 'check_finite', check)
        with pytest.raises(_Interrupted):
            loop.fit(cut, regime(graph, False), checkpoint=TrainingCheckpoint(
                tmp_path, 2, {'run': name}), **settings)
    torch.manual_seed(123)  # resume must not depend on the RNG it finds
    resumed = make()
    again = loop.fit(resumed, regime(graph, False),
                     checkpoint=TrainingCheckpoint(tmp_path, None,
                                                   {'run': name}, resume=True),
                     **settings)

    assert _same(resumed, whole)
    assert again.history == full.history
    assert again.best_epoch == full.best_epoch


def test_cosine_schedule_ends_at_a_hundredth_of_the_rate():
    graph = _node_graph()
    student = _node_student()
    optimizer = loop.adam(student, None, 0.1, 0.0)
    schedule = loop.lr_schedule(optimizer, 'cosine', 4, 0.1)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        loop.lr_schedule(optimizer, 'step', 4, 0.1)
    assert loop.fit(student, FullGraph(graph), epochs=2, progress=False,
                    schedule='cosine').epochs_run == 2
