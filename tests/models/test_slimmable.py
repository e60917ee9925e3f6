"""The slimmable student: slices of shared weights, plain submodels, input
widths, and the safetensors round trip."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnncompress.checkpoints.students import load_slimmable, save_slimmable
from gnncompress.core.errors import ArchitectureError, CheckpointError
from gnncompress.models.slimmable import SlimmableGNN, SlimmableSpec


def _spec(arch: str) -> SlimmableSpec:
    return SlimmableSpec(arch, [5, 3], 8, 2, [2, 4],
                         heads=2 if arch == 'gat' else 1)


@pytest.mark.parametrize('arch', ['gcn', 'gat', 'sage', 'gin'])
def test_submodel_computes_what_the_slimmable_model_computes(arch,
                                                             tiny_graph):
    torch.manual_seed(0)
    model = SlimmableGNN(_spec(arch)).eval()
    x3 = tiny_graph.x[:, :3]
    for width in model.spec.widths:
        for head, x in ((0, tiny_graph.x), (1, x3)):
            expected = model.submodel(x.size(1), head, width)(
                x, tiny_graph.edge_index)
            got = model(x, tiny_graph.edge_index, head, width)
            assert got.shape == (6, model.spec.out_channels[head])
            assert torch.allclose(got, expected, atol=1e-6)


def test_narrow_input_uses_the_first_columns(tiny_graph):
    torch.manual_seed(0)
    model = SlimmableGNN(_spec('gcn')).eval()
    x3 = tiny_graph.x[:, :3]
    padded = F.pad(x3, (0, 2))  # zeros in columns 3 and 4
    assert torch.allclose(model(x3, tiny_graph.edge_index, 1),
                          model(padded, tiny_graph.edge_index, 1), atol=1e-6)


def test_gat_narrow_width_keeps_leading_channels_of_each_head():
    torch.manual_seed(0)
    model = SlimmableGNN(SlimmableSpec('gat', [5], 8, 2, [2], heads=2))
    full = model.body.tensors()['convs.0.lin.weight']      # [8, 5]
    narrow = model.sliced(5, 0, 0.5)['convs.0.lin.weight']  # [4, 5]
    assert torch.equal(narrow, full[[0, 1, 4, 5]])


def test_widths_share_weights_and_all_get_gradients(tiny_graph):
    model = SlimmableGNN(_spec('gcn'))
    model(tiny_graph.x, tiny_graph.edge_index, 0, 0.25).sum().backward()
    grad = model.body.tensors()['convs.0.lin.weight'].grad  # [8, 5]
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() == 0


def test_hidden_width_is_a_multiple_of_the_heads():
    spec = SlimmableSpec('gat', [5], 8, 2, [2], heads=4, widths=[0.1, 1.0])
    assert spec.hidden_at(0.1) == 4 and spec.hidden_at(1.0) == 8


@pytest.mark.parametrize('kwargs, match', [
    ({'arch': 'mlp'}, 'cannot be'),
    ({'widths': [0.0, 1.0]}, 'must lie in'),
    ({'num_layers': 1}, 'at least 2 layers'),
    ({'arch': 'gat', 'heads': 3}, 'not divisible'),
])
def test_bad_specs(kwargs, match):
    values = dict(arch='gcn', in_channels=[5], hidden_channels=8,
                  num_layers=2, out_channels=[2])
    with pytest.raises(ArchitectureError, match=match):
        SlimmableSpec(**{**values, **kwargs})


def test_safetensors_round_trip(tmp_path, tiny_graph):
    torch.manual_seed(0)
    model = SlimmableGNN(_spec('gat')).eval()
    path = save_slimmable(model, tmp_path / 's.safetensors')
    loaded, metadata = load_slimmable(path)
    assert loaded.spec == model.spec
    for width in model.spec.widths:
        assert torch.equal(loaded(tiny_graph.x, tiny_graph.edge_index, 0,
                                  width),
                           model(tiny_graph.x, tiny_graph.edge_index, 0,
                                 width))


def test_loading_a_plain_checkpoint_as_slimmable_fails(tmp_path):
    from safetensors.torch import save_file
    save_file({'w': torch.zeros(2)}, str(tmp_path / 'plain.safetensors'))
    with pytest.raises(CheckpointError, match='no slimmable student'):
        load_slimmable(tmp_path / 'plain.safetensors')


def test_a_slimmable_student_given_as_one_model_says_what_to_use(tmp_path):
    # inspect, export, bench and distill read it as one model: it was
    # "Unknown architecture ... use --teacher-class", the wrong fix for the
    # tool's own output.
    from gnncompress.checkpoints.teachers import load_checkpoint

    path = save_slimmable(SlimmableGNN(_spec('gcn')),
                          tmp_path / 'student.safetensors')
    with pytest.raises(CheckpointError, match=r'slimmable student written '
                       r'by gnncompress amalgamate .* use its ONNX files'):
        load_checkpoint(path)
