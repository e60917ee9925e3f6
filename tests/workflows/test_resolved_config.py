"""report.json's ``config`` records what each command resolved for the
options left out (issue 24): no ``null`` or ``'auto'`` where the run chose
a value, for distill (node and point-cloud), amalgamate and cotrain. One
helper (``with_resolved``) fills them for every command."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import SAMPLE_TEACHER, SAMPLES
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.workflows.inputs import root_used, with_resolved
from tests.workflows.test_point_clouds import clouds_file  # noqa: F401 -- shared fixture

runner = CliRunner()


def test_with_resolved_fills_only_what_was_left_out():
    given = {'data': None, 'device': 'auto', 'epochs': 3, 'width': None,
             'tasks': None}
    assert with_resolved(given, {
        'data': 'Cora', 'device': 'cpu', 'epochs': 99, 'width': '0.5,1',
        'tasks': None, 'unknown': 1}) == {
        'data': 'Cora', 'device': 'cpu', 'epochs': 3, 'width': '0.5,1',
        'tasks': None}
    assert given['data'] is None  # the caller's dict is not changed
    assert with_resolved(None, {'data': 'Cora'}) is None


def test_root_used(tmp_path):
    data_file = tmp_path / 'g.pt'
    data_file.write_bytes(b'')
    assert root_used(data_file, None) is None
    assert root_used('Cora', '/somewhere') == '/somewhere'
    assert root_used('Cora', None).endswith('datasets')


def _config(out):
    return json.loads((out / 'report.json').read_text())['config']


def test_amalgamate_config_records_datasets_root_widths_and_lambda(
        tmp_path):
    # The datasets come from the teachers' cards, read from the cards'
    # folder (the test cache is empty). The options as the command line
    # leaves them out:
    from gnncompress.api import amalgamate
    left_out = {'data': None, 'data_root': None, 'tasks': None,
                'width': None, 'lambda_': None, 'fanout': None,
                'device': 'auto', 'out': None, 'widths': '0.5,1'}
    report = amalgamate([SAMPLE_TEACHER, SAMPLE_TEACHER], hidden=8,
                        widths='0.5,1', epochs=1, out=tmp_path / 'out',
                        export=False, latency=False, progress=False,
                        config=left_out)
    assert report.config == {
        'data': 'Cora,Cora', 'data_root': str(SAMPLES / '.'),
        'tasks': None,  # whole datasets: no label subsets
        'width': '0.5,1', 'lambda_': 0.1,
        'fanout': None,  # full graph: no sampling
        'device': 'cpu', 'out': str(tmp_path / 'out'), 'widths': '0.5,1'}


def test_amalgamate_explicit_data_uses_the_cards_root():
    # --data names the cards' dataset: the cards' copy is read (offline),
    # as when --data is left out.
    from gnncompress.checkpoints.teachers import load_checkpoint
    from gnncompress.workflows.amalgamate.tasks import resolve_tasks
    ckpt = load_checkpoint(SAMPLE_TEACHER)
    tasks = resolve_tasks([ckpt, ckpt], 'Cora,Cora', None, None, 0)
    assert [t.graph.num_nodes for t in tasks] == [2708, 2708]


@pytest.mark.cpu_only  # asserts the CPU is the device
def test_cotrain_config_records_root_weight_device_and_out(
        tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    shutil.copytree(SAMPLES / 'Cora', cache / 'datasets' / 'Cora')
    monkeypatch.setenv('GNNCOMPRESS_CACHE', str(cache))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [
        'cotrain', '--data', 'Cora', '--method', 'mutual', '--hidden', '8',
        '--layers', '2', '--epochs', '1', '--no-progress', '--no-latency'])
    assert result.exit_code == 0, result.output
    out = tmp_path / 'gnncompress-out' / 'Cora-mutual'
    config = _config(out)
    assert config['data_root'] == str(cache / 'datasets')
    assert config['weight'] == 1.0
    assert config['device'] == 'cpu'
    assert config['out'] == str(out.relative_to(tmp_path))
    assert config['batch_size'] is None  # full graph: no batches
    assert config['patience'] is None  # run every epoch


@pytest.mark.cpu_only  # asserts the CPU is the device
def test_point_cloud_distill_config_records_the_student(clouds_file,  # noqa: F811
                                                        tmp_path):
    from gnncompress.api import train_teacher
    teacher = tmp_path / 't.pt'
    train_teacher(clouds_file, teacher, arch='dgcnn', hidden=[8, 8, 16],
                  k=6, emb=16, head=[8], epochs=1, points=32,
                  progress=False)
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(teacher), '--epochs', '1', '--out', str(out),
        '--no-progress', '--no-latency'])
    assert result.exit_code == 0, result.output
    config = _config(out)
    spec = json.loads((out / 'report.json').read_text())['student']['spec']
    assert config['data'] == str(clouds_file)  # a file: its path
    assert config['data_root'] is None  # a file needs no folder
    assert config['student'] == 'dgcnn' and config['layers'] == 3
    assert config['hidden'] == spec['widths'] == [4, 4, 8]
    assert config['k'] == 6
    assert config['emb'] == spec['emb_channels'] == 8
    assert config['head'] == spec['head'] == [4]
    assert config['points'] == 32  # from the teacher's card
    assert config['augment'] == ''
    assert config['batch_size'] == 32
    assert config['weight'] == 1.0 and config['label_weight'] == 1.0
    assert config['device'] == 'cpu' and config['arch'] == 'dgcnn'
    assert config['ratio'] > 1
