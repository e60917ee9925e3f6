"""The command line, end to end and on bad input: exit codes, messages and
what is (not) left on disk."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SAMPLE_TEACHER, SAMPLES, quick_latency
from torch import Tensor
from torch_geometric.nn.models import GCN
from typer.testing import CliRunner

from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app

runner = CliRunner()


# distill, end to end --------------------------------------------------------

@pytest.fixture(scope='module')
def distilled(tmp_path_factory):
    """One short distillation of the bundled GAT teacher, shared by the
    tests below (it is the slow part of the suite)."""
    out = tmp_path_factory.mktemp('distill') / 'run'
    with pytest.MonkeyPatch.context() as mp:
        # Latency is measured for the report; a few runs are enough to check
        # its shape and keep the suite fast.
        quick_latency(mp, warmup=1, repeat=2)
        result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER),
                                     '--method', 'kd', '--epochs', '3',
                                     '--out', str(out), '--no-progress'])
    return result, out


def test_distill_writes_every_file(distilled):
    result, out = distilled

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        'report.json', 'report.md', 'student.onnx', 'student.safetensors',
        'training.png']
    png = (out / 'training.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
    assert 'compression: 10.0x fewer parameters' in result.output
    assert f'wrote {out}/' in result.output
    assert not [p for p in out.parent.iterdir() if p.name.startswith('.')]
    markdown = (out / 'report.md').read_text()
    assert markdown.startswith('# gnncompress distill report')
    assert 'student.onnx' in markdown


def test_distill_report_json(distilled):
    result, out = distilled
    assert result.exit_code == 0, result.output

    report = json.loads((out / 'report.json').read_text())

    assert {'teacher', 'student', 'compression_ratio',
            'onnx_max_abs_diff'} <= set(report)
    assert report['compression_ratio'] >= 10
    assert report['compression_ratio'] == pytest.approx(
        report['teacher']['parameters'] / report['student']['parameters'])
    assert report['teacher']['parameters'] == 448_375
    assert report['teacher']['spec']['arch'] == 'gat'
    assert 0.0 <= max(report['onnx_parity_relative'].values()) <= 1e-4
    assert sorted(report['onnx_parity']) == [
        'export graph', 'isolated nodes', 'larger graph', 'no edges',
        'repeated destinations']
    assert 0.0 <= report['student']['test_accuracy'] <= 1.0
    assert 0.0 <= report['teacher']['test_accuracy'] <= 1.0
    assert report['training']['epochs_run'] == 3
    assert report['data']['name'] == 'Cora'
    # One history entry per epoch: the total loss is the weighted sum of its
    # terms (both weights 1 for KD), the best epoch has the best score.
    history = report['training']['history']
    assert [h['epoch'] for h in history] == [1, 2, 3]
    for h in history:
        assert h['loss'] == pytest.approx(h['loss_ce'] + h['loss_kd'])
    best = max(history, key=lambda h: h['val'])
    assert report['training']['best_epoch'] == best['epoch']
    assert report['files']['training_png'] == str(out / 'training.png')
    assert report['student']['file_bytes'] == \
        (out / 'student.safetensors').stat().st_size
    for entry in ('teacher', 'student'):
        for key, latency in report[entry]['latency'].items():
            assert latency['median_ms'] > 0
            assert latency['p95_ms'] >= latency['median_ms']
            # Every figure names its runtime, device and threads.
            assert key == f"{latency['runtime']}-{latency['device']}"
            assert latency['threads'] >= 1
    assert 'onnxruntime-cpu' in report['student']['latency']
    # Teacher and student timed in PyTorch with the same threads: the
    # speed-up is the ratio of the two medians. The teacher is timed in
    # onnxruntime only with --teacher-onnx
    # (tests/outputs/test_latency_report.py).
    assert 'onnxruntime-cpu' not in report['teacher']['latency']
    [speedup] = report['speedups']
    teacher = report['teacher']['latency']['pytorch-cpu']
    student = report['student']['latency']['pytorch-cpu']
    assert teacher['threads'] == student['threads'] == speedup[
        'student_threads']
    assert speedup['runtime'] == 'pytorch'
    assert speedup['speedup'] == pytest.approx(
        teacher['median_ms'] / student['median_ms'])
    assert 'student speed-up over the teacher: ' in result.output
    threads = report['student']['latency']['onnxruntime-cpu']['threads']
    assert f'onnxruntime cpu x{threads} p50 / p95 ms' in result.output


def test_distilled_student_reloads_and_matches_onnx(distilled, cora):
    result, out = distilled
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())

    ckpt = load_checkpoint(out / 'student.safetensors')
    model = ckpt.build()
    with torch.no_grad():
        logits = model(cora.x, cora.edge_index).numpy()
    session = ort.InferenceSession(str(out / 'student.onnx'),
                                   providers=['CPUExecutionProvider'])
    (onnx_logits,) = session.run(None, {'x': cora.x.numpy(),
                                        'edge_index': cora.edge_index.numpy()})

    assert ckpt.spec.to_dict() == report['student']['spec']
    assert sum(p.numel() for p in model.parameters()) == \
        report['student']['parameters']
    np.testing.assert_allclose(onnx_logits, logits, rtol=0, atol=1e-4)
    assert np.array_equal(onnx_logits.argmax(-1), logits.argmax(-1))
    mask = cora.test_mask.numpy()
    accuracy = (logits.argmax(-1)[mask] == cora.y.numpy()[mask]).mean()
    assert accuracy == pytest.approx(report['student']['test_accuracy'],
                                     abs=1e-6)


# inspect and train-teacher ---------------------------------------------------

def test_inspect_sample_teacher():
    result = runner.invoke(app, ['inspect', str(SAMPLE_TEACHER)])

    assert result.exit_code == 0, result.output
    assert 'GAT 3 layers x 256 hidden x 8 heads, 1433 -> 7' in result.output
    assert 'parameters: 448,375' in result.output
    assert re.search(r'heads\s+8\s+from weights', result.output)
    assert re.search(r'dropout\s+0\.6\s+from card', result.output)


def test_inspect_json():
    result = runner.invoke(app, ['inspect', str(SAMPLE_TEACHER), '--json'])

    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info['parameters'] == 448_375
    assert info['spec']['arch'] == 'gat' and info['spec']['heads'] == 8
    assert info['spec']['in_channels'] == 1433
    assert info['sources']['heads'] == 'weights'
    assert info['card']['data'] == 'Cora'


def test_train_teacher_writes_state_dict_and_card(tmp_path):
    out = tmp_path / 'teachers' / 't.pt'  # the folder does not exist yet

    result = runner.invoke(app, [
        'train-teacher', '--data', 'Cora', '--data-root', str(SAMPLES),
        '--arch', 'gcn', '--hidden', '16', '--layers', '2', '--epochs', '5',
        '--out', str(out), '--no-progress'])

    assert result.exit_code == 0, result.output
    assert 'GCN 2 layers x 16 hidden, 1433 -> 7' in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ['t.json', 't.pt']
    state = torch.load(out, weights_only=True)
    assert type(state) is dict and state
    assert all(isinstance(k, str) and isinstance(v, Tensor)
               for k, v in state.items())
    assert state['convs.0.lin.weight'].shape == (16, 1433)
    card = json.loads(out.with_suffix('.json').read_text())
    assert card['kind'] == CARD_KIND
    assert card['data'] == 'Cora' and card['epochs_run'] == 5
    assert card['spec']['dropout'] == 0.5
    ckpt = load_checkpoint(out)
    assert (ckpt.spec.arch, ckpt.spec.hidden_channels, ckpt.spec.num_layers,
            ckpt.spec.out_channels) == ('gcn', 16, 2, 7)
    assert ckpt.sources['dropout'] == 'card'


# bad input: one line, exit code 1, nothing written ---------------------------

def _distill(teacher: Path | str, out: Path, *args: str):
    return runner.invoke(app, ['distill', str(teacher), '--out', str(out),
                               '--epochs', '3', '--no-progress', *args])


def _assert_clean_failure(result, out: Path, *needles: str) -> str:
    """Exit code 1, one 'Error:' line naming the problem, no output folder
    and no staging folder left behind."""
    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    assert result.stderr.strip() == lines[0]
    message = lines[0]
    for needle in needles:
        assert needle in message, (needle, message)
    assert not out.exists(), f'{out} was created by a failed run'
    leftovers = [p.name for p in out.parent.iterdir()
                 if p.name.startswith('.gnncompress-')]
    assert leftovers == []
    return message


def test_missing_checkpoint(tmp_path):
    out = tmp_path / 'out'

    result = _distill(tmp_path / 'missing.pt', out)

    _assert_clean_failure(result, out, 'not found', 'missing.pt')


def test_random_bytes(tmp_path):
    teacher = tmp_path / 'random.pt'
    teacher.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / 'out'
    out.mkdir()  # an existing, empty output folder stays empty

    result = runner.invoke(app, ['distill', str(teacher), '--out', str(out),
                                 '--no-progress'])

    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert 'random.pt is not a PyTorch (.pt) or safetensors checkpoint' \
        in lines[0]
    assert list(out.iterdir()) == []


def test_truncated_checkpoint(tmp_path):
    data = SAMPLE_TEACHER.read_bytes()
    teacher = tmp_path / 'truncated.pt'
    teacher.write_bytes(data[:len(data) // 2])
    out = tmp_path / 'out'

    result = _distill(teacher, out)

    _assert_clean_failure(result, out, 'truncated.pt', 'truncated')


class TrapGCN(GCN):
    """A model whose unpickling leaves a marker file behind."""

    def __setstate__(self, state):
        Path(state['marker']).write_text('unpickled')
        super().__setstate__(state)


def test_pickled_module_is_never_unpickled(tmp_path):
    marker = tmp_path / 'UNPICKLED'
    model = TrapGCN(1433, 8, 2, 7)
    model.marker = str(marker)
    teacher = tmp_path / 'full_model.pt'
    torch.save(model, teacher)  # the whole module, not its state_dict
    out = tmp_path / 'out'

    result = _distill(teacher, out)

    _assert_clean_failure(result, out, 'pickled', 'never unpickles',
                          'state_dict()')
    assert not marker.exists()
    # The trap works: an unsafe load would have sprung it.
    torch.load(teacher, weights_only=False)
    assert marker.read_text() == 'unpickled'


def test_unknown_architecture(tmp_path):
    teacher = tmp_path / 'foo.pt'
    torch.save({'foo.weight': torch.zeros(2, 2)}, teacher)
    out = tmp_path / 'out'

    result = _distill(teacher, out)

    _assert_clean_failure(result, out, 'Unknown architecture', 'foo.weight',
                          'GCN')


def test_teacher_input_width_differs_from_data(tmp_path):
    teacher = tmp_path / 'narrow.pt'
    torch.save(GCN(10, 8, 2, 7).state_dict(), teacher)
    out = tmp_path / 'out'

    result = _distill(teacher, out, '--data', 'Cora', '--data-root',
                      str(SAMPLES))

    message = _assert_clean_failure(result, out, '1433', 'Cora')
    assert re.search(r'\b10\b', message)


def test_unknown_method(tmp_path):
    out = tmp_path / 'out'

    result = _distill(SAMPLE_TEACHER, out, '--method', 'no-such-method')

    _assert_clean_failure(result, out, 'no-such-method', 'kd', 'lsp')


def test_unknown_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # 'NoSuchData' is no file here either
    out = tmp_path / 'out'

    result = _distill(SAMPLE_TEACHER, out, '--data', 'NoSuchData')

    _assert_clean_failure(result, out, "'NoSuchData'", 'Cora')


def test_output_folder_cannot_be_written(tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    out = blocker / 'out'

    result = _distill(SAMPLE_TEACHER, out)

    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    assert str(out) in lines[0] and 'cannot be written' in lines[0]
    assert blocker.read_text() == 'not a folder'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file']


def test_normalized_teacher_card_carries_to_distill(tmp_path, monkeypatch):
    # A teacher trained on row-normalised features says so on its card, and
    # distill feeds the student the same features unless told otherwise.
    quick_latency(monkeypatch, warmup=0, repeat=1)
    teacher = tmp_path / 't.pt'
    result = runner.invoke(app, [
        'train-teacher', '--data', 'Cora', '--data-root', str(SAMPLES),
        '--arch', 'gcn', '--hidden', '8', '--layers', '2', '--epochs', '2',
        '--normalize-features', '--out', str(teacher), '--no-progress'])
    assert result.exit_code == 0, result.output
    assert json.loads(teacher.with_suffix('.json').read_text())[
        'normalize_features'] is True
    for flag, expected in (([], 'row'), (['--raw-features'], None)):
        out = tmp_path / f'out{len(flag)}'
        result = runner.invoke(app, ['distill', str(teacher), '--epochs', '1',
                                     '--hidden', '4', '--out', str(out),
                                     '--no-progress', *flag])
        assert result.exit_code == 0, result.output
        report = json.loads((out / 'report.json').read_text())
        assert report['data']['feature_norm'] == expected
