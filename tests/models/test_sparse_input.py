"""Registered sparse features give the dense product's values and
gradients through every model that reads them in its first layer."""
import pytest
import torch

from gnncompress.models import ArchSpec, build_model, sparse_input
from gnncompress.models.build import run_model


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(sparse_input, 'MIN_ELEMENTS', 1)


def _features(nodes: int = 30, width: int = 40, density: float = 0.03):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(nodes, width, generator=gen)
    return x * (torch.rand(nodes, width, generator=gen) < density)


def test_register_keeps_only_large_sparse_float_matrices(monkeypatch):
    assert sparse_input.register(_features())
    assert not sparse_input.register(torch.rand(30, 40))  # dense
    assert not sparse_input.register(_features().long())
    monkeypatch.setattr(sparse_input, 'MIN_ELEMENTS', 10_000)
    assert not sparse_input.register(_features())  # too small to matter


@pytest.mark.parametrize('spec', [
    ArchSpec('gcn', 40, 8, 2, 3), ArchSpec('gat', 40, 8, 2, 3, heads=2),
    ArchSpec('gatv2', 40, 8, 2, 3, heads=2), ArchSpec('sage', 40, 8, 2, 3),
    ArchSpec('mlp', 40, 8, 2, 3)], ids=lambda s: s.arch)
def test_same_values_and_gradients_as_dense(spec, monkeypatch):
    calls = []
    original = sparse_input._SparseProduct.apply
    monkeypatch.setattr(sparse_input._SparseProduct, 'apply',
                        lambda *a: calls.append(1) or original(*a))
    x = _features()
    dense = x.clone()
    assert sparse_input.register(x)
    edge_index = torch.randint(0, 30, (2, 90),
                               generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    params = list(model.parameters())
    for run in (lambda v: run_model(model, v, edge_index).logits,
                lambda v: model(v) if spec.arch == 'mlp'
                else model(v, edge_index)):
        fast, slow = run(x), run(dense)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.autograd.grad(fast.square().sum(), params),
                        torch.autograd.grad(slow.square().sum(), params)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert calls  # the sparse product ran


def test_sparse_path_is_taken_and_dropped_after_in_place_change():
    x = _features()
    sparse_input.register(x)
    weight = torch.randn(5, 40, requires_grad=True)
    assert sparse_input.is_registered(x)
    calls = []
    original = sparse_input._SparseProduct.apply

    def spy(*args):
        calls.append(1)
        return original(*args)

    sparse_input._SparseProduct.apply = spy
    try:
        sparse_input.linear(x, weight)
        assert calls == [1]
        x[0, 0] = 5.0  # the stored sparse form is stale now
        assert not sparse_input.is_registered(x)
        out = sparse_input.linear(x, weight)
        assert calls == [1]
        torch.testing.assert_close(out, x @ weight.t())
    finally:
        sparse_input._SparseProduct.apply = original
