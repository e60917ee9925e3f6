"""One regression test per hole the loader fuzzing (test_fuzz_loaders.py)
found: each malformed input ends in the tool's one-line error naming the
problem, and through the CLI in exit code 1 without a traceback."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.reading import SPEC_KEY
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import (
    ArchitectureError,
    CheckpointError,
    DataError,
)
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.datasets import load_graph

SPEC = ArchSpec('gcn', 5, 8, 2, 3)


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model(SPEC).state_dict().items()}


def _save(tmp_path: Path, state: dict, name: str = 'teacher.pt') -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


# Checkpoints ------------------------------------------------------------------

@pytest.mark.parametrize('value, word', [(math.nan, 'NaN'),
                                         (math.inf, 'infinite'),
                                         (-math.inf, 'infinite')])
def test_non_finite_teacher_weight_is_named(tmp_path, value, word):
    state = _state()
    state['convs.1.lin.weight'][2, 3] = value

    with pytest.raises(CheckpointError,
                       match=rf"'convs\.1\.lin\.weight' .* holds {word}"):
        load_checkpoint(_save(tmp_path, state))


def test_non_finite_weight_in_safetensors_is_named(tmp_path):
    state = _state()
    state['convs.0.bias'][0] = math.nan
    path = tmp_path / 'teacher.safetensors'
    save_file(state, str(path))

    with pytest.raises(CheckpointError, match=r"'convs\.0\.bias' .* NaN"):
        load_checkpoint(path)


def test_negative_batch_norm_variance_is_named(tmp_path):
    # Found by the long fuzz run: a batch norm's running_var drawn from
    # randn loaded, and every output of the model was NaN (it divides by
    # the square root of the variance). Zero stays allowed.
    spec = ArchSpec('sage', 5, 8, 2, 3, norm='batch_norm')
    state = dict(build_model(spec).state_dict())
    key = next(k for k in state if k.endswith('running_var'))
    state[key] = torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    model = load_checkpoint(_save(tmp_path, state, 'zero.pt')).build()
    x, edges = torch.randn(4, 5), torch.tensor([[0, 1, 2], [1, 2, 3]])
    with torch.no_grad():
        assert torch.isfinite(model(x, edges)).all()

    state[key] = torch.tensor([1.0, -0.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(CheckpointError, match=rf"'{key}' .* holds negative "
                       r'variances, which no batch norm has'):
        load_checkpoint(_save(tmp_path, state))
    result = CliRunner().invoke(app, ['inspect',
                                      str(_save(tmp_path, state))])
    assert result.exit_code == 1
    assert result.output.count('\n') == 1
    assert 'holds negative variances' in result.output


def test_expanded_view_cannot_claim_a_huge_tensor(tmp_path):
    # 10**10 elements over a one-element storage: building the model for it
    # would reserve 40 GB.
    state = _state()
    state['convs.0.lin.weight'] = torch.zeros(1).expand(100_000, 100_000)

    with pytest.raises(CheckpointError, match='expanded view'):
        load_checkpoint(_save(tmp_path, state))


def test_complex_weights_are_refused(tmp_path):
    state = _state()
    state['convs.0.bias'] = state['convs.0.bias'].to(torch.complex64)

    with pytest.raises(CheckpointError, match='complex64'):
        load_checkpoint(_save(tmp_path, state))


def test_key_with_a_newline_keeps_the_message_on_one_line(tmp_path):
    state = _state()
    state['bad\nkey'] = torch.tensor([1.0])

    with pytest.raises(CheckpointError, match='control characters') as info:
        load_checkpoint(_save(tmp_path, state))
    assert '\n' not in str(info.value) and r"'bad\nkey'" in str(info.value)


def test_cli_prints_markup_in_a_message_as_text(tmp_path):
    # A key like '[/x]' used to crash rich's markup parser: a traceback.
    state = {'[/x]': torch.ones(2), '[bold]y': torch.ones(1)}

    result = CliRunner().invoke(app, ['inspect', str(_save(tmp_path,
                                                          state))])

    assert result.exit_code == 1, result.output
    assert '[/x]' in result.output and 'Unknown architecture' in \
        result.output


def test_missing_layer_weight_is_an_architecture_error(tmp_path):
    state = _state()
    del state['convs.1.lin.weight']  # its bias stays: layer 1 exists

    with pytest.raises(ArchitectureError, match='incomplete or misshaped'):
        load_checkpoint(_save(tmp_path, state))


def test_one_dimensional_weight_is_an_architecture_error(tmp_path):
    state = _state()
    state['convs.0.lin.weight'] = torch.randn(8)

    with pytest.raises(ArchitectureError, match='incomplete or misshaped'):
        load_checkpoint(_save(tmp_path, state))


def _with_metadata(tmp_path: Path, text: str) -> Path:
    path = tmp_path / 'student.safetensors'
    save_file(_state(), str(path), metadata={SPEC_KEY: text})
    return path


@pytest.mark.parametrize('text, error, message', [
    ('{not json', CheckpointError, 'not a JSON object'),
    ('[1, 2]', CheckpointError, 'not a JSON object'),
    ('{}', ArchitectureError, 'lacks arch, in_channels'),
    (json.dumps({**SPEC.to_dict(), 'hidden_channels': '8'}),
     ArchitectureError, "'hidden_channels' .* must be int"),
    (json.dumps({**SPEC.to_dict(), 'dropout': None}),
     ArchitectureError, "'dropout' .* must be int or float"),
    (json.dumps({**SPEC.to_dict(), 'hidden_channels': 10 ** 9}),
     ArchitectureError, 'needs more weights than the file holds'),
    (json.dumps({**SPEC.to_dict(), 'num_layers': 10 ** 7}),
     ArchitectureError, 'declares 10,000,000 layers, more than the 1,000'),
])
def test_bad_spec_metadata(tmp_path, text, error, message):
    with pytest.raises(error, match=message):
        load_checkpoint(_with_metadata(tmp_path, text))


def test_card_with_a_spec_that_is_not_an_object_is_refused(tmp_path):
    path = _save(tmp_path, _state())
    path.with_suffix('.json').write_text(json.dumps(
        {'kind': CARD_KIND, 'spec': [1, 2]}))

    with pytest.raises(CheckpointError, match="'spec' must be dict"):
        load_checkpoint(path)


@pytest.mark.parametrize('field, value', [('dropout', 2.0), ('alpha', -1),
                                          ('theta', -5.0)])
def test_card_with_a_value_out_of_range(tmp_path, field, value):
    # dropout=2 used to load, then fail in the teacher's first forward.
    path = _save(tmp_path, _state())
    path.with_suffix('.json').write_text(json.dumps(
        {'kind': CARD_KIND, 'spec': {field: value}}))

    with pytest.raises(ArchitectureError, match=rf"'{field}' .* must lie in"):
        load_checkpoint(path)


def test_card_with_an_unknown_activation(tmp_path):
    path = _save(tmp_path, _state())
    path.with_suffix('.json').write_text(json.dumps(
        {'kind': CARD_KIND, 'spec': {'act': 'no-such-act'}}))

    with pytest.raises(ArchitectureError, match='cannot be built'):
        load_checkpoint(path)


def test_cli_refuses_a_nan_teacher_in_one_line(tmp_path):
    state = _state()
    state['convs.0.lin.weight'][0, 0] = math.nan
    path = _save(tmp_path, state)

    result = CliRunner().invoke(app, ['inspect', str(path)])

    assert result.exit_code == 1
    assert not isinstance(result.exception, Exception) or \
        isinstance(result.exception, SystemExit)
    assert 'Traceback' not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'NaN' in lines[0]


# --data FILE ----------------------------------------------------------------

def _fields(n: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {'x': torch.randn(n, 4, generator=gen),
            'edge_index': torch.randint(0, n, (2, 20), generator=gen),
            'y': torch.arange(n) % 2}


@pytest.mark.parametrize('change, message', [
    ({'edge_index': torch.tensor([[0.0, 1.5], [1.0, 2.0]])},
     r"'edge_index' must hold integers \(got torch.float32\)"),
    ({'edge_index': torch.tensor([[0, 1], [1, 10]])},
     'refers to node 10 but the graph has nodes 0-9'),
    ({'edge_index': torch.tensor([[0, -3], [1, 2]])}, 'refers to node -3'),
    ({'edge_index': torch.tensor([[0, 1, 2]])},
     r"'edge_index' must have shape \[2, edges\] \(got \[1, 3\]\)"),
    ({'x': torch.full((10, 4), math.nan)}, "'x' holds NaN"),
    ({'x': torch.randn(10)}, r"'x' must be a real \[nodes, features\]"),
    ({'y': torch.full((10,), 10 ** 12)}, 'label 1000000000000 is not below'),
    ({'y': torch.full((10,), -1)}, r'must be 0..C-1 \(found -1\)'),
    ({'y': torch.full((10,), 0.5)}, "labels 'y' must be integers"),
    ({'y': torch.zeros(4, dtype=torch.long)}, 'one integer label per node'),
    ({'train_mask': torch.ones(10).bool(), 'val_mask': torch.ones(3).bool(),
      'test_mask': torch.ones(10).bool()},
     r"'val_mask' must be a boolean mask of 10 nodes \(got 3"),
    ({'train_mask': torch.zeros(10).bool(), 'val_mask': torch.ones(10).bool(),
      'test_mask': torch.ones(10).bool()}, "'train_mask' selects no node"),
    ({'num_nodes': 10 ** 12}, 'declares num_nodes=1000000000000'),
])
def test_bad_data_fields(tmp_path, change, message):
    path = tmp_path / 'graph.pt'
    torch.save(Data(**{**_fields(), **change}), path)

    with pytest.raises(DataError, match=message):
        load_graph(path)


def test_dict_with_non_string_keys(tmp_path):
    path = tmp_path / 'graph.pt'
    torch.save({**_fields(), 3: torch.zeros(1)}, path)

    with pytest.raises(DataError, match='keys are not all strings'):
        load_graph(path)


def test_cli_refuses_bad_data_in_one_line(tmp_path):
    teacher = _save(tmp_path, _state())
    path = tmp_path / 'graph.pt'
    torch.save(Data(**{**_fields(), 'edge_index': torch.tensor([[0], [99]])}),
               path)

    result = CliRunner().invoke(app, ['distill', str(teacher), '--data',
                                      str(path), '--out',
                                      str(tmp_path / 'out')])

    assert result.exit_code == 1
    assert 'Traceback' not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'refers to node 99' in lines[0]
    assert not (tmp_path / 'out').exists()
