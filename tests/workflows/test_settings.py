"""One typed settings object per command (issue 21): a DistillSettings
built by hand runs exactly as the flat keywords do, unknown options are a
one-line error, the settings pickle (the processes of --nproc receive
them), and the command line hands the API one DistillSettings."""
from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import ring_data
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.errors import GnnCompressError
from gnncompress.workflows import distill as distill_flow
from gnncompress.workflows import results

runner = CliRunner()


@pytest.fixture(scope='module')
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-epoch GCN teacher on a 40-node ring with chords, and the
    graph's file."""
    root = tmp_path_factory.mktemp('settings')
    data = root / 'node.pt'
    torch.save(ring_data(), data)
    path = root / 't.pt'
    api.train_teacher(data, path, arch='gcn', hidden=8, layers=2, epochs=2,
                      progress=False, device='cpu')
    return path, data


def _captured(monkeypatch, module) -> list[torch.nn.Module]:
    """The students the run hands to its outputs (``export=False`` writes
    no file to read them from)."""
    students: list[torch.nn.Module] = []
    original = module.distill_outputs

    def keep(settings, **kwargs):
        students.append(kwargs['model'])
        return original(settings, **kwargs)

    monkeypatch.setattr(module, 'distill_outputs', keep)
    return students


def _cli_settings(monkeypatch, argv: list[str]):
    """The settings the command line ``argv`` hands to its API function
    (replaced here by one that keeps them)."""
    seen = []

    def keep(settings):
        seen.append(settings)
        raise GnnCompressError('captured')

    monkeypatch.setattr(api, argv[0], keep)
    result = runner.invoke(app, argv)
    assert result.exit_code == 1 and 'captured' in result.output
    (settings,) = seen
    return settings


def _comparable(report) -> str:
    """The report as JSON (NaN included), less wall times and the output
    folder's name."""
    record = report.to_dict()
    for key in ('timings', 'files', 'config'):
        record.pop(key, None)
    for entry in (record['training'], record.get('student_alone') or {}):
        entry.pop('seconds', None)
        entry.pop('seconds_per_epoch', None)
    text = json.dumps(record, sort_keys=True, default=str)
    return text.replace('/flat/', '/out/').replace('/nested/', '/out/')


@pytest.mark.parametrize('sampled', [False, True],
                         ids=['full-graph', 'sampled'])
def test_settings_by_hand_run_as_the_flat_keywords(teacher, tmp_path,
                                                   monkeypatch, sampled):
    path, data = teacher
    # the sampled branch imports distill_outputs when it runs
    module = results if sampled else distill_flow
    students = _captured(monkeypatch, module)
    batching = {'batch_size': 16, 'fanout': '3,2'} if sampled else {}
    flat = api.distill(path, data=data, method='kd+lsp', hidden=8,
                       epochs=2, lr=0.02, seed=3, label_weight=0.5,
                       baseline=True, export=False, latency=False,
                       progress=False, device='cpu',
                       out=tmp_path / 'flat', **batching)
    settings = api.DistillSettings(
        path, data=data, method='kd+lsp', label_weight=0.5, baseline=True,
        device='cpu',
        training=api.Training(epochs=2, lr=0.02, seed=3, progress=False),
        model=api.Student(hidden=8),
        batching=api.Batching(**batching),
        outputs=api.Outputs(out=tmp_path / 'nested', export=False,
                            latency=False))
    nested = api.distill(settings)
    assert len(students) == 2
    first, second = (m.state_dict() for m in students)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert _comparable(flat) == _comparable(nested)
    assert nested.student.latency == {}  # latency=False in the settings
    assert flat.method_options['label_weight'] == 0.5
    assert flat.training['epochs'] == 2
    assert ('fanout' in flat.training) == sampled


def test_unknown_option_is_one_line_error(teacher, tmp_path):
    path, _ = teacher
    with pytest.raises(GnnCompressError) as error:
        api.distill(path, epoch=2, out=tmp_path / 'out')
    message = str(error.value)
    assert '\n' not in message
    assert "no option 'epoch'" in message
    assert "did you mean 'epochs'" in message
    assert not (tmp_path / 'out').exists()
    with pytest.raises(GnnCompressError, match="no option 'colour'"):
        api.DistillSettings.from_options(path, colour='red')
    settings = api.DistillSettings(path)
    with pytest.raises(GnnCompressError, match='not both'):
        api.distill(settings, epochs=2)


def test_flat_names_map_onto_the_groups():
    settings = api.DistillSettings.from_options(
        't.pt', epochs=7, batch_size=64, hidden=16, min_accuracy=50.0,
        checkpoint_every=2, k=4, out='o', method='at')
    assert settings.training == api.Training(epochs=7)
    assert settings.batching == api.Batching(batch_size=64)
    assert settings.model == api.Student(hidden=16)
    assert settings.gates == api.Gates(min_accuracy=50.0)
    assert settings.checkpointing == api.Checkpointing(checkpoint_every=2)
    assert settings.clouds == api.Clouds(k=4)
    assert settings.outputs == api.Outputs(out='o')
    assert settings.method == 'at' and settings.teacher == 't.pt'
    assert settings.options()['epochs'] == 7
    changed = settings.with_options(epochs=3, nproc=2)
    assert changed.training.epochs == 3 and changed.batching.nproc == 2
    assert changed.batching.batch_size == 64  # the rest kept
    assert settings.training.epochs == 7  # frozen: a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training.epochs = 1  # type: ignore[misc]


def test_signature_defaults_are_the_settings_defaults():
    """help(api.distill) shows every option with the default the settings
    hold (their one source)."""
    parameters = inspect.signature(api.distill).parameters
    defaults = api.DistillSettings(None).options()
    assert list(parameters)[0] == 'teacher'
    assert {name: p.default for name, p in parameters.items()
            if name != 'teacher'} == defaults
    assert defaults['epochs'] == 200 and defaults['lr'] == 0.01
    assert defaults['weight_decay'] == 5e-4 and defaults['patience'] == 100
    assert defaults['method'] is None  # auto, or kd where auto cannot run
    assert defaults['latency_budget_s'] == 3.0


def test_settings_pickle():
    settings = api.DistillSettings.from_options(
        Path('t.pt'), epochs=3, batch_size=8, fanout=[3, 2], nproc=2,
        method_options={'kernel': 'poly'}, config={'epochs': 3},
        out=Path('o'))
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings
    assert again.batching.fanout == [3, 2]
    assert again.method_options == {'kernel': 'poly'}


def test_cli_hands_the_api_one_settings_object(monkeypatch, tmp_path):
    settings = _cli_settings(monkeypatch, [
        'distill', str(tmp_path / 't.pt'), '--epochs', '3', '--batch-size',
        '64', '--fanout', '5,5', '--hidden', '16', '--method', 'kd+lsp',
        '-o', 'lsp.weight=2', '--layers-t', '0', '--arch', 'gcn',
        '--min-accuracy', '40', '--no-latency', '--no-progress',
        '--out', str(tmp_path / 'out')])
    assert isinstance(settings, api.DistillSettings)
    assert settings.teacher == tmp_path / 't.pt'
    assert settings.training.epochs == 3
    assert settings.training.progress is False
    assert settings.batching == api.Batching(batch_size=64, fanout='5,5')
    assert settings.model.hidden == 16  # parsed to a number
    assert settings.method_options == {'lsp.weight': 2.0,
                                       'teacher_layers': [0]}
    assert settings.overrides['arch'] == 'gcn'
    assert settings.gates.min_accuracy == 40.0
    assert settings.outputs.latency is False
    assert settings.outputs.out == str(tmp_path / 'out')
    assert settings.outputs.config['epochs'] == 3


# cotrain -----------------------------------------------------------------

def _same_runs(folder: Path, flat, nested) -> None:
    """The runs into ``folder/flat`` and ``folder/nested`` wrote the same
    student, bit for bit, and the same report."""
    from safetensors.torch import load_file
    first, second = (load_file(str(folder / name / 'student.safetensors'))
                     for name in ('flat', 'nested'))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert _comparable(flat) == _comparable(nested)


def test_cotrain_settings_by_hand_run_as_the_flat_keywords(teacher,
                                                           tmp_path):
    _, data = teacher
    flat = api.cotrain(data, method='mutual', students=2, hidden=8,
                       layers=2, epochs=2, seed=1, weight=0.5,
                       latency=False, progress=False, device='cpu',
                       out=tmp_path / 'flat')
    settings = api.CotrainSettings(
        data, method='mutual', weight=0.5, device='cpu',
        training=api.Training(epochs=2, seed=1, patience=None,
                              progress=False),
        peers=api.Peers(students=2, hidden=8, layers=2),
        outputs=api.Outputs(out=tmp_path / 'nested', latency=False))
    assert settings == api.CotrainSettings.from_options(
        data, method='mutual', students=2, hidden=8, layers=2, epochs=2,
        seed=1, weight=0.5, latency=False, progress=False, device='cpu',
        out=tmp_path / 'nested')
    nested = api.cotrain(settings)
    _same_runs(tmp_path, flat, nested)
    assert nested.method_options['weight'] == 0.5
    assert nested.students[0].latency == {}  # latency=False in settings


def test_cotrain_defaults_and_unknown_option():
    defaults = api.CotrainSettings('Cora')
    assert defaults.training.patience is None  # every epoch, unlike distill
    assert defaults.peers == api.Peers(students=2, arch='gcn', hidden=128,
                                       layers=3)
    assert {name: p.default for name, p in
            inspect.signature(api.cotrain).parameters.items()
            if name != 'data'} == defaults.options()
    with pytest.raises(GnnCompressError, match="cotrain has no option "
                                               "'label_weight'"):
        api.cotrain('Cora', label_weight=1.0)
    assert pickle.loads(pickle.dumps(defaults)) == defaults


def test_cli_hands_cotrain_one_settings_object(monkeypatch, tmp_path):
    settings = _cli_settings(monkeypatch, [
        'cotrain', '--data', 'Cora', '--students', '3', '--hidden', '16',
        '--method', 'mutual', '--batch-size', '32', '--epochs', '4',
        '--no-latency', '--out', str(tmp_path / 'out')])
    assert isinstance(settings, api.CotrainSettings)
    assert settings.data == 'Cora' and settings.method == 'mutual'
    assert settings.peers.students == 3 and settings.peers.hidden == 16
    assert settings.batching.batch_size == 32
    assert settings.training.epochs == 4
    assert settings.training.patience is None
    assert settings.outputs.latency is False
    assert settings.outputs.config['students'] == 3


# amalgamate --------------------------------------------------------------

def test_amalgamate_settings_by_hand_run_as_the_flat_keywords(teacher,
                                                              tmp_path):
    path, data = teacher
    flat = api.amalgamate([path, path], data=[str(data), str(data)],
                          hidden=8, widths='0.5,1', export_widths='1',
                          epochs=2, weight=0.2, min_accuracy=10.0,
                          latency=False, progress=False, device='cpu',
                          out=tmp_path / 'flat')
    settings = api.AmalgamateSettings(
        [path, path], data=[str(data), str(data)], weight=0.2,
        device='cpu', training=api.Training(epochs=2, weight_decay=4e-6,
                                            progress=False),
        model=api.SlimmableStudent(hidden=8, widths='0.5,1',
                                   export_widths='1'),
        outputs=api.Outputs(out=tmp_path / 'nested', latency=False),
        gates=api.Gates(min_accuracy=10.0))
    nested = api.amalgamate(settings)
    _same_runs(tmp_path, flat, nested)
    assert nested.loss['lambda'] == 0.2
    assert nested.training['weight_decay'] == 4e-6
    assert [r['width'] for r in nested.results if r['onnx']] == [1.0, 1.0]
    assert nested.results[0]['latency'] == {}  # latency=False in settings


def test_amalgamate_defaults_and_unknown_option():
    defaults = api.AmalgamateSettings(['a.pt', 'b.pt'])
    assert defaults.training.weight_decay == 4e-6  # the authors' code
    assert defaults.model.widths == (0.25, 0.5, 0.75, 1.0)
    assert {name: p.default for name, p in
            inspect.signature(api.amalgamate).parameters.items()
            if name != 'teachers'} == defaults.options()
    with pytest.raises(GnnCompressError, match="amalgamate has no option "
                                               "'ratio'"):
        api.amalgamate(['a.pt', 'b.pt'], ratio=3)
    assert pickle.loads(pickle.dumps(defaults)) == defaults


def test_cli_hands_amalgamate_one_settings_object(monkeypatch, tmp_path):
    settings = _cli_settings(monkeypatch, [
        'amalgamate', str(tmp_path / 'a.pt'), str(tmp_path / 'b.pt'),
        '--data', 'Cora,CiteSeer', '--lambda', '0.3', '--widths', '0.5,1',
        '--width', '1', '--hidden', '16', '--max-accuracy-drop', '5',
        '--out', str(tmp_path / 'out')])
    assert isinstance(settings, api.AmalgamateSettings)
    assert list(settings.teachers) == [tmp_path / 'a.pt', tmp_path / 'b.pt']
    assert settings.weight == 0.3
    assert settings.model == api.SlimmableStudent(
        hidden=16, widths='0.5,1', export_widths='1')
    assert settings.gates.max_accuracy_drop == 5.0
    assert settings.training.weight_decay == 4e-6


@pytest.mark.parametrize('argv,settings_class', [
    (['distill', 't.pt'], 'DistillSettings'),
    (['cotrain', '--data', 'Cora'], 'CotrainSettings'),
    (['amalgamate', 'a.pt', 'b.pt'], 'AmalgamateSettings')])
def test_command_line_defaults_are_the_settings_defaults(monkeypatch, argv,
                                                         settings_class):
    """An option left out on the command line gets the value the settings
    hold by default (what the command line records or parses aside)."""
    given = _cli_settings(monkeypatch, argv)
    own = getattr(api, settings_class).from_options(given.subject)
    recorded = {'command', 'config', 'method_options', 'overrides',
                'teacher_args'}
    options = given.options()
    if isinstance(options.get('widths'), str):  # parsed by the command
        options['widths'] = tuple(map(float, options['widths'].split(',')))
    differ = {name: (value, own.options()[name])
              for name, value in options.items()
              if name not in recorded and value != own.options()[name]}
    assert differ == {}


@pytest.mark.parametrize('command,given,message', [
    (api.distill, api.CotrainSettings.from_options('data.pt'),
     'distill takes DistillSettings, not CotrainSettings (the settings '
     'of cotrain): build DistillSettings.from_options(teacher, ...), or '
     'call gnncompress.api.cotrain'),
    (api.cotrain, api.AmalgamateSettings.from_options(['a.pt', 'b.pt']),
     'cotrain takes CotrainSettings, not AmalgamateSettings (the '
     'settings of amalgamate): build CotrainSettings.from_options(data, '
     '...), or call gnncompress.api.amalgamate'),
    (api.amalgamate, api.DistillSettings.from_options('t.pt'),
     'amalgamate takes AmalgamateSettings, not DistillSettings (the '
     'settings of distill): build AmalgamateSettings.from_options('
     'teachers, ...), or call gnncompress.api.distill'),
])
def test_another_commands_settings_are_refused(command, given, message):
    # Before: taken as the subject (a teacher, data...) and failing later
    # on something unrelated.
    with pytest.raises(GnnCompressError) as info:
        command(given)
    assert str(info.value) == message
