"""Point clouds: DGCNN's kNN and EdgeConv, spec inference, dynamic LSP on
the union of kNN graphs, per-cloud AT, metrics, augmentations, loading
(ModelNet10-PCD archive, saved Data lists), ONNX with a dynamic number of
points, and the commands end to end on tiny synthetic clouds."""
from __future__ import annotations

import copy
import functools
import json
import math
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.checkpoints.inference import infer_spec
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import DataError
from gnncompress.methods import resolve_method
from gnncompress.methods.lsp import union_edges
from gnncompress.models import ArchSpec, ModelOutput, build_model
from gnncompress.models.dgcnn import knn, knn_edge_index
from gnncompress.outputs import latency as bench
from gnncompress.tasks.cloud_training import augment, class_accuracies
from gnncompress.tasks.point_clouds import (
    ARCHIVE,
    clouds_graph,
    load_clouds,
    normalise,
    parse_pcd,
    read_pcd_archive,
)
from gnncompress.workflows.point_clouds import (
    export_clouds_onnx,
    fit_clouds,
    train_teacher,
)

SHARED = Path(__file__).resolve().parents[3] / 'shared' / 'datasets'
runner = CliRunner()


def tiny_spec(widths=(8, 8, 16), k=4) -> ArchSpec:
    return ArchSpec('dgcnn', 3, widths[-1], len(widths), 3,
                    widths=list(widths), k=k, emb_channels=16, head=[8])


@pytest.fixture
def clouds_file(tmp_path) -> Path:
    """24 clouds of 40 points, 3 classes of differently stretched blobs."""
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(24):
        c = i % 3
        pos = torch.randn(40, 3, generator=gen) * torch.tensor(
            [1.0 + c, 1.0, 0.3 + 0.5 * c])
        items.append(Data(pos=pos, y=torch.tensor([c])))
    path = tmp_path / 'clouds.pt'
    torch.save(items, path)
    return path


# kNN and EdgeConv ------------------------------------------------------------

def test_knn_by_hand_and_within_clouds():
    # One cloud on a line at 0, 1, 3, 7; a second cloud far away.
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    h = torch.stack([line, line + 100])                      # [2, 4, 1]

    idx = knn(h, 2)

    nearest = [set(row) for row in idx[0].tolist()]
    assert nearest == [{0, 1}, {1, 0}, {2, 1}, {3, 2}]
    assert torch.equal(idx[1], idx[0])  # indices within each cloud
    src, dst = knn_edge_index(idx)
    assert torch.equal(src // 4, dst // 4)  # no edge between clouds
    assert torch.equal(dst, torch.arange(8).repeat_interleave(2))


def test_edgeconv_matches_its_formula():
    torch.manual_seed(0)
    model = build_model(tiny_spec()).eval()
    conv = model.convs[1]
    h = torch.randn(2, 6, 8)
    idx = knn(h, 3)

    got = conv(h, idx)

    x_i = h.unsqueeze(2).expand(-1, -1, 3, -1)
    x_j = torch.stack([h[b][idx[b]] for b in range(2)])      # [2, 6, 3, 8]
    e = conv.lin(torch.cat([x_i, x_j - x_i], -1))
    e = torch.nn.functional.leaky_relu(conv.norm(e.reshape(-1, 8)), 0.2)
    assert torch.allclose(got, e.view(2, 6, 3, 8).amax(2), atol=1e-5)


@pytest.mark.parametrize('negative_gamma', [False, True])
def test_edgeconv_training_forward_equals_batch_norm_on_edges(
        negative_gamma):
    """The training forward (statistics from per-point sums, maximum
    before the norm) against batch norm applied to every edge: outputs,
    gradients and running statistics."""
    torch.manual_seed(0)
    conv = build_model(tiny_spec()).convs[1].train()
    with torch.no_grad():
        conv.norm.weight.uniform_(0.5, 1.5)
        conv.norm.bias.uniform_(-0.5, 0.5)
        if negative_gamma:   # channels where the minimum is taken
            conv.norm.weight[::2] *= -1
    reference, plain = copy.deepcopy(conv), copy.deepcopy(conv)
    plain.fast_training = False  # batch norm on every edge: the formula
    h = torch.randn(3, 10, 8) * 2 + 1
    idx = knn(h, 4)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    goal = torch.randn(3, 10, conv.lin.out_features)

    got = conv(h1, idx)
    e = reference.edge_features(h2, idx)
    e = F.leaky_relu(reference.norm(e.reshape(-1, e.size(-1))), 0.2)
    want = e.view(3, 10, 4, -1).amax(2)
    assert torch.allclose(plain(h, idx), want, atol=1e-6)
    ((got - goal) ** 2).sum().backward()
    ((want - goal) ** 2).sum().backward()

    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(h1.grad, h2.grad, atol=1e-4)
    for mine, theirs in zip(conv.parameters(), reference.parameters()):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-4)
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        assert torch.allclose(getattr(conv.norm, name).float(),
                              getattr(reference.norm, name).float(),
                              atol=1e-5), name


def test_dgcnn_ignores_point_order():
    torch.manual_seed(0)
    model = build_model(tiny_spec()).eval()
    pos = torch.randn(2, 12, 3)
    perm = torch.randperm(12)
    with torch.no_grad():
        assert torch.allclose(model(pos), model(pos[:, perm]), atol=1e-5)


def test_spec_inferred_from_weights_and_card(tmp_path):
    spec = tiny_spec(widths=(8, 12, 16), k=5)
    state = build_model(spec).state_dict()

    values, sources, notes = infer_spec(state)

    assert values['widths'] == [8, 12, 16] and values['emb_channels'] == 16
    assert values['head'] == [8] and values['in_channels'] == 3
    assert values['out_channels'] == 3 and sources['widths'] == 'weights'
    assert values['k'] == 20 and 'k' in notes  # not in the weights
    torch.save(state, tmp_path / 't.pt')
    (tmp_path / 't.json').write_text(json.dumps(
        {'kind': 'gnncompress.teacher-card', 'spec': {'k': 5}}))
    ckpt = load_checkpoint(tmp_path / 't.pt')
    assert ckpt.spec.k == 5 and ckpt.sources['k'] == 'card'
    assert 'k' not in ckpt.notes


# Dynamic LSP and per-cloud AT ------------------------------------------------

def test_union_edges():
    a = torch.tensor([[1, 2], [0, 0]])
    b = torch.tensor([[2, 0, 1], [0, 1, 2]])

    union = union_edges(a, b, 3)

    assert union.t().tolist() == [[1, 0], [2, 0], [0, 1], [1, 2]]


def test_dynamic_lsp_is_static_lsp_on_the_union():
    torch.manual_seed(0)
    h_t, h_s = torch.randn(6, 4), torch.randn(6, 3, requires_grad=True)
    e_t = torch.tensor([[1, 2, 0, 4], [0, 0, 3, 5]])
    e_s = torch.tensor([[2, 3, 5], [0, 1, 4]])
    lsp = resolve_method('lsp')
    teacher = ModelOutput(torch.zeros(2, 3), [h_t], [e_t])
    student = ModelOutput(torch.zeros(2, 3), [h_s], [e_s])

    dynamic = lsp.loss([teacher], student, None)

    union = union_edges(e_s, e_t, 6)
    graph = type('G', (), {'edge_index': union})()
    static = resolve_method('lsp').loss(
        [ModelOutput(torch.zeros(6, 3), [h_t])],
        ModelOutput(torch.zeros(6, 3), [h_s]), graph)
    assert torch.allclose(dynamic, static) and dynamic > 0
    dynamic.backward()
    assert h_s.grad is not None and h_s.grad.abs().sum() > 0
    # Same features and graphs on both sides: nothing to learn.
    same = ModelOutput(torch.zeros(2, 3), [h_t], [e_t])
    assert float(lsp.loss([same], same, None)) == pytest.approx(0, abs=1e-7)


def test_at_normalises_per_cloud():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    batch = torch.tensor([0, 0, 1, 1])

    att = resolve_method('at').attention_map(h, batch)

    # a = [1, 4, 9, 16]; norms sqrt(17) and sqrt(337) per cloud.
    expected = torch.tensor([1 / math.sqrt(17), 4 / math.sqrt(17),
                             9 / math.sqrt(337), 16 / math.sqrt(337)])
    assert torch.allclose(att, expected)


# Metrics and augmentations ---------------------------------------------------

def test_overall_and_mean_class_accuracy():
    logits = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    y = torch.tensor([0, 0, 0, 1])

    overall, mean_class = class_accuracies(logits, y, 3)

    assert overall == pytest.approx(0.75)
    assert mean_class == pytest.approx((2 / 3 + 1) / 2)  # class 2 absent


def test_augmentations():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(4, 64, 3)

    rotated = augment(pos, ['rotate'], gen)
    assert torch.allclose(rotated.norm(dim=-1), pos.norm(dim=-1), atol=1e-5)
    assert torch.equal(rotated[..., 2], pos[..., 2])  # about the z axis
    assert not torch.allclose(rotated, pos)
    jittered = augment(pos, ['jitter'], gen)
    assert 0 < (jittered - pos).abs().max() <= 0.05 + 1e-6
    sub = augment(pos, ['subsample'], gen)
    assert sub.size(0) == 4 and 56 <= sub.size(1) <= 64
    # Every kept point is one of its own cloud's points, in order.
    member = (sub[0].unsqueeze(1) == pos[0].unsqueeze(0)).all(-1)
    assert bool(member.any(1).all())


# Loading ---------------------------------------------------------------------

def _pcd(points: torch.Tensor, count: int | None = None) -> bytes:
    n = points.size(0) if count is None else count
    header = ('# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\n'
              f'TYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n'
              f'POINTS {n}\nDATA binary\n').encode()
    return header + struct.pack(f'<{3 * points.size(0)}f',
                                *points.view(-1).tolist())


def test_parse_pcd_and_its_errors():
    points = torch.tensor([[1.0, 2, 3], [4, 5, 6]])
    assert torch.equal(parse_pcd(_pcd(points)), points)
    with pytest.raises(DataError, match='truncated: its header promises 3'):
        parse_pcd(_pcd(points, count=3), 'a.pcd')
    with pytest.raises(DataError, match='not a binary PCD'):
        parse_pcd(b'VERSION 0.7\nDATA ascii\n1 2 3\n', 'b.pcd')


@pytest.mark.skipif(not (SHARED / ARCHIVE).is_file(),
                    reason='shared datasets not available')
def test_modelnet10_archive_first_members():
    members = list(read_pcd_archive(SHARED / ARCHIVE, limit=3))

    assert len(members) == 3
    for category, split, pos in members:
        assert category in ('bathtub', 'bed') and split in ('train', 'test')
        assert pos.shape == (1024, 3) and torch.isfinite(pos).all()
        unit = normalise(pos)
        assert unit.mean(0).abs().max() < 1e-5
        assert unit.norm(dim=1).max() == pytest.approx(1.0)


@pytest.mark.skipif(not (SHARED / 'GeometricShapes' / 'raw').is_dir(),
                    reason='shared datasets not available')
def test_geometric_shapes_through_pyg():
    graph = load_clouds('GeometricShapes', SHARED, points=16)

    assert graph.num_classes == 40 and graph.split['points'] == 16
    assert [graph.split[k] for k in ('train', 'val', 'test')] == \
        [40, 40, 40]
    pos = graph.x.view(120, 16, 3)
    # Validation resamples the training meshes: same labels, other points.
    assert torch.equal(graph.y[graph.train_mask], graph.y[graph.val_mask])
    assert not torch.equal(pos[graph.train_mask], pos[graph.val_mask])


def test_saved_clouds_split_and_points(clouds_file):
    graph = load_clouds(clouds_file, points=32, seed=1)

    assert graph.split['points'] == 32 and graph.y.numel() == 24
    assert graph.x.shape == (24 * 32, 3)
    assert int((graph.train_mask | graph.val_mask | graph.test_mask).sum()) \
        == 24
    assert not (graph.train_mask & graph.test_mask).any()
    radius = graph.x.view(24, 32, 3).norm(dim=-1).amax(1)
    assert bool((radius <= 1 + 1e-6).all())
    with pytest.raises(DataError, match="'points' must be between 1 and 40"):
        load_clouds(clouds_file, points=41)


def test_official_split_keeps_test_apart():
    clouds = [torch.randn(8, 3) for _ in range(40)]
    y = torch.arange(40) % 2
    train = torch.arange(40) < 30

    graph = clouds_graph('x', clouds, y, train, seed=0)

    assert torch.equal(graph.test_mask, ~train)
    assert int(graph.val_mask.sum()) == 4  # 10% of each class's 15
    assert not (graph.val_mask & ~train).any()


# ONNX ------------------------------------------------------------------------

def test_onnx_with_other_point_counts(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_spec()).eval()

    parity = export_clouds_onnx(model, torch.randn(2, 16, 3),
                                tmp_path / 'm.onnx')

    assert set(parity.cases) == {'export clouds', 'more points',
                                 'fewer points', 'k points'}
    assert parity.max_abs_diff < 1e-4


@pytest.mark.parametrize('name', ['kd', 'fitnet', 'at', 'lsp'])
def test_every_method_trains_a_dgcnn_student(clouds_file, name):
    graph = load_clouds(clouds_file, points=16)
    torch.manual_seed(0)
    teacher = build_model(tiny_spec(k=6)).eval()
    student = build_model(tiny_spec(widths=(4, 8), k=3))
    before = [p.detach().clone() for p in student.parameters()]
    teacher_before = [p.detach().clone() for p in teacher.parameters()]

    result = fit_clouds(student, graph, teacher=teacher,
                        method=resolve_method(name), epochs=1,
                        progress=False, batch_size=8,
                        augmentations=['subsample'])

    assert result.epochs_run == 1 and 0 <= result.test_accuracy <= 1
    assert any(not torch.equal(a, b)
               for a, b in zip(before, student.parameters()))
    assert all(torch.equal(a, b)
               for a, b in zip(teacher_before, teacher.parameters()))


def test_point_options_refused_for_gnns(tmp_path):
    result = runner.invoke(app, ['train-teacher', '--data', 'Cora',
                                 '--out', str(tmp_path / 't.pt'),
                                 '--arch', 'gcn', '--k', '5'])

    assert result.exit_code == 1
    assert '--k apply to DGCNN point-cloud models only' in \
        ' '.join(result.output.split())
    assert not (tmp_path / 't.pt').exists()


# The commands end to end -----------------------------------------------------

@pytest.fixture
def quick_latency(monkeypatch):
    monkeypatch.setattr(bench, 'measure_latency', functools.partial(
        bench.measure_latency, warmup=0, repeat=1))


def test_train_teacher_and_distill_lsp(clouds_file, tmp_path, quick_latency):
    teacher = tmp_path / 't.pt'
    result = runner.invoke(app, [
        'train-teacher', '--data', str(clouds_file), '--out', str(teacher),
        '--arch', 'dgcnn', '--hidden', '8,8,16', '--k', '6', '--emb', '16',
        '--head', '8', '--epochs', '2', '--points', '32', '--no-progress'])
    assert result.exit_code == 0, result.output
    assert json.loads(teacher.with_suffix('.json').read_text())['points'] \
        == 32

    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(teacher), '--method', 'lsp', '--layers', '3',
        '--hidden', '4,4,8', '--k', '3', '--epochs', '2', '--augment',
        'rotate,jitter', '--out', str(out), '--no-progress'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['data']['points'] == 32  # from the teacher's card
    assert report['student']['spec']['widths'] == [4, 4, 8]
    assert report['student']['spec']['k'] == 3
    assert 0 <= report['student']['mean_class_accuracy'] <= 1
    assert report['onnx_max_abs_diff'] < 1e-4
    assert 'mean class acc' in result.output
    student = load_checkpoint(out / 'student.safetensors')
    assert student.spec.k == 3 and student.spec.widths == [4, 4, 8]


def test_teacher_head_defaults_to_half_and_quarter_of_embedding(
        clouds_file, tmp_path):
    """--head defaults to emb//2, emb//4 of whatever embedding (issue 24:
    it was 512,256 for any width)."""
    train_teacher(clouds_file, tmp_path / 't.pt', hidden=[8, 8, 16], k=6,
                  epochs=1, points=32, progress=False)
    spec = load_checkpoint(tmp_path / 't.pt').spec
    assert spec.emb_channels == 64 and spec.head == [32, 16]


@pytest.mark.parametrize('args, message', [
    (['--student', 'gcn'], 'needs a DGCNN student'),
    (['--layers', '2', '--hidden', '4,4,8'], 'does not match the 3 widths'),
    (['--augment', 'spin'], "Unknown augmentation 'spin'"),
    (['--k', '50'], 'fewer than k=50'),
])
def test_distill_bad_input(clouds_file, tmp_path, args, message):
    teacher = tmp_path / 't.pt'
    torch.save(build_model(tiny_spec()).state_dict(), teacher)
    out = tmp_path / 'out'

    result = runner.invoke(app, ['distill', str(teacher), '--data',
                                 str(clouds_file), '--epochs', '1',
                                 '--out', str(out), *args])

    assert result.exit_code == 1
    assert message in ' '.join(result.output.split())
    assert not out.exists()
