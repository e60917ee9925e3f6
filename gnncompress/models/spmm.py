"""The product of a CSR matrix and a dense one, fast on CPU.

``torch.sparse.mm`` of a CSR matrix and a dense one on CPU goes through a
general kernel that copies the dense operands and the result around the
product; on Coauthor Physics' GCN matrix at width 128 it takes several
times what the same arithmetic takes in ``F.embedding_bag`` (every row a
bag: the row's column indices pick rows of the dense matrix, summed with
the row's values as weights), which has a vectorised kernel for exactly
this. ``benchmarks/kernels.py`` measures both. On other devices, for other
dtypes, and where autograd would have to go through the product, this is
``torch.sparse.mm``: callers here compute their products inside their own
``autograd.Function`` and give the transposed product themselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# embedding_bag's CPU kernel takes per-row weights in these dtypes.
_DTYPES = (torch.float32, torch.float64)


def spmm(matrix: Tensor, dense: Tensor) -> Tensor:
    """``matrix @ dense`` for a CSR ``matrix`` ``[R, C]`` and a dense
    ``[C, F]``."""
    if matrix.layout != torch.sparse_csr or dense.device.type != 'cpu' or \
            dense.dtype not in _DTYPES or dense.dim() != 2 or \
            matrix.dtype != dense.dtype or \
            (torch.is_grad_enabled() and
             (dense.requires_grad or matrix.requires_grad)):
        return torch.sparse.mm(matrix, dense)
    crow = matrix.crow_indices()
    return F.embedding_bag(matrix.col_indices(), dense.contiguous(), crow,
                           mode='sum', per_sample_weights=matrix.values(),
                           include_last_offset=True)
