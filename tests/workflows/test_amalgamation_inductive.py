"""gnncompress amalgamate on several-graph, multi-label data (the PPI
setting of TAM): one step's loss against a direct computation on one graph,
label independence, and the command end to end with teachers trained on
label-column subsets."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch_geometric.data import Data
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.students import load_slimmable
from gnncompress.cli import app
from gnncompress.core.errors import GnnCompressError
from gnncompress.core.metrics import micro_f1
from gnncompress.methods.tam import TAM
from gnncompress.models import ArchSpec, build_model
from gnncompress.models.slimmable import SlimmableGNN, SlimmableSpec
from gnncompress.outputs.parity import onnx_feeds, onnx_session
from gnncompress.tasks.datasets import class_subset, load_graph
from gnncompress.tasks.inductive import graph_from_list, supervised_loss
from gnncompress.tasks.synthetic import synthetic_ppi
from gnncompress.training.regimes.graph_batches import cut
from gnncompress.workflows import amalgamate as amalgamation
from gnncompress.workflows.amalgamate.regimes import GraphBatches, agreement
from gnncompress.workflows.amalgamate.tasks import Task

runner = CliRunner()
TINY = dict(num_graphs=(3, 1, 1), num_nodes=40, num_features=6,
            num_labels=5, num_communities=8)


def _teacher(out_channels, seed, arch='gcn'):
    torch.manual_seed(seed)
    return build_model(ArchSpec(arch, 6, 8, 2, out_channels))


def _normalised(raw, dst, num_nodes):
    """Per-node standardisation over in-edges, written out node by node."""
    out = torch.zeros_like(raw)
    for i in range(num_nodes):
        edges = dst == i
        if edges.any():
            v = raw[edges]
            out[edges] = (v - v.mean()) / torch.sqrt(
                v.var(unbiased=False) + 1e-5)
    return out


def _map(model_out, weight, positive):
    (grad,) = torch.autograd.grad((model_out * positive).sum(), weight,
                                  create_graph=True, retain_graph=True)
    return grad


@pytest.mark.parametrize('soft', ['bce', 'mse'])
def test_one_step_is_the_loss_on_the_batch_graph_alone(soft):
    lists = synthetic_ppi(**TINY)
    graph = graph_from_list(lists, 'tiny')
    assert graph.multilabel and graph.num_classes == 5
    teachers = [_teacher(2, 0), _teacher(3, 1, 'sage')]
    columns = [[0, 1], [2, 3, 4]]
    tasks = [Task(f't{i}', graph, c, 0, s, s + len(c))
             for i, (c, s) in enumerate(zip(columns, [0, 2]))]
    tam = TAM(weight=0.5, soft=soft)
    prepared = [tam.prepare(t, graph.x, graph.edge_index, slice(None), True)
                for t in teachers]
    assert prepared[0].target.shape == (200, 2)
    batches = GraphBatches(tasks, prepared, tam, seed=4)
    assert batches.steps_per_epoch == 3     # 3 training graphs, 1 per step
    # The first batch is the graph fit_inductive's shuffle would draw.
    first = int(torch.randperm(3, generator=torch.Generator()
                               .manual_seed(4))[0])
    spec = SlimmableSpec(arch='gcn', in_channels=[6], hidden_channels=8,
                         num_layers=2, out_channels=[5], widths=[0.5, 1.0])
    torch.manual_seed(2)
    student = SlimmableGNN(spec).eval()
    step = next(iter(batches.steps(1)))
    got, terms = step(student, 1.0, [0, 1])

    # Directly, on that training graph alone as one Data.
    d = lists['train'][first]
    x, edge_index = d.x, d.edge_index
    dst = edge_index[1]
    w_s = torch.ones(edge_index.size(1), requires_grad=True)
    s_logits = student.forward_output(x, edge_index, 0, 1.0,
                                      edge_mask=w_s).logits
    want = 0.0
    for teacher, cols, start in zip(teachers, columns, [0, 2]):
        w_t = torch.ones(edge_index.size(1), requires_grad=True)
        set_masks(teacher, w_t, edge_index, apply_sigmoid=False)
        t_logits = teacher.eval()(x, edge_index)
        positive = (t_logits > 0).float()    # logits at 0, never 0.5
        t_map = _normalised(_map(t_logits, w_t, positive.detach()).detach(),
                            dst, x.size(0))
        clear_masks(teacher)
        t_logits = t_logits.detach()
        s = s_logits[:, start:start + len(cols)]
        soft_term = F.binary_cross_entropy_with_logits(s, positive) \
            if soft == 'bce' else F.mse_loss(s, t_logits)
        s_map = _normalised(_map(s, w_s, positive), dst, x.size(0))
        want = want + soft_term + 0.5 * F.mse_loss(s_map, t_map)
    assert float(got.detach()) == pytest.approx(float(want.detach()),
                                                rel=1e-5, abs=1e-6)
    assert set(terms) == {'t0/soft', 't0/topology', 't1/soft',
                          't1/topology'}


def test_agreement_is_micro_f1_for_multilabel_targets():
    logits = torch.tensor([[0.3, -2.0], [-0.1, 4.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # Predicted (0,0), (1,1): tp 2, fn 1.
    assert agreement(logits, target) == pytest.approx(4 / 5)
    assert agreement(logits, torch.tensor([0, 0])) == pytest.approx(0.5)


def test_class_subset_of_multilabel_graphs_keeps_columns_and_graphs():
    graph = graph_from_list(synthetic_ppi(**TINY), 'tiny')
    sub = class_subset(graph, [3, 1])
    assert torch.equal(sub.y, graph.y[:, [3, 1]])
    assert torch.equal(sub.node_graph, graph.node_graph)
    assert torch.equal(sub.test_mask, graph.test_mask)
    assert sub.num_classes == 2 and sub.split['classes'] == [3, 1]


def _save_list(path, shuffle=False):
    lists = synthetic_ppi(**TINY)
    if shuffle:
        gen = torch.Generator().manual_seed(1)
        lists = {s: [Data(x=d.x, edge_index=d.edge_index,
                          y=d.y[torch.randperm(d.y.size(0), generator=gen)])
                     for d in ds] for s, ds in lists.items()}
    torch.save(lists, path)
    return path


def _run(tmp_path, monkeypatch, name, shuffle):
    # The ONNX files are tested below: skip their (slow) export here.
    monkeypatch.setattr(amalgamation, 'export_onnx',
                        lambda *a: SimpleNamespace(max_abs_diff=0.0,
                                                   cases={}))
    (tmp_path / name).mkdir()
    data = _save_list(tmp_path / name / 'g.pt', shuffle)
    paths = []
    for i, (arch, classes) in enumerate([('gin', 2), ('gcn', 3)]):
        paths.append(tmp_path / f't{i}.pt')
        if not paths[-1].exists():
            torch.save(_teacher(classes, i, arch).state_dict(), paths[-1])
    out = tmp_path / f'out-{name}'
    report = api.amalgamate(paths, data=str(data), tasks='0-1,2-4',
                            epochs=3, widths='0.5,1', export_widths='1',
                            out=out, latency=False, progress=False,
                            device='cpu', patience=None)
    return report, load_file(out / 'student.safetensors')


def test_no_label_reaches_training_on_several_graphs(tmp_path, monkeypatch):
    report, weights = _run(tmp_path, monkeypatch, 'real', False)
    other, other_weights = _run(tmp_path, monkeypatch, 'shuffled', True)
    assert not torch.equal(load_graph(tmp_path / 'real' / 'g.pt').y,
                           load_graph(tmp_path / 'shuffled' / 'g.pt').y)
    assert weights.keys() == other_weights.keys()
    for key, tensor in weights.items():  # bit-identical training run
        assert torch.equal(tensor, other_weights[key]), key
    assert report.training['best_epoch'] == other.training['best_epoch']
    assert report.training['steps_per_epoch'] == 3
    assert report.setting == 'label-subsets'
    assert [t['columns'] for t in report.tasks] == [[0, 2], [2, 5]]
    # The scores do read the labels.
    assert [r['test_accuracy'] for r in report.results] != \
        [r['test_accuracy'] for r in other.results]


def test_cli_on_label_column_subsets_of_saved_graphs(tmp_path):
    data = _save_list(tmp_path / 'ppi.pt')
    teachers = []
    for i, classes in enumerate(['0-1', '2-4']):
        result = api.train_teacher(data, tmp_path / f't{i}.pt', arch='gcn',
                                   hidden=8, layers=2, classes=classes,
                                   epochs=2, progress=False, device='cpu')
        card = json.loads(result.card.read_text())
        assert card['split']['kind'] == 'inductive'
        assert card['classes'] == [[0, 1], [2, 3, 4]][i]
        teachers.append(str(result.path))
    out = tmp_path / 'out'
    res = runner.invoke(app, [
        'amalgamate', *teachers, '--data', str(data), '--tasks', '0-1,2-4',
        '--epochs', '2', '--widths', '0.5,1', '--width', '0.5', '--out',
        str(out),
        '--no-progress', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    report = json.loads((out / 'report.json').read_text())
    assert report['setting'] == 'label-subsets'
    assert 'validation graphs' in report['selection']
    assert report['training']['graphs_per_step'] == {'ppi': 1}
    assert sorted(p.name for p in (out / 'onnx').iterdir()) == \
        ['ppi-c0-1-w0.5.onnx', 'ppi-c2-4-w0.5.onnx']
    assert 'several graphs' in (out / 'report.md').read_text()

    # Scores: micro-F1 of the saved student on the test graph's labels of
    # the task's columns, and against the teacher's thresholded logits.
    graph = load_graph(data)
    student, _ = load_slimmable(out / 'student.safetensors')
    rows = {(r['task'], r['width']): r for r in report['results']}
    with torch.no_grad():
        logits = student(graph.x, graph.edge_index, 0, 0.5)
    row = rows[('ppi-c2-4', 0.5)]
    assert row['test_accuracy'] == pytest.approx(
        micro_f1(logits[:, 2:5], graph.y[:, 2:5], graph.test_mask))
    union = {u['width']: u['test_accuracy'] for u in report['union']}
    assert union[0.5] == pytest.approx(
        micro_f1(logits, graph.y, graph.test_mask))

    # The ONNX file computes the student on the test graph.
    test = cut(graph, graph.node_graph[graph.test_mask].unique()).graph
    session = onnx_session(out / 'onnx' / 'ppi-c2-4-w0.5.onnx')
    got = session.run(None, onnx_feeds(session, test.x, test.edge_index))[0]
    with torch.no_grad():
        want = student(test.x, test.edge_index, 0, 0.5)[:, 2:5].numpy()
    assert got.shape == (40, 3) and np.abs(got - want).max() < 1e-4
    assert row['onnx_max_abs_diff'] < 1e-4


def test_batch_size_counts_whole_graphs_per_step(tmp_path):
    data = _save_list(tmp_path / 'ppi.pt')
    t = [tmp_path / 'a.pt', tmp_path / 'b.pt']
    torch.save(_teacher(2, 0).state_dict(), t[0])
    torch.save(_teacher(3, 1).state_dict(), t[1])
    report = api.amalgamate(t, data=str(data), tasks='0-1,2-4', batch_size=1,
                            epochs=2, out=tmp_path / 'o', progress=False,
                            device='cpu', export=False, latency=False)
    training = report.training
    assert set(training['graphs_per_step'].values()) == {1}
    # one step per training graph
    assert training['steps_per_epoch'] == max(
        training['training_graphs'].values())


def test_several_graphs_refuse_fanout_and_mixing(tmp_path):
    data = _save_list(tmp_path / 'ppi.pt')
    single = tmp_path / 'one.pt'
    torch.save(Data(x=torch.randn(10, 6),
                    edge_index=torch.tensor([[0, 1], [1, 0]]),
                    y=torch.arange(10) % 2,
                    train_mask=torch.arange(10) < 4,
                    val_mask=torch.arange(10) >= 8,
                    test_mask=(torch.arange(10) >= 4) &
                    (torch.arange(10) < 8)), single)
    t = [tmp_path / 'a.pt', tmp_path / 'b.pt']
    torch.save(_teacher(2, 0).state_dict(), t[0])
    torch.save(_teacher(3, 1).state_dict(), t[1])
    with pytest.raises(GnnCompressError,
                       match='on a several-graph dataset --batch-size counts '
                       'whole graphs per step: drop --fanout'):
        api.amalgamate(t, data=str(data), tasks='0-1,2-4', batch_size=8,
                       fanout='3,2', out=tmp_path / 'o1', progress=False,
                       device='cpu')
    torch.save(_teacher(5, 1).state_dict(), t[1])
    with pytest.raises(GnnCompressError, match='one kind'):
        api.amalgamate([t[1], t[0]], data=f'{data},{single}',
                       out=tmp_path / 'o2', progress=False, device='cpu')


@pytest.mark.parametrize('options', [
    ['--fanout', '3,2'],                            # without --batch-size
    ['--fanout', '3,2,1', '--batch-size', '2'],     # 3 hops, 2 layers
], ids=['no-batch-size', 'hop-count'])
def test_several_graphs_with_fanout_name_the_fanout(tmp_path, options):
    """The data are several graphs, so --fanout itself is the mistake:
    that is the error, not one about --fanout's batch size or hops (which
    came first when the mini-batch options were checked before the
    data)."""
    data = _save_list(tmp_path / 'ppi.pt')
    t = [tmp_path / 'a.pt', tmp_path / 'b.pt']
    torch.save(_teacher(2, 0).state_dict(), t[0])
    torch.save(_teacher(3, 1).state_dict(), t[1])
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'amalgamate', *map(str, t), '--data', str(data), '--tasks',
        '0-1,2-4', *options, '--out', str(out), '--no-progress',
        '--device', 'cpu'])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        'Error: --fanout samples neighbours in one large graph; on a '
        'several-graph dataset --batch-size counts whole graphs per step: '
        'drop --fanout']
    assert not out.exists()


def test_teacher_on_a_class_subset_of_single_label_graphs(tmp_path):
    # Nodes outside the subset (label -1) stay in their graphs and out of
    # the loss.
    logits = torch.randn(4, 2)
    y = torch.tensor([1, -1, 0, -1])
    assert float(supervised_loss(logits, y)) == pytest.approx(
        float(F.cross_entropy(logits[[0, 2]], y[[0, 2]])))
    assert float(supervised_loss(logits, torch.full((4,), -1))) == 0.0
    lists = synthetic_ppi(**TINY)
    single = {s: [Data(x=d.x, edge_index=d.edge_index,
                       y=d.y.argmax(-1)) for d in ds]
              for s, ds in lists.items()}
    torch.save(single, tmp_path / 'g.pt')
    sub = class_subset(load_graph(tmp_path / 'g.pt'), [0, 1])
    assert sub.node_graph is not None and bool((sub.y == -1).any())
    result = api.train_teacher(tmp_path / 'g.pt', tmp_path / 't.pt',
                               arch='gcn', hidden=8, layers=2, classes='0-1',
                               epochs=2, progress=False, device='cpu')
    assert result.spec.out_channels == 2
    assert 0 <= result.test_accuracy <= 1
