"""gnncompress amalgamate end to end on tiny graphs: the two settings,
label independence, exported files against PyTorch, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.checkpoints.students import load_slimmable
from gnncompress.cli import app
from gnncompress.core.errors import DataError, GnnCompressError
from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.parity import onnx_feeds, onnx_session
from gnncompress.tasks.datasets import class_subset, load_graph, parse_classes

runner = CliRunner()


def _save_graph(path, num_nodes, features, classes, seed, y=None):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (3 * num_nodes,), generator=gen)
    dst = torch.randint(0, num_nodes, (3 * num_nodes,), generator=gen)
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]),
                              torch.cat([dst[keep], src[keep]])])
    if y is None:
        y = torch.arange(num_nodes) % classes
    split = torch.arange(num_nodes) % 5
    torch.save(Data(x=torch.randn(num_nodes, features, generator=gen),
                    edge_index=edge_index, y=y, train_mask=split == 0,
                    val_mask=split == 1, test_mask=split >= 2), path)
    return path


def _save_teacher(path, arch, features, classes, seed):
    torch.manual_seed(seed)
    spec = ArchSpec(arch, features, 8, 2, classes,
                    heads=2 if arch == 'gat' else 1)
    torch.save(build_model(spec).state_dict(), path)
    return path


@pytest.fixture
def two_datasets(tmp_path):
    a = _save_graph(tmp_path / 'a.pt', 30, 6, 3, 0)
    b = _save_graph(tmp_path / 'b.pt', 24, 9, 4, 1)
    return (a, b, _save_teacher(tmp_path / 'ta.pt', 'gcn', 6, 3, 0),
            _save_teacher(tmp_path / 'tb.pt', 'gat', 9, 4, 1))


def test_two_datasets_cli_writes_one_onnx_per_task_and_width(two_datasets,
                                                             tmp_path):
    a, b, ta, tb = two_datasets
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'amalgamate', str(ta), str(tb), '--data', f'{a},{b}', '--epochs',
        '2', '--widths', '0.5,1', '--width', '0.5', '--out', str(out),
        '--no-progress', '--student', 'sage', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['setting'] == 'datasets'
    assert [t['features'] for t in report['tasks']] == [6, 9]
    assert sorted(p.name for p in (out / 'onnx').iterdir()) == \
        ['a-w0.5.onnx', 'b-w0.5.onnx']
    rows = {(r['task'], r['width']): r for r in report['results']}
    assert set(rows) == {('a', 0.5), ('a', 1.0), ('b', 0.5), ('b', 1.0)}
    # The picture of accuracy and latency against width.
    png = (out / 'widths.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
    assert report['files']['widths_png'] == str(out / 'widths.png')
    assert rows[('a', 0.5)]['parameters'] < rows[('a', 1.0)]['parameters']
    assert report['student']['spec']['in_channels'] == [6, 9]
    assert 'pytorch-cpu' in rows[('b', 1.0)]['latency']
    # Each latency column names its runtime, device and threads.
    onnx_threads = rows[('b', 0.5)]['latency']['onnxruntime-cpu']['threads']
    assert f'onnxruntime cpu x{onnx_threads} p50 ms' in result.output
    assert f'pytorch cpu x{torch.get_num_threads()} p50 ms' in result.output

    # The ONNX file computes what the saved slimmable student computes.
    student, _ = load_slimmable(out / 'student.safetensors')
    graph = load_graph(b)
    session = onnx_session(out / 'onnx' / 'b-w0.5.onnx')
    got = session.run(None, onnx_feeds(session, graph.x, graph.edge_index))[0]
    with torch.no_grad():
        expected = student(graph.x, graph.edge_index, 1, 0.5).numpy()
    assert got.shape == (24, 4)
    assert np.abs(got - expected).max() < 1e-4


def _label_subset_run(tmp_path, y, name):
    (tmp_path / name).mkdir()
    data = _save_graph(tmp_path / name / 'g.pt', 32, 5, 4, 3, y=y)
    t1 = _save_teacher(tmp_path / 't1.pt', 'gin', 5, 2, 0)
    t2 = _save_teacher(tmp_path / 't2.pt', 'gcn', 5, 2, 1)
    out = tmp_path / f'out-{name}'
    report = api.amalgamate([t1, t2], data=str(data), tasks='0-1,2-3',
                            epochs=3, widths='0.5,1', export_widths='1',
                            out=out, latency=False, progress=False,
                            device='cpu')
    # Metadata order in a safetensors header varies: compare the tensors.
    return report, load_file(out / 'student.safetensors')


def test_no_label_reaches_training(tmp_path):
    y = torch.arange(32) % 4
    report, weights = _label_subset_run(tmp_path, y, 'real')
    shuffled = y[torch.randperm(32, generator=torch.Generator()
                                .manual_seed(1))]
    assert not torch.equal(shuffled, y)
    other, other_weights = _label_subset_run(tmp_path, shuffled, 'shuffled')
    assert weights.keys() == other_weights.keys()
    for key, tensor in weights.items():  # bit-identical training run
        assert torch.equal(tensor, other_weights[key]), key
    assert report.training['best_epoch'] == other.training['best_epoch']
    assert report.setting == 'label-subsets'
    assert [t['columns'] for t in report.tasks] == [[0, 2], [2, 4]]
    assert [u['width'] for u in report.union] == [0.5, 1.0]


@pytest.mark.parametrize('args, message', [
    (['--data', 'A'], 'names 1 dataset(s) for 2 teachers'),
    (['--tasks', '0-1,1-2'], 'overlap'),
    (['--tasks', '0-1'], 'gives 1 class ranges for 2 teachers'),
    (['--width', '0.3'], 'was not trained'),
    (['--topology', 'gsp'], "'topology' must be one of"),
])
def test_bad_input_is_one_line_and_writes_nothing(two_datasets, tmp_path,
                                                  args, message):
    a, b, ta, tb = two_datasets
    if args[0] == '--data':
        args = ['--data', str(a)]
    elif args[0] != '--tasks':
        args = ['--data', f'{a},{b}', *args]
    else:
        args = ['--data', str(a), *args]
    out = tmp_path / 'never'
    result = runner.invoke(app, ['amalgamate', str(ta), str(tb), *args,
                                 '--epochs', '1', '--out', str(out),
                                 '--no-progress'])
    assert result.exit_code == 1
    assert message in result.output
    assert 'Traceback' not in result.output
    assert not out.exists()


def test_teacher_order_must_match_data(two_datasets):
    a, b, ta, tb = two_datasets
    with pytest.raises(GnnCompressError, match='expects 9 input features'):
        api.amalgamate([tb, ta], data=[str(a), str(b)], epochs=1,
                       export=False, progress=False)


def test_class_subset_renumbers_labels_and_restricts_masks(tiny_graph):
    sub = class_subset(tiny_graph, [1])
    assert sub.num_classes == 1
    assert sub.y.tolist() == [-1, -1, -1, 0, 0, 0]
    assert sub.train_mask.tolist() == [False] * 3 + [True, False, False]
    assert torch.equal(sub.edge_index, tiny_graph.edge_index)
    with pytest.raises(DataError, match='do not exist'):
        class_subset(tiny_graph, [2])


def test_parse_classes():
    assert parse_classes('0-4') == [0, 1, 2, 3, 4]
    assert parse_classes('1,3') == [1, 3]
    with pytest.raises(DataError, match='like 0-4'):
        parse_classes('a-b')


def test_train_teacher_on_a_label_subset(tmp_path):
    data = _save_graph(tmp_path / 'g.pt', 32, 5, 4, 3)
    result = api.train_teacher(data, tmp_path / 't.pt', arch='gcn',
                               hidden=8, layers=2, classes='2-3', epochs=2,
                               progress=False, device='cpu')
    card = json.loads(result.card.read_text())
    assert card['classes'] == [2, 3] and result.spec.out_channels == 2


def test_gates_and_config(two_datasets, tmp_path):
    # Gates apply to every task at each exported width; the config file
    # sets the options and the report records them.
    a, b, ta, tb = two_datasets
    config = tmp_path / 'run.toml'
    config.write_text(f'[amalgamate]\ndata = "{a},{b}"\nepochs = 1\n'
                      'widths = "0.5,1"\nwidth = "1"\nprogress = false\n'
                      'device = "cpu"\n')
    out = tmp_path / 'out'
    result = runner.invoke(app, ['amalgamate', str(ta), str(tb), '--config',
                                 str(config), '--out', str(out),
                                 '--min-accuracy', '101',
                                 '--max-accuracy-drop', '100'])
    assert result.exit_code == 3, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['config']['epochs'] == 1
    gates = {g['name']: g for g in report['gates']}
    assert gates['min-accuracy']['failures'] == [
        f"{task} w1 {100 * r['test_accuracy']:.2f}%"
        for task in ('a', 'b') for r in report['results']
        if r['task'] == task and r['width'] == 1.0]
    assert gates['max-accuracy-drop']['passed']
