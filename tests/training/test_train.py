"""The training loop (fit), frozen forwards and run_model."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gnncompress.core.errors import GnnCompressError, TrainingError
from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.methods.kd import KD
from gnncompress.methods.lsp import LSP
from gnncompress.models import ArchSpec, ModelOutput, build_model, run_model
from gnncompress.training.loop import FitResult
from gnncompress.training.train import fit, forward_frozen


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # Full-graph Cora epochs take milliseconds on one thread but can take
    # seconds when two threads compete with other processes for the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count_correct(logits: Tensor, y: Tensor, mask: Tensor) -> tuple[int, int]:
    pred = logits.argmax(-1).tolist()
    labels, keep = y.tolist(), mask.tolist()
    hits = sum(1 for p, t, k in zip(pred, labels, keep) if k and p == t)
    return hits, sum(keep)


def _eval_accuracy(model, graph: Graph, mask: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(graph.x, graph.edge_index)
    hits, total = _count_correct(logits, graph.y, mask)
    return hits / total


class _ConstantLoss(DistillMethod):
    """Loss 2.0 whatever the student does (but still attached to it)."""
    name = 'constant'
    default_weight = 3.0
    paper = 'test'

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        return student_output.logits.sum() * 0.0 + 2.0


class _Recording(DistillMethod):
    """Records what fit hands to prepare and loss."""
    name = 'recording'
    paper = 'test'

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[tuple[Sequence[ModelOutput], Graph]] = []
        self.seen: list[Sequence[ModelOutput]] = []

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        self.prepared.append((teacher_outputs, graph))

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        assert len(self.prepared) == 1, 'prepare must come first'
        self.seen.append(teacher_outputs)
        return student_output.logits.sum() * 0.0


class _NaNAfter(DistillMethod):
    """Finite for the first ``finite_calls`` calls, then NaN."""
    name = 'nanloss'
    paper = 'test'

    def __init__(self, finite_calls: int = 0) -> None:
        super().__init__()
        self.finite_calls = finite_calls
        self.calls = 0

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        self.calls += 1
        value = 0.0 if self.calls <= self.finite_calls else float('nan')
        return student_output.logits.sum() * 0.0 + value


# ---------------------------------------------------------------- fit


def test_fit_keeps_best_validation_weights(cora):
    torch.manual_seed(0)
    student = build_model(ArchSpec('gcn', cora.num_features, 16, 2,
                                   cora.num_classes))

    # A high learning rate makes validation accuracy wander after its peak.
    result = fit(student, cora, epochs=30, lr=0.05, patience=None,
                 progress=False)

    assert isinstance(result, FitResult)
    vals = [h['val'] for h in result.history]
    assert [h['epoch'] for h in result.history] == list(range(1, 31))
    assert result.epochs_run == 30
    assert result.val_accuracy == max(vals)
    # The first epoch that reached the maximum.
    assert result.best_epoch == vals.index(max(vals)) + 1
    assert result.history[result.best_epoch - 1]['val'] == max(vals)
    # Otherwise restoring the best weights would not be tested.
    assert vals[-1] < max(vals)
    assert all(math.isfinite(h['loss']) for h in result.history)

    # The student now holds the best epoch's weights.
    assert not student.training
    val_hits, val_total = _count_correct(
        student(cora.x, cora.edge_index), cora.y, cora.val_mask)
    assert val_total == 500
    assert val_hits / val_total == pytest.approx(result.val_accuracy,
                                                 abs=1e-6)
    assert _eval_accuracy(student, cora, cora.test_mask) == pytest.approx(
        result.test_accuracy, abs=1e-6)


def test_fit_on_tiny_graph_stops_after_patience(tiny_graph):
    torch.manual_seed(0)
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))

    result = fit(student, tiny_graph, epochs=200, patience=3, progress=False)

    # Two validation nodes: accuracy can rise at most twice, so patience
    # ends training long before 200 epochs.
    assert result.epochs_run == result.best_epoch + 3
    assert len(result.history) == result.epochs_run
    assert result.val_accuracy == max(h['val'] for h in result.history)
    assert _eval_accuracy(student, tiny_graph, tiny_graph.val_mask) == \
        result.val_accuracy
    assert result.seconds >= 0


def test_fit_without_labels_uses_method_default_weight(tiny_graph):
    # label_weight = 0: the loss is weight * 2.0; weight defaults to the
    # method's default_weight 3.0 -> 6.0, and weight=0.5 gives 1.0.
    teacher_out = ModelOutput(logits=torch.zeros(6, 2))
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))

    result = fit(student, tiny_graph, method=_ConstantLoss(),
                 teacher_outputs=[teacher_out], epochs=2, label_weight=0.0,
                 progress=False)
    assert [h['loss'] for h in result.history] == [6.0, 6.0]

    result = fit(student, tiny_graph, method=_ConstantLoss(),
                 teacher_outputs=[teacher_out], epochs=2, label_weight=0.0,
                 weight=0.5, progress=False)
    assert [h['loss'] for h in result.history] == [1.0, 1.0]


def test_fit_prepares_method_once_then_reuses_teacher_outputs(tiny_graph):
    teacher_out = ModelOutput(logits=torch.zeros(6, 2))
    method = _Recording()
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))

    fit(student, tiny_graph, method=method, teacher_outputs=[teacher_out],
        epochs=3, patience=None, progress=False)

    assert len(method.prepared) == 1
    (outputs, graph), = method.prepared
    assert outputs[0] is teacher_out and graph is tiny_graph
    assert len(method.seen) == 3
    # The same objects every epoch, so LSP's identity-keyed cache hits.
    assert all(seen[0] is teacher_out for seen in method.seen)


def test_fit_loss_is_label_weighted_cross_entropy(tiny_graph):
    # Epoch 1's loss is computed before the first step: compare it with the
    # cross-entropy of the untouched model, worked out with math.
    torch.manual_seed(0)
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))
    student.train()
    with torch.no_grad():
        logits = student(tiny_graph.x, tiny_graph.edge_index).tolist()
    ce = []
    for n in (0, 3):  # the training nodes
        row, label = logits[n], int(tiny_graph.y[n])
        ce.append(math.log(sum(math.exp(v) for v in row)) - row[label])
    expected = 0.25 * sum(ce) / len(ce)

    result = fit(student, tiny_graph, epochs=1, label_weight=0.25,
                 progress=False)

    assert result.history[0]['loss'] == pytest.approx(expected, rel=1e-5)


def test_fit_with_kd_from_trained_teacher(cora):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('gcn', cora.num_features, 16, 2,
                                   cora.num_classes))
    fit(teacher, cora, epochs=40, progress=False)
    teacher_out = forward_frozen(teacher, cora)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_model(ArchSpec('gcn', cora.num_features, 8, 2,
                                   cora.num_classes))

    result = fit(student, cora, method=KD(), teacher_outputs=[teacher_out],
                 epochs=30, progress=False)

    assert math.isfinite(result.test_accuracy)
    assert result.test_accuracy > 0.5  # chance is 1/7
    assert all(math.isfinite(h['loss']) for h in result.history)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k])


def test_fit_with_lsp_is_finite(cora):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec('gcn', cora.num_features, 16, 2,
                                   cora.num_classes))
    student = build_model(ArchSpec('gcn', cora.num_features, 8, 2,
                                   cora.num_classes))
    teacher_out = forward_frozen(teacher, cora)

    result = fit(student, cora, method=LSP(), teacher_outputs=[teacher_out],
                 epochs=5, progress=False)

    assert all(math.isfinite(h['loss']) for h in result.history)
    assert math.isfinite(result.test_accuracy)


def test_nan_loss_raises_training_error_naming_epoch_and_term(tiny_graph):
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))
    teacher_out = ModelOutput(logits=torch.zeros(6, 2))

    with pytest.raises(TrainingError) as info:
        fit(student, tiny_graph, method=_NaNAfter(),
            teacher_outputs=[teacher_out], epochs=5, progress=False)

    message = str(info.value)
    assert re.search(r'\bepoch 1\b', message), message
    assert 'nanloss=nan' in message
    assert 'ce=' in message
    assert isinstance(info.value, GnnCompressError)


def test_nan_loss_later_names_that_epoch(tiny_graph):
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))
    teacher_out = ModelOutput(logits=torch.zeros(6, 2))

    with pytest.raises(TrainingError, match=r'\bepoch 3\b'):
        fit(student, tiny_graph, method=_NaNAfter(finite_calls=2),
            teacher_outputs=[teacher_out], epochs=5, progress=False)


def test_method_without_teacher_outputs_raises(tiny_graph):
    student = build_model(ArchSpec('gcn', 5, 8, 2, 2))

    with pytest.raises(ValueError, match='teacher outputs'):
        fit(student, tiny_graph, method=KD(), epochs=1, progress=False)


# ------------------------------------------------------ forward_frozen


def test_forward_frozen_is_eval_and_detached(tiny_graph):
    torch.manual_seed(0)
    model = build_model(ArchSpec('gcn', 5, 8, 3, 2, dropout=0.5))
    model.train()

    out = forward_frozen(model, tiny_graph)

    assert not model.training
    assert not out.logits.requires_grad
    assert not any(h.requires_grad for h in out.hiddens)
    with torch.no_grad():
        expected = model(tiny_graph.x, tiny_graph.edge_index)
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert len(out.hiddens) == 2


# ---------------------------------------------------------- run_model

ARCH_CASES = [
    pytest.param(arch, norm, jk, id=f'{arch}-{norm}-{jk}')
    for arch in ('gcn', 'gat', 'gatv2', 'sage', 'gin')
    for norm, jk in ((None, None), ('batch_norm', None), (None, 'cat'),
                     ('batch_norm', 'cat'), (None, 'last'))
]


@pytest.mark.parametrize('arch, norm, jk', ARCH_CASES)
def test_run_model_matches_forward(arch, norm, jk, tiny_graph):
    torch.manual_seed(0)
    spec = ArchSpec(arch, 5, 8, 3, 2, heads=2, dropout=0.5, norm=norm, jk=jk)
    model = build_model(spec)
    x, edge_index = tiny_graph.x, tiny_graph.edge_index
    model.train()
    with torch.no_grad():  # move the batch-norm running statistics
        for _ in range(3):
            model(x, edge_index)
    model.eval()

    with torch.no_grad():
        out = run_model(model, x, edge_index)
        expected = model(x, edge_index)

    assert out.logits.shape == (6, 2)
    assert torch.allclose(out.logits, expected, atol=1e-5)
    # One hidden per layer but the last, or per layer when jk is set.
    assert len(out.hiddens) == (3 if jk else 2)
    assert [tuple(h.shape) for h in out.hiddens] == [(6, 8)] * len(out.hiddens)
    # Hiddens are the convolutions' outputs before norm and activation.
    with torch.no_grad():
        first = model.convs[0](x, edge_index)
        second = model.convs[1](F.relu(model.norms[0](first)), edge_index)
    assert torch.allclose(out.hiddens[0], first, atol=1e-5)
    assert torch.allclose(out.hiddens[1], second, atol=1e-5)
    assert (out.hiddens[0] < 0).any()  # not passed through the ReLU


def test_run_model_keeps_gradients(tiny_graph):
    model = build_model(ArchSpec('sage', 5, 8, 2, 2))

    out = run_model(model, tiny_graph.x, tiny_graph.edge_index)
    out.hiddens[0].sum().backward()

    assert model.convs[0].lin_l.weight.grad is not None
    assert model.convs[1].lin_l.weight.grad is None


def test_collapse_note_compares_with_the_majority_class(tiny_graph):
    from gnncompress.workflows.results import collapse_note

    labels = tiny_graph.y[tiny_graph.val_mask]
    majority = float(torch.bincount(labels).max()) / labels.numel()
    note = collapse_note(majority, tiny_graph)
    assert note is not None and note.startswith('the student collapsed')
    assert f'({100 * majority:.1f}%)' in note
    assert collapse_note(majority + 0.02, tiny_graph) is None
