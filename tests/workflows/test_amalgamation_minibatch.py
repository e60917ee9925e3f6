"""Mini-batch amalgamation: one batch covering every node with all
neighbours gives the full-graph losses and gradients (TAM and LSP), no
label reaches training, the teachers' cache is computed once, the command
end to end, and its errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gnncompress.workflows.amalgamate.sampled as amb
from gnncompress import api
from gnncompress.checkpoints.students import load_slimmable
from gnncompress.cli import app
from gnncompress.core.graph import Graph
from gnncompress.methods.tam import TAM
from gnncompress.models import ArchSpec, build_model, propagation
from gnncompress.models.slimmable import SlimmableGNN, SlimmableSpec
from gnncompress.outputs.parity import onnx_feeds, onnx_session
from gnncompress.tasks.datasets import load_graph
from gnncompress.workflows import amalgamate as amalgamation
from gnncompress.workflows.amalgamate.regimes import (
    Passes,
    WholeGraphs,
    _groups,
)
from gnncompress.workflows.amalgamate.tasks import Task
from tests.workflows.test_amalgamation import _save_graph, _save_teacher

runner = CliRunner()


def _graph(name: str, num_nodes: int, features: int, classes: int,
           seed: int) -> Graph:
    """Random edges in both directions, no self-loop."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (2 * num_nodes,), generator=gen)
    dst = torch.randint(0, num_nodes, (2 * num_nodes,), generator=gen)
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]),
                              torch.cat([dst[keep], src[keep]])])
    split = torch.arange(num_nodes) % 5
    return Graph(name=name, x=torch.randn(num_nodes, features, generator=gen),
                 edge_index=edge_index, y=torch.arange(num_nodes) % classes,
                 train_mask=split == 0, val_mask=split == 1,
                 test_mask=split >= 2, num_classes=classes)


def _setting(setting: str):
    """Tasks, frozen teachers and a dropout-free student."""
    torch.manual_seed(0)
    if setting == 'datasets':  # two graphs, one head each
        a, b = _graph('a', 30, 6, 3, 0), _graph('b', 24, 9, 4, 1)
        tasks = [Task('a', a, None, 0, 0, 3), Task('b', b, None, 1, 0, 4)]
        teachers = [build_model(ArchSpec('gcn', 6, 8, 2, 3)),
                    build_model(ArchSpec('gat', 9, 8, 2, 4, heads=2))]
        spec = SlimmableSpec('sage', [6, 9], 8, 2, [3, 4], widths=[0.5, 1.0],
                             dropout=0.0)
    else:  # label subsets of one graph, one union head
        g = _graph('g', 32, 5, 4, 3)
        tasks = [Task('g-c0-1', g, [0, 1], 0, 0, 2),
                 Task('g-c2-3', g, [2, 3], 0, 2, 4)]
        teachers = [build_model(ArchSpec('gin', 5, 8, 2, 2)),
                    build_model(ArchSpec('sage', 5, 8, 2, 2))]
        spec = SlimmableSpec('gcn', [5], 8, 2, [4], widths=[0.5, 1.0],
                             dropout=0.0)
    return tasks, [t.eval() for t in teachers], SlimmableGNN(spec)


def _step(graphs, student, tasks):
    """Loss, terms and gradient of every (width, group) of the first
    optimiser step."""
    step = next(iter(graphs.steps(1)))
    found = {}
    for width in student.spec.widths:
        for group in _groups(tasks):
            student.zero_grad(set_to_none=True)
            loss, terms = step(student, width, group)
            loss.backward()
            grads = [torch.zeros_like(p) if p.grad is None else p.grad
                     for p in student.parameters()]
            found[width, tuple(group)] = (loss.detach(), {
                k: v.detach() for k, v in terms.items()}, grads)
    return found


@pytest.mark.parametrize('setting', ['datasets', 'label-subsets'])
@pytest.mark.parametrize('topology', ['tam', 'lsp'])
def test_one_batch_of_every_node_equals_the_full_graph_step(setting,
                                                            topology):
    tasks, teachers, student = _setting(setting)
    whole = WholeGraphs(tasks, [TAM(topology=topology).prepare(
        t, task.graph.x, task.graph.edge_index) for t, task in
        zip(teachers, tasks)], TAM(topology=topology))
    # All neighbours at both hops and a batch larger than any graph: the
    # batch is the whole graph, its nodes shuffled.
    sampled = amb.SampledGraphs(tasks, teachers, TAM(topology=topology),
                                batch_size=64, fanout=[-1, -1], seed=3,
                                device=torch.device('cpu'))
    assert sampled.steps_per_epoch == 1
    seeds = Passes(tasks[0].graph.num_nodes, 64,
                   torch.Generator().manual_seed(3)).next()
    batch = sampled._samplers[0].sample(seeds)  # the first step's batch
    assert not torch.equal(batch.n_id, torch.arange(batch.n_id.numel()))

    expected, got = _step(whole, student, tasks), _step(sampled, student,
                                                        tasks)
    assert expected.keys() == got.keys() and len(got) == 4 - 2 * (
        setting == 'label-subsets')
    for key, (loss, terms, grads) in expected.items():
        b_loss, b_terms, b_grads = got[key]
        assert terms.keys() == b_terms.keys()
        assert {k.split('/')[1] for k in terms} == {'soft', 'topology'}
        assert float(terms[next(k for k in terms
                                if k.endswith('topology'))]) > 1e-4
        torch.testing.assert_close(b_loss, loss, rtol=1e-5, atol=1e-6)
        for k in terms:
            torch.testing.assert_close(b_terms[k], terms[k], rtol=1e-5,
                                       atol=1e-6)
        for mine, theirs in zip(b_grads, grads):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    sampled.close()


def test_small_batches_score_the_seeds_on_their_sampled_edges():
    # Each teacher's map on a batch covers exactly the batch's edges into
    # its seeds, normalised per seed; the soft targets are the cached rows.
    tasks, teachers, _ = _setting('datasets')
    sampled = amb.SampledGraphs(tasks, teachers, TAM(), batch_size=7,
                                fanout=[3, 2], seed=0,
                                device=torch.device('cpu'))
    assert sampled.steps_per_epoch == math.ceil(30 / 7)
    step = next(iter(sampled.steps(1)))
    on_device, views = step.args
    x, edge_index, batch = on_device[id(tasks[0].graph)]
    into = edge_index[1] < 7
    view = views[0]
    assert view.attribution.shape == (int(into.sum()),)
    assert view.target.tolist() == sampled.teacher_tasks[0].target[
        batch.n_id[:7]].tolist()
    torch.testing.assert_close(view.output.logits,
                               sampled.teacher_tasks[0].output.logits[
                                   batch.n_id[:7]])
    # Normalised: zero mean over the incoming edges of each seed.
    dst = edge_index[1][into]
    sums = torch.zeros(7).index_add(0, dst, view.attribution)
    assert sums.abs().max() < 1e-4
    sampled.close()


def _label_subset_run(tmp_path, monkeypatch, y, name):
    """A mini-batch run on label subsets: the report, the trained weights
    and the per-epoch history (export skipped: ONNX costs seconds)."""
    trained, original = [], amalgamation.train_student

    def recording(student, *args, **kwargs):
        fit = original(student, *args, **kwargs)
        trained.append(({k: v.clone() for k, v in
                         student.state_dict().items()}, fit.history))
        return fit

    monkeypatch.setattr(amalgamation, 'train_student', recording)
    (tmp_path / name).mkdir()
    data = _save_graph(tmp_path / name / 'g.pt', 32, 5, 4, 3, y=y)
    t1 = _save_teacher(tmp_path / 't1.pt', 'gin', 5, 2, 0)
    t2 = _save_teacher(tmp_path / 't2.pt', 'gcn', 5, 2, 1)
    report = api.amalgamate([t1, t2], data=str(data), tasks='0-1,2-3',
                            epochs=3, widths='0.5,1', batch_size=10,
                            fanout='3,2', out=tmp_path / f'out-{name}',
                            export=False, latency=False, progress=False,
                            device='cpu')
    return report, *trained[0]


def test_no_label_reaches_minibatch_training(tmp_path, monkeypatch):
    y = torch.arange(32) % 4
    report, weights, history = _label_subset_run(tmp_path, monkeypatch, y,
                                                 'real')
    shuffled = y[torch.randperm(32, generator=torch.Generator()
                                .manual_seed(1))]
    assert not torch.equal(shuffled, y)
    other, other_weights, other_history = _label_subset_run(
        tmp_path, monkeypatch, shuffled, 'shuffled')
    assert weights.keys() == other_weights.keys()
    for key, tensor in weights.items():  # bit-identical training run
        assert torch.equal(tensor, other_weights[key]), key
    assert history == other_history and len(history) == 3
    assert report.training['best_epoch'] == other.training['best_epoch']
    assert report.training['batch_size'] == 10
    assert report.training['steps_per_epoch'] == 4
    # The labels do reach the test scores.
    assert [r['test_accuracy'] for r in report.results] != \
        [r['test_accuracy'] for r in other.results]


@pytest.mark.parametrize('topology', ['lsp', 'tam'])
def test_teacher_cache_is_computed_once(tmp_path, monkeypatch, topology):
    """LSP: each teacher's layers run once for the whole run (its cache).
    TAM: once more per batch for its map, shared by all widths."""
    calls, original = [], amb.teacher_cache
    convs, fast_layer = [], propagation.fast_layer

    def counting_cache(teacher, graph, csr, method, store):
        for conv in teacher.convs:
            conv.register_forward_hook(lambda *_: calls.append(1))
            convs.append(conv)
        return original(teacher, graph, csr, method, store)

    def counting_fast_layer(conv, *args, **kwargs):
        # A GCN teacher's map runs its layers as sparse products.
        if any(conv is c for c in convs):
            calls.append(1)
        return fast_layer(conv, *args, **kwargs)

    monkeypatch.setattr(amb, 'teacher_cache', counting_cache)
    monkeypatch.setattr(propagation, 'fast_layer', counting_fast_layer)
    a = _save_graph(tmp_path / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(tmp_path / 'b.pt', 24, 9, 4, 1)
    ta = _save_teacher(tmp_path / 'ta.pt', 'gcn', 6, 3, 0)
    tb = _save_teacher(tmp_path / 'tb.pt', 'gat', 9, 4, 1)
    report = api.amalgamate([ta, tb], data=[str(a), str(b)], epochs=2,
                            widths='0.5,0.75,1', topology=topology,
                            batch_size=8, fanout=[3, 3], out=tmp_path / 'o',
                            export=False, latency=False, progress=False,
                            device='cpu')
    steps = report.training['steps_per_epoch']
    assert steps == 4  # ceil(30 / 8); graph b cycles through its 3
    per_teacher = 1 + (2 * steps if topology == 'tam' else 0)
    assert len(calls) == 2 * 2 * per_teacher  # 2 teachers x 2 layers


def test_cli_end_to_end_on_saved_graphs(tmp_path):
    a = _save_graph(tmp_path / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(tmp_path / 'b.pt', 24, 9, 4, 1)
    ta = _save_teacher(tmp_path / 'ta.pt', 'gcn', 6, 3, 0)
    tb = _save_teacher(tmp_path / 'tb.pt', 'gat', 9, 4, 1)
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'amalgamate', str(ta), str(tb), '--data', f'{a},{b}', '--epochs',
        '2', '--widths', '0.5,1', '--width', '0.5', '--batch-size', '8',
        '--fanout', '4,3', '--out', str(out), '--no-progress', '--student',
        'sage', '--device', 'cpu'])

    assert result.exit_code == 0, result.output
    assert 'mini-batch: 8 seed nodes of each graph per step, fanout 4,3' \
        in result.output
    report = json.loads((out / 'report.json').read_text())
    training = report['training']
    assert training['batch_size'] == 8 and training['fanout'] == [4, 3]
    assert training['steps_per_epoch'] == 4
    assert training['epochs_run'] == 2 and len(report['results']) == 4
    assert sorted(p.name for p in (out / 'onnx').iterdir()) == \
        ['a-w0.5.onnx', 'b-w0.5.onnx']
    # The layer-wise scores are those of a full forward of the saved
    # student, and its ONNX file computes the same on the whole graph.
    student, _ = load_slimmable(out / 'student.safetensors')
    for r in report['results']:
        head = 0 if r['task'] == 'a' else 1
        graph = load_graph(a if head == 0 else b)
        with torch.no_grad():
            logits = student(graph.x, graph.edge_index, head, r['width'])
        mask = graph.test_mask
        assert r['test_accuracy'] == pytest.approx(float(
            (logits[mask].argmax(-1) == graph.y[mask]).float().mean()))
        assert 'pytorch-cpu' in r['latency']
    graph = load_graph(b)
    session = onnx_session(out / 'onnx' / 'b-w0.5.onnx')
    got = session.run(None, onnx_feeds(session, graph.x, graph.edge_index))[0]
    with torch.no_grad():
        expected = student(graph.x, graph.edge_index, 1, 0.5).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert report['teachers'][1]['test_accuracy'] >= 0


@pytest.mark.parametrize('args,needle', [
    (['--fanout', '15,10'], '--fanout needs --batch-size'),
    (['--batch-size', '8', '--fanout', '5,5,5'],
     '--fanout lists 3 hop(s) but the student has 2 layer(s)'),
    (['--batch-size', '8', '--fanout', '5,x'], '--fanout takes'),
    (['--batch-size', '8', 'mlp'],
     'Teacher tx.pt: MLP passes no messages'),
])
def test_bad_minibatch_options_fail_in_one_line(tmp_path, args, needle):
    a = _save_graph(tmp_path / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(tmp_path / 'b.pt', 24, 9, 4, 1)
    ta = _save_teacher(tmp_path / 'ta.pt', 'gcn', 6, 3, 0)
    tb = _save_teacher(tmp_path / 'tb.pt', 'gat', 9, 4, 1)
    if args[-1] == 'mlp':
        tb = _save_teacher(tmp_path / 'tx.pt', args.pop(), 9, 4, 1)
    out = tmp_path / 'never'
    result = runner.invoke(app, ['amalgamate', str(ta), str(tb), '--data',
                                 f'{a},{b}', '--epochs', '1', '--out',
                                 str(out), '--no-progress', *args])

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    assert needle in lines[0]
    assert not out.exists()


def test_gcnii_teacher_in_minibatch_amalgamation(tmp_path):
    """A GCNII teacher is cached layer-wise (it used to be refused): the
    report's teacher accuracy is the full-graph forward's."""
    a = _save_graph(tmp_path / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(tmp_path / 'b.pt', 24, 9, 4, 1)
    ta = _save_teacher(tmp_path / 'ta.pt', 'gcn', 6, 3, 0)
    tb = _save_teacher(tmp_path / 'tb.pt', 'gcnii', 9, 4, 1)
    kwargs = dict(data=[str(a), str(b)], epochs=1, widths='1',
                  export=False, latency=False, progress=False, device='cpu')
    mini = api.amalgamate([ta, tb], batch_size=8, fanout=[3, 3],
                          out=tmp_path / 'mini', **kwargs)
    full = api.amalgamate([ta, tb], out=tmp_path / 'full', **kwargs)
    assert mini.teachers[1].test_accuracy == pytest.approx(
        full.teachers[1].test_accuracy)
