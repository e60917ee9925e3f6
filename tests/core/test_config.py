"""--config run.toml: keys are the options, the command line wins, the
report records what the run resolved, and bad files fail in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE_TEACHER, quick_latency
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core.config import ConfigError, load_config

runner = CliRunner()


@pytest.fixture(autouse=True)
def _quick_latency(monkeypatch):
    # The report's latency is not what these tests check.
    quick_latency(monkeypatch, warmup=0, repeat=1)
KNOWN = ['epochs', 'weight_decay', 'method', 'option']


def test_keys_tables_and_dashes(tmp_path):
    path = tmp_path / 'run.toml'
    path.write_text('epochs = 5\nweight-decay = 0.01\n'
                    '[distill]\nepochs = 7\noption = ["kernel=poly"]\n'
                    '[bench]\nrepeat = 3\n')
    # The [distill] table wins over the top level; [bench] is not ours.
    assert load_config(path, 'distill', KNOWN) == {
        'epochs': 7, 'weight_decay': 0.01, 'option': ['kernel=poly']}


@pytest.mark.parametrize('text, message', [
    ('epochs = ', 'not valid TOML'),
    ('epoch = 5', "'epoch' is not an option of 'distill'"),
    ('distill = 3', "'distill' must be a table"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / 'run.toml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, 'distill', KNOWN)
    with pytest.raises(ConfigError, match='not found'):
        load_config(tmp_path / 'nope.toml', 'distill', KNOWN)


def test_distill_uses_the_file_and_the_command_line_wins(tmp_path):
    config = tmp_path / 'run.toml'
    config.write_text(f'teacher = "{SAMPLE_TEACHER}"\n[distill]\n'
                      'epochs = 2\nhidden = 4\nmethod = "lsp"\n'
                      'option = ["kernel=linear"]\nseed = 3\n')
    out = tmp_path / 'out'
    result = runner.invoke(app, ['distill', '--config', str(config),
                                 '--seed', '5', '--out', str(out),
                                 '--no-progress'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['training']['epochs_run'] == 2
    assert report['method'] == 'lsp'
    assert report['method_options']['kernel'] == 'linear'
    assert report['seed'] == 5  # the command line over the file's 3
    assert report['student']['spec']['hidden_channels'] == 4
    resolved = report['config']
    assert resolved['config'] == str(config)
    assert (resolved['epochs'], resolved['seed'], resolved['hidden']) == \
        (2, 5, 4)
    assert resolved['teacher'] == str(SAMPLE_TEACHER)


def test_unknown_key_is_one_line_exit_1(tmp_path):
    config = tmp_path / 'run.toml'
    config.write_text('[distill]\nepoch = 2\n')
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--config',
                                 str(config), '--out', str(tmp_path / 'o')])
    assert result.exit_code == 1
    assert "'epoch' is not an option of 'distill'" in result.output
    assert 'Traceback' not in result.output
    assert not (tmp_path / 'o').exists()


def test_distill_gates(tmp_path):
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--epochs', '1', '--hidden', '2',
        '--out', str(out), '--no-progress', '--min-accuracy', '99.5',
        '--max-accuracy-drop', '100'])
    assert result.exit_code == 3, result.output
    assert 'gate min-accuracy 99.5 failed' in result.output
    assert 'gate max-accuracy-drop 100: passed' in result.output
    gates = json.loads((out / 'report.json').read_text())['gates']
    assert [(g['name'], g['passed']) for g in gates] == [
        ('min-accuracy', False), ('max-accuracy-drop', True)]


def test_every_shipped_config_names_real_options():
    # configs/ must keep working as options change: each table is checked
    # against the options of its command.
    import tomllib

    import typer

    from gnncompress.cli.parsing import config_keys

    root = Path(__file__).resolve().parents[2] / 'configs'
    files = sorted(root.glob('*.toml'))
    assert len(files) >= 4
    commands = {c.name: c for c in typer.main.get_command(app).commands
                .values()}
    for path in files:
        tables = tomllib.loads(path.read_text())
        assert tables and all(isinstance(v, dict) for v in tables.values())
        for name in tables:
            load_config(path, name, config_keys(commands[name]))
