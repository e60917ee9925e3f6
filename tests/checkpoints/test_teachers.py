"""Checkpoints of PyG's own models load back to the spec they were built with
and compute exactly what the original computed."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.students import save_safetensors
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.models import BASIC_GNN_ARCHS, ArchSpec, build_model

ARCHS = BASIC_GNN_ARCHS  # built here with PyG's own model classes

WEIGHT_FIELDS = ('arch', 'in_channels', 'hidden_channels', 'num_layers',
                 'out_channels', 'heads')


def _random_spec(arch: str, seed: int, norm: str | None = None,
                 jk: str | None = None) -> ArchSpec:
    rng = random.Random(1000 * seed + ARCHS.index(arch))
    heads = rng.randint(1, 4) if arch in ('gat', 'gatv2') else 1
    in_channels = rng.randint(7, 20)
    hidden = heads * rng.randint(2, 6)
    out_channels = rng.randint(2, 6)
    if norm is None and jk is None:
        num_layers = 1 + seed % 3  # every depth is covered
    else:
        # With one layer and no jk the norm is never applied, and 'cat' and
        # 'last' are the same thing: the weights cannot tell either.
        num_layers = rng.randint(2, 3)
    if num_layers == 1 and jk is None:
        # The single layer maps straight to the classes: no hidden width.
        hidden = out_channels
    return ArchSpec(arch=arch, in_channels=in_channels,
                    hidden_channels=hidden, num_layers=num_layers,
                    out_channels=out_channels, heads=heads, norm=norm, jk=jk)


def _pyg_model(spec: ArchSpec, **kwargs) -> nn.Module:
    """The model as a user builds it, straight from PyG."""
    common = dict(in_channels=spec.in_channels,
                  hidden_channels=spec.hidden_channels,
                  num_layers=spec.num_layers,
                  out_channels=spec.out_channels, norm=spec.norm,
                  jk=spec.jk, **kwargs)
    if spec.arch == 'gcn':
        return GCN(**common)
    if spec.arch == 'sage':
        return GraphSAGE(**common)
    if spec.arch == 'gin':
        return GIN(**common)
    return GAT(**common, heads=spec.heads, v2=spec.arch == 'gatv2')


def _graph(num_features: int, num_nodes: int = 15,
           seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, num_features, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, 3 * num_nodes),
                               generator=gen)
    return x, edge_index


def _trained_like(model: nn.Module, num_features: int,
                  seed: int) -> nn.Module:
    """Move every weight and the norms' running statistics away from their
    initial values, so that a wrongly rebuilt model cannot match by
    chance."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.train()
        model(*_graph(num_features, seed=seed + 1))  # batch_norm statistics
    return model.eval()


def _outputs(model: nn.Module, spec: ArchSpec) -> Tensor:
    with torch.no_grad():
        return model.eval()(*_graph(spec.in_channels, num_nodes=17, seed=7))


CASES = [pytest.param(arch, seed, None, None, id=f'{arch}-{seed}')
         for arch in ARCHS for seed in (0, 1, 2)]
CASES += [pytest.param(arch, 10 + i, norm, jk,
                       id=f'{arch}-{norm or ""}{jk and "jk_" + jk or ""}')
          for arch in ARCHS
          for i, (norm, jk) in enumerate([('batch_norm', None),
                                          ('layer_norm', None),
                                          (None, 'cat'), (None, 'last')])]


@pytest.mark.parametrize('arch,seed,norm,jk', CASES)
def test_round_trip_infers_spec_and_outputs(arch, seed, norm, jk, tmp_path):
    spec = _random_spec(arch, seed, norm=norm, jk=jk)
    model = _trained_like(_pyg_model(spec), spec.in_channels, seed)
    path = tmp_path / 'teacher.pt'
    torch.save(model.state_dict(), path)

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    assert ckpt.format == 'pytorch'
    for name in WEIGHT_FIELDS:
        assert ckpt.sources[name] == 'weights', name
    if norm is not None:
        assert ckpt.sources['norm'] == 'weights'
    if jk == 'cat':
        assert ckpt.sources['jk'] == 'weights'
    if jk == 'last':  # 'last' and 'max' share their weights: a guess, said so
        assert ckpt.sources['jk'] == 'default' and 'jk' in ckpt.notes
    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))


def test_gin_single_layer_norm_is_read_from_its_mlp(tmp_path):
    # A one-layer GIN applies its norm inside the layer's MLP, so the
    # weights show it (convs.0.nn.norms.0.*) even without top-level norms.
    spec = ArchSpec(arch='gin', in_channels=9, hidden_channels=4,
                    num_layers=1, out_channels=4, norm='batch_norm')
    model = _trained_like(_pyg_model(spec), spec.in_channels, seed=3)
    path = tmp_path / 'gin.pt'
    torch.save(model.state_dict(), path)

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))


def test_gin_trained_eps_is_loaded(tmp_path):
    spec = ArchSpec(arch='gin', in_channels=8, hidden_channels=6,
                    num_layers=2, out_channels=3)
    model = _trained_like(_pyg_model(spec, train_eps=True), 8, seed=4)
    assert all(float(c.eps.detach()) != 0.0 for c in model.convs)
    path = tmp_path / 'gin.pt'
    torch.save(model.state_dict(), path)

    ckpt = load_checkpoint(path)

    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))


def _gcn() -> tuple[ArchSpec, nn.Module]:
    spec = ArchSpec(arch='gcn', in_channels=11, hidden_channels=8,
                    num_layers=2, out_channels=3)
    return spec, _trained_like(_pyg_model(spec), 11, seed=5)


@pytest.mark.parametrize('wrap', ['model_state_dict', 'state_dict', 'module.'])
def test_wrapped_state_dicts_load_to_the_same_spec(wrap, tmp_path):
    spec, model = _gcn()
    sd = model.state_dict()
    if wrap == 'module.':  # what DataParallel / DDP save
        obj = {f'module.{k}': v for k, v in sd.items()}
    else:  # a training-loop checkpoint
        obj = {wrap: sd, 'epoch': 12, 'best_val': 0.8}
    path = tmp_path / 'wrapped.pt'
    torch.save(obj, path)

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    assert set(ckpt.state_dict) == set(sd)
    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))


def _sage(tmp_path: Path,
          aggr: str = 'mean') -> tuple[ArchSpec, nn.Module, Path]:
    spec = ArchSpec(arch='sage', in_channels=10, hidden_channels=8,
                    num_layers=2, out_channels=4, aggr=aggr)
    model = _trained_like(_pyg_model(spec, aggr=aggr), 10, seed=6)
    path = tmp_path / 'sage.pt'
    torch.save(model.state_dict(), path)
    return spec, model, path


def test_sources_of_a_plain_checkpoint(tmp_path):
    spec, model, path = _sage(tmp_path)

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    assert {k: ckpt.sources[k] for k in WEIGHT_FIELDS} == \
        dict.fromkeys(WEIGHT_FIELDS, 'weights')
    for name in ('act', 'aggr', 'dropout'):
        assert ckpt.sources[name] == 'default', name
    assert 'aggregation' in ckpt.notes['aggr']
    assert "'mean'" in ckpt.notes['aggr']


def test_option_overrides_what_the_weights_cannot_tell(tmp_path):
    spec, model, path = _sage(tmp_path, aggr='max')

    guessed = load_checkpoint(path)
    ckpt = load_checkpoint(path, {'aggr': 'max', 'act': None})

    assert ckpt.spec == spec
    assert ckpt.sources['aggr'] == 'option'
    assert ckpt.sources['act'] == 'default'  # None means "not given"
    assert 'aggr' not in ckpt.notes
    expected = _outputs(model, spec)
    assert torch.equal(_outputs(ckpt.build(), spec), expected)
    # ...and the override matters: the default guess computes something else.
    assert not torch.allclose(_outputs(guessed.build(), spec), expected)


def _write_card(pt: Path, spec: dict, kind: str = CARD_KIND) -> None:
    pt.with_suffix('.json').write_text(json.dumps({'kind': kind,
                                                   'spec': spec}))


def test_teacher_card_sets_aggr(tmp_path):
    spec, model, path = _sage(tmp_path, aggr='max')
    _write_card(path, {'aggr': 'max'})

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    assert ckpt.sources['aggr'] == 'card'
    assert 'aggr' not in ckpt.notes
    assert ckpt.card['spec'] == {'aggr': 'max'}
    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))
    # A command-line option still wins over the card.
    forced = load_checkpoint(path, {'aggr': 'sum'})
    assert forced.spec.aggr == 'sum' and forced.sources['aggr'] == 'option'


def test_json_of_another_kind_is_not_a_card(tmp_path):
    _, _, path = _sage(tmp_path, aggr='max')
    _write_card(path, {'aggr': 'max'}, kind='something-else')

    ckpt = load_checkpoint(path)

    assert ckpt.spec.aggr == 'mean' and ckpt.sources['aggr'] == 'default'
    assert ckpt.card == {}


@pytest.mark.parametrize('arch', ARCHS)
def test_safetensors_round_trip(arch, tmp_path):
    heads = 2 if arch in ('gat', 'gatv2') else 1
    # Non-default act and aggr: only the metadata can carry them.
    spec = ArchSpec(arch=arch, in_channels=9, hidden_channels=4 * heads,
                    num_layers=3, out_channels=5, heads=heads,
                    norm='layer_norm', act='elu',
                    aggr='max' if arch == 'sage' else 'mean', dropout=0.5)
    model = _trained_like(build_model(spec), spec.in_channels, seed=8)
    path = tmp_path / 'student.safetensors'

    save_safetensors(model, spec, path)
    ckpt = load_checkpoint(path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert ckpt.format == 'safetensors'
    assert ckpt.spec == spec
    assert set(ckpt.sources.values()) == {'metadata'}
    assert set(ckpt.sources) == set(spec.to_dict())
    original = model.state_dict()
    assert set(ckpt.state_dict) == set(original)
    for key, value in original.items():
        assert torch.equal(ckpt.state_dict[key], value), key
    assert torch.equal(_outputs(ckpt.build(), spec), _outputs(model, spec))


@pytest.mark.parametrize('arch,norm,layers', [
    ('gcnii', None, 1), ('gcnii', None, 6), ('mlp', None, 1),
    ('mlp', None, 3), ('mlp', 'batch_norm', 2)])
def test_gcnii_and_mlp_round_trip(arch, norm, layers, tmp_path):
    # A 1-layer MLP has no hidden width: inference reports the output's.
    hidden = 3 if (arch, layers) == ('mlp', 1) else 8
    spec = ArchSpec(arch=arch, in_channels=11, hidden_channels=hidden,
                    num_layers=layers, out_channels=3, norm=norm)
    model = _trained_like(build_model(spec), spec.in_channels, 3)
    path = tmp_path / 'teacher.pt'
    torch.save(model.state_dict(), path)

    ckpt = load_checkpoint(path)

    assert ckpt.spec == spec
    x = torch.randn(15, 11)
    edge_index = torch.randint(0, 15, (2, 40))
    rebuilt = ckpt.build()
    args = (x,) if arch == 'mlp' else (x, edge_index)
    assert torch.equal(rebuilt(*args), model.eval()(*args))
    if arch == 'gcnii':
        assert ckpt.sources['alpha'] == 'default' and 'alpha' in ckpt.notes
