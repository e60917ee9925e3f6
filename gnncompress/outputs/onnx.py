"""Write students as safetensors (weights + spec) and ONNX, and check that
every ONNX export computes what PyTorch computes, under onnxruntime's
default settings and on several threads (docs/export.md)."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gnncompress.core import interrupts
from gnncompress.core.errors import ExportError
from gnncompress.core.out_folder import atomic_path
from gnncompress.core.timing import phase
from gnncompress.models.export_gnn import CsrFeatures, ExportGNN, export_gnn
from gnncompress.models.sparse_input import CSR_INPUTS, csr_parts
from gnncompress.outputs.parity import (
    TOLERANCE,
    Parity,
    check_parity,
    passes,
    require_parity,
)

OPSET = 20


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


class _FeaturesAndPosition(_FeaturesOnly):
    """The exported graph of a graph-free student that reads position
    features after ``x`` (NOSMOG): ``(x, position) -> logits``."""

    def forward(self, x: Tensor, position: Tensor) -> Tensor:
        return self.model(torch.cat([x, position], 1))


def export_onnx(model: nn.Module, x: Tensor, edge_index: Tensor,
                path: Path, tolerance: float = TOLERANCE,
                uses_graph: bool = True, batch: Tensor | None = None,
                fast: bool = True, sparse_features: bool = False,
                position_dim: int = 0) -> Parity:
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
    never multiplies their zeros (docs/export.md). ``position_dim`` k: a
    graph-free student whose last k input columns are position features
    takes them as a second input, ``position [N, k]``, after ``x``
    (the first columns)."""
    model = model.to('cpu').eval()
    x, edge_index = x.cpu(), edge_index.cpu()
    batch = batch.cpu() if batch is not None else None
    # GATConv needs a lower bound on the node count to export (docs/export.md).
    num_nodes = torch.export.Dim('num_nodes', min=2)
    num_edges = torch.export.Dim('num_edges')
    if position_dim and (uses_graph or batch is not None or
                         sparse_features):
        raise ExportError('Position features are the second input of a '
                          'graph-free node classifier (an MLP student); '
                          'export without them')
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
    elif position_dim:
        wrapper = _FeaturesAndPosition(model)
        args = (x[:, :-position_dim], x[:, -position_dim:])
        names = ['x', 'position']
        shapes = {'x': {0: num_nodes}, 'position': {0: num_nodes}}
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
        # An interrupt inside torch's capture comes back as an error.
        interrupts.raise_if_requested()
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f'ONNX export failed: {line[:200]}') from None
    # ... or is lost when another capture strategy succeeds.
    interrupts.raise_if_requested()


@contextlib.contextmanager
def _no_function_pass() -> Iterator[None]:
    """The TorchScript exporter without its last pass, which parses the
    finished file with the ``onnx`` package (an import of about 1 s, more
    than the export itself) only to copy in the ONNX functions of custom
    operators registered with ``custom_opsets``. The graphs exported here
    use only standard operators (tests/outputs/test_onnx.py checks every node's
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


# quantize_dynamic options of `export --quantize int8` (see quantize_int8).
INT8_SETTINGS: dict[str, Any] = {'weight_type': 'QUInt8'}
