"""SAGE with the 'gcn' aggregator (models/sage_gcn.py): the mean over the
node and its neighbours under one weight, against a hand-computed case;
its checkpoints recognised back; exported to ONNX with parity; trained by
train-teacher and accepted by distill."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import SAGEConv
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import ArchitectureError
from gnncompress.models import ArchSpec, build_model, forward_logits, run_model
from gnncompress.models.export_gnn import ExportGNN, export_gnn
from gnncompress.models.sage_gcn import GcnGraphSAGE, GcnSAGEConv
from gnncompress.models.sequence import SequenceGNN
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.parity import onnx_feeds, onnx_session
from gnncompress.training.sampling import CSR, layerwise_inference

# x of 4 nodes; edges 0->1, 2->1, 1->0, 3->2, a listed self-loop on 2
# and two on 3 (which count each node once all the same).
X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0], [3.0, -3.0]])
EDGES = torch.tensor([[0, 2, 1, 3, 2, 3, 3], [1, 1, 0, 2, 2, 3, 3]])


def _layer() -> GcnSAGEConv:
    conv = GcnSAGEConv(2, 2)
    with torch.no_grad():
        conv.lin_l.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        conv.lin_l.bias.copy_(torch.tensor([0.5, -1.0]))
    return conv


def test_mean_over_node_and_neighbours_by_hand():
    # node 0: (x0 + x1) / 2 = (0.5, 1); node 1: (x1 + x0 + x2) / 3 =
    # (5/3, 2); node 2: (x2 + x3) / 2 = (3.5, 0.5) (its listed self-loop
    # is the node itself); node 3: x3 alone. Then W = [[1, 0], [1, 1]]
    # and b = (0.5, -1).
    means = torch.tensor([[0.5, 1.0], [5 / 3, 2.0], [3.5, 0.5], [3.0, -3.0]])
    expected = torch.stack([means[:, 0] + 0.5,
                            means[:, 0] + means[:, 1] - 1.0], 1)
    got = _layer()(X, EDGES)
    assert torch.allclose(got, expected, atol=1e-6)
    # PyG's mean (neighbours only, plus a root weight) is another function.
    assert not torch.allclose(SAGEConv(2, 2)(X, EDGES), got)
    assert 'lin_r.weight' not in _layer().state_dict()


def test_spec_builds_validates_and_describes():
    spec = ArchSpec('sage', 2, 4, 2, 3, aggr='gcn')
    model = build_model(spec)
    assert type(model) is GcnGraphSAGE
    assert all(type(conv) is GcnSAGEConv for conv in model.convs)
    assert 'aggr=gcn' in spec.describe()
    with pytest.raises(ArchitectureError, match="Unknown SAGE aggregation "
                       "'gnc'.*gcn"):
        ArchSpec('sage', 2, 4, 2, 3, aggr='gnc')
    # A graph classifier takes the same layer.
    pooled = build_model(ArchSpec('sage', 2, 4, 2, 3, aggr='gcn',
                                  readout='mean'))
    assert type(pooled.gnn) is GcnGraphSAGE


def _graphs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 6, generator=gen)
    edges = torch.randint(0, 26, (2, 90), generator=gen)  # 26-29 isolated
    loops = torch.tensor([[3, 3, 7], [3, 3, 7]])
    return {'random': (x, edges),
            'self-loops and duplicates': (
                x, torch.cat([edges, loops, edges[:, :15]], 1)),
            'no edges': (x, torch.zeros(2, 0, dtype=torch.long))}


@pytest.mark.parametrize('hidden', [8, 4])  # 4: narrower than the input
def test_export_form_and_onnx_match(hidden, tmp_path):
    torch.manual_seed(0)
    model = build_model(ArchSpec('sage', 6, hidden, 2, 3, aggr='gcn')).eval()
    form = export_gnn(model)
    assert isinstance(form, ExportGNN)
    path = tmp_path / 'm.onnx'
    x, edge_index = _graphs()['random']
    export_onnx(model, x, edge_index, path)
    session = onnx_session(path)
    for name, (gx, gei) in _graphs().items():
        with torch.no_grad():
            expected = forward_logits(model, gx, gei)
            assert torch.allclose(form(gx, gei), expected, atol=1e-5), name
            assert torch.equal(run_model(model, gx, gei).logits, expected)
        got = session.run(None, onnx_feeds(session, gx, gei))[0]
        assert np.abs(got - expected.numpy()).max() < 1e-5, name


def test_layerwise_inference_is_the_full_forward():
    # distill --batch-size runs the teacher in chunks of destination nodes,
    # whose subgraphs hold other nodes too: the self-loops must not
    # change the chunk's own rows.
    torch.manual_seed(0)
    model = build_model(ArchSpec('sage', 6, 8, 2, 3, aggr='gcn')).eval()
    x, edge_index = _graphs()['self-loops and duplicates']
    with torch.no_grad():
        full = run_model(model, x, edge_index)
    out = layerwise_inference(model, x, CSR.from_edges(edge_index, 30),
                              chunk=7)
    torch.testing.assert_close(out.logits, full.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hiddens[0], full.hiddens[0], atol=1e-5,
                               rtol=0)


def _trained(spec: ArchSpec) -> nn.Module:
    torch.manual_seed(1)
    model = build_model(spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_checkpoint_round_trip(tmp_path):
    spec = ArchSpec('sage', 6, 8, 2, 3, aggr='gcn')
    model = _trained(spec)
    x, edge_index = _graphs()['self-loops and duplicates']
    expected = forward_logits(model, x, edge_index)
    path = tmp_path / 't.pt'
    torch.save(model.state_dict(), path)

    # The card says 'gcn' (train-teacher writes it): a GraphSAGE again.
    path.with_suffix('.json').write_text(json.dumps(
        {'kind': CARD_KIND, 'spec': {'aggr': 'gcn'}}))
    ckpt = load_checkpoint(path)
    assert ckpt.spec.arch == 'sage' and ckpt.spec.aggr == 'gcn'
    assert ckpt.sources['aggr'] == 'card' and 'aggr' not in ckpt.notes
    loaded = ckpt.build().eval()
    assert type(loaded) is GcnGraphSAGE
    assert torch.equal(forward_logits(loaded, x, edge_index), expected)

    # No card: the weights alone cannot tell; --aggr gcn says it.
    path.with_suffix('.json').unlink()
    forced = load_checkpoint(path, {'aggr': 'gcn'})
    assert forced.spec.arch == 'sage' and forced.sources['aggr'] == 'option'
    assert torch.equal(forward_logits(forced.build().eval(), x, edge_index),
                       expected)
    # Without it, a SAGE without root weights is read layer by layer with
    # PyG's mean, and the note says how to set the aggregation.
    plain = load_checkpoint(path)
    assert plain.spec.arch == 'sequence' and '--aggr' in plain.notes['aggr']


class _Own(nn.Module):
    """A user's own class with its own layer names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = GcnSAGEConv(6, 8)
        self.conv2 = GcnSAGEConv(8, 3)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def test_own_layer_names_recognised_with_aggr_gcn(tmp_path):
    torch.manual_seed(2)
    model = _Own().eval()
    x, edge_index = _graphs()['self-loops and duplicates']
    path = tmp_path / 'own.pt'
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path, {'aggr': 'gcn'})
    loaded = ckpt.build().eval()
    assert isinstance(loaded, SequenceGNN)
    assert all(type(m) is GcnSAGEConv for m in loaded.modules()
               if isinstance(m, SAGEConv))
    assert "aggr 'gcn'" in ckpt.spec.layer_lines()[0]
    with torch.no_grad():
        assert torch.allclose(forward_logits(loaded, x, edge_index),
                              model(x, edge_index), atol=1e-6)


def test_gcn_refuses_a_root_weight(tmp_path):
    path = tmp_path / 'own.pt'
    layer = SAGEConv(6, 3)
    torch.save({'conv1.' + k: v for k, v in layer.state_dict().items()},
               path)
    with pytest.raises(ArchitectureError, match='root weight.*--aggr gcn'):
        load_checkpoint(path, {'aggr': 'gcn'}).build()


def _data(tmp_path):
    gen = torch.Generator().manual_seed(0)
    n = 60
    masks = torch.zeros(3, n, dtype=torch.bool)
    for i in range(3):
        masks[i, 20 * i:20 * (i + 1)] = True
    path = tmp_path / 'g.pt'
    torch.save(Data(x=torch.randn(n, 8, generator=gen),
                    edge_index=torch.randint(0, n, (2, 240), generator=gen),
                    y=torch.randint(0, 3, (n,), generator=gen),
                    train_mask=masks[0], val_mask=masks[1],
                    test_mask=masks[2]), path)
    return path


def test_train_teacher_and_distill(tmp_path):
    data = _data(tmp_path)
    teacher = tmp_path / 't.pt'
    result = api.train_teacher(data, teacher, arch='sage', aggr='gcn',
                               hidden=16, layers=2, epochs=3,
                               progress=False, device='cpu')
    assert json.loads(result.card.read_text())['spec']['aggr'] == 'gcn'
    ckpt = load_checkpoint(teacher)
    assert ckpt.spec == result.spec and ckpt.spec.aggr == 'gcn'
    report = api.distill(teacher, data=str(data), out=tmp_path / 'out',
                         student='mlp', hidden=8, epochs=2,
                         progress=False, device='cpu')
    assert report.student.spec['arch'] == 'mlp'
    assert (tmp_path / 'out' / 'student.onnx').is_file()


def test_cli_refuses_an_unknown_aggregation(tmp_path):
    result = CliRunner().invoke(app, [
        'train-teacher', '--data', str(_data(tmp_path)), '--arch', 'sage',
        '--aggr', 'gnc', '--epochs', '1', '--out', str(tmp_path / 't.pt'),
        '--no-progress', '--device', 'cpu'])
    assert result.exit_code == 1
    assert "Unknown SAGE aggregation 'gnc'" in result.output
    assert 'Traceback' not in result.output
    assert not (tmp_path / 't.pt').exists()
