"""The training loop: one student, optionally a method and frozen teachers'
outputs, full-graph, with validation-based selection."""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gnncompress.data import Graph
from gnncompress.errors import TrainingError
from gnncompress.methods import DistillMethod
from gnncompress.models import ModelOutput, run_model


@dataclass
class FitResult:
    """The outcome of one training run (the student holds the best
    weights)."""
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    if int(mask.sum()) == 0:
        return float('nan')
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


@torch.no_grad()
def forward_frozen(model: nn.Module, graph: Graph) -> ModelOutput:
    """A frozen model's output on the whole graph, computed once."""
    model.eval()
    return run_model(model, graph.x, graph.edge_index).detach()


def fit(student: nn.Module, graph: Graph, *,
        method: DistillMethod | None = None,
        teacher_outputs: Sequence[ModelOutput] = (),
        epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
        label_weight: float = 1.0, weight: float | None = None,
        patience: int | None = 100, progress: bool = True,
        desc: str = 'train') -> FitResult:
    """Train ``student`` on ``graph`` and leave it at its best validation
    epoch.

    The loss is ``label_weight * CE(train nodes) + weight * method.loss``;
    ``weight`` defaults to the method's own ``default_weight``.
    """
    if method is not None and not teacher_outputs:
        raise ValueError('a distillation method needs teacher outputs')
    if method is not None:
        with torch.no_grad():
            probe = run_model(student.eval(), graph.x, graph.edge_index)
        method.prepare(teacher_outputs, probe, graph)
        method = method.to(graph.x.device)
        weight = method.default_weight if weight is None else weight
    params = list(student.parameters()) + \
        (list(method.parameters()) if method is not None else [])
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    best_val, best_epoch, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    bar = tqdm(range(1, epochs + 1), desc=desc,
               disable=None if progress else True,
               file=sys.stderr, leave=False, dynamic_ncols=True)
    epoch = 0
    for epoch in bar:
        student.train()
        if method is not None:
            method.train()
        optimizer.zero_grad(set_to_none=True)
        out = run_model(student, graph.x, graph.edge_index)
        terms = {'ce': F.cross_entropy(out.logits[graph.train_mask],
                                       graph.y[graph.train_mask])}
        loss = label_weight * terms['ce']
        if method is not None:
            terms[method.name] = method.loss(teacher_outputs, out, graph)
            loss = loss + weight * terms[method.name]
        if not torch.isfinite(loss):
            shown = ', '.join(f'{k}={float(v.detach()):.4g}'
                              for k, v in terms.items())
            raise TrainingError(
                f'The loss became {float(loss.detach())} at epoch {epoch} '
                f'({shown}): lower --lr or the method weight')
        loss.backward()
        optimizer.step()

        student.eval()
        with torch.no_grad():
            logits = run_model(student, graph.x, graph.edge_index).logits
        val = accuracy(logits, graph.y, graph.val_mask)
        loss_value = float(loss.detach())
        history.append({'epoch': epoch, 'loss': loss_value, 'val': val})
        if val > best_val:
            best_val, best_epoch = val, epoch
            best_state = {k: v.detach().clone()
                          for k, v in student.state_dict().items()}
        bar.set_postfix(loss=f'{loss_value:.4f}', val=f'{val:.3f}',
                        best=f'{best_val:.3f}')
        if patience is not None and epoch - best_epoch >= patience:
            break
    bar.close()
    seconds = time.perf_counter() - start
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    with torch.no_grad():
        logits = run_model(student, graph.x, graph.edge_index).logits
    return FitResult(best_epoch=best_epoch, val_accuracy=best_val,
                     test_accuracy=accuracy(logits, graph.y, graph.test_mask),
                     epochs_run=epoch, seconds=seconds, history=history)
