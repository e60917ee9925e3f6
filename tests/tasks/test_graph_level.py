"""Graph classification: TU splits, batches cut from the union, graph
classifiers (inference, export with a batch input) and graph-level KD."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gnncompress.checkpoints.students import save_safetensors
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.errors import ArchitectureError, DataError
from gnncompress.methods import resolve_method
from gnncompress.models import ArchSpec, ModelOutput, build_model, run_model
from gnncompress.outputs.onnx import export_onnx
from gnncompress.tasks.graph_level import graph_split, load_graph_set
from gnncompress.training.regimes.graph_batches import iter_batches
from gnncompress.training.train import forward_frozen

SHARED = Path(__file__).resolve().parents[3] / 'shared' / 'datasets'
needs_tu = pytest.mark.skipif(not (SHARED / 'MUTAG' / 'raw').is_dir(),
                              reason='shared datasets not available')


@pytest.fixture(scope='module')
def mutag():
    return load_graph_set('MUTAG', SHARED, seed=0)


def test_stratified_80_10_10_split():
    y = torch.tensor([0] * 60 + [1] * 40)

    train, val, test = graph_split(y, seed=3)

    assert (train.sum(), val.sum(), test.sum()) == (80, 10, 10)
    assert not (train & val).any() and not (val & test).any()
    for mask in (val, test):  # 6 + 4 in each
        assert int((y[mask] == 0).sum()) == 6
    assert torch.equal(graph_split(y, 3)[2], test)
    assert not torch.equal(graph_split(y, 4)[2], test)


def test_folds_partition_the_graphs():
    y = torch.tensor([0, 1] * 15)
    tests = [graph_split(y, 0, fold=k, folds=5)[2] for k in range(5)]

    assert torch.equal(torch.stack(tests).sum(0), torch.ones(30).long())
    train, val, test = graph_split(y, 0, fold=4, folds=5)
    assert torch.equal(val, tests[0])  # the next fold, cyclically
    with pytest.raises(DataError, match='fold'):
        graph_split(y, 0, fold=5, folds=5)


@needs_tu
def test_batches_match_the_union(mutag):
    spec = ArchSpec('gin', mutag.num_features, 8, 2, 2, readout='sum')
    torch.manual_seed(0)
    model = build_model(spec)
    whole = forward_frozen(model, mutag)
    seen = []
    for part in iter_batches(mutag, 16, torch.Generator().manual_seed(0)):
        g = part.graph
        alone = forward_frozen(model, g)
        sliced = part.slice(whole)
        assert torch.allclose(alone.logits, sliced.logits, atol=1e-5)
        assert torch.allclose(alone.hiddens[-1], sliced.hiddens[-1],
                              atol=1e-5)
        assert torch.equal(g.y, mutag.y[part.graph_ids])
        seen.append(part.graph_ids)
    seen = torch.cat(seen).sort().values
    assert torch.equal(seen, mutag.train_mask.nonzero().view(-1))


def test_graph_level_kd_value():
    # Two graphs, T = 4: 16 * mean over graphs of KL(teacher || student).
    teacher = ModelOutput(torch.tensor([[4.0, 0.0], [0.0, 0.0]]))
    student = ModelOutput(torch.tensor([[0.0, 4.0], [0.0, 8.0]]))
    expected = 0.0
    for z_t, z_s in ([(1.0, 0.0), (0.0, 1.0)], [(0.0, 0.0), (0.0, 2.0)]):
        q = [math.exp(v) / sum(math.exp(u) for u in z_t) for v in z_t]
        p = [math.exp(v) / sum(math.exp(u) for u in z_s) for v in z_s]
        expected += sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    expected = 16 * expected / 2
    graph = None  # KD reads logits only

    loss = resolve_method('kd').loss([teacher], student, graph)

    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('readout', ['mean', 'max'])
def test_onnx_export_with_batch_input(readout, tmp_path):
    spec = ArchSpec('sage', 5, 8, 2, 3, readout=readout)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(9, 5)
    edge_index = torch.tensor([[0, 1, 2, 4, 5, 7], [1, 2, 0, 5, 4, 8]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])

    parity = export_onnx(model, x, edge_index, tmp_path / 'g.onnx',
                         batch=batch)

    assert sorted(parity.cases) == ['export graph', 'isolated nodes',
                                    'larger graph', 'no edges',
                                    'repeated destinations']
    assert parity.max_abs_diff <= 1e-4
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / 'g.onnx'))
    assert [i.name for i in session.get_inputs()] == ['x', 'edge_index',
                                                      'batch']
    got = session.run(None, {'x': x.numpy(), 'edge_index': edge_index.numpy(),
                             'batch': batch.numpy()})[0]
    assert got.shape == (3, 3)
    assert torch.allclose(torch.from_numpy(got),
                          model(x, edge_index, batch), atol=1e-5)


def test_graph_classifier_checkpoints_reload(tmp_path):
    spec = ArchSpec('gcn', 4, 8, 3, 2, readout='max')
    model = build_model(spec)
    save_safetensors(model, spec, tmp_path / 's.safetensors')
    assert load_checkpoint(tmp_path / 's.safetensors').spec == spec
    # A bare state_dict: everything but the pooling comes from the weights.
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / 'bare.safetensors'))
    ckpt = load_checkpoint(tmp_path / 'bare.safetensors')
    assert ckpt.spec.readout == 'mean' and 'readout' in ckpt.notes
    assert (ckpt.spec.hidden_channels, ckpt.spec.num_layers,
            ckpt.spec.out_channels) == (8, 3, 2)


def test_readout_needs_a_message_passing_model():
    with pytest.raises(ArchitectureError, match='readout'):
        ArchSpec('mlp', 4, 8, 2, 2, readout='mean')
    with pytest.raises(ArchitectureError, match="Unknown readout 'avg'"):
        ArchSpec('gcn', 4, 8, 2, 2, readout='avg')


def test_norms_are_the_ones_weights_reveal():
    with pytest.raises(ArchitectureError,
                       match="Unknown norm 'graph_norm' .*batch_norm"):
        ArchSpec('gin', 4, 8, 2, 2, norm='graph_norm')
    with pytest.raises(ArchitectureError, match='use --norm batch_norm'):
        ArchSpec('gin', 4, 8, 2, 2, norm='layer_norm', readout='sum')
    ArchSpec('gin', 4, 8, 2, 2, norm='layer_norm')  # node level: fine


def test_run_model_returns_every_layer_of_a_graph_classifier():
    spec = ArchSpec('gcn', 4, 8, 3, 2, readout='mean')
    model = build_model(spec).eval()
    x = torch.randn(5, 4)
    edge_index = torch.tensor([[0, 1, 3], [1, 2, 4]])
    out = run_model(model, x, edge_index, torch.tensor([0, 0, 0, 1, 1]))

    assert out.logits.shape == (2, 2)
    assert [h.shape for h in out.hiddens] == [(5, 8)] * 3
