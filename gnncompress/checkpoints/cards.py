"""Teacher cards: the JSON file beside a teacher checkpoint that says how it
was trained (dataset, split, features), read with every field's type
checked."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gnncompress.core.errors import CheckpointError

# The fields of a teacher card the tool reads, and their types.
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    'spec': (dict,), 'data': (str, type(None)), 'data_is_file': (bool,),
    'data_root': (str, type(None)), 'test_accuracy': (int, float),
    'val_accuracy': (int, float), 'normalize_features': (bool,),
    'classes': (list,), 'points': (int, type(None)),
    'augment': (list, str, type(None)), 'split': (dict,)}
# The fields of the card's 'split' the tool reads, and their types.
_SPLIT_TYPES: dict[str, tuple[type, ...]] = {'kind': (str,), 'seed': (int,)}

CARD_KIND = 'gnncompress.teacher-card'


def card_path(path: Path) -> Path:
    """The teacher card that ``train-teacher`` writes next to a checkpoint."""
    return path.with_suffix('.json')


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    """``value`` is none of ``types`` (a bool counts as an int only where
    ``types`` names bool)."""
    return (not isinstance(value, types)
            or (isinstance(value, bool) and bool not in types))


def _type_names(types: tuple[type, ...]) -> str:
    """``types`` as a message names them: ``int or null``."""
    return ' or '.join('null' if t is type(None) else t.__name__
                       for t in types)


def read_card(path: Path) -> dict[str, Any]:
    card_file = card_path(path)
    if not card_file.is_file():
        return {}
    try:
        card = json.loads(card_file.read_text(encoding='utf-8'))
    except (OSError, ValueError, RecursionError) as e:
        # Unreadable, not UTF-8, not JSON or nested too deep: it may be
        # our card, and ignoring it would silently drop its settings.
        reason = e.strerror if isinstance(e, OSError) else \
            'not UTF-8' if isinstance(e, UnicodeDecodeError) else \
            'nested too deeply' if isinstance(e, RecursionError) else \
            'not valid JSON'
        raise CheckpointError(
            f'Teacher card {card_file} cannot be read ({reason}): fix it, or '
            f'move it away to load {path.name} without a card') from None
    if not isinstance(card, dict) or card.get('kind') != CARD_KIND:
        return {}  # another tool's JSON beside the checkpoint
    fields = [(key, card, key, types) for key, types in _CARD_TYPES.items()]
    if isinstance(card.get('split'), dict):
        fields += [(f'split.{key}', card['split'], key, types)
                   for key, types in _SPLIT_TYPES.items()]
    for name, holder, key, types in fields:
        value = holder.get(key)
        if key in holder and _wrong_type(value, types):
            raise CheckpointError(
                f"Teacher card {card_file}: '{name}' must be "
                f"{_type_names(types)} (got "
                f'{value!r:.40}): fix it, or move the card away to load '
                f'{path.name} without it')
    return card
