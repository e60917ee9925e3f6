"""int8 students: dynamic quantisation of the ONNX file and its check against
the float model."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnncompress.core.errors import ExportError, clip
from gnncompress.core.out_folder import atomic_path
from gnncompress.models import run_model
from gnncompress.outputs.onnx import INT8_SETTINGS
from gnncompress.outputs.parity import (
    Parity,
    check_graphs,
    onnx_feeds,
    onnx_session,
)


@dataclass
class Int8Check(Parity):
    """How far the int8 model is from the float PyTorch model on each check
    graph: the largest absolute difference (``cases``), the largest
    absolute float output (``scale``) and the fraction of rows whose
    predicted class is the same (``agreement``)."""
    scale: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)

    @property
    def relative_diff(self) -> float:
        """The largest difference over the largest float output, over all
        check graphs."""
        return self.max_abs_diff / max(max(self.scale.values()), 1e-12)

    @property
    def min_agreement(self) -> float:
        return min(self.agreement.values())

    def summary(self) -> str:
        return (f'int8, not held to the float tolerance; on '
                f'{len(self.cases)} check graphs: max abs difference to '
                f'PyTorch {self.max_abs_diff:.2e} on outputs up to '
                f'{max(self.scale.values()):.3g} '
                f'({100 * self.relative_diff:.2f}%), predicted classes '
                f'agree on {100 * self.min_agreement:.1f}% of rows')


def quantize_int8(model: nn.Module, source: Path, path: Path, x: Tensor,
                  edge_index: Tensor,
                  settings: dict[str, Any] | None = None) -> Int8Check:
    """Dynamically quantise the weights of the exported ``source`` to 8
    bits (onnxruntime's ``quantize_dynamic``; activations are quantised to
    uint8 at run time), write it to ``path`` and compare it with the float
    ``model`` on the check graphs of every export. The outputs are not held
    to the float tolerance: int8 moves them, by about 1% of their size.

    Weights are uint8 (``QUInt8``), not onnxruntime's default int8. With
    uint8 activations, int8 weights run in onnxruntime's u8 x s8 kernels;
    on x86 CPUs with AVX2 or AVX-512 but without VNNI those add each pair
    of products in a 16-bit register that saturates (255 * 127 * 2 =
    64770 > 32767), so the int8 model is wrong on those CPUs only (0.48 on
    logits of 9 for the quick start's student). u8 x u8 products run in
    kernels that widen to 16 bits before multiplying and add in 32 bits
    (AVX2, AVX-512; VNNI-INT8 where present): exact on every x86 CPU, with
    the full 8 bits of weight precision. ``reduce_range`` (7-bit int8
    weights: 255 * 64 * 2 < 32767) is exact too, but has half the weight
    resolution and measured 1.2 to 2 times the error; file size is the
    same and speed within noise (docs/BENCHMARKS.md, benchmarks/quantize.py).
    ``settings`` replaces :data:`INT8_SETTINGS` (benchmarks compare
    others)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = dict(INT8_SETTINGS if settings is None else settings)
    options['weight_type'] = QuantType[options['weight_type']]
    # The exporter's stored intermediate shapes disagree with the shape
    # inference the quantiser reruns (GAT: 1433 vs 256); drop them and let
    # it infer its own.
    graph = onnx.load(str(source))
    del graph.graph.value_info[:]
    root = logging.getLogger()
    level = root.level
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as folder:
        plain = Path(folder) / 'plain.onnx'
        onnx.save(graph, str(plain))
        root.setLevel(logging.ERROR)  # the quantiser's pre-process hint
        try:
            quantize_dynamic(str(plain), str(tmp), **options)
        except Exception as e:  # onnxruntime raises assorted types
            raise ExportError(
                f'int8 quantisation failed: {clip(str(e), 200)}'
            ) from None
        finally:
            root.setLevel(level)
        check = int8_check(model, tmp, x, edge_index)
    return check


def int8_check(model: nn.Module, path: Path, x: Tensor,
               edge_index: Tensor) -> Int8Check:
    """The int8 file at ``path`` against the float ``model`` on the check
    graphs (:class:`Int8Check`)."""
    session = onnx_session(path)
    model = model.eval()
    check = Int8Check({})
    # Not the repeated-destinations graph: it checks float exports for
    # races; its hub nodes' activations, hundreds of times the others,
    # leave int8's one activation scale per tensor too coarse for the rest
    # (8% of the output on the tests' GCN), which is no race.
    for name, (gx, gei) in check_graphs(x, edge_index,
                                        repeated=False).items():
        with torch.no_grad():
            expected = run_model(model, gx, gei).logits.numpy()
        got = session.run(None, onnx_feeds(session, gx, gei))[0]
        check.cases[name] = float(np.abs(got - expected).max())
        check.scale[name] = float(np.abs(expected).max())
        check.agreement[name] = float(
            (got.argmax(-1) == expected.argmax(-1)).mean())
    return check
