"""Bounded time and memory on small hostile files (docs/robustness.md,
"Bounded time and memory"): layer counts, declared sizes, bench budgets."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import gnncompress.checkpoint
from gnncompress import api
from gnncompress.errors import ArchitectureError


def _deep_gcn(path, layers: int):
    state = {}
    for i in range(layers):
        state[f'convs.{i}.lin.weight'] = torch.ones(1, 1)
        state[f'convs.{i}.bias'] = torch.zeros(1)
    save_file(state, str(path))
    return path


@pytest.fixture
def builds(monkeypatch):
    """The models loading builds, by layer count; building more than
    1,000 layers fails the test at once (it would take minutes)."""
    built = []
    real = gnncompress.checkpoint.build_model

    def counting(spec):
        assert spec.num_layers <= 1000, 'a 10^4-layer model was built'
        built.append(spec.num_layers)
        return real(spec)

    monkeypatch.setattr(gnncompress.checkpoint, 'build_model', counting)
    return built


def test_absurd_layer_count_is_refused_before_building(tmp_path, builds):
    path = _deep_gcn(tmp_path / 'deep.safetensors', 10_000)
    with pytest.raises(ArchitectureError,
                       match='declares 10,000 layers, more than the 1,000'):
        api.inspect(path)
    assert builds == []


def test_inspect_builds_the_model_once(tmp_path, builds):
    # The per-layer cost of inspect is constructing PyG layers (~2 ms
    # each): it used to happen three times (size check, fit check, count).
    path = _deep_gcn(tmp_path / 'deep.safetensors', 40)
    result = api.inspect(path)
    assert result.spec.num_layers == 40 and result.parameters == 80
    assert builds == [40]
