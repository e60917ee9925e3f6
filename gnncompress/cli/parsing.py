"""Option values the commands parse before calling the API: key=value lists,
teacher arguments, layer lists, comma lists, architecture overrides,
point-cloud options, and the --config file with the resolved settings it
records."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from gnncompress.cli.common import T, api, call, err_console


def _key_values(items: list[str] | None, option: str,
                what: str = 'KEY=VALUE') -> dict[str, Any]:
    """KEY=VALUE items (VALUE read as JSON where it is JSON, else as text);
    a malformed item is a one-line error naming ``option``."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            err_console.print(f"[red]Error:[/red] {option} takes {what} "
                              f"(got '{item}')")
            raise typer.Exit(code=1)
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


def parse_options(items: list[str] | None) -> dict[str, Any]:
    return {key.replace('-', '_'): value
            for key, value in _key_values(items, '--option').items()}


def parse_teacher_args(items: list[str] | None) -> dict[str, Any]:
    """--teacher-args: one JSON object, or KEY=VALUE items (VALUE read as
    JSON where it is JSON, else as text); keys kept as written."""
    if items and len(items) == 1 and items[0].lstrip().startswith('{'):
        try:
            args = json.loads(items[0])
        except json.JSONDecodeError as e:
            args = e
        if not isinstance(args, dict):
            err_console.print(f"[red]Error:[/red] --teacher-args is not a "
                              f"JSON object (got '{items[0]}'): write e.g. "
                              f'\'{{"hidden": 16}}\' or hidden=16')
            raise typer.Exit(code=1)
        return args
    return _key_values(items, '--teacher-args',
                       'KEY=VALUE or one JSON object')


def overrides(arch: str | None, aggr: str | None, jk: str | None,
               norm: str | None, act: str | None) -> dict[str, Any]:
    return {'arch': arch, 'aggr': aggr, 'jk': jk, 'norm': norm, 'act': act}


def parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(',')]
    except ValueError:
        err_console.print(f'[red]Error:[/red] layer lists are integers '
                          f"separated by commas, e.g. -1 or 0,1 (got '{text}')")
        raise typer.Exit(code=1) from None


def config(ctx: typer.Context, param: typer.CallbackParam,
            value: Optional[Path]) -> Optional[Path]:
    """Read ``--config`` before the other options, as their defaults: an
    option given on the command line still wins."""
    if value is None or ctx.resilient_parsing:
        return value
    from gnncompress.core.config import load_config

    known = config_keys(ctx.command)
    values = call(load_config, value, ctx.command.name, known)
    lists = {p.name for p in ctx.command.params
             if getattr(p, 'multiple', False) or p.nargs != 1}
    for key, item in values.items():
        # threads = [1, 2] in the file means --threads 1,2.
        if isinstance(item, list) and key not in lists:
            values[key] = ','.join(str(v) for v in item)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def config_keys(command: Any) -> dict[str, str]:
    """Config key -> parameter name for a click command: each parameter's
    name and each of its long option names (``--lambda`` for ``lambda_``)."""
    keys = {}
    for p in command.params:
        if p.name in ('config', 'list_methods'):
            continue
        keys[p.name] = p.name
        for opt in getattr(p, 'opts', []):
            if opt.startswith('--'):
                keys[opt[2:].replace('-', '_')] = p.name
    return keys


def resolved(ctx: typer.Context) -> dict[str, Any]:
    """The settings the command ran with (file, then command line), for the
    report."""
    from gnncompress.core.config import plain

    return plain({k: v for k, v in ctx.params.items()
                  if k not in ('list_methods', 'progress')})


def run_groups(ctx: typer.Context) -> dict[str, Any]:
    """The settings groups every training command shares (training,
    checkpoints, batches and processes, outputs), from its parsed options:
    keyword arguments of :class:`gnncompress.api.DistillSettings` and its
    siblings."""
    given = ctx.params
    return dict(
        training=api.Training(**{name: given[name] for name in (
            'epochs', 'lr', 'weight_decay', 'patience', 'seed',
            'progress')}),
        checkpointing=api.Checkpointing(
            checkpoint_every=given['checkpoint_every'],
            checkpoint_dir=given['checkpoint_dir'], resume=given['resume']),
        batching=api.Batching(batch_size=given['batch_size'],
                              fanout=given['fanout'], nproc=given['nproc']),
        outputs=api.Outputs(
            out=given['out'], latency=given['latency'],
            latency_budget_s=given['latency_budget_s'],
            command=api.command_line(), config=resolved(ctx)))


def max_checkpoint_gb(value: float) -> float:
    from gnncompress.checkpoints.reading import set_max_checkpoint_gb

    call(set_max_checkpoint_gb, value)
    return value


def cloud_options(hidden: str | None, k: int | None, emb: int | None,
                   head: str | None, points: int | None,
                   augment: str | None, batch_size: int | None,
                   ) -> dict[str, Any]:
    """``--hidden`` (one width, or one per DGCNN layer) and the
    point-cloud options, as API keyword arguments."""
    widths = split_list(hidden, '--hidden', int)
    return {'hidden': None if widths is None else
            widths[0] if len(widths) == 1 and ',' not in str(hidden)
            else widths,
            'k': k, 'emb': emb, 'head': split_list(head, '--head', int),
            'points': points, 'augment': augment, 'batch_size': batch_size}


def split_list(text: str | None, what: str, cast: Callable[[str], T]
                ) -> list[T] | None:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(',') if part.strip()]
    except ValueError:
        err_console.print(f"[red]Error:[/red] {what} takes a comma-separated "
                          f"list (got '{text}')")
        raise typer.Exit(code=1) from None
