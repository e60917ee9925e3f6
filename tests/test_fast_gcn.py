"""The export-time GCN: the same function as PyG's GCN on every kind of
graph, chosen only for plain GCNs, and exported without ScatterElements."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from gnncompress.export import export_onnx, onnx_feeds, onnx_session
from gnncompress.models import ArchSpec, build_model, forward_logits
from gnncompress.models.fast_gcn import FastGCN, fast_gcn


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


@pytest.mark.parametrize('layers', [1, 2, 3])
def test_same_function_as_pyg(layers):
    torch.manual_seed(layers)
    model = build_model(ArchSpec('gcn', 6, 8, layers, 3)).eval()
    fast = fast_gcn(model)
    assert isinstance(fast, FastGCN)
    for name, (x, edge_index) in _graphs().items():
        with torch.no_grad():
            expected = forward_logits(model, x, edge_index)
            got = fast(x, edge_index)
        assert torch.allclose(got, expected, atol=1e-5), name


@pytest.mark.parametrize('spec', [
    ArchSpec('gcn', 6, 8, 2, 3, jk='cat'),
    ArchSpec('gcn', 6, 8, 2, 3, norm='batch_norm'),
    ArchSpec('gcn', 6, 8, 2, 3, act='elu'),
    ArchSpec('sage', 6, 8, 2, 3),
    ArchSpec('mlp', 6, 8, 2, 3),
])
def test_only_plain_gcns_take_the_fast_form(spec):
    assert fast_gcn(build_model(spec)) is None


def test_export_gathers_rows_and_matches_pyg(tmp_path):
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', 6, 8, 2, 3)).eval()
    x, edge_index = _graphs()['random']
    path = tmp_path / 'gcn.onnx'
    export_onnx(model, x, edge_index, path)

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert 'ScatterElements' not in ops and 'GatherND' not in ops
    assert {'ScatterND', 'Gather'} <= ops
    session = onnx_session(path, threads=2)
    # ScatterND races with more threads: the session runs on one.
    assert session.get_session_options().intra_op_num_threads == 1
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
    assert 'ScatterND' not in ops
