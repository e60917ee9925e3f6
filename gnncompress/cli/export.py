"""`gnncompress export`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.common import Command, api, app, call
from gnncompress.cli.options import (
    ActOpt,
    AggrOpt,
    ArchOpt,
    JkOpt,
    MaxCheckpointGbOpt,
    NormOpt,
)
from gnncompress.cli.parsing import overrides
from gnncompress.core.defaults import DEFAULT_MAX_CHECKPOINT_GB


@app.command(cls=Command)
def export(
    checkpoint: Annotated[Path, typer.Argument(metavar='CHECKPOINT',
                                               help='Checkpoint file.')],
    out: Annotated[str, typer.Option(help='Output .onnx file.')],
    max_checkpoint_gb: MaxCheckpointGbOpt = DEFAULT_MAX_CHECKPOINT_GB,
    arch: ArchOpt = None, aggr: AggrOpt = None, jk: JkOpt = None,
    norm: NormOpt = None, act: ActOpt = None,
    quantize: Annotated[Optional[str], typer.Option(
        help='int8: dynamically quantised uint8 weights (onnxruntime), '
        'exact on every x86 CPU; compare its accuracy and predictions '
        'with gnncompress bench --baseline FLOAT.onnx (default: float32).')]
    = None,
    sparse_features: Annotated[bool, typer.Option(
        '--sparse-features',
        help='Take the node features as a CSR matrix (inputs x_indptr, '
        'x_indices, x_values in place of x): faster on wide, mostly-zero '
        'features such as bag-of-words. GCN, GraphSAGE and GIN node '
        'classifiers whose first layer is narrower than the input.')] = False,
) -> None:
    """Export CHECKPOINT to ONNX, checked against PyTorch."""
    parity = call(api.export, checkpoint, out,
                   overrides(arch, aggr, jk, norm, act), quantize=quantize,
                   sparse_features=sparse_features)
    if quantize:
        typer.echo(f'wrote {out} ({parity.summary()})')
        return
    worst = max(parity.relative_cases().values())
    typer.echo(f'wrote {out} (max difference to PyTorch {worst:.2e} of the '
               f"output's scale, checked on {len(parity.cases)} graphs)")
