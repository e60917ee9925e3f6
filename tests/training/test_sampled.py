"""Every distill method on sampled subgraphs (the regime of
``distill --batch-size``): what each loss sees of a batch, two epochs of
each method, the refused combinations, and a resumed run equal to an
uninterrupted one, through the library and the command."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLE_TEACHER
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.catalogue import DISTILL_METHODS
from gnncompress.core.errors import GnnCompressError
from gnncompress.models import ArchSpec, build_model
from gnncompress.training import loop
from gnncompress.training.regimes.sampled import SampledSubgraphs
from gnncompress.training.resume import TrainingCheckpoint
from gnncompress.training.sampling import CSR, TensorStore
from gnncompress.workflows.distill_sampled import (
    check_minibatch,
    fit_minibatch,
    teacher_cache,
)
from tests.workflows.test_distill_sampled import _random_graph

runner = CliRunner()


def _setup(method: str, layers: int = 3, arch: str = 'gcn'):
    """The graph, its CSR, a 2-layer teacher's cache and a fresh
    ``layers``-layer student (a deeper student than teacher: its hidden
    layers cover different rows of a trimmed batch)."""
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    distiller = api.build_method(method)
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('sage', 6, 12, 2, 3)).eval()
    cached = teacher_cache(teacher, graph, csr, distiller, TensorStore())
    torch.manual_seed(1)
    student = build_model(ArchSpec(arch, 6, 8, layers, 3))
    return graph, csr, distiller, cached, student


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k])
                                          for k in sa)


@pytest.mark.parametrize('method,arch', [
    # position adds the student's input columns and no loss (refused on
    # sampled subgraphs: tests/methods/test_position.py)
    *((m, 'gcn') for m in DISTILL_METHODS if m != 'position'),
    ('kd+fitnet', 'gcn'),
    ('kd+lsp', 'gcn'), ('glnn', 'mlp'), ('lsp', 'gat')])
def test_each_method_trains_two_epochs_on_sampled_subgraphs(method, arch):
    graph, csr, distiller, cached, student = _setup(method, arch=arch)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = fit_minibatch(student, graph, csr, fanout=[3, 2, 2],
                           batch_size=32, method=distiller,
                           teacher_outputs=[cached], epochs=2, lr=0.02,
                           patience=None, progress=False)

    assert [h['epoch'] for h in result.history] == [1, 2]
    term = f'loss_{distiller.name}'
    for h in result.history:
        assert torch.isfinite(torch.tensor([h['loss'], h[term]])).all(), h
    # The method's own term is not a constant zero: it sees the batch.
    assert any(h[term] > 0 for h in result.history), result.history
    assert any(not torch.equal(before[k], v)
               for k, v in student.state_dict().items())
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.mark.parametrize('view', ['seeds', 'nodes'])
def test_each_loss_sees_rows_that_line_up(view):
    """Teacher and student hidden features cover the same nodes, row by
    row: the seeds for node-wise losses, the seeds and their sampled
    neighbours (what the edges into the seeds reach) for LSP."""
    graph, csr, _, _, student = _setup('kd')
    ids = torch.arange(graph.num_nodes, dtype=torch.float)
    # A 'teacher' whose hidden feature is the node's id.
    from gnncompress.models import ModelOutput
    teacher = ModelOutput(logits=ids[:, None].repeat(1, 3),
                          hiddens=[ids[:, None]])
    regime = SampledSubgraphs(graph, csr, [teacher], fanout=[3, 2, 2],
                              batch_size=10, trim=True,
                              device=torch.device('cpu'), hiddens=view)
    batch = next(iter(regime.steps(1)))
    (t,) = regime.teachers(batch)
    out = regime.forward(student.eval(), batch)

    rows = 10 if view == 'seeds' else batch.hop_nodes[1]
    assert t.logits[:, 0].tolist() == batch.n_id[:10].float().tolist()
    assert t.hiddens[0][:, 0].tolist() == batch.n_id[:rows].float().tolist()
    assert out.logits.size(0) == 10
    assert [h.size(0) for h in out.hiddens] == [rows, rows]
    edges = regime.method_graph(batch).edge_index
    assert edges.numel() == 0 or int(edges.max()) < rows


def _batches(regime, probe) -> list[list[int]]:
    """The node ids of every batch of two epochs, after ``probe()``."""
    probe()
    return [getattr(b, 'batch', b).n_id.tolist()  # SampledPart: its batch
            for epoch in (1, 2) for b in regime.steps(epoch)]


def test_the_probe_leaves_the_batches_of_the_run_as_they_were():
    """The subgraph the method is prepared on is sampled with draws of its
    own: with a probe or without, a run sees the same batches (and every
    process prepares the method on the same subgraph). Every node is
    crowded at fanout 1 (the sampler draws for each one), so a probe that
    drew from the run's generator would shift every batch after it."""
    from gnncompress.training.peer_regimes import SampledParts
    graph, csr, _, cached, student = _setup('kd')
    assert bool((csr.rowptr[1:] - csr.rowptr[:-1] > 1).any())

    def sampled():
        return SampledSubgraphs(graph, csr, [cached], fanout=[1, 1],
                                batch_size=16, trim=True, seed=5,
                                device=torch.device('cpu'))

    def parts():
        return SampledParts(graph, fanout=[1, 1], batch_size=16,
                            seeds=torch.arange(graph.num_nodes), seed=5,
                            device=torch.device('cpu'), csr=csr)

    plain = sampled()
    probed = sampled()
    assert _batches(probed, lambda: probed.probe(student.eval())) == \
        _batches(plain, lambda: None)
    plain, probed = parts(), parts()
    assert _batches(probed, probed.probe) == _batches(plain, lambda: None)
    # The probe itself does not depend on what the run drew before it.
    first = sampled()
    before = first.probe(student.eval())[2]
    _batches(first, lambda: None)
    after = first.probe(student.eval())[2]
    assert torch.equal(before.edge_index, after.edge_index)


def test_a_combination_that_needs_two_views_is_refused_in_one_line():
    with pytest.raises(GnnCompressError) as info:
        check_minibatch(api.build_method('kd+lsp+gsp'), 64, None, 2)
    assert str(info.value) == (
        "Method 'kd+lsp+gsp' cannot train on sampled subgraphs: lsp "
        'compares the features of every sampled node, gsp those of the '
        'seeds alone: run them apart (e.g. --method lsp) or drop '
        '--batch-size')
    # kd reads no hidden features: it goes with either.
    assert check_minibatch(api.build_method('kd+lsp'), 64, None, 2)[1] == \
        [15, 10]


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize('method', ['kd+lsp', 'fitnet'])
def test_resumed_sampled_run_is_bit_identical(method, tmp_path,
                                              monkeypatch):
    settings = dict(fanout=[3, 2, 2], batch_size=32, epochs=5, lr=0.02,
                    patience=None, progress=False, seed=3)
    graph, csr, distiller, cached, whole = _setup(method)
    full = fit_minibatch(whole, graph, csr, method=distiller,
                         teacher_outputs=[cached], **settings)

    real = loop.check_finite

    def check(loss, terms, epoch, who=''):
        if epoch == 4:
            raise _Interrupted
        return real(loss, terms, epoch, who)

    graph, csr, distiller, cached, cut = _setup(method)
    with monkeypatch.context() as mp:
        mp.setattr(loop, 'check_finite', check)
        with pytest.raises(_Interrupted):
            fit_minibatch(cut, graph, csr, method=distiller,
                          teacher_outputs=[cached],
                          checkpoint=TrainingCheckpoint(tmp_path, 2, {}),
                          **settings)
    graph, csr, distiller, cached, resumed = _setup(method)
    torch.manual_seed(99)  # resume must not depend on the RNG it finds
    again = fit_minibatch(resumed, graph, csr, method=distiller,
                          teacher_outputs=[cached],
                          checkpoint=TrainingCheckpoint(tmp_path, None, {},
                                                        resume=True),
                          **settings)

    assert _same(resumed, whole)
    assert again.history == full.history
    assert again.best_epoch == full.best_epoch


def test_distill_batch_size_checkpoints_and_resumes(tmp_path):
    """The command saves a sampled run, refuses to resume it with another
    batch size, and resumed with the same options ends with the same
    student, byte for byte."""
    ckpt = tmp_path / 'ck'
    args = ['distill', str(SAMPLE_TEACHER), '--batch-size', '512',
            '--fanout', '3,3', '--epochs', '2', '--hidden', '8',
            '--no-progress', '--device', 'cpu', '--no-latency',
            '--checkpoint-dir', str(ckpt)]
    first = runner.invoke(app, [*args, '--out', str(tmp_path / 'a'),
                                '--checkpoint-every', '1'])
    assert first.exit_code == 0, first.output
    assert (ckpt / 'training.ckpt').is_file()

    other = runner.invoke(app, [*args, '--out', str(tmp_path / 'b'),
                                '--resume', str(ckpt), '--batch-size',
                                '256'])
    assert other.exit_code == 1
    assert 'belongs to another run (batch_size was 512, now 256)' in \
        other.output

    again = runner.invoke(app, [*args, '--out', str(tmp_path / 'c'),
                                '--resume', str(ckpt)])
    assert again.exit_code == 0, again.output
    assert (tmp_path / 'c' / 'student.safetensors').read_bytes() == \
        (tmp_path / 'a' / 'student.safetensors').read_bytes()
    history = json.loads((tmp_path / 'c' / 'report.json').read_text())[
        'training']['history']
    assert [h['epoch'] for h in history] == [1, 2]


def _fit_sampled(regime, student):
    return loop.fit(student, regime, method=api.build_method('kd'),
                    epochs=3, lr=0.01, weight_decay=0.0, label_weight=1.0,
                    weight=1.0, patience=50, progress=False)


def test_the_gpus_path_trains_as_the_cpus_on_the_cpu():
    """The path a GPU that holds the graph takes (graph, CSR and teacher
    cache moved once, every batch sampled there, validation one
    full-graph pass), run on the CPU: the same batches and the same
    student, bit for bit, as the path that samples on the CPU and
    validates layer-wise, and the same validation score."""
    graph, csr, _, cached, student = _setup('kd', layers=2)
    runs = {}
    for on_device in (False, True):
        regime = SampledSubgraphs(graph, csr, [cached], fanout=[3, 2],
                                  batch_size=16, trim=True, seed=3,
                                  device=torch.device('cpu'),
                                  on_device=on_device)
        assert regime.on_device is on_device
        model = build_model(ArchSpec('gcn', 6, 8, 2, 3))
        model.load_state_dict(student.state_dict())
        _fit_sampled(regime, model)
        runs[on_device] = (model, regime.validate(model.eval()),
                           [b.n_id.tolist() for b in regime.steps(4)])
    (cpu, cpu_val, cpu_batches), (dev, dev_val, dev_batches) = \
        runs[False], runs[True]
    assert cpu_batches == dev_batches
    assert _same(cpu, dev)
    assert cpu_val == dev_val


def test_the_sampler_runs_where_the_graph_fits(monkeypatch):
    """A GPU whose free memory holds the graph, its CSR and the teacher
    cache twice over samples there; one that does not, or the CPU, leaves
    sampling on the CPU."""
    from gnncompress.training.regimes import sampled
    graph, csr, _, cached, _ = _setup('kd', layers=2)
    need = sum(t.numel() * t.element_size() for t in (
        graph.x, graph.edge_index, graph.y, graph.train_mask,
        graph.val_mask, graph.test_mask, csr.rowptr, csr.col,
        cached.logits, *cached.hiddens))
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    for free, where in ((2 * need, cuda), (2 * need - 1, cpu)):
        monkeypatch.setattr(torch.cuda, 'mem_get_info',
                            lambda device, free=free: (free, 10 * free))
        assert sampled.sampled_on(graph, csr, [cached], cuda) == where
    assert sampled.sampled_on(graph, csr, [cached], cpu) == cpu


def test_a_sampler_state_from_another_device_is_refused_in_one_line():
    graph, csr, _, cached, _ = _setup('kd', layers=2)
    regime = SampledSubgraphs(graph, csr, [cached], fanout=[3, 2],
                              batch_size=16, trim=True,
                              device=torch.device('cpu'))
    state = regime.state_dict()
    # A CUDA generator's state: 16 bytes, where the CPU's has 5,056.
    state['sampler'] = torch.zeros(16, dtype=torch.uint8)
    with pytest.raises(GnnCompressError,
                       match='another device than this run .cpu.: resume '
                       'it with the --device it was written with'):
        regime.load_state_dict(state)
