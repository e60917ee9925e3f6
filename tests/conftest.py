"""Shared fixtures: tiny literal graphs, the bundled Cora sample, quick
latency figures, and the device a test runs on (markers ``cuda`` and
``cpu_only``, pyproject.toml)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from gnncompress.core.graph import Graph
from gnncompress.models import ModelOutput
from gnncompress.tasks.datasets import load_graph

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / 'samples'
SAMPLE_TEACHER = SAMPLES / 'cora_gat.pt'
SHARED_DATASETS = ROOT.parent / 'shared' / 'datasets'
# The device of the tests marked `cuda` (benchmarks/gpu_check.py: cuda).
TEST_DEVICE = os.environ.get('GNNCOMPRESS_TEST_DEVICE', 'cpu')
if TEST_DEVICE not in ('cpu', 'cuda'):
    raise pytest.UsageError(f'GNNCOMPRESS_TEST_DEVICE must be cpu or cuda, '
                            f'not {TEST_DEVICE!r}')
if TEST_DEVICE == 'cuda' and not torch.cuda.is_available():
    # Asked for the GPU run where there is none: say so rather than pass
    # by skipping every test marked cuda.
    raise pytest.UsageError('GNNCOMPRESS_TEST_DEVICE=cuda but no CUDA '
                            'device is visible: unset it or run on a GPU')


@pytest.fixture
def device() -> str:
    """The device of a test marked ``cuda``: GNNCOMPRESS_TEST_DEVICE
    (default cpu; cuda where no CUDA device is visible stops the run)."""
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _cpu_only(request: pytest.FixtureRequest,
              monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a test marked ``cpu_only``, CUDA is not available, so the
    tool's ``--device auto`` (the default) resolves to the CPU."""
    if request.node.get_closest_marker('cpu_only') is not None:
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


def quick_latency(mp: pytest.MonkeyPatch, warmup: int = 0,
                  repeat: int = 1) -> None:
    """The latency figures of distill's report from a few timed runs:
    tests check the report, not the speed."""
    from gnncompress.outputs import latency as bench
    from gnncompress.workflows import results
    # torch_figures calls the latency module's own torch_latency.
    for module, name in ((bench, 'torch_latency'),
                         (results, 'onnx_latency')):
        mp.setattr(module, name, functools.partial(
            getattr(bench, name), warmup=warmup, repeat=repeat))


@pytest.fixture
def fast_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    quick_latency(monkeypatch, warmup=1, repeat=2)


def literal_graph(num_nodes: int, edge_index: torch.Tensor | None = None,
                  name: str = 'literal') -> Graph:
    """Zero features, every node in every split: the graph argument of a
    method's loss on literal outputs (most methods read only the edges,
    and many not even those)."""
    mask = torch.ones(num_nodes, dtype=torch.bool)
    if edge_index is None:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    return Graph(name=name, x=torch.zeros(num_nodes, 1),
                 edge_index=edge_index,
                 y=torch.zeros(num_nodes, dtype=torch.long),
                 train_mask=mask, val_mask=mask, test_mask=mask,
                 num_classes=2)


def ring_data(n: int = 40):
    """A ``torch_geometric.data.Data`` ring of ``n`` nodes with chords
    (each node to the next and to the fifth next, both ways), two classes
    by parity with noisy 4-feature inputs: small enough to train in
    milliseconds, with ties in validation accuracy common."""
    from torch_geometric.data import Data
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=gen) + y[:, None] * 0.7
    s = torch.arange(n)
    edges = torch.cat([torch.stack([s, (s + 1) % n]),
                       torch.stack([s, (s + 5) % n])], 1)
    return Data(x=x, edge_index=torch.cat([edges, edges.flip(0)], 1), y=y)


def literal_output(h, requires_grad: bool = False) -> ModelOutput:
    """One float64 hidden layer with the rows ``h`` and zero logits."""
    hidden = torch.tensor(h, dtype=torch.float64, requires_grad=requires_grad)
    return ModelOutput(logits=torch.zeros(len(h), 2, dtype=torch.float64),
                       hiddens=[hidden])


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip when ../shared/datasets (the named part of it) is absent: the
    suite must also pass on a machine without the shared data."""
    return pytest.mark.skipif(not SHARED_DATASETS.joinpath(*parts).exists(),
                              reason='shared datasets not available')


@pytest.fixture(autouse=True, scope='session')
def _dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Processed datasets go to a temporary cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv('GNNCOMPRESS_CACHE', str(tmp_path_factory.mktemp('cache')))
    yield
    mp.undo()


@pytest.fixture
def tiny_graph() -> Graph:
    """6 nodes, 2 classes, both directions of every edge; node 5 isolated."""
    edges = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4)]
    src = [a for a, b in edges] + [b for a, b in edges]
    dst = [b for a, b in edges] + [a for a, b in edges]
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    return Graph(name='tiny', x=torch.randn(6, 5, generator=gen),
                 edge_index=torch.tensor([src, dst]), y=y,
                 train_mask=torch.tensor([1, 0, 0, 1, 0, 0]).bool(),
                 val_mask=torch.tensor([0, 1, 0, 0, 1, 0]).bool(),
                 test_mask=torch.tensor([0, 0, 1, 0, 0, 1]).bool(),
                 num_classes=2)


@pytest.fixture(scope='session')
def cora() -> Graph:
    """The bundled Cora sample (public split)."""
    return load_graph('Cora', SAMPLES)
