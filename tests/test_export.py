"""ONNX exports compute what PyTorch computes, and a mismatch never reaches
the output folder."""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

import gnncompress.export
from gnncompress.errors import ExportError
from gnncompress.export import Parity, check_parity, export_onnx
from gnncompress.models import ARCHS, ArchSpec, build_model

CASES = ['export graph', 'larger graph', 'isolated nodes', 'no edges']


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


@pytest.mark.parametrize('arch', ARCHS)
def test_onnx_matches_pytorch(arch, tmp_path):
    model = _student(arch)
    x, edge_index = _graph(12, 30, seed=1)
    path = tmp_path / 'student.onnx'

    parity = export_onnx(model, x, edge_index, path)

    assert sorted(parity.cases) == sorted(CASES)
    assert all(0.0 <= v <= 1e-4 for v in parity.cases.values()), parity
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

    monkeypatch.setattr(gnncompress.export, 'check_parity', bad_parity)
    x, edge_index = _graph(12, 30, seed=1)
    path = tmp_path / 'student.onnx'

    with pytest.raises(ExportError, match='does not match') as info:
        export_onnx(_student('sage'), x, edge_index, path)

    assert 'larger graph' in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either
