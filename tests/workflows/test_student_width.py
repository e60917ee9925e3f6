"""A student that the ratio squeezes below the number of classes or below
8 is refused with a one-line error that names the fixes."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import SAMPLES
from torch_geometric.nn.models import GCN
from typer.testing import CliRunner

from gnncompress.api import student_spec
from gnncompress.cli import app
from gnncompress.core.errors import ArchitectureError
from gnncompress.models import ArchSpec

runner = CliRunner()


def test_default_ratio_on_pyg_example_gcn_is_refused(tmp_path):
    # PyG's examples/gcn.py: 1433 -> 16 -> 7, 23,063 parameters. A tenth
    # of that leaves a 2-layer GCN 1441 w + 7 <= 2,306: w = 1.
    teacher = tmp_path / 'gcn.pt'
    torch.save(GCN(1433, 16, 2, 7).state_dict(), teacher)
    out = tmp_path / 'out'

    result = runner.invoke(app, [
        'distill', str(teacher), '--data', 'Cora', '--data-root',
        str(SAMPLES), '--epochs', '1', '--out', str(out), '--no-progress'])

    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message == (
        'Error: A 2-layer gcn student 10x smaller than the teacher would be '
        '1 wide, below 8 (the number of classes, at least 8): pass --hidden '
        '8 or more, or a smaller --ratio'), result.output
    assert not out.exists()


@pytest.mark.parametrize('classes, floor', [(3, 8), (12, 12)])
def test_floor_is_classes_or_eight(classes, floor, cora):
    graph = dataclasses.replace(cora, num_classes=classes)
    teacher = ArchSpec(arch='gcn', in_channels=graph.num_features,
                       hidden_channels=64, num_layers=2,
                       out_channels=classes)

    with pytest.raises(ArchitectureError, match=f'below {floor} '):
        student_spec(teacher, graph, ratio=40)
    wide = student_spec(teacher, graph, ratio=2)
    assert wide.hidden_channels >= floor
