"""run_model's sparse-product layers compute PyG's functions."""
import pytest
import torch
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

from gnncompress.models import ArchSpec, build_model, propagation
from gnncompress.models.build import run_model


def _graph(nodes: int = 12, edges: int = 40):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(nodes, 5, generator=gen)
    # Duplicated edges, self-loops and an isolated last node on purpose.
    edge_index = torch.randint(0, nodes - 1, (2, edges), generator=gen)
    edge_index = torch.cat([edge_index, edge_index[:, :4],
                            torch.tensor([[2, 3], [2, 3]])], dim=1)
    return x, edge_index


@pytest.mark.parametrize('spec', [
    ArchSpec('gcn', 5, 8, 3, 3),      # widens, then narrows
    ArchSpec('gcn', 5, 4, 2, 3),
    ArchSpec('sage', 5, 8, 2, 3),
    ArchSpec('sage', 5, 3, 3, 4),
    ArchSpec('gin', 5, 8, 2, 3),
], ids=lambda s: f'{s.arch}-{s.hidden_channels}x{s.num_layers}')
def test_values_and_gradients_match_pyg(spec):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x, edge_index = _graph()
    assert propagation.plan(model.convs, x, edge_index) is not None
    fast = run_model(model, x, edge_index).logits
    fast_grads = torch.autograd.grad(fast.square().sum(),
                                     list(model.parameters()))
    pyg = model(x, edge_index)
    pyg_grads = torch.autograd.grad(pyg.square().sum(),
                                    list(model.parameters()))
    torch.testing.assert_close(fast, pyg, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, pyg_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gcn_normalisation_against_hand_computed_case():
    """Path 0 -> 1 -> 2 with unit weights and identity features: each
    node's output row is the GCN matrix row D^-1/2 (A + I) D^-1/2."""
    model = build_model(ArchSpec('gcn', 3, 3, 1, 3)).eval()
    with torch.no_grad():
        model.convs[0].lin.weight.copy_(torch.eye(3))
        model.convs[0].bias.zero_()
    edge_index = torch.tensor([[0, 1], [1, 2]])
    out = run_model(model, torch.eye(3), edge_index).logits
    # in-degrees with the self-loop: 1, 2, 2
    s = 2 ** -0.5
    expected = torch.tensor([[1.0, 0.0, 0.0],
                             [s, 0.5, 0.0],
                             [0.0, 0.5, 0.5]])
    torch.testing.assert_close(out, expected)


def test_aggregation_gradient_uses_the_kept_transpose():
    """d(A v)/dv = A^T w on a directed graph, in every step; the
    transpose is built on the first backward and reused."""
    _, edge_index = _graph()
    matrix = propagation.aggregation_matrix(edge_index, 12, 'mean',
                                            torch.float32)
    dense = matrix.to_dense()
    assert not torch.allclose(dense, dense.t())
    v = torch.randn(12, 4, requires_grad=True)
    w = torch.randn(12, 4)
    for _ in range(2):
        out = propagation._aggregate(matrix, v, None)
        (grad,) = torch.autograd.grad((out * w).sum(), v)
        torch.testing.assert_close(out, dense @ v)
        torch.testing.assert_close(grad, dense.t() @ w)
    assert propagation._transposed(matrix) is \
        propagation._transposed(matrix)


def test_explain_masks_keep_pyg_layers():
    """TAM multiplies a weight into every message through explain masks;
    with one attached, the model must run PyG's own layers."""
    model = build_model(ArchSpec('gcn', 5, 8, 2, 3))
    x, edge_index = _graph()
    weight = torch.ones(edge_index.size(1), requires_grad=True)
    set_masks(model, weight, edge_index, apply_sigmoid=False)
    try:
        assert propagation.plan(model.convs, x, edge_index) is None
        logits = run_model(model, x, edge_index).logits
        (grad,) = torch.autograd.grad(logits.sum(), weight)
    finally:
        clear_masks(model)
    assert grad.abs().sum() > 0


def test_matrix_rebuilt_when_edges_change_in_place():
    model = build_model(ArchSpec('gcn', 5, 8, 2, 3)).eval()
    x, edge_index = _graph()
    run_model(model, x, edge_index)
    edge_index[1, :5] = 11  # now the last node has incoming edges
    torch.testing.assert_close(run_model(model, x, edge_index).logits,
                               model(x, edge_index))


def test_gat_and_gcnii_keep_their_own_layers():
    x, edge_index = _graph()
    gat = build_model(ArchSpec('gat', 5, 8, 2, 3, heads=2))
    assert propagation.plan(gat.convs, x, edge_index) is None


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_spmm_equals_the_dense_product(dtype):
    """models.spmm (a row-bag sum on CPU) against the dense product, on a
    rectangular matrix with empty rows, a non-contiguous right side and an
    empty matrix; with a gradient to carry it hands over to
    torch.sparse.mm, whose autograd is the reference."""
    from gnncompress.models.spmm import spmm

    gen = torch.Generator().manual_seed(2)
    dense = torch.randn(7, 5, generator=gen, dtype=dtype)
    dense[[1, 4]] = 0  # empty rows
    matrix = dense.to_sparse_csr()
    right = torch.randn(4, 5, generator=gen, dtype=dtype).t()  # [5, 4]
    assert not right.is_contiguous()
    torch.testing.assert_close(spmm(matrix, right), dense @ right)
    empty = torch.zeros(3, 5, dtype=dtype).to_sparse_csr()
    torch.testing.assert_close(spmm(empty, right),
                               torch.zeros(3, 4, dtype=dtype))
    leaf = right.detach().requires_grad_()
    out = spmm(matrix, leaf)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    torch.testing.assert_close(grad, dense.t() @ torch.ones(7, 4,
                                                            dtype=dtype))
