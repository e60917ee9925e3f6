"""A trained nn.Module as the teacher of the Python API: the module itself
is the teacher (its ELU included), hidden features come from hooks."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLES
from layouts import ExampleGAT

import gnncompress.api
from gnncompress.checkpoint import module_checkpoint
from gnncompress.data import load_graph
from gnncompress.engine import forward_frozen
from gnncompress.errors import GnnCompressError


@pytest.fixture(scope='module')
def cora():
    return load_graph('Cora', SAMPLES, seed=0)


def test_module_teacher_is_the_module_itself(cora):
    torch.manual_seed(0)
    module = ExampleGAT(cora.num_features, cora.num_classes).eval()
    ckpt = module_checkpoint(module)
    # Sized from its weights: 8 heads of 8 at the hidden layer.
    assert (ckpt.spec.in_channels, ckpt.spec.out_channels) == \
        (cora.num_features, cora.num_classes)
    out = forward_frozen(ckpt.build(), cora)
    with torch.no_grad():  # ELU, not the ReLU a rebuilt spec assumes
        assert torch.allclose(out.logits, module(cora.x, cora.edge_index),
                              atol=1e-6)
    assert [h.shape[1] for h in out.hiddens] == [64]


def test_distill_from_module_with_hidden_method(cora, tmp_path):
    torch.manual_seed(0)
    module = ExampleGAT(cora.num_features, cora.num_classes).eval()
    out = tmp_path / 'run'
    report = gnncompress.api.distill(
        module, data='Cora', data_root=SAMPLES, method='fitnet', epochs=2,
        hidden=8, out=out, progress=False, export=False)
    saved = json.loads((out / 'report.json').read_text())
    assert saved['teacher']['file_bytes'] == 0
    assert saved['teacher']['file'] == 'in-memory-teacher'
    assert report.teacher.parameters == sum(
        p.numel() for p in module.parameters())


def test_module_teacher_refuses_minibatch(tmp_path):
    with pytest.raises(GnnCompressError, match='drop batch_size'):
        gnncompress.api.distill(ExampleGAT(4, 2), data='Cora',
                                batch_size=8, out=tmp_path / 'r')
