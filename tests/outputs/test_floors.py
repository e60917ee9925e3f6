"""GPU floors (gnncompress.outputs.floors): the figures against hand
computation, their place in the report and in bench's table, and on a GPU
the report's figure as a replayed CUDA graph."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TEST_DEVICE
from torch import nn

from gnncompress.models import forward_inputs
from gnncompress.outputs import floors
from gnncompress.outputs.latency import Latency, torch_figures
from gnncompress.outputs.report import _latency_cells
from gnncompress.workflows.bench_table import BenchRow, floors_section


def test_peak_bandwidth_of_an_h100_is_its_data_sheets():
    # An H100 SXM reports a 2,619 MHz memory clock and a 5,120-bit bus:
    # 2 x 2.619e9 x 640 bytes = 3.352 TB/s (data sheet: 3.35 TB/s).
    props = SimpleNamespace(memory_clock_rate=2_619_000,
                            memory_bus_width=5120)
    assert floors.peak_bandwidth(props) == pytest.approx(3.35232e12,
                                                         rel=1e-12)


@pytest.mark.parametrize('props', [
    SimpleNamespace(memory_clock_rate=0, memory_bus_width=5120),
    SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=0),
    SimpleNamespace()])
def test_peak_bandwidth_is_unknown_without_its_properties(props):
    assert floors.peak_bandwidth(props) is None
    assert floors.memory_floor_ms(1000, floors.peak_bandwidth(props)) is None


def test_bytes_moved_counts_parameters_inputs_and_output_once():
    model = nn.Linear(3, 2)  # 6 weights + 2 biases: 32 bytes
    model.register_buffer('scale', torch.ones(5))  # 20 bytes
    x = torch.zeros(4, 3)  # 48 bytes
    edge_index = torch.zeros(2, 5, dtype=torch.long)  # 80 bytes
    out = torch.zeros(4, 2)  # 32 bytes
    assert floors.bytes_moved(model, (x, edge_index, None), out) == \
        32 + 20 + 48 + 80 + 32


def test_memory_floor_is_bytes_over_bandwidth():
    # 20 MB at 4 TB/s: 5 microseconds.
    assert floors.memory_floor_ms(20_000_000, 4e12) == pytest.approx(0.005)


def test_floors_text():
    full = floors.Floors(memory_ms=0.3512, launch_ms=0.0123, bytes=1,
                         bandwidth_gb_s=3352.0, kernels=14).to_dict()
    assert floors.floors_text(full) == 'floors: memory 0.351, launch 0.012 ms'
    assert floors.floors_text({**full, 'launch_ms': None}) == \
        'floors: memory 0.351 ms'
    assert floors.floors_text(None) == ''
    assert floors.floors_text({**full, 'launch_ms': None,
                               'memory_ms': None}) == ''


def test_the_reports_latency_cell_names_the_floors():
    gpu = Latency(1.5, 1.7, 1.55, 20, 'cuda-graph', 'cuda', None,
                  floors={'memory_ms': 0.35, 'launch_ms': 0.02}).to_dict()
    cpu = Latency(9.0, 9.5, 9.1, 20, 'pytorch', 'cpu', 2).to_dict()
    labels = {'pytorch-cuda': 'cuda-graph cuda',
              'pytorch-cpu': 'pytorch cpu x2'}
    cells = _latency_cells({'pytorch-cuda': gpu, 'pytorch-cpu': cpu},
                           ['pytorch-cuda', 'pytorch-cpu'], labels)
    assert cells == ['1.50 / 1.70 (floors: memory 0.350, launch 0.020 ms)',
                     '9.00 / 9.50']


def test_bench_lists_the_floors_of_its_gpu_rows_only():
    gpu = BenchRow('student.pt', 'cuda-graph', 'cuda', None, latency=Latency(
        0.42, 0.5, 0.45, 20, floors=floors.Floors(
            memory_ms=0.349, launch_ms=0.011, bytes=1_169_870_000,
            bandwidth_gb_s=3352.3, kernels=12).to_dict()))
    cpu = BenchRow('student.pt', 'eager', 'cpu', 2,
                   latency=Latency(30.0, 31.0, 30.5, 20))
    lines = floors_section([cpu, gpu])
    assert lines[-1] == ('| student.pt | cuda-graph | 0.420 | 0.349 | '
                         '1169.9 | 3352 | 0.011 | 12 |')
    assert sum(line.startswith('| student.pt') for line in lines) == 1
    assert floors_section([cpu]) == []


def test_cpu_figures_have_no_floors():
    model = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    figures = torch_figures(_Graphless(model), x, torch.zeros(
        2, 0, dtype=torch.long))
    assert list(figures) == ['pytorch-cpu']
    assert figures['pytorch-cpu']['runtime'] == 'pytorch'
    assert figures['pytorch-cpu']['floors'] is None
    assert figures['pytorch-cpu']['note'] is None


class _Graphless(nn.Module):
    def __init__(self, lin: nn.Module) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, x, edge_index=None):
        return self.lin(x)


def test_the_floors_count_only_what_the_forward_reads():
    # A graph-free MLP never reads edge_index: counting it would put its
    # memory floor above what it can reach on a graph with many edges.
    from torch_geometric.nn import GCN, MLP

    x = torch.zeros(6, 4)
    edge_index = torch.zeros(2, 50, dtype=torch.long)
    mlp, gcn = MLP([4, 8, 3]), GCN(4, 8, 2, out_channels=3)
    assert forward_inputs(mlp, x, edge_index) == (x,)
    assert forward_inputs(gcn, x, edge_index) == (x, edge_index)


@pytest.mark.cuda
@pytest.mark.skipif(TEST_DEVICE != 'cuda', reason='needs the GPU '
                    '(GNNCOMPRESS_TEST_DEVICE=cuda: benchmarks/gpu_check.py)')
def test_the_reports_gpu_figures_and_floors(device):
    from torch_geometric.nn import GCN

    from gnncompress.outputs.cuda_graph import replayed

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=gen).cuda()
    edge_index = torch.randint(0, 300, (2, 1200), generator=gen).cuda()
    model = GCN(16, 8, 2, out_channels=4).cuda().eval()
    figures = torch_figures(model, x, edge_index)
    # The eager figure, comparable with any model's, and the replay (a
    # GCN's normalisation is cached for the capture), which carries the
    # floors.
    assert figures['pytorch-cuda']['runtime'] == 'pytorch'
    assert figures['pytorch-cuda']['floors'] is None
    replay_figure = figures['cuda-graph-cuda']
    assert replay_figure['runtime'] == 'cuda-graph'
    assert replay_figure['note'] is None
    f = replay_figure['floors']
    assert f['bytes'] > x.numel() * 4 + edge_index.numel() * 8
    assert f['memory_ms'] > 0 and f['bandwidth_gb_s'] > 100
    assert f['kernels'] and f['launch_ms'] > 0
    with torch.no_grad():
        replay, why = replayed(lambda: model(x, edge_index), x.device, model)
        assert why is None
        np.testing.assert_allclose(replay().cpu().numpy(),
                                   model(x, edge_index).cpu().numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_fixed_graph_caches_gcn_normalisation_for_the_block_only(
        monkeypatch):
    # The capture of a GCN needs its normalisation (a self-loop mask the
    # CPU must size) out of the captured forward: inside fixed_graph it
    # runs once, and the outputs are the eager forward's.
    from torch_geometric.nn import GCN, SGConv
    from torch_geometric.nn.conv import gcn_conv

    from gnncompress.outputs.cuda_graph import (
        fixed_graph,
        graph_caching_layers,
    )

    calls = []
    original = gcn_conv.gcn_norm
    monkeypatch.setattr(gcn_conv, 'gcn_norm', lambda *a, **k: (
        calls.append(1), original(*a, **k))[1])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=gen)
    edge_index = torch.randint(0, 30, (2, 90), generator=gen)
    model = GCN(5, 8, 2, out_channels=3).eval()
    with torch.no_grad():
        eager = model(x, edge_index)
        calls.clear()
        with fixed_graph(model) as kept:
            first, second = model(x, edge_index), model(x, edge_index)
        assert len(calls) == 2  # once per layer, not once per forward
        assert torch.equal(first, eager) and torch.equal(second, eager)
        assert len(kept) == 2  # each layer's cache, held for a replay
        assert all(not m.cached and m._cached_edge_index is None
                   for m in graph_caching_layers(model))
        calls.clear()
        model(x, edge_index)
        assert len(calls) == 2  # as before the block
    sg = SGConv(5, 3, cached=False)
    assert graph_caching_layers(sg) == []  # its cache holds features
    with fixed_graph(None) as kept:
        assert kept == []


def test_a_forward_not_captured_says_why_once_per_model():
    from gnncompress.outputs.report import latency_notes

    why = 'not capturable as a CUDA graph (RuntimeError: sync)'
    teacher = SimpleNamespace(role='teacher', latency={
        'pytorch-cuda': {'note': why}, 'onnxruntime-cpu': {'note': None}})
    student = SimpleNamespace(role='student', latency={
        'pytorch-cuda': {'note': None}, 'cuda-graph-cuda': {'note': None}})
    assert latency_notes([teacher, student]) == [f'teacher: {why}']
    assert latency_notes([student]) == []
