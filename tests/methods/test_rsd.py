"""RSD (NOSMOG's representation similarity distillation): the loss on a
4-node case worked out by hand, its random blocks, what it trains, and
glnn+rsd on the Cora sample."""
import math

import pytest
import torch

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.methods.rsd import RSD
from gnncompress.models import ModelOutput, build_model
from gnncompress.training.train import fit, forward_frozen
from tests.conftest import SAMPLE_TEACHER, literal_graph, literal_output

H_S = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]
H_T = [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]]
# With W = I and b = (0, -0.5) the mapped student rows are
# ReLU(h W^T + b) = (1, 0), (0, 0.5), (1, 0.5), (0, 1.5), so
#   S^s = [[1, 0, 1, 0], [0, .25, .25, .75], [1, .25, 1.25, .75],
#          [0, .75, .75, 2.25]]
#   S^t = [[2, 1, 1, 2], [1, 1, 0, 0], [1, 0, 1, 2], [2, 0, 2, 4]]
# and S^t - S^s:
D = [[1.0, 1.0, 0.0, 2.0],
     [1.0, 0.75, -0.25, -0.75],
     [0.0, -0.25, -0.25, 1.25],
     [2.0, -0.75, 1.25, 1.75]]
# Its squares: diagonal 1 + .5625 + .0625 + 3.0625 = 4.6875, above it
# 1 + 0 + 4 + .0625 + .5625 + 1.5625 = 7.1875 (twice), 19.0625 in all.
WHOLE = 19.0625 / 16


def _method(sample: int = 512) -> RSD:
    method = RSD(sample=sample)
    method.prepare([literal_output(H_T)], literal_output(H_S),
                   literal_graph(4))
    with torch.no_grad():
        method.projection.weight.copy_(torch.eye(2))
        method.projection.bias.copy_(torch.tensor([0.0, -0.5]))
    return method.double()


def test_one_block_is_the_mean_squared_difference_of_the_similarities():
    loss = _method().loss([literal_output(H_T)], literal_output(H_S),
                          literal_graph(4))
    assert float(loss.detach()) == pytest.approx(WHOLE, rel=1e-12)


def test_two_teachers_are_averaged():
    same = [literal_output(H_T), literal_output(H_T)]
    zero = [literal_output(H_T), literal_output([[0.0, 0.0]] * 4)]
    method = _method()
    graph = literal_graph(4)
    # S^t = 0 for the second: its error is the sum of (S^s)^2 over 16.
    s_s = [[1, 0, 1, 0], [0, .25, .25, .75], [1, .25, 1.25, .75],
           [0, .75, .75, 2.25]]
    alone = sum(v * v for row in s_s for v in row) / 16
    assert float(method.loss(same, literal_output(H_S), graph).detach()) == \
        pytest.approx(WHOLE, rel=1e-12)
    assert float(method.loss(zero, literal_output(H_S), graph).detach()) == \
        pytest.approx((WHOLE + alone) / 2, rel=1e-12)


def test_more_nodes_than_the_sample_split_into_random_blocks():
    """Two blocks of 2: the squared differences inside the blocks (of the
    same permutation), over the 8 entries the blocks hold."""
    torch.manual_seed(3)
    order = torch.randperm(4).tolist()
    blocks = [order[:2], order[2:]]
    expected = sum(D[i][j] ** 2 for b in blocks for i in b for j in b) / 8
    method = _method(sample=2)  # its map's initial draw comes first
    torch.manual_seed(3)
    loss = method.loss([literal_output(H_T)], literal_output(H_S),
                       literal_graph(4))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    assert not math.isclose(expected, WHOLE)


def test_trains_the_map_and_the_student_not_the_teacher():
    method = _method()
    student = literal_output(H_S, requires_grad=True)
    teacher = literal_output(H_T, requires_grad=True)
    method.loss([teacher], student, literal_graph(4)).backward()
    assert student.hiddens[0].grad.abs().sum() > 0
    assert method.projection.weight.grad.abs().sum() > 0
    assert teacher.hiddens[0].grad is None
    assert RSD.default_weight == 0.1 and RSD.default_label_weight == 0.0


@pytest.mark.parametrize('sample', [0, -3, 2.5, True])
def test_bad_sample(sample):
    with pytest.raises(ValueError, match="'sample' must be a positive"):
        RSD(sample=sample)


def cora_losses(cora, names: list[str], hidden: int, epochs: int,
                options: dict | None = None) -> dict[str, list[float]]:
    """Each method's own term per epoch, training a 2-layer MLP (``hidden``
    wide, seed 0) on the Cora sample against the bundled GAT teacher."""
    torch.set_num_threads(1)
    ckpt = load_checkpoint(SAMPLE_TEACHER)
    teacher = forward_frozen(ckpt.build(), cora)
    spec = api.student_spec(ckpt.spec, cora, arch='mlp', hidden=hidden,
                            layers=2)
    losses = {}
    for name in names:
        torch.manual_seed(0)
        method = api.build_method(name, options if '+' in name else None)
        assert method.preferred_student == 'mlp'
        result = fit(build_model(spec), cora, method=method,
                     teacher_outputs=[teacher], epochs=epochs,
                     label_weight=method.default_label_weight,
                     progress=False)
        losses[name] = [h[f'loss_{name}'] for h in result.history]
    return losses


def test_glnn_plus_rsd_trains_on_the_cora_sample(cora):
    """Finite, falling losses of a 2-layer MLP under glnn+rsd for a few
    epochs, and other losses than glnn's alone on the same seed."""
    results = cora_losses(cora, ['glnn', 'glnn+rsd'], hidden=32, epochs=4)
    losses = results['glnn+rsd']
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert losses != results['glnn']


def test_hidden_output_without_hiddens_is_refused():
    with pytest.raises(ValueError, match='no hidden layer'):
        RSD().prepare([literal_output(H_T)],
                      ModelOutput(logits=torch.zeros(4, 2)), literal_graph(4))


def test_cosine_compares_unit_rows_by_hand():
    # Mapped student rows (1, 0), (0, .5), (1, .5), (0, 1.5) and the
    # teacher's rows scaled to unit length; each S is then the cosines.
    method = _method()
    method.similarity = 'cosine'
    s_rows = torch.tensor([[1.0, 0.0], [0.0, 0.5], [1.0, 0.5], [0.0, 1.5]],
                          dtype=torch.float64)
    t_rows = torch.tensor(H_T, dtype=torch.float64)
    s_unit = s_rows / s_rows.norm(dim=1, keepdim=True)
    t_unit = t_rows / t_rows.norm(dim=1, keepdim=True)
    expected = float(((t_unit @ t_unit.T - s_unit @ s_unit.T) ** 2).mean())
    # e.g. nodes 0 and 2: teacher cos((1,1),(1,0)) = 1/sqrt(2), student
    # cos((1,0),(1,.5)) = 1/sqrt(1.25)
    assert float(t_unit[0] @ t_unit[2]) == pytest.approx(1 / math.sqrt(2))
    assert float(s_unit[0] @ s_unit[2]) == pytest.approx(1 / math.sqrt(1.25))
    loss = method.loss([literal_output(H_T)], literal_output(H_S),
                       literal_graph(4))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)


def test_cosine_ignores_the_teachers_scale_and_dot_does_not():
    graph = literal_graph(4)
    big = [[10 * v for v in row] for row in H_T]
    losses = {}
    for similarity in ('dot', 'cosine'):
        method = _method()
        method.similarity = similarity
        losses[similarity] = [float(method.loss(
            [literal_output(h)], literal_output(H_S), graph).detach())
            for h in (H_T, big)]
    assert losses['cosine'][0] == pytest.approx(losses['cosine'][1],
                                                rel=1e-12)
    assert losses['dot'][1] > 50 * losses['dot'][0]


def test_bad_similarity():
    with pytest.raises(ValueError, match="'similarity' must be one of dot, "
                                         "cosine"):
        RSD(similarity='l2')
