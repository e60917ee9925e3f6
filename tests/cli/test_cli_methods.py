"""The method options of the command line: listing, combining, pairing
layers, and the graph-free MLP student."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SAMPLE_TEACHER
from typer.testing import CliRunner

from gnncompress.checkpoints.reading import read_weights
from gnncompress.checkpoints.students import POSITION_KEY
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.methods import list_methods
from gnncompress.methods.position import deepwalk

runner = CliRunner()


def test_list_methods_names_every_distill_method():
    result = runner.invoke(app, ['distill', '--list-methods'],
                           env={'COLUMNS': '300'})

    assert result.exit_code == 0, result.output
    for name in list_methods():
        listed = f'\n{name} ' in result.output
        assert listed == (name not in ('alignahead', 'mutual')), name
    assert 'arXiv:2003.10477' in result.output  # LSP's paper
    # LSP's weight: ours, then the paper's for --weight.
    assert '0.1 (paper: 100)' in result.output
    assert 'cotrain --list-methods' in result.output


def test_glnn_exports_an_mlp_without_edge_input(tmp_path, fast_latency,
                                                cora):
    out = tmp_path / 'glnn'
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--method',
                                 'glnn', '--ratio', '30', '--epochs', '3',
                                 '--out', str(out), '--no-progress'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['student']['spec']['arch'] == 'mlp'
    assert report['method_options']['label_weight'] == 0.0
    session = ort.InferenceSession(str(out / 'student.onnx'))
    assert [i.name for i in session.get_inputs()] == ['x']
    model = load_checkpoint(out / 'student.safetensors').build()
    with torch.no_grad():
        expected = model(cora.x).numpy()
    got = session.run(None, {'x': cora.x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_glnn_position_exports_an_mlp_with_a_position_input(
        tmp_path, fast_latency, cora):
    out = tmp_path / 'position'
    small = dict(dim=8, walk_length=10, walks_per_node=1)
    options = [a for k, v in small.items()
               for a in ('-o', f'position.{k}={v}')]
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--method',
                                 'glnn+position', *options, '--ratio', '30',
                                 '--epochs', '3', '--out', str(out),
                                 '--no-progress'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['student']['spec']['arch'] == 'mlp'  # without --student
    assert report['student']['spec']['in_channels'] == 1433 + 8
    assert report['method_options']['label_weight'] == 0.0  # GLNN's
    # the positions of the training graph's nodes, as computed for the run
    position = read_weights(out / 'positions.safetensors')[0]['position']
    assert torch.equal(position, deepwalk(cora.edge_index, cora.num_nodes,
                                          seed=0, **small))
    tensors, metadata = read_weights(out / 'student.safetensors')
    assert metadata[POSITION_KEY] == '8'
    assert any('positions_for_new_nodes' in n for n in report['notes'])
    model = load_checkpoint(out / 'student.safetensors').build().eval()
    with torch.no_grad():
        expected = model(torch.cat([cora.x, position], 1)).numpy()
    # the ONNX file takes the positions as a second input, and so does
    # the file `gnncompress export` writes from the saved student
    again = tmp_path / 'again.onnx'
    exported = runner.invoke(app, ['export', str(out / 'student.safetensors'),
                                   '--out', str(again)])
    assert exported.exit_code == 0, exported.output
    for path in (out / 'student.onnx', again):
        session = ort.InferenceSession(str(path))
        assert [i.name for i in session.get_inputs()] == ['x', 'position']
        got = session.run(None, {'x': cora.x.numpy(),
                                 'position': position.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-4


def test_combined_method_with_layer_pairing(tmp_path, fast_latency):
    out = tmp_path / 'combo'
    result = runner.invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--method', 'kd+lsp', '-o',
        'lsp.weight=5', '-o', 'kd.temperature=2', '--layers-t', '-1',
        '--layers-s', '-1', '--epochs', '2', '--out', str(out),
        '--no-progress'])

    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['method'] == 'kd+lsp'
    assert report['method_options']['lsp.weight'] == 5
    assert report['method_options']['teacher_layers'] == [-1]


@pytest.mark.parametrize('args,message', [
    (['--method', 'kd', '--layers-t', '-1'], "has no option teacher_layers"),
    (['--method', 'lsp', '--layers-t', 'x'], 'layer lists are integers'),
    (['--method', 'lsp', '-o', 'kernel=cubic'], "'kernel' must be one of"),
])
def test_bad_method_options_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / 'bad'
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), *args,
                                 '--out', str(out), '--no-progress'])

    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    assert message in result.output
    assert not out.exists()
