"""The feature matrix of ``distill``: every method under every training regime
(full graph, sampled subgraphs, graph classification in batches, several
graphs, point clouds), two epochs on tiny data each, through the Python API.

A cell either trains (the report's test accuracy equals a re-evaluation of
the trained student written independently of the regime, and the method's
own term is in the history), resumes (a run interrupted after its epoch-1
checkpoint and resumed ends bit-identical to an uninterrupted one: student
tensors and history), or is refused in one line whose text is checked.

Cells are ``(command, method, regime, check)``: amalgamate and cotrain cells
can join with a runner of their own in ``RUNNERS``. A NaN after good epochs
in each regime stops the run and writes the best epoch's student; the full
graph's case is ``tests/training/test_resume.py::
test_nan_loss_keeps_the_last_good_student``, and the loop-level cases of
every regime are in ``tests/training/test_loop.py``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.catalogue import DISTILL_METHODS
from gnncompress.core.errors import TrainingError
from gnncompress.methods.kd import KD
from gnncompress.models import run_model
from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.point_clouds import cloud_points, load_clouds
from gnncompress.training import loop
from gnncompress.training.resume import DEFAULT_FOLDER
from gnncompress.workflows import distill_sampled as minibatch
from tests.tasks.test_data_security import mutag_raw

runner = CliRunner()
EPOCHS = 2
# What a combination adds: two node-wise methods, a node-wise method
# with a structure one, and GLNN with NOSMOG's position features (which add
# the student's input columns and no loss; 'position' alone is refused).
METHODS = (*DISTILL_METHODS, 'kd+lsp', 'kd+fitnet', 'glnn+position')
# Methods whose resume is checked in every regime that takes them: plain
# KD, those with trainable parts of their own (FitNet's maps, G-CRD's heads
# with batch norm and sampled negatives, ABKD's projections) and a sum.
# (Every method resumed bit-identical in every regime when this was
# written; the others are left out to keep the file quick.)
# NOSMOG's additions too: RSD's map and random blocks, adv's random
# start and extra forwards, and the position features' columns.
RESUMED = ('kd', 'fitnet', 'g-crd', 'abkd', 'kd+lsp', 'glnn+position', 'rsd',
           'adv')


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny datasets of each kind and a 2-epoch teacher for each, with its
    card (a graph classifier's readout, a DGCNN's points)."""
    root = tmp_path_factory.mktemp('matrix')
    gen = torch.Generator().manual_seed(0)
    n = 40  # a ring with chords, classes by feature sign (noisy)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=gen) + y[:, None] * 0.7
    s = torch.arange(n)
    edges = torch.cat([torch.stack([s, (s + 1) % n]),
                       torch.stack([s, (s + 5) % n])], 1)
    torch.save(Data(x=x, edge_index=torch.cat([edges, edges.flip(0)], 1),
                    y=y), root / 'node.pt')
    graphs = []  # 8 rings of 5 nodes: 4 train, 2 validate, 2 test
    for g in range(8):
        yg = torch.randint(0, 2, (5,), generator=gen)
        ring = torch.stack([torch.arange(5), (torch.arange(5) + 1) % 5])
        graphs.append(Data(
            x=torch.randn(5, 4, generator=gen) + yg[:, None] * 0.7,
            edge_index=torch.cat([ring, ring.flip(0)], 1), y=yg,
            split='train' if g < 4 else 'val' if g < 6 else 'test'))
    torch.save(graphs, root / 'list.pt')
    mutag_raw(root / 'tu')  # 10 triangles named MUTAG, 2 classes
    clouds = []  # 24 blobs of 16 points stretched by class
    for i in range(24):
        c = i % 3
        clouds.append(Data(pos=torch.randn(16, 3, generator=gen) *
                           torch.tensor([1.0 + c, 1.0, 0.3 + 0.5 * c]),
                           y=torch.tensor([c])))
    torch.save(clouds, root / 'clouds.pt')
    quiet = dict(epochs=2, progress=False, device='cpu')
    api.train_teacher(root / 'node.pt', root / 't_node.pt', arch='gcn',
                      hidden=8, layers=2, **quiet)
    api.train_teacher(root / 'list.pt', root / 't_list.pt', arch='gcn',
                      hidden=8, layers=2, **quiet)
    api.train_teacher('MUTAG', root / 't_tu.pt', arch='gin', hidden=8,
                      layers=2, readout='sum', data_root=root / 'tu',
                      **quiet)
    api.train_teacher(root / 'clouds.pt', root / 't_clouds.pt',
                      arch='dgcnn', hidden=[4, 8], k=3, emb=8, head=[8],
                      batch_size=5, **quiet)
    return {'root': root}


# regime: teacher file, data, options (paths relative to the fixture's root)
REGIMES: dict[str, tuple[str, str, dict[str, Any]]] = {
    'full': ('t_node.pt', 'node.pt', {'hidden': 8}),
    'sampled': ('t_node.pt', 'node.pt',
                {'hidden': 8, 'batch_size': 16, 'fanout': '3,2'}),
    'graphs': ('t_tu.pt', 'MUTAG', {'hidden': 8, 'data_root': 'tu'}),
    'inductive': ('t_list.pt', 'list.pt', {'hidden': 8}),
    'clouds': ('t_clouds.pt', 'clouds.pt', {'batch_size': 5}),
    # --batch-size on datasets of many graphs: whole graphs per step.
    'graph-batches': ('t_tu.pt', 'MUTAG',
                      {'hidden': 8, 'data_root': 'tu', 'batch_size': 4}),
    'inductive-batches': ('t_list.pt', 'list.pt',
                          {'hidden': 8, 'batch_size': 3}),
    'graphs-fanout': ('t_tu.pt', 'MUTAG',
                      {'hidden': 8, 'data_root': 'tu', 'batch_size': 4,
                       'fanout': '3,2'}),
}
# The regime's graphs per step where --batch-size sets it.
GRAPHS_PER_STEP = {'graph-batches': 4, 'inductive-batches': 3}


def _hidden_refusal(method: str) -> str:
    return (f"Method '{method}' matches node-level hiddens; graph "
            f'classification supports logit methods such as kd')


# (method, regime): the exact one-line refusal.
# adv reruns the student on perturbed features of one graph.
ADV_REFUSAL = ('adv perturbs the node features of one graph: it trains on a '
               'node-classification graph, full-graph or with --batch-size, '
               'not on this dataset: drop adv from --method')
REFUSED = {
    **{(m, 'graphs'): _hidden_refusal(m)
       for m in METHODS if m not in ('kd', 'glnn', 'position',
                                     'glnn+position', 'adv')},
    **{(m, 'graphs'):
       "A graph-classification student pools message-passing layers (gcn, "
       f"gat, gatv2, sage, gin); 'mlp' (the student {m} prefers) has none: "
       'pass --student gin or another of those'
       for m in ('glnn', 'position', 'glnn+position')},
    **{('position', r): "'position' adds input features and no loss: "
       'combine it with a method, e.g. --method glnn+position'
       for r in ('full', 'sampled', 'inductive')},
    **{(m, 'clouds'): f"'{m}' adds node features for a node classifier, "
       'not for point clouds: drop it from --method'
       for m in ('position', 'glnn+position')},
    ('glnn+position', 'sampled'):
        "'glnn+position' computes its features once on the whole graph: "
        'drop --batch-size and --fanout',
    ('glnn+position', 'inductive'):
        "'glnn+position' is for one node-classification graph; list holds "
        'several graphs: drop it from --method',
    **{('adv', r): ADV_REFUSAL for r in ('graphs', 'inductive', 'clouds')},
    ('lsp+at', 'sampled'):
        "Method 'lsp+at' cannot train on sampled subgraphs: lsp compares the "
        'features of every sampled node, at those of the seeds alone: run '
        'them apart (e.g. --method lsp) or drop --batch-size',
    ('kd', 'graphs-fanout'):
        '--fanout samples neighbours in one large graph; on a '
        'graph-classification dataset --batch-size counts whole graphs per '
        'step: drop --fanout',
}


@dataclass(frozen=True)
class Cell:
    command: str
    method: str
    regime: str
    check: str   # 'train', 'resume' or 'refused'

    @property
    def id(self) -> str:
        tail = '' if self.check == 'train' else f'-{self.check}'
        head = '' if self.command == 'distill' else f'{self.command}-'
        return f'{head}{self.method}-{self.regime}{tail}'


def _cells() -> list[Cell]:
    cells = []
    for regime in ('full', 'sampled', 'graphs', 'inductive', 'clouds'):
        for method in METHODS:
            if (method, regime) in REFUSED:
                check = 'refused'
            else:
                check = 'resume' if method in RESUMED else 'train'
            cells.append(Cell('distill', method, regime, check))
    cells += [Cell('distill', m, r, 'refused') for m, r in REFUSED
              if r not in ('full', 'sampled', 'graphs', 'inductive',
                           'clouds') or m not in METHODS]
    cells += [Cell('distill', 'kd', r, 'resume') for r in GRAPHS_PER_STEP]
    return cells


CELLS = _cells()


# Running distill --------------------------------------------------------------

def _options(files, regime: str) -> tuple[Path, Any, dict[str, Any]]:
    root = files['root']
    teacher, data, options = REGIMES[regime]
    options = dict(options)
    if 'data_root' in options:
        options['data_root'] = root / options['data_root']
    return root / teacher, data if data == 'MUTAG' else root / data, options


def _distill(files, cell: Cell, out: Path, monkeypatch, epochs: int = EPOCHS,
             **extra):
    """``api.distill`` of the cell without export or latency; the report and
    the trained student and its FitResult (recorded from the loop)."""
    seen = []
    real = loop.fit

    def recording(student, regime, **kw):
        result = real(student, regime, **kw)
        seen.append((student, result))
        REGIMES_SEEN.append(regime)
        return result

    teacher, data, options = _options(files, cell.regime)
    with monkeypatch.context() as mp:
        mp.setattr(loop, 'fit', recording)
        mp.setattr(minibatch, 'fit', recording)
        report = api.distill(teacher, data=data, method=cell.method,
                             epochs=epochs, out=out, progress=False,
                             export=False, latency=False, device='cpu',
                             **options, **extra)
    student, result = seen[-1]
    return report, student, result


REGIMES_SEEN: list[Any] = []


def _reevaluated(files, regime: str, student: torch.nn.Module,
                 method: str) -> float:
    """Test accuracy of ``student`` on the data reloaded from disk, in one
    whole forward pass (not the regime's batched or layer-wise scoring),
    with the input columns the method adds recomputed (seed 0)."""
    _, data, options = _options(files, regime)
    student.eval()
    with torch.no_grad():
        if regime == 'clouds':
            graph = load_clouds(data, seed=0)
            mask = graph.test_mask
            hit = student(cloud_points(graph)[mask]).argmax(-1) == \
                graph.y[mask]
            return float(hit.float().mean())
        graph = load_graph(data, options.get('data_root'), seed=0)
        extra = api.build_method(method).student_inputs(graph, 0)
        if extra is not None:
            graph.x = torch.cat([graph.x, extra], 1)
        logits = run_model(student, graph.x, graph.edge_index,
                           graph.batch).logits
        mask = graph.test_mask
        return float((logits.argmax(-1)[mask] == graph.y[mask])
                     .float().mean())


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_trained(files, cell: Cell, report, student, result) -> None:
    assert [h['epoch'] for h in result.history] == list(range(1, EPOCHS + 1))
    name = api.build_method(cell.method).name
    for h in result.history:  # the method's own term took part
        assert math.isfinite(h[f'loss_{name}']), h
    assert report.training['best_epoch'] == result.best_epoch
    assert report.student.test_accuracy == pytest.approx(
        _reevaluated(files, cell.regime, student, cell.method), abs=1e-6)
    if cell.regime in GRAPHS_PER_STEP:
        assert REGIMES_SEEN[-1].batch_size == GRAPHS_PER_STEP[cell.regime]


class _Interrupted(Exception):
    pass


def interrupted_after_epoch_1(monkeypatch, run) -> None:
    """Runs run() and stops it at epoch 2, after epoch 1's checkpoint."""
    real = loop.check_finite

    def interrupt(loss, terms, epoch, who=''):
        if epoch == 2:
            raise _Interrupted
        return real(loss, terms, epoch, who)

    with monkeypatch.context() as mp:
        mp.setattr(loop, 'check_finite', interrupt)
        with pytest.raises(_Interrupted):
            run()


def _run_distill(files, cell: Cell, tmp_path: Path, monkeypatch) -> None:
    if cell.check == 'refused':
        teacher, data, options = _options(files, cell.regime)
        args = ['distill', str(teacher), '--data', str(data), '--method',
                cell.method, '--epochs', str(EPOCHS), '--no-progress',
                '--device', 'cpu', '--out', str(tmp_path / 'out')]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines == [f'Error: {REFUSED[cell.method, cell.regime]}']
        assert not (tmp_path / 'out').exists()
        return

    report, student, result = _distill(files, cell, tmp_path / 'whole',
                                       monkeypatch)
    _check_trained(files, cell, report, student, result)
    if cell.check != 'resume':
        return
    whole = _state(student)
    out = tmp_path / 'cut'
    interrupted_after_epoch_1(monkeypatch, lambda: _distill(
        files, cell, out, monkeypatch, checkpoint_every=1))
    saved = torch.load(out / DEFAULT_FOLDER / 'training.ckpt',
                       weights_only=True)
    assert saved['epoch'] == 1
    torch.manual_seed(123)  # the resumed run must not depend on it
    trained, real_record = [], loop.record_epoch

    def record(selection, bar, history, epoch, *args):
        trained.append(epoch)
        return real_record(selection, bar, history, epoch, *args)

    with monkeypatch.context() as mp:
        mp.setattr(loop, 'record_epoch', record)
        again, resumed, again_result = _distill(
            files, cell, out, monkeypatch, checkpoint_every=1, resume=out)
    assert trained == [2]  # it went on from the checkpoint
    assert _same(_state(resumed), whole)
    assert again_result.history == result.history
    assert again.student.test_accuracy == report.student.test_accuracy
    assert not (out / DEFAULT_FOLDER).exists()  # removed after success


# command: how one cell runs (amalgamate and cotrain cells add theirs)
RUNNERS = {'distill': _run_distill}


@pytest.mark.parametrize('cell', CELLS, ids=[c.id for c in CELLS])
def test_cell(files, cell, tmp_path, monkeypatch):
    RUNNERS[cell.command](files, cell, tmp_path, monkeypatch)


def test_every_method_and_regime_has_a_cell():
    cells = {(c.method, c.regime) for c in CELLS}
    for regime in ('full', 'sampled', 'graphs', 'inductive', 'clouds'):
        assert {(m, regime) for m in DISTILL_METHODS} <= cells
    assert {c.check for c in CELLS} == {'train', 'resume', 'refused'}


# A NaN after good epochs ----------------------------------------------------

@pytest.mark.parametrize('regime', ['sampled', 'graphs', 'inductive',
                                    'clouds'])
def test_nan_keeps_the_best_student(files, regime, tmp_path, monkeypatch):
    """KD's loss turns NaN at the first step of epoch 3: the run stops and
    ``student.safetensors`` holds the weights of the best of epochs 1-2
    (taken from the student itself at the end of each epoch)."""
    epochs: list[tuple[float, dict[str, torch.Tensor]]] = []
    real_record, real_loss = loop.record_epoch, KD.loss

    def record(selection, bar, history, epoch, loss, val, terms=None):
        epochs.append((val, _state(selection.model)))
        return real_record(selection, bar, history, epoch, loss, val, terms)

    def loss(self, *args):
        value = real_loss(self, *args)
        return value * math.nan if len(epochs) >= 2 else value

    monkeypatch.setattr(loop, 'record_epoch', record)
    monkeypatch.setattr(KD, 'loss', loss)
    out = tmp_path / 'out'
    with pytest.raises(TrainingError) as info:
        _distill(files, Cell('distill', 'kd', regime, 'nan'), out,
                 monkeypatch, epochs=4)
    assert len(epochs) == 2
    best = max(range(2), key=lambda i: (epochs[i][0], -i))
    message = str(info.value)
    assert '\n' not in message
    assert 'The loss became nan at epoch 3 (' in message
    assert message.endswith(
        f'; the best student before it (epoch {best + 1}, validation '
        f'accuracy {100 * epochs[best][0]:.2f}%) is in '
        f"{out / 'student.safetensors'}")
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.safetensors']
    assert json.loads((out / 'report.json').read_text())['status'] == \
        'failed'
    assert _same(load_file(out / 'student.safetensors'), epochs[best][1])
