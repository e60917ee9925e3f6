"""``export --quantize int8`` is right on every x86 CPU: onnxruntime's
u8 x s8 kernels on AVX2/AVX-512 CPUs without VNNI add pairs of products
in a saturating 16-bit register. These tests emulate that kernel exactly,
so they show the saturation on any CPU, and check the file onnxruntime
runs here against the exact integer arithmetic and the float model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from gnncompress import api
from gnncompress.checkpoints.students import save_safetensors
from gnncompress.models import ArchSpec, build_model
from gnncompress.outputs.int8 import quantize_int8
from gnncompress.outputs.onnx import INT8_SETTINGS, export_onnx
from gnncompress.outputs.parity import (
    TOLERANCE,
    check_graphs,
    onnx_feeds,
    onnx_session,
)

FEATURES = 6
# Dynamic quantisation rounds every input and weight of a layer to one of
# 255 steps of its range; a unit sums K such products, whose rounding
# errors partly cancel, so each quantised layer moves its outputs by a few
# steps of their range. The students here have two quantised layers:
# c = 8 steps, 8 / 255 = 3.1% of the largest output. The exact int8 model
# is at 0.8% (docs/BENCHMARKS.md); saturated, at 53%.
INT8_STEPS = 8
C = INT8_STEPS / 255


def saturating_u8s8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for uint8 ``a`` [M, K] and int8 ``b`` [K, N] as x86's
    ``pmaddubsw`` computes it: each pair of products along K (k, k + 1,
    k even) is added in a signed 16-bit register that saturates, and the
    pairs are then added exactly in 32 bits."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    if a.shape[1] % 2:  # the kernel pads K with zeros
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    pairs = (a[:, 0::2, None] * b[None, 0::2, :]
             + a[:, 1::2, None] * b[None, 1::2, :])
    return np.clip(pairs, -2 ** 15, 2 ** 15 - 1).sum(1)


def matmul_integer(saturate: bool) -> type[OpRun]:
    """ONNX ``MatMulInteger`` for the reference evaluator. The kernel
    multiplies the raw bytes and corrects for the zero points with row and
    column sums afterwards (exact), as onnxruntime's does. ``saturate``:
    int8 weights go through :func:`saturating_u8s8` (AVX2 without VNNI);
    uint8 weights always multiply exactly (onnxruntime widens them to 16
    bits)."""

    class MatMulInteger(OpRun):
        op_domain = ''

        def _run(self, a, b, a_zero_point=None, b_zero_point=None):
            za = np.int64(0 if a_zero_point is None else a_zero_point)
            zb = np.asarray(0 if b_zero_point is None else b_zero_point,
                            dtype=np.int64)
            a64, b64 = a.astype(np.int64), b.astype(np.int64)
            raw = saturating_u8s8(a, b) if saturate and b.dtype == np.int8 \
                else a64 @ b64
            k = a.shape[1]
            out = (raw - zb * a64.sum(1, keepdims=True)
                   - za * b64.sum(0, keepdims=True) + k * za * zb)
            return (out.astype(np.int32),)

    return MatMulInteger


def test_emulated_kernel_saturates_like_pmaddubsw():
    # Hand-computed: 255 * 127 * 2 = 64770 does not fit in 16 bits.
    a = np.array([[255, 255]], dtype=np.uint8)
    assert saturating_u8s8(a, np.array([[127], [127]], np.int8)) == 32767
    assert saturating_u8s8(a, np.array([[-128], [-128]], np.int8)) == -32768
    # Pairs saturate, their sum does not: 32767 + 255 * 100.
    a3 = np.array([[255, 255, 255]], dtype=np.uint8)
    b3 = np.array([[127], [127], [100]], dtype=np.int8)
    assert saturating_u8s8(a3, b3) == 32767 + 25500
    # Below the limit it is the exact product.
    rng = np.random.default_rng(0)
    small_a = rng.integers(0, 128, (4, 9)).astype(np.uint8)
    small_b = rng.integers(-64, 64, (9, 5)).astype(np.int8)
    assert np.array_equal(saturating_u8s8(small_a, small_b),
                          small_a.astype(np.int64) @ small_b)


@pytest.fixture(scope='module')
def student(tmp_path_factory):
    """The GCN of tests/workflows/test_bench.py, its float export and check
    inputs."""
    folder = tmp_path_factory.mktemp('int8')
    torch.manual_seed(0)
    spec = ArchSpec('gcn', FEATURES, 8, 2, 3)
    model = build_model(spec).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, FEATURES, generator=gen)
    edge_index = torch.randint(0, 64, (2, 256), generator=gen)
    fp32 = folder / 'm.onnx'
    export_onnx(model, x, edge_index, fp32)
    return {'model': model, 'spec': spec, 'fp32': fp32, 'x': x,
            'edge_index': edge_index, 'folder': folder}


def _small_check_graphs(x, edge_index) -> list:
    """The check graphs of every export small enough for onnx's reference
    evaluator, which scatters in a Python loop."""
    return [(gx, gei) for gx, gei in check_graphs(x, edge_index).values()
            if gei.size(1) <= 10_000]


def _reference_outputs(path, x, edge_index, saturate: bool) -> list:
    evaluator = ReferenceEvaluator(str(path),
                                   new_ops=[matmul_integer(saturate)])
    names = {i.name for i in evaluator.proto_.graph.input}
    outs = []
    for gx, gei in _small_check_graphs(x, edge_index):
        feeds = {'x': gx.numpy(), 'edge_index': gei.numpy()}
        outs.append(evaluator.run(None, {k: feeds[k] for k in names})[0])
    return outs


@pytest.mark.parametrize('settings, saturates', [
    (INT8_SETTINGS, False),
    # onnxruntime's default, which `export --quantize int8` used to pass
    ({'weight_type': 'QInt8'}, True)])
def test_the_chosen_weights_never_meet_the_saturating_kernel(
        student, settings, saturates):
    """On the emulated AVX2 kernel the chosen setting gives exactly the
    non-saturating result; onnxruntime's default int8 weights do not, by
    far more than quantisation moves the outputs."""
    path = student['folder'] / f"{settings['weight_type']}.onnx"
    quantize_int8(student['model'], student['fp32'], path, student['x'],
                  student['edge_index'], settings=settings)
    exact = _reference_outputs(path, student['x'], student['edge_index'],
                               saturate=False)
    emulated = _reference_outputs(path, student['x'], student['edge_index'],
                                  saturate=True)
    scale = max(float(np.abs(e).max()) for e in exact)
    gap = max(float(np.abs(e - s).max()) for e, s in zip(exact, emulated))
    if saturates:
        assert gap > C * scale
    else:
        assert gap == 0.0


def test_int8_export_is_exact_int8_and_close_to_the_float_model(
        student, tmp_path):
    """The file onnxruntime runs on this CPU computes the int8 graph
    exactly (against the reference evaluator, at the float export's
    tolerance relative to the outputs' size) and stays within C of the
    largest float output, with the same predicted classes almost
    everywhere."""
    ckpt = save_safetensors(student['model'], student['spec'],
                            tmp_path / 'm.safetensors')
    out = tmp_path / 'm8.onnx'
    check = api.export(ckpt, out, quantize='int8')
    assert set(check.cases) == set(check.scale) == set(check.agreement) == \
        set(check_graphs(student['x'], student['edge_index'],
                         repeated=False))
    assert 0 < check.max_abs_diff <= C * max(check.scale.values())
    assert check.relative_diff == pytest.approx(
        check.max_abs_diff / max(check.scale.values()))
    # Only rows with nearly tied logits may change class.
    assert check.min_agreement >= 0.95

    session = onnx_session(out, threads=1)
    exact = _reference_outputs(out, student['x'], student['edge_index'],
                               saturate=False)
    for (gx, gei), want in zip(
            _small_check_graphs(student['x'], student['edge_index']), exact):
        got = session.run(None, onnx_feeds(session, gx, gei))[0]
        limit = TOLERANCE * max(1.0, float(np.abs(want).max()))
        assert float(np.abs(got - want).max()) <= limit
