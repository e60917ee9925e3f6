"""Write students as safetensors (weights + spec) and ONNX, and check that
every ONNX export computes what PyTorch computes, under onnxruntime's
default settings and on several threads (docs/export.md)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnncompress import __version__
from gnncompress.checkpoint import SPEC_KEY, VERSION_KEY
from gnncompress.core.timing import phase
from gnncompress.errors import ExportError, clip
from gnncompress.models import ArchSpec, run_model
from gnncompress.models.export_gnn import CsrFeatures, ExportGNN, export_gnn

OPSET = 20
# Largest accepted difference, relative to max(1, max |y|) of the output.
TOLERANCE = 1e-4
# Largest share of non-zeros in the random features of the check graphs of
# a sparse-feature export (as models/sparse_input.py's MAX_DENSITY): the
# check's memory then grows with the non-zeros, not nodes x features.
SPARSE_CHECK_DENSITY = 0.05
# The inputs of a sparse-feature export in place of ``x``.
CSR_INPUTS = ('x_indptr', 'x_indices', 'x_values')
# The second session of the parity check: more threads than most CPUs
# running it have, so that a kernel that splits work racily shows it.
CHECK_THREADS = 8


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it on success and is
    removed on failure, so no half-written file is ever left."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                               suffix='.tmp')
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_safetensors(model: nn.Module, spec: ArchSpec, path: Path,
                     extra: dict[str, str] | None = None) -> Path:
    """Weights plus the ArchSpec in the metadata: reloadable with nothing
    else (``gnncompress.checkpoint.load_checkpoint``)."""
    metadata = {SPEC_KEY: spec.to_json(), VERSION_KEY: __version__,
                **(extra or {})}
    return write_safetensors(model.state_dict(), metadata, path)


def write_safetensors(state_dict: dict[str, Tensor], metadata: dict[str, str],
                      path: Path) -> Path:
    """``state_dict`` and ``metadata`` as a safetensors file, written
    atomically, with the same bytes for the same contents."""
    from safetensors.torch import save

    # save refuses shared and non-contiguous tensors: clone each.
    tensors = {k: v.detach().to('cpu').contiguous().clone()
               for k, v in state_dict.items()}
    data = _sorted_header(save(tensors, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _sorted_header(data: bytes) -> bytes:
    """The safetensors bytes with the metadata keys in sorted order. The
    library writes them in hash order, which changes from one call to the
    next: identical students would give files with different hashes."""
    size = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + size])
    header['__metadata__'] = dict(sorted(header['__metadata__'].items()))
    text = json.dumps(header, separators=(',', ':'),
                      ensure_ascii=False).encode()
    text += b' ' * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return len(text).to_bytes(8, 'little') + text + data[8 + size:]


class _Logits(nn.Module):
    """The exported graph: ``(x, edge_index) -> logits``; a PyG GCN, SAGE
    or GIN in its export form (models/export_gnn.py)."""

    def __init__(self, model: nn.Module, fast: bool = True) -> None:
        super().__init__()
        self.model = (export_gnn(model) if fast else None) or model

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.model(x, edge_index)


class _GraphLogits(nn.Module):
    """The exported graph of a graph classifier:
    ``(x, edge_index, batch) -> logits [num_graphs, C]``."""

    def __init__(self, model: nn.Module, fast: bool = True) -> None:
        super().__init__()
        self.model = model
        self.body = (export_gnn(model.gnn) if fast else None) or model.gnn

    def forward(self, x: Tensor, edge_index: Tensor,
                batch: Tensor) -> Tensor:
        return self.model.head(self.body(x, edge_index), batch)


class _CsrLogits(nn.Module):
    """The exported graph of a sparse-feature export: ``(x_indptr,
    x_indices, x_values, edge_index) -> logits``, the features as a CSR
    matrix."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        form = export_gnn(model)
        if form is None or not form.takes_csr():
            raise ExportError(
                'Sparse input features need a GCN, GraphSAGE or GIN node '
                'classifier whose first layer is narrower than its input '
                '(with aggregation mean or sum); export without '
                '--sparse-features')
        self.model = form

    def forward(self, x_indptr: Tensor, x_indices: Tensor, x_values: Tensor,
                edge_index: Tensor) -> Tensor:
        return self.model(CsrFeatures(x_indptr, x_indices, x_values),
                          edge_index)


def csr_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x``'s CSR form as the inputs of a sparse-feature export:
    ``indptr [N+1]``, column ``indices [nnz]`` (int64) and ``values``."""
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        csr = x.detach().cpu().to_sparse_csr()
    # Copies: the views share the sparse tensor, which export cannot trace.
    return (csr.crow_indices().clone(), csr.col_indices().clone(),
            csr.values().clone())


# A node-feature matrix at most this dense, at least this wide and with at
# least this many entries makes distill suggest a sparse-feature export.
# Physics (34,493 x 8,415, 0.4% non-zero) runs 3.3x faster at 1 thread that
# way (docs/BENCHMARKS.md); Cora (2,708 x 1,433, 1.3%) runs 2x slower, the
# dense product being too small to outweigh the CSR gathers.
SPARSE_HINT_DENSITY = 0.05
SPARSE_HINT_WIDTH = 256
SPARSE_HINT_ENTRIES = 50_000_000


def sparse_features_hint(model: nn.Module, x: Tensor,
                         student_file: Path | str) -> str | None:
    """A note for the report when ``x`` is large, wide and mostly zeros and
    ``model`` can take it as a CSR matrix: the ordinary file then spends
    most of its time multiplying zeros, and ``export --sparse-features``
    writes one that skips them. ``None`` otherwise."""
    if (x.dim() != 2 or x.is_sparse or x.size(1) < SPARSE_HINT_WIDTH
            or x.numel() < SPARSE_HINT_ENTRIES):
        return None
    density = float(torch.count_nonzero(x)) / max(1, x.numel())
    if density > SPARSE_HINT_DENSITY:
        return None
    form = export_gnn(model)
    if form is None or not form.takes_csr():
        return None
    return (f'the node features are {100 * density:.1f}% non-zero: '
            f'`gnncompress export {student_file} --sparse-features '
            f'--out student-csr.onnx` writes a file that takes them as a '
            f'CSR matrix and skips the zeros; compare the two files with '
            f'`gnncompress bench` (docs/export.md)')


class _FeaturesOnly(nn.Module):
    """The exported graph of a graph-free student: ``x -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


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


def export_onnx(model: nn.Module, x: Tensor, edge_index: Tensor,
                path: Path, tolerance: float = TOLERANCE,
                uses_graph: bool = True, batch: Tensor | None = None,
                fast: bool = True, sparse_features: bool = False) -> Parity:
    """Export with dynamic node and edge counts, then compare onnxruntime with
    PyTorch (:func:`check_parity`); a difference above ``tolerance`` times
    the output's scale, or another predicted class, fails the export. A
    student
    that ``uses_graph=False`` (MLP) exports with the input ``x`` alone; a
    graph classifier (``batch`` given: the graph of each node) takes
    ``batch [N]`` as a third input and returns one row per graph.
    ``fast`` exports a PyG GCN, GraphSAGE or GIN in the race-free, faster
    form of :class:`~gnncompress.models.export_gnn.ExportGNN` (same inputs
    and outputs); ``fast=False`` exports PyG's own layers.
    ``sparse_features`` takes the features as a CSR matrix instead of
    ``x`` (inputs :data:`CSR_INPUTS`, see :func:`csr_parts`): a node
    classifier whose first layer narrows wide bag-of-words features then
    never multiplies their zeros (docs/export.md)."""
    model = model.to('cpu').eval()
    x, edge_index = x.cpu(), edge_index.cpu()
    batch = batch.cpu() if batch is not None else None
    # GATConv needs a lower bound on the node count to export (docs/export.md).
    num_nodes = torch.export.Dim('num_nodes', min=2)
    num_edges = torch.export.Dim('num_edges')
    if sparse_features:
        if batch is not None or not uses_graph:
            raise ExportError('Sparse input features are for GNN node '
                              'classifiers; export without '
                              '--sparse-features')
        wrapper: nn.Module = _CsrLogits(model)
        args: tuple[Tensor, ...] = (*csr_parts(x), edge_index)
        names = [*CSR_INPUTS, 'edge_index']
        nnz = torch.export.Dim('nnz')
        shapes = {'x_indptr': {0: torch.export.Dim('num_rows', min=3)},
                  'x_indices': {0: nnz}, 'x_values': {0: nnz},
                  'edge_index': {1: num_edges}}
    elif batch is not None:
        wrapper = _GraphLogits(model, fast)
        args = (x, edge_index, batch)
        names = ['x', 'edge_index', 'batch']
        shapes = {'x': {0: num_nodes}, 'edge_index': {1: num_edges},
                  'batch': {0: num_nodes}}
    elif uses_graph:
        # Parity is checked against `model` itself, not the export form.
        wrapper = _Logits(model, fast)
        args = (x, edge_index)
        names = ['x', 'edge_index']
        shapes = {'x': {0: num_nodes}, 'edge_index': {1: num_edges}}
    else:
        wrapper, args, names = _FeaturesOnly(model), (x,), ['x']
        shapes = {'x': {0: num_nodes}}
    with atomic_path(path) as tmp:
        parity = _export_checked(model, wrapper, args, tmp, names, shapes,
                                 (x, edge_index, batch), tolerance)
    return parity


def _export_checked(model: nn.Module, wrapper: nn.Module,
                    args: tuple[Tensor, ...], path: Path, names: list[str],
                    shapes: dict[str, dict[int, Any]],
                    inputs: tuple[Tensor, Tensor, Tensor | None],
                    tolerance: float) -> Parity:
    """Export ``wrapper`` with the exporter :func:`exporter_for` picks
    and check the file; a TorchScript file that fails to export or to pass
    the check is exported again through dynamo, whose file is then the one
    judged. :attr:`Parity.exporter` names the exporter of the file kept."""
    exporter = exporter_for(wrapper)
    if exporter == 'torchscript':
        try:
            with phase('export'):
                run_export(wrapper, args, path, names, shapes,
                           exporter='torchscript')
            with phase('check'):
                parity = check_parity(model, path, *inputs)
            if passes(parity, tolerance):
                parity.exporter = exporter
                return parity
        except ExportError:
            pass
    with phase('export'):
        run_export(wrapper, args, path, names, shapes)
    with phase('check'):
        parity = check_parity(model, path, *inputs)
    parity.exporter = 'dynamo'
    require_parity(parity, tolerance)
    return parity


# The exporters of torch.onnx: 'torchscript' traces the module once
# (``dynamo=False``, about a tenth of the time), 'dynamo' captures it with
# torch.export (``dynamo=True``). docs/export.md says which takes which
# model, benchmarks/export_speed.py --exporters times both.
EXPORTERS = ('torchscript', 'dynamo')


def exporter_for(wrapper: nn.Module) -> str:
    """'torchscript' for a node classifier in its export form
    (:class:`~gnncompress.models.export_gnn.ExportGNN`: its segment sum
    traces into the same race-free operators either way) and for a
    graph-free student; 'dynamo' for everything else: GAT and PyG's own
    layers (traced, their scatters keep no symbolic edge count in the
    file), graph classifiers (their pooling reads a graph count from
    ``batch``, a value a trace fixes), sparse-feature files (an ``If`` on
    the values) and point clouds."""
    if isinstance(wrapper, _Logits) and isinstance(wrapper.model, ExportGNN):
        return 'torchscript'
    if isinstance(wrapper, _FeaturesOnly):
        return 'torchscript'
    return 'dynamo'


def run_export(wrapper: nn.Module, args: tuple[Tensor, ...], path: Path,
               names: list[str], shapes: dict[str, dict[int, Any]],
               exporter: str = 'dynamo') -> None:
    """``torch.onnx.export`` (:data:`OPSET`, one file) with its chatter
    silenced, through ``exporter`` (:data:`EXPORTERS`; the TorchScript
    exporter names each dynamic size as ``shapes``' ``Dim`` and the output's
    first as the first input's); a failure becomes an
    :class:`ExportError`."""
    # The exporter logs every optional op library it skips (torchvision).
    logging.getLogger('torch.onnx').setLevel(logging.ERROR)
    # A graph classifier's pooling reads the graph count from ``batch``;
    # torch.export logs the whole program when it meets that value.
    logging.getLogger('torch.fx.experimental.symbolic_shapes').setLevel(
        logging.ERROR)
    # onnx_ir warns about every empty attribute list ("Attribute type is
    # ambiguous"), which the exported graphs legitimately have.
    logging.getLogger('onnx_ir').setLevel(logging.ERROR)
    if exporter == 'torchscript':
        axes = {name: {axis: dim.__name__ for axis, dim in dims.items()}
                for name, dims in shapes.items()}
        axes['logits'] = {0: axes[names[0]][0]}
        options: dict[str, Any] = {'dynamo': False, 'dynamic_axes': axes}
    else:
        options = {'dynamo': True, 'external_data': False,
                   'dynamic_shapes': shapes}
    try:
        # torch.export prints the partial program of every capture
        # strategy that fails before one succeeds (a graph classifier's
        # pooling reads the graph count from ``batch``): twice, 250 lines.
        with warnings.catch_warnings(), _no_function_pass(), \
                contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter('ignore')
            torch.onnx.export(
                wrapper, args, str(path), opset_version=OPSET,
                input_names=names, output_names=['logits'], verbose=False,
                **options)
    except Exception as e:  # noqa: BLE001
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f'ONNX export failed: {line[:200]}') from None


def passes(parity: Parity, tolerance: float) -> bool:
    """Whether :func:`require_parity` accepts ``parity``."""
    return not _parity_failures(parity, tolerance)


@contextlib.contextmanager
def _no_function_pass() -> Iterator[None]:
    """The TorchScript exporter without its last pass, which parses the
    finished file with the ``onnx`` package (an import of about 1 s, more
    than the export itself) only to copy in the ONNX functions of custom
    operators registered with ``custom_opsets``. The graphs exported here
    use only standard operators (tests/test_export.py checks every node's
    domain), so the pass would return the bytes it was given; with custom
    opsets it still runs."""
    try:
        from torch.onnx._internal.torchscript_exporter import (
            onnx_proto_utils as utils,
        )
    except ImportError:  # another torch: its exporter as it is
        yield
        return
    real = getattr(utils, '_add_onnxscript_fn', None)
    if real is None:
        yield
        return

    def add_functions(model_bytes: bytes, custom_opsets: Any) -> bytes:
        return real(model_bytes, custom_opsets) if custom_opsets \
            else model_bytes

    utils._add_onnxscript_fn = add_functions
    try:
        yield
    finally:
        utils._add_onnxscript_fn = real


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


def check_graphs(x: Tensor, edge_index: Tensor, seed: int = 0,
                 repeated: bool = True, density: float | None = None
                 ) -> dict[str, tuple[Tensor, Tensor]]:
    """The graphs every export is validated on: the export graph, a larger
    one, one with isolated nodes, one without edges and, with
    ``repeated``, one whose destinations repeat heavily
    (:func:`repeated_destinations`; a race check for float exports).
    ``density`` keeps that share of the random graphs' features (the others
    are 0), for sparse-feature exports."""
    gen = torch.Generator().manual_seed(seed)
    num_features = x.size(1)
    n = x.size(0)
    big_n = 2 * n + 7
    big_e = 2 * edge_index.size(1) + 11
    big = (torch.randn(big_n, num_features, generator=gen),
           torch.randint(0, big_n, (2, big_e), generator=gen))
    # Nodes 20..39 have no edge at all.
    iso_edges = torch.randint(0, 20, (2, 60), generator=gen)
    isolated = (torch.randn(40, num_features, generator=gen), iso_edges)
    empty = (torch.randn(12, num_features, generator=gen),
             torch.zeros(2, 0, dtype=torch.long))
    graphs = {'export graph': (x, edge_index), 'larger graph': big,
              'isolated nodes': isolated, 'no edges': empty}
    if repeated:
        graphs['repeated destinations'] = repeated_destinations(
            num_features, gen=gen)
    if density is not None:
        for name, (gx, gei) in graphs.items():
            if name != 'export graph':
                keep = torch.rand(gx.shape, generator=gen) < density
                graphs[name] = (gx * keep, gei)
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


def onnx_session(path: Path | str, threads: int | None = None):
    """An onnxruntime CPU session with onnxruntime's default settings (all
    cores), or ``threads`` intra-op threads when given. Every graph the
    tool exports is correct on any thread count (docs/export.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options,
                                providers=['CPUExecutionProvider'])


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
    ``x`` alone, a graph classifier also ``batch``, a sparse-feature export
    ``x`` as :func:`csr_parts`)."""
    names = [i.name for i in session.get_inputs()]
    values = {'x': x, 'edge_index': edge_index, 'batch': batch}
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
    """Run the ONNX file at ``path`` on every :func:`check_graphs` graph,
    once in a session with onnxruntime's default settings and once with
    :data:`CHECK_THREADS` intra-op threads, against ``model`` in PyTorch.
    The reference is :func:`~gnncompress.models.run_model`, whose memory
    grows with nodes x features, not edges x features."""
    sessions = [onnx_session(path), onnx_session(path, CHECK_THREADS)]
    model = model.eval()
    parity = Parity({})
    sparse = CSR_INPUTS[0] in {i.name for i in sessions[0].get_inputs()}
    graphs = check_graphs(x, edge_index, density=_check_density(x)
                          if sparse else None)
    batches = check_batches(graphs, batch) if batch is not None else {}
    for name, (gx, gei) in graphs.items():
        gb = batches.get(name)
        with torch.no_grad():
            expected = run_model(model, gx, gei, gb).logits.numpy()
        scale = max(1.0, float(np.abs(expected).max())) \
            if expected.size else 1.0
        parity.scales[name] = scale
        parity.cases[name] = parity.class_mismatches[name] = 0
        for session in sessions:
            got = session.run(None, onnx_feeds(session, gx, gei, gb))[0]
            diff, mismatches = _compare(got, expected, TOLERANCE * scale)
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


# quantize_dynamic options of `export --quantize int8` (see quantize_int8).
INT8_SETTINGS: dict[str, Any] = {'weight_type': 'QUInt8'}


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
