"""Mini-batch distillation: the sampler, layer-wise inference against the
full forward, the memory-mapped cache, training on sampled subgraphs, one
teacher pass per run and the CLI's errors."""
from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE_TEACHER
from typer.testing import CliRunner

import gnncompress.training.regimes.sampled as sampled
import gnncompress.workflows.distill_sampled as mb
from gnncompress.cli import app
from gnncompress.core.graph import Graph
from gnncompress.methods.kd import KD
from gnncompress.methods.lsp import LSP
from gnncompress.models import ArchSpec, build_model, run_model
from gnncompress.outputs import latency as bench
from gnncompress.training.sampling import (
    CSR,
    NeighborSampler,
    TensorStore,
    layerwise_inference,
    load_stored,
)
from gnncompress.workflows import results as run_results

runner = CliRunner()


def _random_graph(num_nodes: int = 120, num_edges: int = 900,
                  features: int = 6, classes: int = 3) -> Graph:
    """Two directions of random edges, labels that follow the features."""
    gen = torch.Generator().manual_seed(0)
    half = torch.randint(0, num_nodes, (2, num_edges // 2), generator=gen)
    edge_index = torch.cat([half, half.flip(0)], 1)
    x = torch.randn(num_nodes, features, generator=gen)
    y = x[:, :classes].argmax(-1)
    split = torch.arange(num_nodes) % 4
    return Graph(name='random', x=x, edge_index=edge_index, y=y,
                 train_mask=split == 0, val_mask=split == 1,
                 test_mask=split >= 2, num_classes=classes)


@pytest.mark.parametrize('arch,jk', [('gcn', None), ('sage', None),
                                     ('gat', None), ('gin', None),
                                     ('gcn', 'cat'), ('mlp', None),
                                     ('gcnii', None)])
def test_layerwise_equals_full_forward(arch, jk, tmp_path):
    graph = _random_graph()
    torch.manual_seed(0)
    model = build_model(ArchSpec(arch=arch, in_channels=6,
                                 hidden_channels=16, num_layers=3,
                                 out_channels=3, heads=4 if arch == 'gat'
                                 else 1, jk=jk)).eval()
    with torch.no_grad():
        full = run_model(model, graph.x, graph.edge_index)
    # Chunks of 17 nodes, every layer in a memory-mapped file.
    store = TensorStore(memmap_bytes=0, folder=tmp_path)
    out = layerwise_inference(model, graph.x, CSR.from_edges(
        graph.edge_index, graph.num_nodes), store=store, chunk=17)

    assert len(store.files) > 0
    torch.testing.assert_close(out.logits, full.logits, atol=1e-5, rtol=0)
    # GCNII: every GCN2Conv's output (3); the others: all but the last.
    expected = 3 if jk or arch == 'gcnii' else 2
    assert len(out.hiddens) == len(full.hiddens) == expected
    for mine, theirs in zip(out.hiddens, full.hiddens):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_memmap_store_round_trips(tmp_path):
    store = TensorStore(memmap_bytes=100, folder=tmp_path)
    small = store.empty(2, 3)        # 24 bytes: in memory
    large = store.empty(50, 4)       # 800 bytes: on disk
    values = torch.arange(200, dtype=torch.float32).view(50, 4)
    large[:] = values
    large[7] = -1.0

    assert store.files and not any(p.name.startswith('tensor1')
                                   for p in store.files)
    assert small.shape == (2, 3)
    back = load_stored(store.files[0])
    expected = values.clone()
    expected[7] = -1.0
    torch.testing.assert_close(back, expected)
    assert back[torch.tensor([7, 3])].tolist() == [[-1.0] * 4,
                                                   [12., 13., 14., 15.]]
    store.close()
    assert not store.files[0].exists()


def test_sampler_takes_real_edges_up_to_the_fanout():
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    sampler = NeighborSampler(csr, [3, 2], batch_size=8,
                              generator=torch.Generator().manual_seed(1))
    seeds = torch.tensor([5, 0, 17, 33, 2, 9, 71, 100])
    batch = sampler.sample(seeds)

    assert batch.n_id[:8].tolist() == seeds.tolist()
    assert batch.n_id.unique().numel() == batch.n_id.numel()
    real = set(map(tuple, graph.edge_index.t().tolist()))
    sampled = batch.n_id[batch.edge_index].t().tolist()
    assert all(tuple(e) in real for e in sampled)
    in_degree = torch.bincount(graph.edge_index[1],
                               minlength=graph.num_nodes)
    into = torch.bincount(batch.edge_index[1], minlength=batch.n_id.numel())
    assert into[:8].tolist() == in_degree[seeds].clamp(max=3).tolist()
    # Every node of the second hop has at most 2 sampled in-edges.
    assert int(into[8:].max()) <= 2
    # -1 takes every in-edge of every seed.
    everything = NeighborSampler(csr, [-1], batch_size=8).sample(seeds)
    assert everything.edge_index.size(1) == int(in_degree[seeds].sum())


def test_minibatch_kd_and_lsp_train_on_a_tiny_graph():
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(arch='sage', in_channels=6,
                                   hidden_channels=32, num_layers=2,
                                   out_channels=3)).eval()
    cached = mb.teacher_cache(teacher, graph, csr, LSP(), TensorStore())
    student = build_model(ArchSpec(arch='gcn', in_channels=6,
                                   hidden_channels=16, num_layers=2,
                                   out_channels=3))
    from gnncompress.methods.combined import Combined
    method = Combined([KD(), LSP()], [1.0, 1.0])

    def disagreement() -> float:
        logits = sampled.evaluate(student, graph, csr)
        return float(F.kl_div(F.log_softmax(logits, -1),
                              F.log_softmax(cached.logits, -1),
                              reduction='batchmean', log_target=True))

    before = disagreement()
    result = mb.fit_minibatch(student, graph, csr, fanout=[4, 3],
                              batch_size=32, method=method,
                              teacher_outputs=[cached], epochs=15, lr=0.01,
                              label_weight=0.0, patience=None,
                              progress=False)

    losses = [h['loss'] for h in result.history]
    assert len(losses) == 15 and losses[-1] < 0.7 * losses[0]
    assert disagreement() < 0.7 * before
    assert 0 < result.best_epoch <= 15


def test_batch_records_nodes_and_edges_hop_by_hop():
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    batch = NeighborSampler(csr, [3, 2], batch_size=5,
                            generator=torch.Generator().manual_seed(2)
                            ).sample(torch.tensor([4, 8, 15, 16, 23]))
    n0, n1, n2 = batch.hop_nodes
    e0, e1, e2 = batch.hop_edges
    dst = batch.edge_index[1]

    assert n0 == 5 and n2 == batch.n_id.numel()
    assert e2 == e1 == batch.edge_index.size(1)  # last hop: no in-edges
    assert bool((dst[:e0] < n0).all()) and bool((dst[e0:] >= n0).all())
    assert bool((dst[e0:e1] < n1).all())
    # The sources of the edges into hop j lie within hop j + 1.
    assert int(batch.edge_index[0, :e0].max()) < n1


@pytest.mark.parametrize('arch', ['gcn', 'sage', 'gin', 'gat'])
def test_trimmed_output_equals_the_whole_subgraph(arch):
    """Each trimmed layer's rows equal the untrimmed forward's, and so do
    the gradients they pass to the weights."""
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    batch = NeighborSampler(csr, [4, 3, 2], batch_size=6,
                            generator=torch.Generator().manual_seed(3)
                            ).sample(torch.tensor([1, 7, 9, 30, 31, 99]))
    torch.manual_seed(0)
    model = build_model(ArchSpec(arch=arch, in_channels=6,
                                 hidden_channels=8, num_layers=3,
                                 out_channels=3, heads=2 if arch == 'gat'
                                 else 1)).eval()
    x = graph.x[batch.n_id]
    assert sampled.trimmable(model, 3) and not sampled.trimmable(model, 2)

    full = run_model(model, x, batch.edge_index)
    (full.logits[:6].square().sum() + full.hiddens[1][:batch.hop_nodes[1]]
     .sum()).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    cut = sampled.trimmed_output(model, x, batch.edge_index, batch)
    (cut.logits.square().sum() + cut.hiddens[1].sum()).backward()

    assert cut.logits.shape[0] == 6
    assert [h.size(0) for h in cut.hiddens] == [batch.hop_nodes[2],
                                                batch.hop_nodes[1]]
    torch.testing.assert_close(cut.logits, full.logits[:6], atol=1e-5,
                               rtol=0)
    for mine, theirs in zip(cut.hiddens, full.hiddens):
        torch.testing.assert_close(mine, theirs[:mine.size(0)], atol=1e-5,
                                   rtol=0)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)


def test_lsp_on_a_trimmed_batch_equals_the_untrimmed_loss():
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    batch = NeighborSampler(csr, [4, 3], batch_size=8,
                            generator=torch.Generator().manual_seed(4)
                            ).sample(torch.arange(10, 18))
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(arch='sage', in_channels=6,
                                   hidden_channels=12, num_layers=2,
                                   out_channels=3)).eval()
    student = build_model(ArchSpec(arch='gcn', in_channels=6,
                                   hidden_channels=5, num_layers=2,
                                   out_channels=3)).eval()
    with torch.no_grad():
        cached = run_model(teacher, graph.x, graph.edge_index)
    x = graph.x[batch.n_id]
    losses = []
    for trim in (False, True):
        out = sampled.trimmed_output(student, x, batch.edge_index, batch) \
            if trim else run_model(student, x, batch.edge_index)
        t_view = sampled.batch_view(cached, batch, rows=True, trimmed=trim)
        s_view = sampled.batch_view(out, batch, rows=False)
        sub = sampled.batch_graph(graph, batch, x=s_view.logits)
        losses.append(LSP().loss([t_view], s_view, sub))

    assert losses[0].item() > 0
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-5)


def test_batch_view_restricts_logits_to_the_seeds():
    graph = _random_graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    batch = NeighborSampler(csr, [2], batch_size=4).sample(
        torch.tensor([3, 1, 4, 15]))
    whole = sampled.ModelOutput(logits=torch.arange(120.).view(-1, 1),
                           hiddens=[torch.arange(120.).view(-1, 1) * 2])
    view = sampled.batch_view(whole, batch, rows=True)
    sub = sampled.batch_graph(graph, batch, x=graph.x[batch.n_id])

    assert view.logits.view(-1).tolist() == [3., 1., 4., 15.]
    assert view.hiddens[0].view(-1).tolist() == \
        (batch.n_id * 2.).tolist()
    assert int(sub.edge_index[1].max()) < 4
    assert sub.edge_index.size(1) == int((batch.edge_index[1] < 4).sum())


def test_cli_runs_the_teacher_once(tmp_path, monkeypatch):
    """The teacher's layers run once per node chunk for the whole run,
    whatever the epochs and batches."""
    calls, hooks = [], []

    def counting_cache(teacher, graph, csr, method, store):
        hooks.extend(conv.register_forward_hook(lambda *_: calls.append(1))
                     for conv in teacher.convs)
        return original(teacher, graph, csr, method, store)

    def latency(*args, **kwargs):
        for hook in hooks:  # training is over; latency runs the teacher
            hook.remove()
        return original_latency(*args, warmup=1, repeat=2, **kwargs)

    original, original_latency = mb.teacher_cache, bench.torch_latency
    monkeypatch.setattr(mb, 'teacher_cache', counting_cache)
    monkeypatch.setattr(bench, 'torch_latency', latency)
    monkeypatch.setattr(run_results, 'onnx_latency', functools.partial(
        bench.onnx_latency, warmup=1, repeat=2))
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--method', 'kd+lsp',
        '--batch-size', '1024', '--fanout', '5,5', '--epochs', '2',
        '--hidden', '16', '--out', str(out), '--no-progress',
        '--device', 'cpu'])

    assert result.exit_code == 0, result.output
    # 3 GAT layers x one chunk of 2,708 nodes (default chunk 16,384).
    assert len(calls) == 3
    report = json.loads((out / 'report.json').read_text())
    assert report['training']['batch_size'] == 1024
    assert report['training']['fanout'] == [5, 5]
    assert report['training']['epochs_run'] == 2
    assert report['teacher']['test_accuracy'] > 0.7
    # Each epoch's loss terms are the means over its batches, so the
    # weighted terms add up to the epoch's loss.
    options = report['method_options']
    for h in report['training']['history']:
        assert h['loss'] == pytest.approx(
            options['label_weight'] * h['loss_ce'] +
            options['weight'] * h[f"loss_{report['method']}"], rel=1e-5)
    assert (out / 'training.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.parametrize('args,needle', [
    (['--batch-size', '64', '--fanout', '15,x'], '--fanout takes'),
    (['--batch-size', '64', '--fanout', '15,10,5'],
     '--fanout lists 3 hop(s) but the student has 2 layer(s)'),
    (['--batch-size', '64', '--fanout', '0,3'], '--fanout needs one'),
    (['--fanout', '15,10'], '--fanout needs --batch-size'),
    (['--batch-size', '64', '--method', 'lsp+fitnet'],
     "Method 'lsp+fitnet' cannot train on sampled subgraphs: lsp compares "
     'the features of every sampled node, fitnet those of the seeds alone: '
     'run them apart (e.g. --method lsp) or drop --batch-size'),
])
def test_bad_minibatch_options_fail_in_one_line(tmp_path, args, needle):
    out = tmp_path / 'out'
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--out',
                                 str(out), '--no-progress', *args])

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    assert needle in lines[0]
    assert not out.exists()
