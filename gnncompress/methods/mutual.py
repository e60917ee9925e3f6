from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.core.graph import Graph
from gnncompress.methods.base import DistillMethod, register_method
from gnncompress.models import ModelOutput


@register_method('mutual')
class Mutual(DistillMethod):
    r"""Online mutual learning after `"Knowledge Distillation in Graph
    Neural Networks through Mutual Learning"` (Agbaje et al., 2025): deep
    mutual learning (Zhang et al., CVPR 2018) between :math:`M` students,
    with an adaptive weighting of the peers' logits and an entropy term.

    The paper has no public code; this is our reading of it. Student
    :math:`k` with peers :math:`m \ne k` (logits :math:`z_m`, no gradient)
    and learned scores :math:`a \in \mathbb{R}^{M-1}` (its own, starting
    equal):

    .. math::
        w = \mathrm{softmax}(a), \quad
        \bar z = \sum_m w_m z_m, \quad
        \mathcal{L}_k = \tau^2\,\mathrm{KL}\big(\sigma(\bar z/\tau)
        \,\|\, \sigma(z_k/\tau)\big) - \beta\, H\big(\sigma(z_k)\big)
        + \mathrm{CE}_{\mathrm{train}}(\bar z, y)

    - *Adaptive logit weighting*: the weights mix the peers' logits into
      one soft target. They are learned, but not from the KL (that would
      simply pick the peer already closest to the student): the last term,
      the cross-entropy of the weighted peer ensemble on the labelled
      nodes (graphs), trains :math:`a` alone (the student gets no gradient
      from it, and the KL sees :math:`w` as a constant). Peers that fit the
      labels better thus weigh more as training goes on.
    - *Entropy enhancement*: :math:`-\beta H` rewards a less peaked
      prediction (a confidence penalty), so that the students' predictions,
      which are each other's soft targets, do not collapse to one-hot
      early; :math:`H` is the mean entropy over all nodes (graphs).

    The KL is the mean over all nodes (``batchmean``), as in KD. With two
    students, :math:`w = 1` and the method is deep mutual learning plus the
    entropy term.

    *Multi-label* targets (``graph.multilabel``: a 0/1 matrix, one sigmoid
    per label) take the per-label Bernoulli form of every term: with
    :math:`p = \sigma(\bar z/\tau)` and :math:`q = \sigma(z_k/\tau)`
    elementwise (:math:`\sigma` the logistic sigmoid),

    .. math::
        \mathcal{L}_k = \tau^2\,\overline{p \log\tfrac{p}{q}
        + (1-p) \log\tfrac{1-p}{1-q}}
        + \beta\,\overline{q_1 \log q_1 + (1-q_1) \log(1-q_1)}
        + \mathrm{BCE}_{\mathrm{train}}(\bar z, y)

    where :math:`q_1 = \sigma(z_k)` and the bars are means over nodes and
    labels (the KL of each label's Bernoulli, as multi-label KD's BCE
    averages; it differs from that BCE by the targets' entropy, a
    constant), and the ensemble term is BCE-with-logits on the labelled
    nodes.

    Args:
        temperature (float, optional): :math:`\tau`. (default: :obj:`1.0`,
            as in deep mutual learning)
        entropy_weight (float, optional): :math:`\beta`.
            (default: :obj:`0.1`, our choice: small beside the KL, which
            keeps the term a regulariser)
        adaptive (bool, optional): Learn :math:`w`; :obj:`False` keeps the
            uniform average of plain deep mutual learning.
            (default: :obj:`True`)
    """
    default_weight = 1.0
    paper = 'Agbaje et al., 2025 (no public code; our reading)'
    summary = 'online: KL to the adaptively weighted peers\' logits, ' \
        'entropy bonus (cotrain)'

    def __init__(self, temperature: float = 1.0, entropy_weight: float = 0.1,
                 adaptive: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(
                f"'temperature' must be positive (got {temperature})")
        if entropy_weight < 0:
            raise ValueError(f"'entropy_weight' must be >= 0 "
                             f'(got {entropy_weight})')
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.adaptive = adaptive
        self.scores = nn.Parameter(torch.zeros(1), requires_grad=adaptive)

    def prepare(self, teacher_outputs: Sequence[ModelOutput],
                student_output: ModelOutput, graph: Graph) -> None:
        self.scores = nn.Parameter(
            torch.zeros(len(teacher_outputs),
                        device=student_output.logits.device),
            requires_grad=self.adaptive)

    def peer_weights(self) -> Tensor:
        return torch.softmax(self.scores, dim=0)

    def loss(self, teacher_outputs: Sequence[ModelOutput],
             student_output: ModelOutput, graph: Graph) -> Tensor:
        if self.scores.numel() != len(teacher_outputs):
            raise ValueError(f'prepare() saw {self.scores.numel()} peers, '
                             f'loss() gets {len(teacher_outputs)}')
        tau = self.temperature
        peers = torch.stack([o.logits.detach()
                             for o in teacher_outputs])  # [P, N, C]
        w = self.peer_weights()  # [P]
        target = (w.detach()[:, None, None] * peers).sum(0)  # [N, C]
        logits = student_output.logits
        mask = graph.train_mask
        if getattr(graph, 'multilabel', False):
            return self._multilabel(logits, target, peers, w, graph)
        kl = F.kl_div(F.log_softmax(logits / tau, -1),
                      F.log_softmax(target / tau, -1),
                      reduction='batchmean', log_target=True)
        log_p = F.log_softmax(logits, -1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        ensemble = (w[:, None, None] * peers[:, mask]).sum(0)
        unit = F.cross_entropy(ensemble, graph.y[mask]) if \
            self.adaptive and bool(mask.any()) else logits.new_zeros(())
        return tau * tau * kl - self.entropy_weight * entropy + unit

    def _multilabel(self, logits: Tensor, target: Tensor, peers: Tensor,
                    w: Tensor, graph: Graph) -> Tensor:
        """The per-label Bernoulli form (see the class docstring)."""
        tau = self.temperature
        kl = bernoulli_kl(target / tau, logits / tau).mean()
        entropy = bernoulli_entropy(logits).mean()
        mask = graph.train_mask
        ensemble = (w[:, None, None] * peers[:, mask]).sum(0)
        unit = F.binary_cross_entropy_with_logits(
            ensemble, graph.y[mask].float()) if \
            self.adaptive and bool(mask.any()) else logits.new_zeros(())
        return tau * tau * kl - self.entropy_weight * entropy + unit


def bernoulli_kl(target: Tensor, logits: Tensor) -> Tensor:
    """Elementwise ``KL(Bernoulli(sigmoid(target)) ||
    Bernoulli(sigmoid(logits)))``, from log-sigmoids (stable at large
    logits)."""
    p = torch.sigmoid(target)
    return p * (F.logsigmoid(target) - F.logsigmoid(logits)) + \
        (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-logits))


def bernoulli_entropy(logits: Tensor) -> Tensor:
    """Elementwise entropy of ``Bernoulli(sigmoid(logits))``."""
    q = torch.sigmoid(logits)
    return -(q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits))
