"""The commands on the device the suite is pointed at (marker ``cuda``:
GNNCOMPRESS_TEST_DEVICE, cpu by default, cuda in benchmarks/gpu_check.py).
Each checks values, not only that the run ends: the device the report
names, and the exported file against the trained student."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SAMPLES, quick_latency

import gnncompress.api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.tasks.datasets import load_graph

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize('batch_size', [None, 512])  # full graph, sampled
def test_distill_on_the_device(tmp_path, monkeypatch, device, batch_size):
    quick_latency(monkeypatch)
    out = tmp_path / 'run'
    report = gnncompress.api.distill(
        SAMPLES / 'cora_gat.pt', data_root=SAMPLES, method='kd', epochs=3,
        device=device, batch_size=batch_size, out=out, progress=False)
    assert report.device == device
    # The files hold the student that was trained on the device: the ONNX
    # file on the CPU gives its test accuracy to the node.
    graph = load_graph('Cora', SAMPLES)
    session = ort.InferenceSession(str(out / 'student.onnx'))
    logits = session.run(None, {'x': graph.x.numpy(),
                                'edge_index': graph.edge_index.numpy()})[0]
    mask = graph.test_mask.numpy()
    accuracy = float((logits[mask].argmax(-1) == graph.y.numpy()[mask])
                     .mean())
    assert accuracy == pytest.approx(report.student.test_accuracy, abs=1e-3)


def test_student_on_the_device_matches_the_cpu(tmp_path, monkeypatch,
                                               device):
    quick_latency(monkeypatch)
    out = tmp_path / 'run'
    gnncompress.api.distill(
        SAMPLES / 'cora_gat.pt', data_root=SAMPLES, method='kd', epochs=2,
        device=device, out=out, progress=False)
    model = load_checkpoint(out / 'student.safetensors').build().eval()
    graph = load_graph('Cora', SAMPLES)
    with torch.no_grad():
        on_cpu = model(graph.x, graph.edge_index)
        on_dev = model.to(device)(graph.x.to(device),
                                  graph.edge_index.to(device)).cpu()
    np.testing.assert_allclose(on_dev.numpy(), on_cpu.numpy(), atol=1e-4,
                               rtol=1e-4)


def test_cotrain_on_the_device(tmp_path, monkeypatch, device):
    quick_latency(monkeypatch)
    report = gnncompress.api.cotrain(
        data='Cora', data_root=SAMPLES, method='mutual', hidden=8, layers=2,
        epochs=2, device=device, out=tmp_path / 'run', progress=False,
        latency=False)
    assert report.device == device
