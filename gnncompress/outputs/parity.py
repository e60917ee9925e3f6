"""The check that an ONNX file computes what PyTorch computes: under
onnxruntime's default settings and on several threads, on the graphs of the
run and on graphs that stress the aggregation (repeated destinations,
isolated nodes), with a tolerance relative to the scale of the output
(docs/export.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnncompress.core.errors import ExportError
from gnncompress.models import run_model
from gnncompress.models.sparse_input import CSR_INPUTS, csr_parts

# Largest accepted difference, relative to max(1, max |y|) of the output.
TOLERANCE = 1e-4


# Largest share of non-zeros in the random features of the check graphs of
# a sparse-feature export (as models/sparse_input.py's MAX_DENSITY): the
# check's memory then grows with the non-zeros, not nodes x features.
SPARSE_CHECK_DENSITY = 0.05


# The second session of the parity check: more threads than most CPUs
# running it have, so that a kernel that splits work racily shows it. Its
# threads sleep between operators instead of spinning (onnxruntime's
# allow_spinning): on 2 cores eight spinning threads take the cores the
# work needs, and a racing ScatterND on the repeated-destinations graph
# loses additions in every run either way, 5 times faster with sleeping
# threads (`python benchmarks/scatter_race.py --stress-session`,
# docs/export.md).
CHECK_THREADS = 8

# The graphs the CHECK_THREADS session runs: those built to stress the
# aggregation. The run's own graphs (the export graph, the larger one) run
# in the default session only: at Physics' size each run is a second, and
# a race shows on the repeated destinations first.
STRESS_GRAPHS = ('isolated nodes', 'no edges', 'repeated destinations')


@dataclass
class Parity:
    """ONNX against PyTorch per check graph, the worst over the sessions
    checked: the largest absolute difference, the output's scale
    ``max(1, max |y|)`` the tolerance is relative to, and the rows whose
    predicted class differs (beyond a tie within the tolerance)."""
    cases: dict[str, float]
    scales: dict[str, float] = field(default_factory=dict)
    class_mismatches: dict[str, int] = field(default_factory=dict)
    # Which exporter wrote the file (:data:`EXPORTERS`); '' when the
    # check ran on a file it did not export.
    exporter: str = ''

    @property
    def max_abs_diff(self) -> float:
        return max(self.cases.values())

    def relative(self, name: str) -> float:
        """``cases[name]`` over the output's scale on that graph."""
        return self.cases[name] / self.scales.get(name, 1.0)

    def relative_cases(self) -> dict[str, float]:
        """:meth:`relative` of every check graph."""
        return {name: self.relative(name) for name in self.cases}


def passes(parity: Parity, tolerance: float) -> bool:
    """Whether :func:`require_parity` accepts ``parity``."""
    return not _parity_failures(parity, tolerance)


def require_parity(parity: Parity, tolerance: float) -> None:
    """Fail naming every check graph above ``tolerance`` (relative to the
    output's scale) or with another predicted class."""
    bad = _parity_failures(parity, tolerance)
    if bad:
        raise ExportError(
            f'The ONNX export does not match PyTorch (max abs difference '
            f'{", ".join(bad)}; tolerance {tolerance:.0e} x max(1, max |y|))'
            f'; nothing was written')


def _parity_failures(parity: Parity, tolerance: float) -> list[str]:
    bad = [f'{k}: {v:.2e}' + (f' at output scale {parity.scales[k]:.3g}'
                               if parity.scales.get(k, 1.0) > 1.0 else '')
           for k, v in parity.cases.items()
           if not parity.relative(k) <= tolerance]
    bad += [f'{k}: {n} predicted classes differ'
            for k, n in parity.class_mismatches.items() if n]
    return bad


# The larger check graph adds at most this many feature entries to the
# export graph's (at least 7 nodes): twice the export graph's nodes on a
# graph like Cora, a few hundred more on one like Physics (8,415 dense
# features), whose doubled features took 2.3 GB and most of the check's
# time while adding nothing a few hundred more nodes do not.
LARGER_EXTRA_ENTRIES = 1 << 22


def larger_by(num_nodes: int, num_features: int) -> int:
    """How many nodes the larger check graph has beyond the export
    graph's: ``num_nodes + 7``, capped at :data:`LARGER_EXTRA_ENTRIES`
    feature entries, and at least 7."""
    return max(7, min(num_nodes + 7,
                      LARGER_EXTRA_ENTRIES // max(1, num_features)))


def check_graphs(x: Tensor, edge_index: Tensor, seed: int = 0,
                 repeated: bool = True, density: float | None = None
                 ) -> dict[str, tuple[Tensor, Tensor]]:
    """The graphs every export is validated on: the export graph, a larger
    one (the export graph's features and :func:`larger_by` more random
    rows, wired at random), one with isolated nodes, one without edges
    and, with ``repeated``, one whose destinations repeat heavily
    (:func:`repeated_destinations`; a race check for float exports).
    ``density`` keeps that share of the random features (the others are
    0), for sparse-feature exports."""
    gen = torch.Generator().manual_seed(seed)
    num_features = x.size(1)

    def features(rows: int) -> Tensor:
        out = torch.randn(rows, num_features, generator=gen)
        if density is not None:
            out *= torch.rand(out.shape, generator=gen) < density
        return out

    n = x.size(0)
    big_n = n + larger_by(n, num_features)
    big_e = 2 * edge_index.size(1) + 11
    # The export graph's own rows, not new random ones: on Physics (8,415
    # dense features) drawing them took most of the check's time.
    big = (torch.cat([x.cpu().float(), features(big_n - n)]),
           torch.randint(0, big_n, (2, big_e), generator=gen))
    # Nodes 20..39 have no edge at all.
    iso_edges = torch.randint(0, 20, (2, 60), generator=gen)
    isolated = (features(40), iso_edges)
    empty = (features(12), torch.zeros(2, 0, dtype=torch.long))
    graphs = {'export graph': (x, edge_index), 'larger graph': big,
              'isolated nodes': isolated, 'no edges': empty}
    if repeated:
        rx, rei = repeated_destinations(num_features, gen=gen)
        if density is not None:
            rx *= torch.rand(rx.shape, generator=gen) < density
        graphs['repeated destinations'] = (rx, rei)
    return graphs


def repeated_destinations(num_features: int, num_nodes: int = 2_000,
                          num_edges: int = 200_000,
                          gen: torch.Generator | None = None
                          ) -> tuple[Tensor, Tensor]:
    """A graph whose in-degrees follow a power law: destination ``i`` is
    drawn with probability proportional to ``1 / (i + 1)``, so node 0 has
    about 24,000 in-edges of 200,000 and the first dozen over 1,000 each,
    where a racing scatter loses additions (sources uniform)."""
    gen = gen or torch.Generator().manual_seed(0)
    weights = 1.0 / torch.arange(1, num_nodes + 1, dtype=torch.float64)
    dst = torch.multinomial(weights, num_edges, replacement=True,
                            generator=gen)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    x = torch.randn(num_nodes, num_features, generator=gen)
    return x, torch.stack([src, dst])


def onnx_session(path: Path | str, threads: int | None = None,
                 spinning: bool = True):
    """An onnxruntime CPU session with onnxruntime's default settings (all
    cores), or ``threads`` intra-op threads when given, whose idle threads
    sleep instead of spinning when not ``spinning``. Every graph the tool
    exports is correct on any thread count (docs/export.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '0')
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options,
                                providers=['CPUExecutionProvider'])


def stress_session(path: Path | str):
    """The check's second session: :data:`CHECK_THREADS` threads that
    sleep when idle."""
    return onnx_session(path, CHECK_THREADS, spinning=False)


# How a summary names the exported graphs' symbolic sizes.
SIZE_NAMES = {'num_nodes': 'N', 'num_edges': 'E', 'num_rows': 'N+1',
              'nnz': 'NNZ', 'clouds': 'B', 'points': 'P'}


ONNX_TYPES = {'tensor(float)': 'float32', 'tensor(double)': 'float64',
              'tensor(int64)': 'int64', 'tensor(int32)': 'int32'}


def onnx_signature(path: str | Path) -> str:
    """The inputs of an exported model as a user feeds them:
    ``x [N, 1433] float32, edge_index [2, E] int64``."""
    session = onnx_session(path)

    def one(arg: Any) -> str:
        dims = ', '.join(SIZE_NAMES.get(d, d) if isinstance(d, str)
                         else str(d) for d in arg.shape)
        return f'{arg.name} [{dims}] {ONNX_TYPES.get(arg.type, arg.type)}'

    return ', '.join(one(arg) for arg in session.get_inputs())


def onnx_feeds(session, x: Tensor, edge_index: Tensor,
               batch: Tensor | None = None) -> dict:
    """The inputs the exported graph declares (a graph-free student takes
    ``x`` alone, or with position features its last columns apart as
    ``position``; a graph classifier also ``batch``; a sparse-feature
    export ``x`` as :func:`csr_parts`)."""
    inputs = {i.name: i for i in session.get_inputs()}
    names = list(inputs)
    values = {'x': x, 'edge_index': edge_index, 'batch': batch}
    if 'position' in inputs:
        width, features = inputs['position'].shape[1], inputs['x'].shape[1]
        if x.size(1) != features + width:
            raise ExportError(
                f'The file takes x [N, {features}] and position [N, '
                f'{width}] (position features, docs/export.md); got '
                f'{x.size(1)} feature columns: give the {width} position '
                f'columns after x')
        values['x'], values['position'] = x[:, :-width], x[:, -width:]
    if CSR_INPUTS[0] in names:
        values.update(zip(CSR_INPUTS, csr_parts(x)))
    return {name: values[name].cpu().numpy() for name in names}


def check_batches(graphs: dict[str, tuple[Tensor, Tensor]],
                  batch: Tensor) -> dict[str, Tensor]:
    """A graph assignment per check graph: the export graph's own, and
    three graphs of consecutive nodes (fewer on tiny graphs) for the
    others."""
    out = {}
    for name, (gx, _) in graphs.items():
        n = gx.size(0)
        out[name] = batch if name == 'export graph' else \
            torch.arange(n) * min(3, n) // n
    return out


def check_parity(model: nn.Module, path: Path, x: Tensor,
                 edge_index: Tensor, batch: Tensor | None = None) -> Parity:
    """Run the ONNX file at ``path`` on every :func:`check_graphs` graph in
    a session with onnxruntime's default settings, and on the
    :data:`STRESS_GRAPHS` also in :func:`stress_session`, against
    ``model`` in PyTorch. The reference is
    :func:`~gnncompress.models.run_model`, whose memory grows with
    nodes x features, not edges x features; it runs first, before any
    onnxruntime thread is awake to compete with it."""
    default = onnx_session(path)
    model = model.eval()
    parity = Parity({})
    sparse = CSR_INPUTS[0] in {i.name for i in default.get_inputs()}
    graphs = check_graphs(x, edge_index, density=_check_density(x)
                          if sparse else None)
    batches = check_batches(graphs, batch) if batch is not None else {}
    expected = {}
    for name, (gx, gei) in graphs.items():
        with torch.no_grad():
            expected[name] = run_model(model, gx, gei,
                                       batches.get(name)).logits.numpy()
        scale = max(1.0, float(np.abs(expected[name]).max())) \
            if expected[name].size else 1.0
        parity.scales[name] = scale
        parity.cases[name] = parity.class_mismatches[name] = 0
    runs = [(default, list(graphs)),
            (None, [g for g in STRESS_GRAPHS if g in graphs])]
    for session, names in runs:
        session = session or stress_session(path)
        for name in names:
            gx, gei = graphs[name]
            got = session.run(None, onnx_feeds(session, gx, gei,
                                               batches.get(name)))[0]
            diff, mismatches = _compare(got, expected[name],
                                        TOLERANCE * parity.scales[name])
            parity.cases[name] = max(parity.cases[name], diff)
            parity.class_mismatches[name] = max(
                parity.class_mismatches[name], mismatches)
    return parity


def _check_density(x: Tensor) -> float:
    """The share of non-zero features the check graphs of a sparse-feature
    export get: ``x``'s own, at most :data:`SPARSE_CHECK_DENSITY`."""
    share = float(torch.count_nonzero(x)) / max(1, x.numel())
    return min(max(share, 1.0 / max(1, x.size(1))), SPARSE_CHECK_DENSITY)


def _compare(got: np.ndarray, expected: np.ndarray,
             tie: float) -> tuple[float, int]:
    """Largest absolute difference and the rows whose predicted class
    differs: the class ONNX picks scores below PyTorch's best by more than
    ``tie`` in PyTorch's output."""
    if got.shape != expected.shape:
        return float('inf'), 0
    if not got.size:
        return 0.0, 0
    diff = float(np.abs(got - expected).max())
    if expected.ndim != 2 or not np.isfinite(diff):
        return diff, 0
    picked = np.take_along_axis(expected, got.argmax(1)[:, None], 1)[:, 0]
    return diff, int((picked < expected.max(1) - tie).sum())
