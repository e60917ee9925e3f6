"""docs/api.md's promise: every option of every command has a counterpart
in gnncompress.api, under the same name or under the name the page's
mapping table gives."""
from __future__ import annotations

import inspect
from pathlib import Path

import typer

from gnncompress import api
from gnncompress.cli import app
from gnncompress.workflows import amalgamate as amalgamation

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'api.md'
# CLI option -> how docs/api.md says Python spells it (a parameter name, or
# a sentence of the page's table when it is not a parameter).
MAPPED = {
    'arch': 'overrides', 'act': 'overrides', 'aggr': 'overrides',
    'jk': 'overrides', 'norm': 'overrides', 'option': 'method_options',
    'layers_t': 'method_options', 'layers_s': 'method_options',
    'lambda_': 'weight', 'width': 'export_widths',
    'max_checkpoint_gb':
        '`gnncompress.checkpoints.reading.set_max_checkpoint_gb(G)`',
    'config': '`config=` only records them',
    'list_methods': '`gnncompress.methods.list_methods()`',
    'as_json': '`api.inspect(...).to_dict()`',
}


# Commands that are a listing, not a run: where docs/api.md says Python
# finds the same.
NO_RUN = {'datasets': '`gnncompress.core.catalogue.dataset_table()`'}


def _api_parameters(command: str) -> set[str]:
    fn = getattr(api, command.replace('-', '_'))
    names = set(inspect.signature(fn).parameters)
    if command == 'amalgamate':  # api.amalgamate forwards **kwargs
        names |= set(inspect.signature(amalgamation.amalgamate).parameters)
    if command in ('amalgamate', 'cotrain'):
        names |= {'latency', 'latency_budget_s'}  # api.timed_command
    return names


def test_every_option_has_an_api_counterpart():
    doc = DOC.read_text()
    commands = typer.main.get_command(app).commands
    assert set(commands) >= {'distill', 'inspect', 'train-teacher', 'export',
                             'bench', 'amalgamate', 'cotrain'}
    missing = []
    for name, command in commands.items():
        if name in NO_RUN:
            assert NO_RUN[name] in doc, f'docs/api.md does not say {name}'
            continue
        if not hasattr(api, name.replace('-', '_')):
            missing.append(f'{name}: no api.{name.replace("-", "_")}')
            continue
        assert f'`{name}`' in doc, f'docs/api.md does not list {name}'
        parameters = _api_parameters(name)
        for param in command.params:
            if param.name in parameters or param.name in ('help',):
                continue
            target = MAPPED.get(param.name)
            if target is None:
                missing.append(f'{name} {param.opts[0]}')
            elif target in parameters or target.strip('`') in doc \
                    or target in doc:
                continue
            else:
                missing.append(f'{name} {param.opts[0]} -> {target}')
    assert missing == []

