"""`gnncompress export`: a saved student as ONNX (or int8)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from gnncompress.checkpoints.students import saved_position_dim
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.errors import GnnCompressError, OutputError
from gnncompress.core.options import check_out_file
from gnncompress.outputs.onnx import export_onnx
from gnncompress.outputs.parity import SPARSE_CHECK_DENSITY
from gnncompress.workflows.runs import check_writable, make_folder


def export(checkpoint: str | Path, out: str | Path,
           overrides: dict[str, Any] | None = None, num_nodes: int = 64,
           seed: int = 0, quantize: str | None = None,
           sparse_features: bool = False):
    """ONNX export of any checkpoint, validated on random graphs (the
    checkpoint carries no data). ``quantize='int8'`` writes the dynamically
    quantised model instead, after validating the float export; the result
    is then an :class:`~gnncompress.outputs.int8.Int8Check`: the int8 model's
    differences to PyTorch, the size of PyTorch's outputs and the agreement
    of predicted classes on the same graphs. ``sparse_features`` takes the
    node features as a CSR matrix (``x_indptr``, ``x_indices``,
    ``x_values``; :func:`~gnncompress.outputs.onnx.export_onnx`), validated on
    random features with at most 5% non-zeros. A student that reads
    position features (``distill --method glnn+position``) takes them as
    the second input ``position``, as distill wrote it."""
    if quantize not in (None, 'int8'):
        raise GnnCompressError(f"Unknown quantisation '{quantize}' (choose "
                               f'int8)')
    if quantize is not None and sparse_features:
        raise GnnCompressError('--quantize int8 does not support '
                               '--sparse-features; drop one of them')
    check_out_file(out, example='student.onnx')
    out = Path(out)
    if out.suffix != '.onnx':
        raise OutputError(f'Output file {out} must end in .onnx')
    check_writable(out.parent)
    ckpt = load_checkpoint(checkpoint, overrides)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, ckpt.spec.in_channels, generator=gen)
    edge_index = torch.randint(0, num_nodes, (2, 4 * num_nodes),
                               generator=gen)
    if sparse_features:
        x = x * (torch.rand(x.shape, generator=gen) < SPARSE_CHECK_DENSITY)
    make_folder(out.parent)
    model = ckpt.build()
    if ckpt.spec.arch == 'dgcnn':
        from gnncompress.workflows.point_clouds import export_clouds_onnx
        if quantize is not None or sparse_features:
            raise GnnCompressError('--quantize and --sparse-features are '
                                   'not supported for DGCNN; drop them')
        pos = torch.randn(2, max(num_nodes, ckpt.spec.k or 20), 3,
                          generator=gen)
        return export_clouds_onnx(model, pos, out)
    position_dim = saved_position_dim(checkpoint)
    if quantize is None:
        return export_onnx(model, x, edge_index, out,
                           uses_graph=ckpt.spec.uses_graph,
                           sparse_features=sparse_features,
                           position_dim=position_dim)
    from gnncompress.outputs.int8 import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / 'fp32.onnx'
        export_onnx(model, x, edge_index, fp32,
                    uses_graph=ckpt.spec.uses_graph,
                    position_dim=position_dim)
        return quantize_int8(model, fp32, out, x, edge_index)
