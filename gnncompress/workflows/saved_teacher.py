"""What train-teacher writes and returns: the weights and the card beside them
(what the weights cannot tell: the split, the scores, the data), both
written atomically."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gnncompress import __version__
from gnncompress.checkpoints.cards import CARD_KIND, card_path
from gnncompress.core.graph import Graph
from gnncompress.core.out_folder import atomic_path
from gnncompress.models import (
    ArchSpec,
    count_parameters,
)
from gnncompress.workflows.inputs import card_data
from gnncompress.workflows.runs import (
    make_folder,
)


@dataclass
class TeacherResult:
    path: Path
    card: Path
    spec: ArchSpec
    parameters: int
    val_accuracy: float
    test_accuracy: float
    epochs_run: int


def save_teacher(model: torch.nn.Module, spec: ArchSpec, out: Path,
                 graph: Graph, seed: int, result: Any, data: str | Path,
                 data_root: str | Path | None,
                 **extra: Any) -> TeacherResult:
    """Write the teacher's ``state_dict`` and its card (what the weights
    cannot tell, the split, the scores, the data; ``extra`` entries that
    are not None) atomically."""
    card = {
        'kind': CARD_KIND, 'version': __version__,
        'spec': {k: getattr(spec, k) for k in
                 (*ArchSpec.NOT_IN_WEIGHTS, 'jk', 'norm')},
        'split': graph.split, 'seed': seed, 'epochs_run': result.epochs_run,
        'val_accuracy': result.val_accuracy,
        'test_accuracy': result.test_accuracy,
        **card_data(data, data_root, out.parent),
        **{k: v for k, v in extra.items() if v is not None},
    }
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    make_folder(out.parent)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    with atomic_path(card_path(out)) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + '\n')
    return TeacherResult(path=out, card=card_path(out), spec=spec,
                         parameters=count_parameters(model),
                         val_accuracy=result.val_accuracy,
                         test_accuracy=result.test_accuracy,
                         epochs_run=result.epochs_run)
