"""A trained nn.Module as the teacher of the Python API: the module itself
is the teacher (its ELU included), hidden features come from hooks."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLES, quick_latency
from layouts import ExampleGAT

import gnncompress.api
from gnncompress.checkpoints.teachers import module_checkpoint
from gnncompress.core.errors import GnnCompressError
from gnncompress.tasks.datasets import load_graph
from gnncompress.training.train import forward_frozen


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
    # The module runs its own forward: no activation (or other) guess.
    assert saved['notes'] == report.notes
    assert not any('assumed' in note for note in report.notes)
    assert report.teacher.parameters == sum(
        p.numel() for p in module.parameters())


def test_options_for_a_rebuilt_teacher_are_said_to_be_ignored(cora):
    module = ExampleGAT(cora.num_features, cora.num_classes).eval()

    ckpt = module_checkpoint(module, {'act': 'relu', 'aggr': None})

    assert list(ckpt.notes.values()) == [
        '--act ignored: the teacher is your module, run by its own forward']


def test_module_teacher_refuses_minibatch(tmp_path):
    with pytest.raises(GnnCompressError, match='trains full-graph in one '
                       'process: drop --batch-size'):
        gnncompress.api.distill(ExampleGAT(4, 2), data='Cora',
                                batch_size=8, out=tmp_path / 'r')


def test_module_teacher_refuses_a_group_of_processes(tmp_path, monkeypatch):
    # In a group the caller joined before distill (not "under torchrun"),
    # each rank would train the module full-graph on its own.
    from gnncompress.workflows import distill as workflow

    monkeypatch.setattr(workflow, 'several_processes', lambda: True)
    with pytest.raises(GnnCompressError, match='trains full-graph in one '
                       'process: .* without torchrun'):
        gnncompress.api.distill(ExampleGAT(4, 2), data='Cora',
                                method='kd', out=tmp_path / 'r')
    assert not (tmp_path / 'r').exists()


# --teacher-class -------------------------------------------------------------

@pytest.fixture(scope='module')
def gat_file(cora, tmp_path_factory):
    torch.manual_seed(0)
    module = ExampleGAT(cora.num_features, cora.num_classes).eval()
    path = tmp_path_factory.mktemp('t') / 'gat.pt'
    torch.save({'model_state_dict': module.state_dict()}, path)
    return path, module


def _distill(path, out, *extra):
    from typer.testing import CliRunner

    from gnncompress.cli import app
    return CliRunner().invoke(app, [
        'distill', str(path), '--data', 'Cora', '--data-root', str(SAMPLES),
        '--epochs', '1', '--hidden', '8', '--method', 'fitnet', '--out',
        str(out), '--no-progress', *extra])


def test_teacher_class_loads_the_users_class(cora, gat_file, tmp_path,
                                             monkeypatch):
    from gnncompress.checkpoints import teachers as checkpoint
    path, module = gat_file
    built = checkpoint.user_teacher(
        path, 'layouts:ExampleGAT',
        {'in_channels': cora.num_features, 'out_channels': cora.num_classes})
    with torch.no_grad():
        assert torch.equal(built(cora.x, cora.edge_index),
                           module(cora.x, cora.edge_index))
    quick_latency(monkeypatch, warmup=1, repeat=2)  # two timed runs only
    result = _distill(path, tmp_path / 'run', '--teacher-class',
                      'layouts:ExampleGAT', '--teacher-args',
                      f'{{"in_channels": {cora.num_features}, '
                      f'"out_channels": {cora.num_classes}}}')
    assert result.exit_code == 0, result.output
    assert 'assumed' not in result.output  # the class's own ELU runs
    report = json.loads((tmp_path / 'run' / 'report.json').read_text())
    assert report['teacher']['file'] == str(path)
    assert not any('assumed' in note for note in report['notes'])
    assert report['teacher']['parameters'] == sum(
        p.numel() for p in module.parameters())


@pytest.mark.parametrize('cls, args, message', [
    ('layouts.ExampleGAT', [], "is not 'module:Class': write it as e.g. "
     'mypkg.models:Net'),
    ('no_such_pkg:Net', [], 'Cannot import no_such_pkg:Net '
     '(ModuleNotFoundError: '),
    ('layouts:ExampleGAT', [], 'Cannot build layouts:ExampleGAT(**{}) '
     '(TypeError: '),
    ('layouts:ExampleGCN', ['in_channels=1433', 'out_channels=7'],
     'do not fit layouts:ExampleGCN (0 missing, 4 unexpected keys: '
     'unexpected conv1.att_dst, unexpected conv1.att_src): check '
     '--teacher-args or the class'),
    ('layouts:ExampleGAT', ['in_channels=100', 'out_channels=7'],
     'conv1.lin.weight is (64, 1433) in the file but (64, 100) in the '
     'class: check --teacher-args'),
])
def test_teacher_class_errors_are_one_line(gat_file, tmp_path, cls, args,
                                           message):
    path, _ = gat_file
    extra = ['--teacher-class', cls]
    for item in args:
        extra += ['--teacher-args', item]
    result = _distill(path, tmp_path / 'run', *extra)
    assert result.exit_code == 1
    assert message in ' '.join(result.output.split()), result.output
    assert 'Traceback' not in result.output
    assert not (tmp_path / 'run').exists()


def test_teacher_args_must_be_an_object(gat_file, tmp_path):
    result = _distill(gat_file[0], tmp_path / 'run', '--teacher-class',
                      'layouts:ExampleGAT', '--teacher-args', '{"a": ')
    assert result.exit_code == 1
    assert '--teacher-args is not a JSON object' in result.output


class _Pickled:
    hidden = 16


def test_teacher_class_reads_the_file_weights_only(cora, tmp_path):
    # The class is the user's code; the file still never runs any.
    from gnncompress.checkpoints import teachers as checkpoint
    from gnncompress.core.errors import CheckpointError
    module = ExampleGAT(cora.num_features, cora.num_classes)
    path = tmp_path / 'pickled.pt'
    torch.save({'args': _Pickled(), 'model_state_dict': module.state_dict()},
               path)

    with pytest.raises(CheckpointError, match=r'pickled Python objects '
                       r'\(test_module_teacher\._Pickled\)'):
        checkpoint.user_teacher(path, 'layouts:ExampleGAT', {
            'in_channels': cora.num_features,
            'out_channels': cora.num_classes})
