"""What a run reads: the graph (a name, a file or what a teacher card names),
the resolved settings, and the checks that a model fits the graph."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gnncompress.checkpoints.cards import card_path
from gnncompress.checkpoints.teachers import Checkpoint
from gnncompress.core.catalogue import default_root
from gnncompress.core.errors import (
    ArchitectureError,
    DataError,
    GnnCompressError,
)
from gnncompress.core.graph import Graph
from gnncompress.methods import DistillMethod
from gnncompress.models import ArchSpec, count_spec_parameters
from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.datasets import normalize_features as normalize_graph


def resolve_data(data: str | Path | None, data_root: str | Path | None,
                 ckpt: Checkpoint, seed: int,
                 normalize: bool | None = None,
                 split: str | None = None) -> Graph:
    """``--data`` if given, else the dataset named on the teacher's card;
    features row-normalised when ``normalize`` says so, or (``None``) when
    the teacher's card says the teacher was trained on them. ``split``
    (``None``: the card's) names the split; a ``glnn`` split is drawn with
    the seed on the teacher's card when it has one, so that the student
    sees the teacher's split."""
    if normalize is None:
        normalize = bool(ckpt.card.get('normalize_features'))
    on_card = ckpt.card.get('split')
    on_card = on_card if isinstance(on_card, dict) else {}
    if split is None:
        split = 'glnn' if on_card.get('kind') == 'glnn' else 'default'
    if split == 'glnn' and on_card.get('kind') == 'glnn' and \
            isinstance(on_card.get('seed'), int):
        split_seed = on_card['seed']
    else:
        split_seed = seed
    graph = _card_graph(data, data_root, ckpt, split_seed, split)
    return normalize_graph(graph) if normalize else graph


def _card_graph(data: str | Path | None, data_root: str | Path | None,
                ckpt: Checkpoint, seed: int, split: str = 'default'
                ) -> Graph:
    if data is None:
        if not ckpt.card.get('data'):
            raise DataError(
                f'No dataset given: pass --data NAME (the checkpoint has no '
                f'teacher card {card_path(ckpt.path).name} naming one)')
        data = dataset_of(None, ckpt)
    return load_graph(data, card_data_root(data, data_root, ckpt), seed=seed,
                      split=split)


def dataset_of(data: str | Path | None, ckpt: Checkpoint) -> str | Path:
    """``data``, else the dataset on the teacher's card (a path, from the
    card's folder, for a file; ``''`` when the card names none)."""
    if data is not None:
        return data
    card = ckpt.card
    return ckpt.path.parent / card['data'] if card.get('data_is_file') \
        else card.get('data', '')


def data_root_of(data: str | Path | None, data_root: str | Path | None,
                 ckpt: Checkpoint) -> str | None:
    """The folder a run given ``data`` and ``data_root`` reads the teacher's
    dataset from, for the report (``None`` for a data file)."""
    data = dataset_of(data, ckpt)
    return root_used(data, card_data_root(data, data_root, ckpt))


def card_data_root(data: str | Path, data_root: str | Path | None,
                   ckpt: Checkpoint) -> str | Path | None:
    """``data_root``, else the folder the teacher's card recorded when
    ``data`` is the dataset on the card (named by the card or given
    explicitly with the same name: ``--data Cora`` still finds the card's
    copy offline)."""
    card = ckpt.card
    if data_root is not None or card.get('data_root') is None or \
            not card.get('data'):
        return data_root
    on_card = ckpt.path.parent / card['data'] if card.get('data_is_file') \
        else card['data']
    same = Path(data) == on_card if isinstance(on_card, Path) else \
        str(data).lower() == str(on_card).lower()
    return ckpt.path.parent / card['data_root'] if same else None


def resolved_config(config: dict[str, Any] | None, *, ckpt: Checkpoint,
                    graph: Graph, s_spec: ArchSpec, out: Path,
                    dev: torch.device, data: str | Path | None,
                    data_root: str | Path | None,
                    ratio: float | None, weight: float,
                    label_weight: float, **more: Any
                    ) -> dict[str, Any] | None:
    """A distill run's settings with what the run resolved in place of
    the options left out (dataset, student, widths, weights, teacher
    architecture...), for report.json's ``config``. ``ratio`` left out
    with ``--hidden`` given: the compression the student achieved.
    ``more``: other resolved options (a point-cloud run's ``k``, ``emb``,
    ``head``...)."""
    if ratio is None:
        try:
            ratio = round(count_spec_parameters(ckpt.spec)
                          / max(1, count_spec_parameters(s_spec)), 2)
        except (ArchitectureError, KeyError, TypeError, ValueError):
            ratio = None  # a teacher rebuilt layer by layer
    dataset = dataset_of(data, ckpt)
    return with_resolved(config, {
        'data': str(dataset) if Path(str(dataset)).is_file()
        else graph.name,
        'data_root': data_root_of(data, data_root, ckpt),
        'student': s_spec.arch, 'hidden': s_spec.hidden_channels,
        'layers': s_spec.num_layers,
        'ratio': ratio,
        'weight': weight, 'label_weight': label_weight, 'out': str(out),
        'device': dev.type,
        'normalize_features': graph.feature_norm == 'row',
        'split': 'glnn' if graph.split.get('kind') == 'glnn' else 'default',
        **{k: getattr(ckpt.spec, k) for k in ('arch', 'aggr', 'jk', 'norm',
                                               'act')},
        **more})


def with_resolved(config: dict[str, Any] | None,
                  values: dict[str, Any]) -> dict[str, Any] | None:
    """``config`` (the settings a command ran with: its file, then its
    command line) with the value the run used in place of each option left
    out (``None`` or ``'auto'``), for report.json's ``config``. ``values``
    maps option names to what the run resolved; an option the command does
    not take, or a value that stays unresolved (``None``), is left as it
    is. Every command's report goes through this."""
    if config is None:
        return None
    resolved = dict(config)
    for key, value in values.items():
        if key in resolved and value is not None and \
                _left_out(resolved[key]):
            resolved[key] = value
    return resolved


def _left_out(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == 'auto')


def root_used(data: str | Path | None,
              data_root: str | Path | None) -> str | None:
    """The folder a dataset named ``data`` is read from (``data_root``,
    else the cache folder); ``None`` for a data file, which needs none."""
    if data is None or Path(str(data)).is_file():
        return None
    return str(data_root if data_root is not None else default_root())


def check_fits(spec: ArchSpec, graph: Graph, what: str) -> None:
    if spec.in_channels != graph.num_features:
        raise ArchitectureError(
            f'The {what} expects {spec.in_channels} input features but '
            f'{graph.name} has {graph.num_features}: use the dataset the '
            f'{what} was trained on')
    if spec.out_channels != graph.num_classes:
        raise ArchitectureError(
            f'The {what} predicts {spec.out_channels} classes but '
            f'{graph.name} has {graph.num_classes}: use the dataset the '
            f'{what} was trained on')


def no_cloud_options(**options: Any) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        shown = ', '.join('--' + k.replace('_', '-') for k in given)
        raise GnnCompressError(f'{shown} apply to DGCNN point-cloud models '
                               f'only: drop them, or use --arch dgcnn')


def card_data(data: str | Path, data_root: str | Path | None,
               base: Path) -> dict[str, Any]:
    """How the card names the data: paths relative to the card's folder
    where possible, so a folder of teacher + card + data can move."""
    def rel(p: Path) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), base.resolve())
        except ValueError:  # another drive on Windows
            return str(Path(p).resolve())

    path = Path(str(data))
    if path.is_file():
        return {'data': rel(path), 'data_is_file': True}
    return {'data': str(data), 'data_is_file': False,
            'data_root': rel(Path(data_root)) if data_root else None}


def check_task(teacher: ArchSpec, graph: Graph,
               distiller: DistillMethod) -> None:
    """Node-level teachers go with node datasets, graph-level ones (with a
    readout) with graph datasets; graph-level distillation matches
    logits."""
    if (graph.batch is None) != (teacher.readout is None):
        task = 'graph' if teacher.readout else 'node'
        raise ArchitectureError(
            f'The teacher is a {task}-classification model but '
            f'{graph.name} is not a {task}-classification dataset: use the '
            f'dataset the teacher was trained on')
    if graph.batch is not None and distiller.requires - {'logits'}:
        raise GnnCompressError(
            f"Method '{distiller.name}' matches node-level "
            f"{', '.join(sorted(distiller.requires - {'logits'}))}; graph "
            f'classification supports logit methods such as kd')
