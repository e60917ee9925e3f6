"""Teachers written by plain PyG code (tests/layouts.py) load under
any
attribute names, show their layers in ``inspect``, give the original
module's outputs and distill; what cannot load says why."""
from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import SAMPLES, quick_latency
from layouts import HIDDEN, LAYOUTS, OPTIONS, ExampleGAT, OgbSage, write
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GraphConv
from torch_geometric.nn.models import GCN
from typer.testing import CliRunner

from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import ArchitectureError, CheckpointError, clip
from gnncompress.models import run_model
from gnncompress.models.recognise import SUPPORTED

runner = CliRunner()
NODES, FEATURES, CLASSES = 30, 12, 3


@pytest.fixture(scope='module')
def graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(NODES, FEATURES, generator=gen)
    edge_index = torch.randint(0, NODES, (2, 90), generator=gen)
    y = torch.randint(0, CLASSES, (NODES,), generator=gen)
    return x, edge_index, y


def _written(name, tmp_path, graph):
    x, edge_index, y = graph
    path = tmp_path / f'{name}.pt'
    return write(name, path, x, edge_index, y, CLASSES), path


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_layout_gives_the_original_outputs(name, tmp_path, graph):
    model, path = _written(name, tmp_path, graph)
    x, edge_index, _ = graph

    ckpt = load_checkpoint(path, OPTIONS.get(name))
    out = run_model(ckpt.build(), x, edge_index)

    with torch.no_grad():
        expected = model(x, edge_index)
    assert out.logits.shape == (NODES, CLASSES)
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=0)
    assert (ckpt.spec.in_channels, ckpt.spec.out_channels) == \
        (FEATURES, CLASSES)
    assert out.hiddens, 'the hidden-feature methods need hidden layers'


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_inspect_lists_the_layers_in_order(name, tmp_path, graph):
    _, path = _written(name, tmp_path, graph)

    result = runner.invoke(app, ['inspect', str(path)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    position = 0
    for expected in LAYOUTS[name][2]:
        expected = expected.format(**{'in': FEATURES, 'out': CLASSES})
        found = [i for i, line in enumerate(lines[position:], position)
                 if line.strip().startswith(expected.strip()) and
                 line.startswith(' ') and
                 (expected.startswith(' ') == ('then' in line))]
        assert found, f'{expected!r} not after line {position}:\n' + \
            result.output
        position = found[0] + 1


def test_inspect_names_the_assumed_activation(tmp_path, graph):
    _, path = _written('gat-example', tmp_path, graph)

    result = runner.invoke(app, ['inspect', str(path)])

    assert "note: activation 'relu' assumed" in result.output
    assert '--act' in result.output


def test_the_relu_guess_is_not_the_gat_example(tmp_path, graph):
    model, path = _written('gat-example', tmp_path, graph)
    x, edge_index, _ = graph

    guessed = run_model(load_checkpoint(path).build(), x, edge_index)

    with torch.no_grad():
        expected = model(x, edge_index)
    assert not torch.allclose(guessed.logits, expected, atol=1e-4)


@pytest.mark.parametrize('name, method, extra', [
    ('gat-example', 'kd', ['--act', 'elu']),
    ('ogb-bns', 'fitnet', []),
])
def test_distill_writes_its_files(name, method, extra, tmp_path,
                                  monkeypatch):
    from gnncompress.tasks.datasets import load_graph
    cora = load_graph('Cora', SAMPLES, seed=0)
    build, save, _ = LAYOUTS[name]
    torch.manual_seed(0)
    teacher = tmp_path / f'{name}.pt'
    save(build(cora.num_features, cora.num_classes).eval(), teacher)
    quick_latency(monkeypatch, warmup=1, repeat=2)
    out = tmp_path / 'run'

    result = runner.invoke(app, [
        'distill', str(teacher), '--data', 'Cora', '--data-root',
        str(SAMPLES), '--epochs', '2', '--method', method, '--hidden', '8',
        '--out', str(out), '--no-progress', *extra])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.onnx', 'student.safetensors',
        'training.png']
    # No teacher card: the features were checked, and the check is told.
    assert 'note: features: ' in \
        result.output
    # Rebuilt from its weights: the activation is a guess, and said so,
    # unless --act gave it.
    assert ("note: activation 'relu' assumed" in result.output) == \
        ('--act' not in extra)


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_every_layout_distills(name, tmp_path, graph):
    # Each file as saved, on the graph it was trained on: two epochs write
    # every output.
    from torch_geometric.data import Data
    _, path = _written(name, tmp_path, graph)
    x, edge_index, y = graph
    data = tmp_path / 'tiny.pt'
    torch.save(Data(x=x, edge_index=edge_index, y=y), data)
    options = [a for k, v in OPTIONS.get(name, {}).items()
               for a in (f'--{k}', v)]
    out = tmp_path / 'run'

    result = runner.invoke(app, [
        'distill', str(path), '--data', str(data), '--epochs', '2',
        '--hidden', '8', '--out', str(out), '--no-progress',
        '--no-latency', *options])

    assert result.exit_code == 0, result.output
    assert {'report.json', 'student.onnx', 'student.safetensors'} <= \
        {p.name for p in out.iterdir()}
    report = json.loads((out / 'report.json').read_text())
    assert report['teacher']['spec']['in_channels'] == FEATURES
    assert report['student']['spec']['out_channels'] == CLASSES


# Refusals ---------------------------------------------------------------------

class _GraphConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = GraphConv(FEATURES, HIDDEN)
        self.conv2 = GraphConv(HIDDEN, CLASSES)


def _assert_whole(message: str, tail: str) -> None:
    """One line, not cut: it ends with the fix it suggests."""
    assert message.endswith(tail), message
    assert '\n' not in message


def test_unknown_layer_names_its_keys_and_the_supported_types(tmp_path):
    path = tmp_path / 'graphconv.pt'
    torch.save(_GraphConvNet().state_dict(), path)

    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(path)

    message = str(info.value)
    assert "layer 'conv1'" in message and "PyG's GraphConv" in message
    assert 'lin_rel.weight [16, 12]' in message and 'lin_root.weight' in \
        message
    assert SUPPORTED in message
    for name in ('GCNConv', 'SAGEConv', 'GINConv', 'GATConv', 'GATv2Conv',
                 'Linear', 'BatchNorm1d', 'LayerNorm', 'GraphNorm'):
        assert name in message
    # The one way to use it anyway: the user's own class.
    _assert_whole(message, 'through your own model class (--teacher-class '
                  'module:Class).')


def test_unknown_layer_under_one_prefix_names_the_prefix(tmp_path):
    path = tmp_path / 'wrapped.pt'
    torch.save({f'ema.{k}': v for k, v in
                _GraphConvNet().state_dict().items()}, path)

    with pytest.raises(ArchitectureError,
                       match=r"Every key starts with 'ema\.'"):
        load_checkpoint(path)


def test_head_count_mismatch_is_named(tmp_path):
    state = ExampleGAT(FEATURES, CLASSES).state_dict()
    state['conv1.lin.weight'] = torch.randn(60, FEATURES)
    path = tmp_path / 'gat.pt'
    torch.save(state, path)

    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(path)

    message = str(info.value)
    assert "Head-count mismatch in layer 'conv1'" in message
    assert '8 heads of 8 channels' in message and '60' in message
    _assert_whole(message, 'save the complete state_dict of the model')


def test_norm_of_another_width_is_refused(tmp_path):
    state = OgbSage(FEATURES, CLASSES).state_dict()
    for key in [k for k in state if k.startswith('bns.1.')]:
        state[key] = state[key][:8] if state[key].dim() else state[key]
    path = tmp_path / 'ogb.pt'
    torch.save(state, path)

    with pytest.raises(ArchitectureError,
                       match=r"norm 'bns\.1' .* has width 8"):
        load_checkpoint(path)


def test_layers_that_do_not_chain_are_refused(tmp_path):
    model = nn.Module()
    model.conv1 = GCNConv(FEATURES, HIDDEN)
    model.conv2 = GATConv(8, CLASSES, heads=2)
    path = tmp_path / 'broken.pt'
    torch.save(model.state_dict(), path)

    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(path)

    message = str(info.value)
    assert 'do not chain' in message
    assert f'conv1 {FEATURES} -> {HIDDEN}' in message
    _assert_whole(message, 'one node-classification model, or distill can '
                  'still take it through your own model class '
                  '(--teacher-class module:Class)')


class Options:
    hidden = 16


def test_other_pickled_objects_are_still_refused(tmp_path):
    path = tmp_path / 'pickled.pt'
    torch.save({'args': Options(), 'model_state_dict':
                OgbSage(FEATURES, CLASSES).state_dict()}, path)

    with pytest.raises(CheckpointError,
                       match=r'pickled Python objects \(test_layouts\.'
                             r'Options\)'):
        load_checkpoint(path)


# Wrappers and containers -----------------------------------------------------

def _prefixed(state, prefix):
    return {f'{prefix}{k}': v for k, v in state.items()}


@pytest.mark.parametrize('wrap', [
    lambda s: _prefixed(s, 'model.module._orig_mod.'),
    lambda s: _prefixed(s, '_orig_mod.net.module.'),
    lambda s: {'net': s},
    lambda s: {'weights': s, 'step': 3},
    lambda s: {'model': {'state_dict': _prefixed(s, 'module.')}},
    lambda s: {'state_dict': _prefixed(s, 'net.'), 'epoch': 2},
], ids=['three-prefixes', 'prefixes-any-order', 'net', 'weights',
        'nested', 'lightning-net'])
def test_wrappers_are_taken_off(wrap, tmp_path, graph):
    model, _ = _written('ogb-bns', tmp_path, graph)
    x, edge_index, _ = graph
    path = tmp_path / 'wrapped.pt'
    torch.save(wrap(model.state_dict()), path)

    ckpt = load_checkpoint(path)

    assert sorted(ckpt.state_dict) == sorted(model.state_dict())
    with torch.no_grad():
        expected = model(x, edge_index)
    torch.testing.assert_close(run_model(ckpt.build(), x, edge_index).logits,
                               expected, atol=1e-6, rtol=0)


def test_a_shared_name_that_is_not_a_wrapper_stays(tmp_path, graph):
    # 'model.' is stripped only when every key has it.
    model, _ = _written('encoder-head', tmp_path, graph)
    state = {('model.' + k if k.startswith('encoder') else k): v
             for k, v in model.state_dict().items()}
    path = tmp_path / 'partial.pt'
    torch.save(state, path)

    ckpt = load_checkpoint(path)

    assert 'model.encoder.weight' in ckpt.state_dict
    assert ckpt.spec.layers[0]['name'] == 'model.encoder'


def test_batch_norm_saved_without_its_counter_loads(tmp_path, graph):
    model, _ = _written('ogb-bns', tmp_path, graph)
    x, edge_index, _ = graph
    state = {k: v for k, v in model.state_dict().items()
             if not k.endswith('num_batches_tracked')}
    path = tmp_path / 'old.pt'
    torch.save(state, path)

    out = run_model(load_checkpoint(path).build(), x, edge_index)

    with torch.no_grad():
        expected = model(x, edge_index)
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=0)


def test_a_misfit_sequence_is_reported_on_one_line(tmp_path):
    # The spec of a sequence describes itself on one line in errors.
    spec = load_checkpoint(_saved_ogb(tmp_path)).spec

    assert '\n' not in spec.describe()
    assert spec.describe() == ('Layer sequence: 3 SAGEConv, 2 BatchNorm1d, '
                               '12 -> 3 (act=relu)')


def _saved_ogb(tmp_path):
    path = tmp_path / 'ogb.pt'
    torch.save(OgbSage(FEATURES, CLASSES).state_dict(), path)
    return path


# Messages: whole words, and only the fixes that can work --------------------

@pytest.mark.parametrize('text, limit, clipped', [
    ('short enough', 20, 'short enough'),
    ('Unexpected key(s):  "bns.0.weight",\n "bns.0.bias"', 34,
     'Unexpected key(s): "bns.0.weight" ...'),
    ('one_single_long_token and more', 10, 'one_single_long_token ...'),
])
def test_clip_cuts_between_words(text, limit, clipped):
    assert clip(text, limit) == clipped


def _gcn_with_extra_keys(tmp_path):
    state = GCN(FEATURES, HIDDEN, num_layers=3,
                out_channels=CLASSES).state_dict()
    state.update({f'convs.1.extra_{i}_with_a_long_name': torch.zeros(2)
                  for i in range(30)})
    path = tmp_path / 'extra.pt'
    torch.save(state, path)
    return path


@pytest.mark.parametrize('options, fix', [
    (None, 'save the complete state_dict of the model, or distill can '
     'still take it through your own model class (--teacher-class '
     'module:Class)'),
    # --aggr shapes no tensor: it is not blamed.
    ({'aggr': 'max'}, 'save the complete state_dict of the model, or '
     'distill can'),
])
def test_torchs_long_load_error_is_cut_between_words(tmp_path, options, fix):
    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(_gcn_with_extra_keys(tmp_path), options)

    message = str(info.value)
    assert 'Unexpected key(s) in state_dict: "convs.1.extra_0_with_a_long_' \
        'name"' in message
    # torch's list of keys is cut after a whole key, never inside one.
    assert re.search(r'"convs\.1\.extra_\d+_with_a_long_name" \.\.\.: ',
                     message), message
    assert message.split(' ...: ', 1)[1].startswith(fix)
    assert '--aggr' not in message and '--arch' not in message


@pytest.mark.parametrize('options, fix', [
    ({'norm': 'batch_norm'}, 'change or drop --norm'),
    ({'jk': 'cat', 'act': 'elu'}, 'change or drop --jk'),
    ({'arch': 'gat'}, 'change or drop --arch'),
])
def test_an_option_that_misfits_the_weights_is_named(tmp_path, options, fix):
    path = tmp_path / 'gcn.pt'
    torch.save(GCN(FEATURES, HIDDEN, num_layers=2,
                   out_channels=CLASSES).state_dict(), path)

    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(path, options)

    _assert_whole(str(info.value), f'needs more weights than the file '
                  f'holds (259 numbers): {fix}')


def test_a_card_that_misfits_the_weights_is_named(tmp_path):
    path = tmp_path / 'gcn.pt'
    torch.save(GCN(FEATURES, HIDDEN, num_layers=2,
                   out_channels=CLASSES).state_dict(), path)
    path.with_suffix('.json').write_text(json.dumps(
        {'kind': CARD_KIND, 'spec': {'jk': 'cat'}}))

    with pytest.raises(ArchitectureError) as info:
        load_checkpoint(path)

    _assert_whole(str(info.value), 'fix the spec (jk) in the teacher card '
                  'gcn.json')
