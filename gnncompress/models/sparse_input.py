"""Bag-of-words node features multiplied as a sparse matrix.

The co-author graphs carry 6,805 (CS) and 8,415 (Physics) word features per
node of which under 1% are non-zero; as a dense matrix the first layer's
product ``x @ W.T`` is most of a model's work on them. The loaders
:func:`register` a graph's features once when they are large and sparse
(CSR, plus its transpose for the weight's gradient); a first-layer linear
map given exactly that tensor then multiplies the sparse form
(:func:`linear`). Any other tensor takes the dense product, and so does
tracing for export or ``torch.compile``; rows gathered for a mini-batch
are registered only where several models read them (``cotrain
--batch-size``, :class:`gnncompress.training.peer_regimes.SampledParts`).
``benchmarks/kernels.py`` measures both ways on Physics.
"""
from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.models.spmm import spmm

MAX_DENSITY = 0.05
MIN_ELEMENTS = 1 << 20  # below this the dense product costs too little
_KEEP = 4
_REGISTRY: OrderedDict[int, tuple[weakref.ref, int, Tensor, Tensor]] = \
    OrderedDict()


def register(x: Tensor) -> bool:
    """Keep the sparse form of ``x`` when it is a large, mostly-zero float
    matrix; True when it was kept."""
    if x.dim() != 2 or not x.is_floating_point() or x.is_sparse or \
            x.requires_grad or x.numel() < MIN_ELEMENTS:
        return False
    if int(torch.count_nonzero(x)) > MAX_DENSITY * x.numel():
        return False
    _REGISTRY[id(x)] = (weakref.ref(x), x._version, *_csr_pair(x))
    while len(_REGISTRY) > _KEEP:
        _REGISTRY.popitem(last=False)
    return True


def _csr_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` and its transpose in CSR form, from one pass over the
    non-zeros (a few times faster than two ``to_sparse_csr``: mini-batch
    training registers every batch's rows)."""
    rows, cols = x.nonzero().unbind(1)  # row-major: already CSR order
    values = x[rows, cols]
    n, f = x.shape

    def crow(index: Tensor, size: int) -> Tensor:
        ptr = index.new_zeros(size + 1)
        ptr[1:] = torch.cumsum(torch.bincount(index, minlength=size), 0)
        return ptr

    order = torch.argsort(cols, stable=True)
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        csr = torch.sparse_csr_tensor(crow(rows, n), cols, values, (n, f))
        csr_t = torch.sparse_csr_tensor(crow(cols, f), rows[order],
                                        values[order], (f, n))
    return csr, csr_t


def _lookup(x: Tensor) -> tuple[Tensor, Tensor] | None:
    if torch.compiler.is_compiling():
        return None
    hit = _REGISTRY.get(id(x))
    if hit is None or hit[0]() is not x or hit[1] != x._version:
        return None
    return hit[2], hit[3]


class _SparseProduct(torch.autograd.Function):
    """``csr @ weight.T`` with the weight's gradient ``(csr.T @ grad).T``
    from the stored transpose (the features need no gradient)."""

    @staticmethod
    def forward(ctx, weight: Tensor, csr: Tensor, csr_t: Tensor) -> Tensor:
        ctx.save_for_backward(csr_t)
        return spmm(csr, weight.t())

    @staticmethod
    def backward(ctx, grad: Tensor):
        (csr_t,) = ctx.saved_tensors
        return spmm(csr_t, grad).t(), None, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through the sparse form of ``x`` when
    it was registered."""
    sparse = _lookup(x)
    if sparse is None:
        return F.linear(x, weight, bias)
    out = _SparseProduct.apply(weight, *sparse)
    return out if bias is None else out + bias


def is_registered(x: Tensor) -> bool:
    return _lookup(x) is not None


_CLASSES: dict[type, type] = {}


def _sparse_class(cls: type) -> type:
    if cls not in _CLASSES:
        def forward(self, x: Tensor) -> Tensor:
            if _lookup(x) is None:
                return cls.forward(self, x)
            return linear(x, self.weight, self.bias)
        _CLASSES[cls] = type(cls.__name__, (cls,), {'forward': forward})
    return _CLASSES[cls]


# Linear maps of a first message-passing layer that see its input as is.
_FIRST_LINEARS = ('lin', 'lin_src', 'lin_dst', 'lin_l', 'lin_r')


def attach(model: nn.Module) -> nn.Module:
    """Let the linear maps that read a PyG GNN's or MLP's input features use
    their registered sparse form (same parameters, same state_dict)."""
    convs = getattr(model, 'convs', None)
    lins = getattr(model, 'lins', None)
    first = []
    if isinstance(convs, nn.ModuleList) and len(convs):
        first = [getattr(convs[0], n, None) for n in _FIRST_LINEARS]
    elif isinstance(lins, nn.ModuleList) and len(lins):
        first = [lins[0]]
    for module in first:
        if isinstance(module, nn.Module) and \
                type(module) not in _CLASSES.values() and \
                isinstance(getattr(module, 'weight', None), Tensor) and \
                module.weight.dim() == 2:
            module.__class__ = _sparse_class(type(module))
    return model


# The inputs of a sparse-feature export in place of ``x``.
CSR_INPUTS = ('x_indptr', 'x_indices', 'x_values')


def csr_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x``'s CSR form as the inputs of a sparse-feature export:
    ``indptr [N+1]``, column ``indices [nnz]`` (int64) and ``values``."""
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        csr = x.detach().cpu().to_sparse_csr()
    # Copies: the views share the sparse tensor, which export cannot trace.
    return (csr.crow_indices().clone(), csr.col_indices().clone(),
            csr.values().clone())
