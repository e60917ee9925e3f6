"""distill with no method runs auto where auto can run, and kd (with a
note saying why) where it cannot."""
from __future__ import annotations

import pytest
from conftest import SAMPLES, quick_latency
from typer.testing import CliRunner

import gnncompress.api
from gnncompress.cli import app
from gnncompress.workflows.auto import CANDIDATES, default_method


@pytest.mark.parametrize('given, why', [
    ({'nproc': 2}, 'trains in one process'),
    ({'batch_size': 64}, 'trains full-graph'),
    ({'fanout': [5, 5]}, 'trains full-graph'),
    ({'checkpoint_every': 5}, 'keeps no training checkpoints'),
    ({'resume': 'run'}, 'keeps no training checkpoints'),
    ({'method_options': {'temperature': 2.0}}, 'set one'),
    ({'weight': 0.5}, 'set one'),
    ({'label_weight': 0.0}, 'set one'),
])
def test_where_auto_cannot_run_kd_is_used_and_the_note_says_why(given, why):
    method, note = default_method(given)
    assert method == 'kd'
    assert why in note and 'name one with --method' in note


def test_auto_where_it_can_run():
    # Settings at their defaults (None, empty) leave auto in place.
    assert default_method({'nproc': None, 'batch_size': None,
                           'method_options': {}, 'weight': None,
                           'budget_s': 30.0}) == ('auto', None)
    assert default_method({}, torchrun=True)[0] == 'kd'
    assert default_method({}, point_cloud=True)[0] == 'kd'


def test_distill_without_a_method_runs_auto(tmp_path, monkeypatch):
    quick_latency(monkeypatch)
    monkeypatch.chdir(tmp_path)
    report = gnncompress.api.distill(SAMPLES / 'cora_gat.pt',
                                     data_root=SAMPLES, epochs=2,
                                     progress=False, export=False)
    assert report.method == f"auto: {report.auto['chosen']}"
    assert [c['method'] for c in report.auto['candidates']] == \
        list(CANDIDATES)
    # The default folder is named after auto, not the method it chose.
    assert (tmp_path / 'gnncompress-out' / 'cora_gat-auto' /
            'report.json').is_file()


def test_distill_without_a_method_with_a_kd_option_runs_kd(tmp_path,
                                                          monkeypatch):
    quick_latency(monkeypatch)
    report = gnncompress.api.distill(
        SAMPLES / 'cora_gat.pt', data_root=SAMPLES, epochs=2,
        method_options={'temperature': 2.0}, out=tmp_path / 'run',
        progress=False, export=False)
    assert report.method == 'kd' and report.auto is None
    assert any("distill's default method, auto, tries several" in n
               for n in report.notes)


def test_distill_without_a_method_on_sampled_subgraphs_runs_kd(tmp_path,
                                                               monkeypatch):
    quick_latency(monkeypatch)
    report = gnncompress.api.distill(
        SAMPLES / 'cora_gat.pt', data_root=SAMPLES, epochs=1,
        batch_size=512, out=tmp_path / 'run', progress=False, export=False)
    assert report.method == 'kd'
    assert any('trains full-graph (no --batch-size' in n
               for n in report.notes)


def test_an_explicit_auto_is_still_refused_with_batches(tmp_path):
    result = CliRunner().invoke(app, [
        'distill', str(SAMPLES / 'cora_gat.pt'), '--method', 'auto',
        '--batch-size', '512', '--out', str(tmp_path / 'run')])
    assert result.exit_code == 1
    assert '--method auto trains full-graph' in result.output


def test_help_names_the_default():
    result = CliRunner().invoke(app, ['distill', '--help'],
                                env={'COLUMNS': '200'})
    assert 'Default: auto; kd where auto cannot run' in \
        ' '.join(result.output.split())
