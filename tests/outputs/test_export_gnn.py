"""The export-time GCN, GraphSAGE and GIN: the same function as PyG's on
every kind of graph, and exported without a scatter that races."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from gnncompress.models import ArchSpec, build_model, forward_logits
from gnncompress.models.export_gnn import CsrFeatures, ExportGNN, export_gnn
from gnncompress.models.segment import (
    BLOCK,
    csr_linear,
    neighbour_sum,
    segments,
)
from gnncompress.models.sparse_input import csr_parts
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.parity import onnx_feeds, onnx_session


def _graphs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen)
    edges = torch.randint(0, 35, (2, 150), generator=gen)  # 35-39 isolated
    loops = torch.tensor([[3, 3, 7], [3, 3, 7]])  # node 3: two self-loops
    dupes = edges[:, :20]
    return {
        'random': (x, edges),
        'self-loops and duplicates': (x, torch.cat([edges, loops, dupes], 1)),
        'no edges': (x, torch.zeros(2, 0, dtype=torch.long)),
        'only self-loops': (x, torch.arange(40).repeat(2, 1)),
    }


SPECS = [
    ArchSpec('gcn', 6, 8, 1, 3), ArchSpec('gcn', 6, 8, 2, 3),
    ArchSpec('gcn', 6, 8, 3, 3), ArchSpec('gcn', 6, 8, 2, 3, jk='cat'),
    ArchSpec('gcn', 6, 8, 2, 3, norm='batch_norm', act='elu'),
    ArchSpec('gcn', 6, 4, 2, 3),  # narrower than the input: map first
    ArchSpec('sage', 6, 8, 2, 3), ArchSpec('sage', 6, 4, 2, 3, aggr='sum'),
    ArchSpec('sage', 6, 8, 2, 3, aggr='gcn'),
    ArchSpec('gin', 6, 8, 2, 3), ArchSpec('gin', 6, 4, 2, 3),
    ArchSpec('gin', 6, 4, 2, 3, norm='batch_norm'),
]


def test_neighbour_sum_is_a_scatter_add():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(30, 5, generator=gen)
    edge_index = torch.randint(0, 25, (2, 400), generator=gen)  # 25+ empty
    expected = torch.zeros(30, 5).index_add(0, edge_index[1],
                                            h[edge_index[0]])
    got = neighbour_sum(h, segments(edge_index, 30))
    assert torch.allclose(got, expected, atol=1e-5)
    assert got[25:].abs().max() == 0


@pytest.mark.parametrize('spec', SPECS, ids=str)
def test_same_function_as_pyg(spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    form = export_gnn(model)
    assert isinstance(form, ExportGNN)
    for name, (x, edge_index) in _graphs().items():
        with torch.no_grad():
            expected = forward_logits(model, x, edge_index)
            got = form(x, edge_index)
        assert torch.allclose(got, expected, atol=1e-5), name
    # The model keeps its own layers (the GIN split shares, not moves).
    with torch.no_grad():
        x, edge_index = _graphs()['random']
        assert torch.equal(forward_logits(model, x, edge_index),
                           forward_logits(model, x, edge_index))


@pytest.mark.parametrize('spec', [
    ArchSpec('sage', 6, 8, 2, 3, aggr='max'),
    ArchSpec('gat', 6, 8, 2, 3),
    ArchSpec('mlp', 6, 8, 2, 3),
])
def test_other_models_export_as_they_are(spec):
    assert export_gnn(build_model(spec)) is None


@pytest.mark.parametrize('arch', ['gcn', 'sage', 'gin'])
def test_export_has_no_racing_scatter_and_matches_pyg(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(ArchSpec(arch, 6, 8, 2, 3)).eval()
    x, edge_index = _graphs()['random']
    path = tmp_path / 'm.onnx'
    export_onnx(model, x, edge_index, path)

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert 'ScatterND' not in ops
    # The one scatter left adds up ones into the in-degrees ([E] -> [N]).
    assert ops.count('ScatterElements') <= (2 if arch == 'gcn' else 1)
    assert 'CumSum' in ops
    session = onnx_session(path, threads=3)
    assert session.get_session_options().intra_op_num_threads == 3
    for name, (gx, gei) in _graphs().items():
        with torch.no_grad():
            expected = forward_logits(model, gx, gei).numpy()
        got = session.run(None, onnx_feeds(session, gx, gei))[0]
        assert np.abs(got - expected).max() < 1e-5, name


def test_fast_false_exports_pyg_as_is(tmp_path):
    model = build_model(ArchSpec('gcn', 6, 8, 2, 3)).eval()
    x, edge_index = _graphs()['random']
    path = tmp_path / 'gcn.onnx'
    export_onnx(model, x, edge_index, path, fast=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert 'CumSum' not in ops and 'ScatterND' not in ops


@pytest.mark.parametrize('fast', [True, False])
def test_nothing_edge_sized_at_the_input_width(fast, tmp_path):
    """SAGE on 64 input features and width 4: the export form maps the
    features before it gathers them per edge; PyG's own layers gather
    ``[E, 64]`` (what made the CS parity check take 23.5 GB)."""
    torch.manual_seed(0)
    model = build_model(ArchSpec('sage', 64, 4, 2, 3)).eval()
    x, edge_index = torch.randn(12, 64), torch.randint(0, 12, (2, 30))
    path = tmp_path / 'sage.onnx'
    export_onnx(model, x, edge_index, path, fast=fast)

    wide_per_edge = []
    for value in onnx.load(str(path)).graph.value_info:
        dims = value.type.tensor_type.shape.dim
        if any(d.dim_value == 64 for d in dims) and \
                any('num_edges' in d.dim_param for d in dims):
            wide_per_edge.append(value.name)
    assert bool(wide_per_edge) == (not fast), wide_per_edge


@pytest.mark.parametrize('num_edges', [0, 1, BLOCK - 2, BLOCK - 1, BLOCK,
                                       3 * BLOCK + 5])
def test_neighbour_sum_at_block_boundaries(num_edges):
    # The padding to whole blocks and the float64 sum over blocks: every
    # edge count around a block's size gives the exact sum.
    gen = torch.Generator().manual_seed(num_edges)
    h = torch.randn(9, 3, generator=gen, dtype=torch.float64).float()
    edge_index = torch.randint(0, 9, (2, num_edges), generator=gen)
    expected = torch.zeros(9, 3, dtype=torch.float64).index_add(
        0, edge_index[1], h.double()[edge_index[0]])
    got = neighbour_sum(h, segments(edge_index, 9))
    assert got.shape == (9, 3) and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-6)


def test_short_segments_after_a_long_one_stay_exact():
    # Node 0 takes 20,000 edges, sorted first; nodes 1-49 a few each
    # after it. One float32 running sum would reach 2e5 there and lose
    # about 4e-4 of their sums of about 40 in the subtraction; the float64
    # sum over blocks keeps them to float32 rounding of the block sums.
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(50, 4, generator=gen) + 10  # all positive: sums grow
    dst = torch.cat([torch.zeros(20_000, dtype=torch.long),
                     torch.randint(1, 50, (200,), generator=gen)])
    edge_index = torch.stack([torch.randint(0, 50, (dst.numel(),),
                                            generator=gen), dst])
    expected = torch.zeros(50, 4, dtype=torch.float64).index_add(
        0, dst, h.double()[edge_index[0]])
    got = neighbour_sum(h, segments(edge_index, 50)).double()
    relative = (got - expected).abs() / expected.abs().clamp(min=1)
    assert relative.max() < 1e-5


@pytest.mark.parametrize('binary', [True, False])
def test_csr_linear_is_the_dense_product(binary):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 70, generator=gen) < 0.05).float()
    x[7] = 0  # an empty row
    if not binary:
        x = x * torch.randn(40, 70, generator=gen)
    weight = torch.randn(5, 70, generator=gen)
    got = csr_linear(*csr_parts(x), weight)
    assert torch.allclose(got, x @ weight.t(), atol=1e-5)
    assert got[7].abs().max() == 0


@pytest.mark.parametrize('spec', [
    ArchSpec('gcn', 30, 8, 2, 3), ArchSpec('sage', 30, 8, 2, 3),
    ArchSpec('sage', 30, 4, 2, 3, aggr='sum', jk='cat'),
    ArchSpec('sage', 30, 4, 2, 3, aggr='gcn'),
    ArchSpec('gin', 30, 8, 2, 3, norm='batch_norm'),
], ids=str)
def test_csr_features_give_the_same_function(spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    form = export_gnn(model)
    assert form.takes_csr()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 30, generator=gen) * \
        (torch.rand(40, 30, generator=gen) < 0.1)
    edge_index = torch.randint(0, 40, (2, 150), generator=gen)
    with torch.no_grad():
        expected = forward_logits(model, x, edge_index)
        got = form(CsrFeatures(*csr_parts(x)), edge_index)
    assert torch.allclose(got, expected, atol=1e-5)


def test_csr_features_need_a_narrowing_first_layer():
    # 6 features into a width of 8: the first map widens, so the features
    # would have to be densified; the CSR form is refused.
    assert not export_gnn(build_model(ArchSpec('gcn', 6, 8, 2, 3))).takes_csr()
    assert not export_gnn(build_model(ArchSpec('gin', 6, 8, 2, 3))).takes_csr()


def _bag_of_words(rows: int, cols: int, per_row: int) -> torch.Tensor:
    x = torch.zeros(rows, cols)
    gen = torch.Generator().manual_seed(0)
    x[torch.arange(rows).repeat_interleave(per_row),
      torch.randint(0, cols, (rows * per_row,), generator=gen)] = 1.0
    return x


def test_sparse_features_hint_only_for_large_sparse_narrowing(monkeypatch):
    import gnncompress.outputs.onnx as export
    monkeypatch.setattr(export, 'SPARSE_HINT_ENTRIES', 100_000)
    torch.manual_seed(0)
    gcn = build_model(ArchSpec('gcn', 300, 16, 2, 3)).eval()
    sparse = _bag_of_words(400, 300, 3)  # 1% non-zero, 120,000 entries
    note = export.sparse_features_hint(gcn, sparse, 'out/student.safetensors')
    assert note is not None
    assert note.startswith('the node features are 1.0% non-zero: ')
    assert ('`gnncompress export out/student.safetensors --sparse-features '
            '--out student-csr.onnx`') in note
    # Dense features, too few entries, too narrow, or a student that cannot
    # take CSR input (an MLP; a first layer that widens): no note.
    assert export.sparse_features_hint(gcn, torch.rand(400, 300), 'f') is None
    assert export.sparse_features_hint(gcn, sparse[:300], 'f') is None
    narrow = build_model(ArchSpec('gcn', 200, 16, 2, 3)).eval()
    assert export.sparse_features_hint(
        narrow, _bag_of_words(1000, 200, 2), 'f') is None
    mlp = build_model(ArchSpec('mlp', 300, 16, 2, 3)).eval()
    assert export.sparse_features_hint(mlp, sparse, 'f') is None
    wide = build_model(ArchSpec('gcn', 300, 400, 2, 3)).eval()
    assert export.sparse_features_hint(wide, sparse, 'f') is None
