"""Help text shows what the source says; messages read as English."""
import pytest
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.data import dataset_names
from gnncompress.errors import plural

COMMANDS = ['distill', 'cotrain', 'amalgamate', 'inspect', 'export', 'bench',
            'train-teacher']


@pytest.mark.parametrize('command', COMMANDS)
def test_help_keeps_placeholders(command):
    result = CliRunner().invoke(app, [command, '--help'],
                                env={'COLUMNS': '200'})
    assert result.exit_code == 0
    for eaten in ('/-', '<list[str]>', '<bool>', ' -nodes'):
        assert eaten not in result.output, (command, eaten)


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


def test_plural():
    assert plural(1, 'epoch') == '1 epoch'
    assert plural(2, 'epoch') == '2 epochs'


def test_dataset_names_include_point_clouds():
    names = dataset_names()
    for name in ('Cora', 'ModelNet10', 'ModelNet40', 'GeometricShapes'):
        assert name in names


def test_onnxruntime_peak_zero_reads_na():
    from types import SimpleNamespace

    from gnncompress.comparison import _peak_cell
    assert _peak_cell(SimpleNamespace(runtime='onnxruntime',
                                      peak_memory_mb=0.0)) == 'n/a'
    assert _peak_cell(SimpleNamespace(runtime='torch',
                                      peak_memory_mb=12.4)) == '12'
