"""ONNX exports compute what PyTorch computes, and a mismatch never reaches
the output folder."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

import gnncompress.outputs.onnx
import gnncompress.outputs.parity
from gnncompress.core.errors import ExportError
from gnncompress.models import ARCHS, ArchSpec, build_model
from gnncompress.outputs.onnx import export_onnx, run_export
from gnncompress.outputs.parity import (
    CHECK_THREADS,
    STRESS_GRAPHS,
    Parity,
    check_graphs,
    check_parity,
    onnx_feeds,
    onnx_session,
    repeated_destinations,
    require_parity,
)

CASES = ['export graph', 'larger graph', 'isolated nodes', 'no edges',
         'repeated destinations']


def _spec(arch: str) -> ArchSpec:
    heads = 2 if arch in ('gat', 'gatv2') else 1
    return ArchSpec(arch=arch, in_channels=6, hidden_channels=4 * heads,
                    num_layers=2, out_channels=3, heads=heads)


def _student(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(_spec(arch)).eval()


def _graph(num_nodes: int, num_edges: int,
           seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, 6, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    return x, edge_index


# The exporter each architecture takes (export.exporter_for). An MLP fed
# as a GNN, (x, edge_index), goes through dynamo: a trace would drop its
# unused edge input; as a graph-free student (uses_graph=False, what
# distill exports) it takes TorchScript (test below).
EXPORTER = {'gcn': 'torchscript', 'sage': 'torchscript',
            'gin': 'torchscript', 'mlp': 'dynamo', 'gat': 'dynamo',
            'gatv2': 'dynamo', 'gcnii': 'dynamo'}


def test_graph_free_student_takes_torchscript(tmp_path):
    x, edge_index = _graph(12, 30, seed=1)
    model = _student('mlp')
    path = tmp_path / 'mlp.onnx'
    parity = export_onnx(model, x, edge_index, path, uses_graph=False)
    assert parity.exporter == 'torchscript'
    assert parity.max_abs_diff <= 1e-4
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ['x']
    x2 = torch.randn(29, 6)
    (got,) = session.run(None, {'x': x2.numpy()})
    with torch.no_grad():
        expected = model(x2).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_position_features_are_a_second_input(tmp_path):
    """A graph-free student reading [x, position] (NOSMOG) takes the last
    ``position_dim`` columns apart; parity feeds each check graph's
    columns split the same way."""
    x, edge_index = _graph(12, 30, seed=1)   # 4 feature + 2 position columns
    model = _student('mlp')
    path = tmp_path / 'mlp.onnx'
    parity = export_onnx(model, x, edge_index, path, uses_graph=False,
                         position_dim=2)
    assert parity.exporter == 'torchscript'
    assert set(parity.cases) == set(CASES) and parity.max_abs_diff <= 1e-4
    session = onnx_session(path)
    assert [(i.name, i.shape[1]) for i in session.get_inputs()] == \
        [('x', 4), ('position', 2)]
    x2 = torch.randn(29, 6)
    (got,) = session.run(None, onnx_feeds(session, x2, edge_index))
    (apart,) = session.run(None, {'x': x2[:, :4].numpy(),
                                  'position': x2[:, 4:].numpy()})
    with torch.no_grad():
        expected = model(x2).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got, apart)
    with pytest.raises(ExportError, match=r'takes x \[N, 4\] and position '
                                          r'\[N, 2\].*got 4 feature'):
        onnx_feeds(session, x2[:, :4], edge_index)
    with pytest.raises(ExportError, match='second input of a graph-free'):
        export_onnx(_student('gcn'), x, edge_index, tmp_path / 'gcn.onnx',
                    position_dim=2)
    assert not (tmp_path / 'gcn.onnx').exists()


@pytest.mark.parametrize('arch', ARCHS)
def test_onnx_matches_pytorch(arch, tmp_path):
    model = _student(arch)
    x, edge_index = _graph(12, 30, seed=1)
    path = tmp_path / 'student.onnx'

    parity = export_onnx(model, x, edge_index, path)

    assert sorted(parity.cases) == sorted(CASES)
    assert all(0.0 <= parity.relative(k) <= 1e-4 for k in CASES), parity
    assert not any(parity.class_mismatches.values())
    # The cheap exporter where it passes, never a silent fall-back to
    # dynamo (which costs about ten times as long).
    assert parity.exporter == EXPORTER[arch]
    # Nothing in any export scatters with ScatterND, which onnxruntime
    # runs racily on several threads; every operator is a standard one
    # (what lets the TorchScript exporter skip its custom-function pass).
    nodes = onnx.load(str(path)).graph.node
    assert 'ScatterND' not in {n.op_type for n in nodes}
    assert {n.domain for n in nodes} <= {'', 'ai.onnx'}
    assert parity.max_abs_diff == max(parity.cases.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['student.onnx']

    # Checked independently, as a user would run it: a default session on a
    # graph of a size the export never saw.
    session = ort.InferenceSession(str(path),
                                   providers=['CPUExecutionProvider'])
    x2, edge_index2 = _graph(29, 101, seed=2)
    (got,) = session.run(None, {'x': x2.numpy(),
                                'edge_index': edge_index2.numpy()})
    with torch.no_grad():
        expected = model(x2, edge_index2).numpy()
    assert got.shape == (29, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.fixture(scope='module')
def gcn_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp('onnx') / 'gcn.onnx'
    x, edge_index = _graph(12, 30, seed=1)
    export_onnx(_student('gcn', seed=0), x, edge_index, path)
    return path, x, edge_index


def test_check_parity_catches_other_weights(gcn_onnx):
    path, x, edge_index = gcn_onnx

    same = check_parity(_student('gcn', seed=0), path, x, edge_index)
    other = check_parity(_student('gcn', seed=1), path, x, edge_index)

    assert same.max_abs_diff <= 1e-4
    assert sorted(other.cases) == sorted(CASES)
    assert other.max_abs_diff > 1e-4
    # Even a graph without edges tells the weights apart (through the bias
    # and the self-loops).
    assert other.cases['no edges'] > 1e-4


@pytest.mark.parametrize('bad', [0.5, math.inf, math.nan])
def test_failed_parity_writes_nothing(bad, tmp_path, monkeypatch):
    def bad_parity(*args, **kwargs) -> Parity:
        return Parity({'export graph': 0.0, 'larger graph': bad,
                       'isolated nodes': 0.0, 'no edges': 0.0})

    monkeypatch.setattr(gnncompress.outputs.onnx, 'check_parity', bad_parity)
    x, edge_index = _graph(12, 30, seed=1)
    path = tmp_path / 'student.onnx'

    with pytest.raises(ExportError, match='does not match') as info:
        export_onnx(_student('sage'), x, edge_index, path)

    assert 'larger graph' in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either


class _ScatterNDGCN(torch.nn.Module):
    """The plain GCN as gnncompress 0.x exported it: the neighbourhood sum
    as ``index_add``, which exports as ScatterND(add)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.convs = model.convs

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        loop = (src == dst).to(x.dtype)
        zeros = x.new_zeros(x.size(0))
        degree = zeros.index_add(0, dst, torch.ones_like(loop))
        loops = zeros.index_add(0, dst, loop)
        scale = (degree - loops + 1.0).rsqrt()[:, None]
        h = x
        for i, conv in enumerate(self.convs):
            h = h @ conv.lin.weight.t() * scale
            h = (h * (1.0 - loops)[:, None]).index_add(
                0, dst, h.index_select(0, src))
            h = h * scale + conv.bias
            h = h.relu() if i < len(self.convs) - 1 else h
        return h


def test_the_check_catches_a_racing_scatter(tmp_path):
    """The ScatterND export of earlier versions loses additions when
    onnxruntime's threads add into one row at once, and the check must fail
    it. The race itself cannot be the test: whether it shows in a few runs
    depends on the machine and its load (on 2 busy cores it often does
    not), so such a test would have to skip. Its effect is reproduced
    deterministically instead: the same file with every ScatterND set to
    overwrite (reduction 'none') keeps one addition per row, the worst a
    race can do, and fails the check on the repeated-destinations graph on
    any machine. Today's export of the same model has no ScatterND and
    passes."""
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', 6, 64, 2, 3)).eval()
    x, edge_index = _graph(12, 30, seed=1)
    old = tmp_path / 'old.onnx'
    dims = {'x': {0: torch.export.Dim('n', min=2)},
            'edge_index': {1: torch.export.Dim('e')}}
    run_export(_ScatterNDGCN(model), (x, edge_index), old,
               ['x', 'edge_index'], dims)
    graph = onnx.load(str(old))
    scatters = [n for n in graph.graph.node if n.op_type == 'ScatterND']
    assert scatters and all(
        a.s == b'add' for n in scatters for a in n.attribute
        if a.name == 'reduction')
    for node in scatters:
        for attribute in node.attribute:
            if attribute.name == 'reduction':
                attribute.s = b'none'
    lossy = tmp_path / 'lossy.onnx'
    onnx.save(graph, str(lossy))

    parity = check_parity(model, lossy, x, edge_index)
    assert parity.relative('repeated destinations') > 1e-4
    with pytest.raises(ExportError, match='repeated destinations'):
        require_parity(parity, 1e-4)
    new = tmp_path / 'new.onnx'
    assert export_onnx(model, x, edge_index, new).relative(
        'repeated destinations') <= 1e-4
    ops = {n.op_type for n in onnx.load(str(new)).graph.node}
    assert 'ScatterND' not in ops


def test_parity_runs_default_and_eight_thread_sessions(gcn_onnx,
                                                        monkeypatch):
    """Every check graph runs under onnxruntime's defaults; the stress
    graphs run again on CHECK_THREADS sleeping threads."""
    path, x, edge_index = gcn_onnx
    asked, fed = [], []
    real = gnncompress.outputs.parity.onnx_session

    class Spy:
        def __init__(self, session, threads):
            self.session, self.threads = session, threads

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, names, feeds):
            fed.append((self.threads, feeds['x'].shape[0]))
            return self.session.run(names, feeds)

    def spy(path, threads=None, spinning=True):
        asked.append((threads, spinning))
        return Spy(real(path, threads, spinning), threads)

    monkeypatch.setattr(gnncompress.outputs.parity, 'onnx_session', spy)
    parity = check_parity(_student('gcn', seed=0), path, x, edge_index)

    assert asked == [(None, True), (CHECK_THREADS, False)]
    assert CHECK_THREADS == 8
    assert sorted(parity.cases) == sorted(CASES)
    sizes = {name: g[0].size(0) for name, g in check_graphs(
        x, edge_index).items()}
    assert fed == [(None, sizes[n]) for n in sizes] + \
        [(8, sizes[n]) for n in STRESS_GRAPHS]
    assert set(STRESS_GRAPHS) < set(sizes)
    # A default session leaves the thread count to onnxruntime (0), and
    # the stress session's threads sleep when idle.
    assert real(path).get_session_options().intra_op_num_threads == 0
    options = real(path, CHECK_THREADS, False).get_session_options()
    assert options.intra_op_num_threads == 8
    assert options.get_session_config_entry(
        'session.intra_op.allow_spinning') == '0'


def test_the_larger_graph_keeps_the_export_graphs_rows():
    x = torch.randn(30, 4)
    edges = torch.randint(0, 30, (2, 50))
    big_x, big_edges = check_graphs(x, edges)['larger graph']
    assert big_x.shape == (67, 4) and torch.equal(big_x[:30], x)
    assert big_edges.shape == (2, 111) and int(big_edges.max()) < 67
    # Sparse-feature checks thin the new rows only.
    sparse = check_graphs(x, edges, density=0.05)['larger graph'][0]
    assert torch.equal(sparse[:30], x)
    assert 0 < float((sparse[30:] != 0).float().mean()) < 0.2


def test_repeated_destinations_graph():
    x, edge_index = repeated_destinations(5)
    degree = torch.bincount(edge_index[1], minlength=2_000)
    assert x.shape == (2_000, 5) and edge_index.size(1) >= 200_000
    assert int((degree > 1_000).sum()) >= 10
    assert int(degree.max()) > 20_000


def test_tolerance_is_relative_to_the_output_and_classes_must_agree():
    # MUTAG's GIN with sum readout: logits near 50, a float32 rounding
    # difference of 2.4e-4 is 5e-6 of the output.
    require_parity(Parity({'g': 2.44e-4}, scales={'g': 50.0}), 1e-4)
    with pytest.raises(ExportError, match='g: 2.44e-04'):
        require_parity(Parity({'g': 2.44e-4}, scales={'g': 1.0}), 1e-4)
    with pytest.raises(ExportError, match='3 predicted classes differ'):
        require_parity(Parity({'g': 0.0}, class_mismatches={'g': 3}), 1e-4)


def test_export_is_silent(tmp_path, capfd):
    """A graph classifier's export (its pooling reads a data-dependent
    graph count) prints nothing: no torch.export program, no warnings."""
    torch.manual_seed(0)
    model = build_model(ArchSpec('gin', 6, 8, 2, 3, readout='sum',
                                 norm='batch_norm')).eval()
    x, edge_index = _graph(12, 30, seed=1)
    batch = torch.tensor([0] * 6 + [1] * 6)
    capfd.readouterr()

    export_onnx(model, x, edge_index, tmp_path / 'g.onnx', batch=batch)

    out, err = capfd.readouterr()
    assert out == '' and err == '', (out + err)[:500]


def _sparse(num_nodes: int, num_features: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(num_nodes, num_features, generator=gen) < 0.1).float()


def test_sparse_feature_export_takes_csr_and_matches(tmp_path):
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', 40, 8, 2, 3)).eval()
    x = _sparse(30, 40, seed=0)
    edge_index = torch.randint(0, 30, (2, 90))
    path = tmp_path / 'csr.onnx'
    parity = export_onnx(model, x, edge_index, path, sparse_features=True)
    assert sorted(parity.cases) == sorted(CASES)
    assert max(parity.relative_cases().values()) <= 1e-4

    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == [
        'x_indptr', 'x_indices', 'x_values', 'edge_index']
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # The first layer gathers weight rows at the non-zeros: no product
    # with the 40 input columns; an If skips the values when all are 1.
    assert 'If' in ops and 'MatMul' in ops  # the second layer's map
    gen = torch.Generator().manual_seed(1)
    for gx in (_sparse(50, 40, seed=2),
               _sparse(50, 40, seed=2) * torch.randn(50, 40, generator=gen)):
        gei = torch.randint(0, 50, (2, 200), generator=gen)
        with torch.no_grad():
            expected = model(gx, gei).numpy()
        got = session.run(None, onnx_feeds(session, gx, gei))[0]
        assert np.abs(got - expected).max() < 1e-5


def test_sparse_features_refused_where_the_first_layer_widens(tmp_path):
    model = build_model(ArchSpec('gcn', 6, 8, 2, 3))  # 6 into 8 wide
    x, edge_index = _graph(12, 30, seed=0)
    with pytest.raises(ExportError, match='export without --sparse-features'):
        export_onnx(model, x, edge_index, tmp_path / 'm.onnx',
                    sparse_features=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_sparse_features(tmp_path):
    from typer.testing import CliRunner

    from gnncompress.checkpoints.students import save_safetensors
    from gnncompress.cli import app

    runner = CliRunner()
    torch.manual_seed(0)
    spec = ArchSpec('sage', 300, 8, 2, 3)
    ckpt = save_safetensors(build_model(spec), spec, tmp_path / 's.st')
    out = tmp_path / 's.onnx'
    result = runner.invoke(app, ['export', str(ckpt), '--out', str(out),
                                 '--sparse-features'])
    assert result.exit_code == 0, result.output
    assert 'checked on 5 graphs' in result.output
    names = [i.name for i in onnx_session(out).get_inputs()]
    assert names == ['x_indptr', 'x_indices', 'x_values', 'edge_index']
    bad = runner.invoke(app, ['export', str(ckpt), '--out', str(out),
                              '--sparse-features', '--quantize', 'int8'])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        'Error: --quantize int8 does not support --sparse-features; drop '
        'one of them']


def test_other_models_take_the_dynamo_exporter(tmp_path):
    """PyG's own layers (``fast=False``), graph classifiers and
    sparse-feature files go through dynamo (export.exporter_for)."""
    x, edge_index = _graph(12, 30, seed=1)
    plain = export_onnx(_student('gcn'), x, edge_index,
                        tmp_path / 'plain.onnx', fast=False)
    torch.manual_seed(0)
    graphs = build_model(ArchSpec('gin', 6, 8, 2, 3, readout='sum')).eval()
    pooled = export_onnx(graphs, x, edge_index, tmp_path / 'graphs.onnx',
                         batch=torch.tensor([0] * 6 + [1] * 6))
    assert plain.exporter == pooled.exporter == 'dynamo'


@pytest.mark.parametrize('failure', ['export', 'parity'])
def test_a_torchscript_failure_falls_back_to_dynamo(failure, tmp_path,
                                                    monkeypatch):
    """A TorchScript file that does not export or does not pass the check
    is exported again through dynamo, and the parity says which file was
    kept."""
    used = []
    real_export = gnncompress.outputs.onnx.run_export
    real_check = gnncompress.outputs.parity.check_parity

    def run_export_spy(*args, exporter='dynamo'):
        used.append(exporter)
        if exporter == 'torchscript' and failure == 'export':
            raise ExportError('ONNX export failed: traced')
        real_export(*args, exporter=exporter)

    def check_spy(*args):
        parity = real_check(*args)
        if used[-1] == 'torchscript' and failure == 'parity':
            parity.cases['larger graph'] = 1.0
        return parity

    monkeypatch.setattr(gnncompress.outputs.onnx, 'run_export', run_export_spy)
    monkeypatch.setattr(gnncompress.outputs.onnx, 'check_parity', check_spy)
    x, edge_index = _graph(12, 30, seed=1)
    path = tmp_path / 'gcn.onnx'

    parity = export_onnx(_student('gcn'), x, edge_index, path)

    assert used == ['torchscript', 'dynamo']
    assert parity.exporter == 'dynamo' and parity.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ['gcn.onnx']


def test_torchscript_export_does_not_import_onnx(tmp_path):
    """The quick start's export and check need neither the onnx package
    nor onnxscript (about 1 s of imports before the export)."""
    import subprocess
    import sys

    script = f"""
import sys
import torch
from pathlib import Path
from gnncompress.outputs.onnx import export_onnx
from gnncompress.models import ArchSpec, build_model
model = build_model(ArchSpec('gcn', 6, 8, 2, 3)).eval()
parity = export_onnx(model, torch.randn(12, 6), torch.randint(0, 12, (2, 30)),
                     Path({str(tmp_path / 'm.onnx')!r}))
print(parity.exporter, sorted(m for m in ('onnx', 'onnxscript', 'onnx_ir')
                              if m in sys.modules))
"""
    done = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == 'torchscript []'


def test_the_larger_check_graph_is_capped_by_feature_entries(monkeypatch):
    from gnncompress.outputs import parity
    # Cora: twice the nodes plus 7, as before the cap.
    assert parity.larger_by(2708, 1433) == 2715
    # Physics: 8,415 dense features; 2^22 entries is 498 more nodes.
    assert parity.larger_by(34493, 8415) == 498
    assert parity.larger_by(10, 10**7) == 7  # always larger
    monkeypatch.setattr(parity, 'LARGER_EXTRA_ENTRIES', 1000)
    x = torch.randn(100, 50)
    edges = torch.randint(0, 100, (2, 300))
    big_x, big_edges = parity.check_graphs(x, edges)['larger graph']
    assert big_x.shape == (120, 50) and big_edges.shape == (2, 611)
    assert int(big_edges.max()) < 120


@pytest.mark.parametrize('then', ['raises', 'succeeds'])
def test_an_interrupt_inside_the_exporter_is_not_lost(tmp_path, monkeypatch,
                                                      then):
    # torch's capture turned a Ctrl-C or SIGTERM landing inside it into a
    # TypeError (which became an export error), or caught it and exported
    # by another strategy (and the run went on to exit 0).
    from gnncompress.core import interrupts

    monkeypatch.setattr(interrupts, '_requested', False)

    def export(*args, **kwargs):
        interrupts.request()  # as the CLI's signal handlers do
        if then == 'raises':
            raise TypeError('failed to unpack the object (KeyboardInterrupt)')

    monkeypatch.setattr(torch.onnx, 'export', export)
    with pytest.raises(KeyboardInterrupt):
        run_export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),),
                   tmp_path / 'm.onnx', ['x'], {'x': {}})
