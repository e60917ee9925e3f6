"""What training and scoring a point-cloud classifier needs of its task: the
training augmentations (rotation about the up axis, jitter, scaling,
subsampling) and overall and mean class accuracy over batches of clouds."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gnncompress.core.errors import (
    GnnCompressError,
)
from gnncompress.core.graph import Graph
from gnncompress.tasks.point_clouds import cloud_points

AUGMENTATIONS = ('rotate', 'jitter', 'scale', 'subsample')


UP_AXIS = 2            # ModelNet's meshes stand on the xy plane (z up)


EVAL_BATCH = 64


# Augmentations ---------------------------------------------------------------

def parse_augment(value: str | Sequence[str] | None) -> list[str]:
    """``'rotate,jitter'`` or a list -> checked names; ``None``/``''``: none.
    """
    if value is None:
        return []
    names = [v.strip() for v in (value.split(',') if isinstance(value, str)
                                 else value) if v.strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise GnnCompressError(f"Unknown augmentation '{unknown[0]}' (choose "
                               f"from {', '.join(AUGMENTATIONS)})")
    return names


def augment(pos: Tensor, names: Sequence[str],
            gen: torch.Generator) -> Tensor:
    r"""Training augmentations of a batch ``pos [B, n, 3]``, in this order:

    - ``subsample``: keep a random subset of :math:`m` points of every
      cloud, :math:`m` uniform in :math:`[7n/8, n]` per batch (PointNet++'s
      random input dropout, here by removing points);
    - ``scale``: per cloud, scale each axis by a factor uniform in
      :math:`[2/3, 3/2]` and shift by up to 0.2 (the DGCNN authors' code);
    - ``rotate``: a random rotation about the up axis (z), per cloud;
    - ``jitter``: Gaussian noise :math:`\sigma = 0.01` clipped at 0.05 per
      coordinate (PointNet).
    """
    b, n, _ = pos.shape

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen).to(pos.device)

    if 'subsample' in names:
        m = int(torch.randint(n - n // 8, n + 1, (1,), generator=gen))
        keep = rand(b, n).argsort(dim=1)[:, :m].sort(dim=1).values
        pos = pos.gather(1, keep.unsqueeze(-1).expand(-1, -1, pos.size(-1)))
    if 'scale' in names:
        pos = pos * (2 / 3 + rand(b, 1, 3) * (3 / 2 - 2 / 3)) \
            + (rand(b, 1, 3) * 0.4 - 0.2)
    if 'rotate' in names:
        angle = rand(b) * 2 * math.pi
        cos, sin = angle.cos(), angle.sin()
        a, c = [i for i in range(3) if i != UP_AXIS]
        rot = torch.zeros(b, 3, 3, device=pos.device)
        rot[:, UP_AXIS, UP_AXIS] = 1
        rot[:, a, a], rot[:, a, c] = cos, -sin
        rot[:, c, a], rot[:, c, c] = sin, cos
        pos = pos @ rot.transpose(1, 2)
    if 'jitter' in names:
        noise = torch.randn(pos.shape, generator=gen).to(pos.device)
        pos = pos + (0.01 * noise).clamp(-0.05, 0.05)
    return pos


# Metrics ----------------------------------------------------------------

def class_accuracies(logits: Tensor, y: Tensor,
                     num_classes: int) -> tuple[float, float]:
    """Overall accuracy and mean class accuracy (the mean over classes
    present in ``y`` of each class's recall)."""
    if y.numel() == 0:
        return float('nan'), float('nan')
    hit = (logits.argmax(-1) == y).float()
    per_class = torch.zeros(num_classes).index_add(0, y.cpu(), hit.cpu())
    count = torch.bincount(y.cpu(), minlength=num_classes).float()
    present = count > 0
    return float(hit.mean()), float((per_class[present]
                                     / count[present]).mean())


@torch.no_grad()
def predict(model: nn.Module, graph: Graph, mask: Tensor,
            batch_size: int = EVAL_BATCH) -> Tensor:
    """Logits ``[clouds in mask, C]`` in batches (bounded memory)."""
    model.eval()
    pos = cloud_points(graph)
    ids = mask.nonzero().view(-1)
    parts = [model(pos[chunk]) for chunk in ids.split(batch_size)]
    if not parts:
        return pos.new_zeros(0, graph.num_classes)
    return torch.cat(parts)


def evaluate(model: nn.Module, graph: Graph, mask: Tensor,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Overall and mean class accuracy on the clouds of ``mask``."""
    logits = predict(model, graph, mask, batch_size)
    return class_accuracies(logits, graph.y[mask], graph.num_classes)
