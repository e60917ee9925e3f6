"""Outputs are all-or-nothing (docs/robustness.md, "Outputs"): atomic
publication of ``--out``, one run per folder, failed runs, partial
checkpoints, kept students and byte-identical files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from gnncompress.export import save_safetensors
from gnncompress.models import ArchSpec, build_model


def test_identical_students_give_identical_bytes(tmp_path):
    # safetensors writes metadata keys in hash order, new for every call.
    spec = ArchSpec('gcn', 5, 8, 2, 3)
    torch.manual_seed(0)
    model = build_model(spec)
    extra = {'gnncompress.method': 'kd', 'gnncompress.data': 'Cora',
             'gnncompress.best_epoch': '3', 'é': 'ü'}
    digests = set()
    for i in range(6):
        path = save_safetensors(model, spec, tmp_path / f's{i}.safetensors',
                                extra=dict(reversed(extra.items())) if i % 2
                                else extra)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], 'little')
    assert size % 8 == 0
    header = data[8:8 + size].decode()
    keys = ['gnncompress.best_epoch', 'gnncompress.data', 'é']
    positions = [header.index(f'"{k}"') for k in keys]
    assert positions == sorted(positions)
