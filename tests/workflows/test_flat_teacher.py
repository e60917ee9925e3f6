"""The report's note on a teacher whose soft labels are nearly uniform
(GLNN's PubMed teacher: mean top probability 0.37 over 3 classes), from
which soft-label losses teach the student little."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
from conftest import SAMPLES, quick_latency
from layouts import ExampleGAT

import gnncompress.api
from gnncompress.tasks.datasets import load_graph
from gnncompress.workflows.students import FLAT_FRACTION, flat_teacher_note


def logits_with_top(p: float, classes: int, rows: int = 4) -> torch.Tensor:
    """Rows whose softmax puts ``p`` on class 0, the rest spread evenly."""
    rest = (1 - p) / (classes - 1)
    row = torch.tensor([math.log(p)] + [math.log(rest)] * (classes - 1))
    return row.repeat(rows, 1)


def test_flat_teacher_is_named_with_its_figures():
    note = flat_teacher_note(logits_with_top(0.37, 3))
    assert note is not None
    assert 'mean top class probability 0.37 over 3 classes' in note
    assert 'uniform is 0.33' in note
    assert '-o temperature=0.1' in note


def test_the_threshold_is_a_fifth_of_the_way_from_uniform_to_certain():
    # 3 classes: uniform 1/3, threshold 1/3 + 0.2 * 2/3 = 0.4667.
    edge = 1 / 3 + FLAT_FRACTION * (2 / 3)
    assert flat_teacher_note(logits_with_top(edge - 0.01, 3)) is not None
    assert flat_teacher_note(logits_with_top(edge + 0.01, 3)) is None
    # A confident teacher, and multi-label outputs, get no note.
    assert flat_teacher_note(logits_with_top(0.83, 7)) is None
    assert flat_teacher_note(logits_with_top(0.3, 3),
                             multilabel=True) is None


def test_blocks_give_the_mean_over_all_rows():
    # Half the rows at 0.36, half at 0.40: the mean, 0.38, is reported.
    logits = torch.cat([logits_with_top(0.36, 3, 70000),
                        logits_with_top(0.40, 3, 70000)])
    assert 'probability 0.38 over' in flat_teacher_note(logits)


def flat_sample_teacher(folder) -> object:
    """The sample GAT with its last layer scaled down 100 times: nearly
    uniform outputs (its card copied beside it)."""
    state = torch.load(SAMPLES / 'cora_gat.pt', weights_only=True)
    for key in ('convs.2.lin.weight', 'convs.2.bias'):
        state[key] = state[key] * 0.01
    folder.mkdir()
    torch.save(state, folder / 'cora_gat.pt')
    shutil.copy(SAMPLES / 'cora_gat.json', folder / 'cora_gat.json')
    return folder / 'cora_gat.pt'


def test_distill_of_a_flat_module_teacher_says_so(tmp_path, monkeypatch):
    quick_latency(monkeypatch)
    graph = load_graph('Cora', SAMPLES, seed=0)
    torch.manual_seed(0)
    module = ExampleGAT(graph.num_features, graph.num_classes).eval()
    with torch.no_grad():  # scale the logits down: nearly uniform outputs
        for p in module.parameters():
            p.mul_(0.01)
    report = gnncompress.api.distill(
        module, data='Cora', data_root=SAMPLES, method='glnn', epochs=1,
        hidden=8, out=tmp_path / 'run', progress=False, export=False)
    flat = [n for n in report.notes if 'nearly flat' in n]
    assert len(flat) == 1 and 'over 7 classes' in flat[0]


@pytest.mark.parametrize('batch_size', [None, 1024])  # full graph, sampled
def test_distill_of_a_flat_checkpoint_says_so(tmp_path, monkeypatch,
                                              batch_size):
    quick_latency(monkeypatch)
    teacher = flat_sample_teacher(tmp_path / 'teacher')
    report = gnncompress.api.distill(
        teacher, data_root=SAMPLES, method='kd', epochs=1,
        out=tmp_path / 'run', progress=False, export=False,
        batch_size=batch_size)
    flat = [n for n in report.notes if 'nearly flat' in n]
    assert len(flat) == 1 and 'over 7 classes' in flat[0]


@pytest.mark.parametrize('method', ['kd'])
def test_distill_of_the_sample_teacher_has_no_such_note(tmp_path,
                                                        monkeypatch, method):
    quick_latency(monkeypatch)
    report = gnncompress.api.distill(
        SAMPLES / 'cora_gat.pt', data_root=SAMPLES, method=method, epochs=1,
        out=tmp_path / 'run', progress=False, export=False)
    assert not any('nearly flat' in n for n in report.notes)
