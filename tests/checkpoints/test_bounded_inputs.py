"""Bounded time and memory on small hostile files (docs/robustness.md,
"Bounded time and memory"): layer counts, declared sizes, bench budgets."""
from __future__ import annotations

import io
import time
import zipfile

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import gnncompress.checkpoints.reading
import gnncompress.checkpoints.teachers
from gnncompress import api
from gnncompress.checkpoints.reading import read_weights, set_max_checkpoint_gb
from gnncompress.cli import app
from gnncompress.core.defaults import DEFAULT_MAX_CHECKPOINT_GB
from gnncompress.core.errors import (
    ArchitectureError,
    CheckpointError,
    GnnCompressError,
)


def _deep_gcn(path, layers: int):
    state = {}
    for i in range(layers):
        state[f'convs.{i}.lin.weight'] = torch.ones(1, 1)
        state[f'convs.{i}.bias'] = torch.zeros(1)
    save_file(state, str(path))
    return path


@pytest.fixture
def builds(monkeypatch):
    """The models loading builds, by layer count; building more than
    1,000 layers fails the test at once (it would take minutes)."""
    built = []
    real = gnncompress.checkpoints.teachers.build_model

    def counting(spec):
        assert spec.num_layers <= 1000, 'a 10^4-layer model was built'
        built.append(spec.num_layers)
        return real(spec)

    monkeypatch.setattr(gnncompress.checkpoints.teachers, 'build_model',
                        counting)
    return built


def test_absurd_layer_count_is_refused_before_building(tmp_path, builds):
    path = _deep_gcn(tmp_path / 'deep.safetensors', 10_000)
    with pytest.raises(ArchitectureError,
                       match='declares 10,000 layers, more than the 1,000'):
        api.inspect(path)
    assert builds == []


def test_inspect_builds_the_model_once(tmp_path, builds):
    # The per-layer cost of inspect is constructing PyG layers (~2 ms
    # each): it used to happen three times (size check, fit check, count).
    path = _deep_gcn(tmp_path / 'deep.safetensors', 40)
    result = api.inspect(path)
    assert result.spec.num_layers == 40 and result.parameters == 80
    assert builds == [40]


# Declared sizes against the file and --max-checkpoint-gb ----------------------

def _torch_zip(entries: dict[str, bytes], deflate: set[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        for name, data in entries.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED
                             if name in deflate else zipfile.ZIP_STORED)
    return buffer.getvalue()


def _entries(state) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    # A 50 KB deflated entry declaring 50 MB (the reported one: 2.4 MB
    # declaring 2.38 GB). torch would inflate all of it, then say the
    # record size does not match.
    entries = _entries({'convs.0.lin.weight': torch.ones(2, 2)})
    data = next(k for k in entries if k.endswith('/data/0'))
    entries[data] = bytes(50_000_000)
    path = tmp_path / 'bomb.pt'
    path.write_bytes(_torch_zip(entries, {data}))
    assert path.stat().st_size < 100_000
    import torch.serialization as ts
    monkeypatch.setattr(ts.torch._C, 'PyTorchFileReader', _no_reading)
    with pytest.raises(CheckpointError, match=r'entry .* of \d[\d,]* '
                       r'compressed bytes that declares 50,000,000 once '
                       r'unpacked'):
        read_weights(path)


def _no_reading(*args, **kwargs):
    raise AssertionError('the archive was read')


def test_declared_total_over_the_limit_is_refused(tmp_path, monkeypatch):
    entries = _entries({'convs.0.lin.weight': torch.ones(2, 2)})
    data = next(k for k in entries if k.endswith('/data/0'))
    entries[data] = bytes(3_000_000)  # stored: the file holds it
    path = tmp_path / 'large.pt'
    path.write_bytes(_torch_zip(entries, set()))
    set_max_checkpoint_gb(0.002)
    try:
        with pytest.raises(CheckpointError, match=r'large.pt is 0.003 GB, '
                           r'over the limit of 0.002 GB .*--max-checkpoint-gb'):
            read_weights(path)
        # A zip whose central directory declares more than the file holds.
        path.write_bytes(_torch_zip(entries, {data}))
        with pytest.raises(CheckpointError, match=r'declares, once unpacked, '
                           r'0.003 GB, over the limit of 0.002 GB'):
            read_weights(path)
    finally:
        set_max_checkpoint_gb(DEFAULT_MAX_CHECKPOINT_GB)


def test_max_checkpoint_gb_on_the_command_line(tmp_path):
    path = _deep_gcn(tmp_path / 'gcn.safetensors', 2)
    runner = CliRunner()
    small = runner.invoke(app, ['inspect', str(path),
                                '--max-checkpoint-gb', '1e-7'])
    assert small.exit_code == 1
    assert small.output.count('\n') == 1
    assert 'over the limit of 1e-07 GB for checkpoints' in small.output
    assert runner.invoke(app, ['inspect', str(path)]).exit_code == 0
    bad = runner.invoke(app, ['inspect', str(path),
                              '--max-checkpoint-gb', 'nan'])
    assert bad.exit_code == 1 and 'must be a positive number' in bad.output


def test_finiteness_check_is_chunked(monkeypatch):
    import gnncompress.core.finite as finite
    monkeypatch.setattr(finite, 'FINITE_CHUNK', 7)
    value = torch.zeros(10, 5)
    assert finite.all_finite(value)
    value[9, 4] = float('inf')
    assert not finite.all_finite(value)
    value[9, 4] = float('nan')
    assert not finite.all_finite(value)
    # Large finite values whose float32 sum overflows: the fast sum is not
    # finite, and the exact blockwise check still says finite.
    big = torch.full((10, 5), 3e38)
    assert not bool(torch.isfinite(big.sum()))
    assert finite.all_finite(big)
    big[0, 0] = float('-inf')
    assert not finite.all_finite(big)
    # +inf and -inf together sum to NaN: still caught.
    both = torch.zeros(20)
    both[3], both[17] = float('inf'), float('-inf')
    assert not finite.all_finite(both)
    assert finite.all_finite(torch.arange(5))  # integers are finite
    assert finite.all_finite(torch.zeros(0))


# bench: a time budget per row -------------------------------------------------

def _loop_onnx(path, trips: int):
    """A valid ONNX model whose Loop runs ``trips`` times (x -> relu(x))."""
    import onnx
    from onnx import TensorProto, helper

    def value(name, kind, shape):
        return helper.make_tensor_value_info(name, kind, shape)

    body = helper.make_graph(
        [helper.make_node('Identity', ['cond_in'], ['cond_out']),
         helper.make_node('Relu', ['v_in'], ['v_out'])], 'body',
        [value('i', TensorProto.INT64, []),
         value('cond_in', TensorProto.BOOL, []),
         value('v_in', TensorProto.FLOAT, None)],
        [value('cond_out', TensorProto.BOOL, []),
         value('v_out', TensorProto.FLOAT, None)])
    constant = helper.make_tensor
    nodes = [
        helper.make_node('Constant', [], ['trips'], value=constant(
            'trips', TensorProto.INT64, [], [trips])),
        helper.make_node('Constant', [], ['go'], value=constant(
            'go', TensorProto.BOOL, [], [True])),
        helper.make_node('Loop', ['trips', 'go', 'x'], ['logits'],
                         body=body)]
    graph = helper.make_graph(
        nodes, 'loop', [value('x', TensorProto.FLOAT, ['N', 4]),
                        value('edge_index', TensorProto.INT64, [2, 'E'])],
        [value('logits', TensorProto.FLOAT, ['N', 4])])
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid('', 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_endless_onnx_loop_is_stopped_and_reported(tmp_path):
    endless = _loop_onnx(tmp_path / 'endless.onnx', 10 ** 12)
    quick = _loop_onnx(tmp_path / 'quick.onnx', 1)
    result = api.bench([endless, quick], graph_size='50:100:4',
                       runtimes=['onnxruntime'], threads=[1], warmup=0,
                       repeat=2, out=None, row_budget_s=1.0)
    rows = {row.model: row for row in result.rows}
    assert rows['endless.onnx'].latency is None
    assert rows['endless.onnx'].error == \
        'stopped: over its time budget of 1 s (--row-budget-s)'
    assert rows['quick.onnx'].error is None
    assert rows['quick.onnx'].latency.runs == 2


class _Slow(torch.nn.Module):
    def forward(self, x, edge_index):
        time.sleep(0.05)
        return x


def test_torch_row_is_checked_between_calls(tmp_path):
    from gnncompress.workflows.bench_rows import run_bench, synthetic_graph
    from gnncompress.workflows.bench_table import BenchModel

    entry = BenchModel('slow', tmp_path / 'slow.pt',
                                  model=_Slow())
    graph = synthetic_graph(20, 40, 4, seed=0)
    row = run_bench([entry], graph, runtimes=['eager'],
                               threads=[1], warmup=3, repeat=100,
                               row_budget_s=0.3)[0]
    assert row.latency is None
    assert row.error == \
        'stopped: over its time budget of 0.3 s (--row-budget-s)'


def test_row_budget_must_be_positive(tmp_path):
    quick = _loop_onnx(tmp_path / 'quick.onnx', 1)
    with pytest.raises(GnnCompressError, match='--row-budget-s must be a '
                                               'positive number'):
        api.bench([quick], graph_size='50:100:4', out=None,
                  row_budget_s=float('nan'))


def test_names_alone_refuse_absurd_files(tmp_path, monkeypatch):
    # Reading and checking each tensor costs time: 20,000 tensors of a
    # 10,000-layer file are refused from their names, before any is read.
    path = _deep_gcn(tmp_path / 'deep.safetensors', 10_000)
    monkeypatch.setattr(gnncompress.checkpoints.reading, 'check_tensors',
                        _no_reading)
    with pytest.raises(ArchitectureError, match='declares 10,000 layers'):
        read_weights(path)
    with pytest.raises(CheckpointError, match='holds 60,000 tensors, more '
                                              'than the 50,000'):
        gnncompress.checkpoints.reading.check_names(
            [f'lins.{i}.weight' for i in range(60_000)], path)
