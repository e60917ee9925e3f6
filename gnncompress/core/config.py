"""Run settings from a TOML file (``--config run.toml``): every command-line
option of a command has a key of the same name (``--weight-decay`` ->
``weight_decay`` or ``weight-decay``); options given on the command line win
over the file."""
from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gnncompress.core.errors import GnnCompressError


class ConfigError(GnnCompressError):
    """A config file is missing, not TOML, or names an unknown option."""


def load_config(path: Path | str, command: str,
                known: Iterable[str] | dict[str, str]) -> dict[str, Any]:
    """The settings for ``command`` in ``path``: its top-level keys, then
    those of a ``[command]`` table, which win. Tables named after other
    commands are ignored, so one file can serve several commands. ``known``
    lists the option names, or maps each accepted key to the parameter it
    sets (``lambda`` -> ``lambda_``)."""
    path = Path(path)
    try:
        with path.open('rb') as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f'Config file not found: {path}: check the path '
                          f'(a .toml file)') from None
    except OSError as e:
        raise ConfigError(f'Config file {path} cannot be read '
                          f'({e.strerror}): give a TOML file you can '
                          f'read') from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f'Config file {path} is not valid TOML ({e}): fix '
                          f'the line it names') from None
    known = dict(known) if isinstance(known, dict) else \
        {k: k for k in known}
    values = {k: v for k, v in data.items() if not isinstance(v, dict)}
    section = data.get(command, {})
    if not isinstance(section, dict):
        raise ConfigError(f"Config file {path}: '{command}' must be a table "
                          f'([{command}]) of options')
    values.update(section)
    resolved = {}
    for key, value in values.items():
        name = key.replace('-', '_')
        if name not in known:
            raise ConfigError(
                f"Config file {path}: '{key}' is not an option of "
                f"'{command}' (options: {', '.join(sorted(known))})")
        resolved[known[name]] = value
    return resolved


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with paths as strings, for JSON reports."""
    def convert(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v
    return {k: convert(v) for k, v in values.items()}
