"""Help text shows what the source says; messages read as English."""
import re

import click
import pytest
import typer
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core.errors import plural
from gnncompress.tasks.datasets import dataset_names

COMMANDS = ['distill', 'cotrain', 'amalgamate', 'inspect', 'export', 'bench',
            'train-teacher', 'datasets']


@pytest.mark.parametrize('command', COMMANDS)
def test_help_keeps_placeholders(command):
    result = CliRunner().invoke(app, [command, '--help'],
                                env={'COLUMNS': '200'})
    assert result.exit_code == 0
    for eaten in ('/-', '<list[str]>', '<bool>', ' -nodes'):
        assert eaten not in result.output, (command, eaten)


def _commands():
    root = typer.main.get_command(app)
    return root, sorted(root.commands.items())


def test_every_command_is_in_the_help_tests():
    assert {name for name, _ in _commands()[1]} >= set(COMMANDS)


@pytest.mark.parametrize('command', COMMANDS)
def test_help_has_no_braces_or_typed_placeholders(command):
    """Usage lines and argument rows show TEACHER, MODEL...: no {TEACHER},
    no <list[Path]> / <list[str]> / <bool>, no empty placeholder."""
    out = CliRunner().invoke(app, [command, '--help'],
                             env={'COLUMNS': '200'}).output
    usage = out.splitlines()[0]
    assert usage.split(' ', 2)[2].startswith(f'{command} [OPTIONS]'), usage
    assert '{' not in usage and '}' not in usage, usage
    for bad in ('<list[', '<bool>', '<>', '()', '[]'):
        assert bad not in out, (command, bad)
    assert not re.search(r'\{[A-Z]', out), command


def test_usage_names_arguments_plainly():
    runner = CliRunner()
    for command, usage in (('distill', 'TEACHER'), ('amalgamate', 'TEACHER...'),
                           ('bench', 'MODEL...'), ('export', 'CHECKPOINT')):
        out = runner.invoke(app, [command, '--help'],
                            env={'COLUMNS': '200'}).output
        assert out.splitlines()[0].split(' ', 2)[2] == \
            f'{command} [OPTIONS] {usage}'


def test_every_option_has_help_with_its_default():
    """One line of help per option, saying its default: Click shows it for
    options with a value; the others say it in words ('default: ...').
    A bare on/off flag (--json) is off unless given."""
    root, commands = _commands()
    missing = []
    for name, command in commands:
        ctx = click.Context(command, info_name=name,
                            parent=click.Context(root))
        for param in command.params:
            if param.param_type_name != 'option':
                continue
            text = param.get_help_record(ctx)[1]
            bare_flag = param.is_flag and not param.secondary_opts
            if not (param.help or '').strip() or not (
                    bare_flag or 'default' in text.lower()
                    or 'required' in text):
                missing.append(f'{name} {param.opts[0]}')
    assert missing == []


def test_help_of_the_options_that_had_none():
    out = ' '.join(CliRunner().invoke(
        app, ['train-teacher', '--help'], env={'COLUMNS': '200'})
        .output.split())
    for text in ('--norm <str> batch_norm or layer_norm',
                 '--jk <str> Jumping knowledge',
                 '--heads <int range> Attention heads',
                 '--epochs <int range> Most training epochs',
                 '--weight-decay <float> Adam weight decay',
                 '--seed <int> Random seed'):
        assert text in out, text


def test_out_default_shows_teacher_and_method():
    out = CliRunner().invoke(app, ['distill', '--help'],
                             env={'COLUMNS': '200'}).output
    assert '<teacher>-<method>' in ' '.join(out.split()).replace('- ', '-')
    assert 'KEY=VALUE' in out


def test_cotrain_data_help_names_tu_nodes():
    out = CliRunner().invoke(app, ['cotrain', '--help'],
                             env={'COLUMNS': '200'}).output
    assert '<TU>-nodes' in out


def test_completion_options_are_offered():
    out = CliRunner().invoke(app, ['--help'], env={'COLUMNS': '200'}).output
    assert '--install-completion' in out and '--show-completion' in out


def test_datasets_lists_the_cache(tmp_path):
    """gnncompress datasets: every name, where it is kept, whether it is
    there, for the cache GNNCOMPRESS_CACHE names."""
    (tmp_path / 'datasets' / 'Cora' / 'raw').mkdir(parents=True)
    result = CliRunner().invoke(app, ['datasets'], env={
        'GNNCOMPRESS_CACHE': str(tmp_path), 'COLUMNS': '200'})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in
            result.output.splitlines()[2:] if line.strip()}
    root = tmp_path / 'datasets'
    assert rows['Cora'][-2:] == ['yes', str(root / 'Cora')]
    assert rows['CiteSeer'][-2:] == ['no', str(root / 'CiteSeer')]
    assert rows['SyntheticPPI'][-2:] == ['generated', '-']
    assert rows['ModelNet40'][-2:] == ['no',
                                       str(root / 'clouds' / 'ModelNet40')]
    for name in dataset_names():
        assert name in rows
    assert f'{root} ($GNNCOMPRESS_CACHE)' in result.output


def test_plural():
    assert plural(1, 'epoch') == '1 epoch'
    assert plural(2, 'epoch') == '2 epochs'


def test_dataset_names_include_point_clouds():
    names = dataset_names()
    for name in ('Cora', 'ModelNet10', 'ModelNet40', 'GeometricShapes'):
        assert name in names


def test_onnxruntime_peak_zero_reads_na():
    from types import SimpleNamespace

    from gnncompress.workflows.bench_table import _peak_cell
    assert _peak_cell(SimpleNamespace(runtime='onnxruntime',
                                      peak_memory_mb=0.0)) == 'n/a'
    assert _peak_cell(SimpleNamespace(runtime='torch',
                                      peak_memory_mb=12.4)) == '12'


@pytest.mark.parametrize('command', COMMANDS)
def test_help_renders_every_options_help_as_written(command):
    """Each option's help, as written in the source, is in the rendered
    --help (no markup eaten: <teacher>, [default: ...], KEY=VALUE)."""
    def flat(text):
        return ' '.join(text.split()).replace('- ', '-')

    root, commands = _commands()
    out = flat(CliRunner().invoke(app, [command, '--help'],
                                  env={'COLUMNS': '200'}).output)
    missing = [param.opts[0] for param in dict(commands)[command].params
               if getattr(param, 'help', None) and flat(param.help) not in out]
    assert missing == []
