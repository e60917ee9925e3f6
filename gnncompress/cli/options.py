"""Options several commands share, declared once (their help text and
defaults)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gnncompress.cli.parsing import config, max_checkpoint_gb

# Options of every command that writes a report with latency figures.
LatencyOption = Annotated[bool, typer.Option(
    '--latency/--no-latency',
    help="Time the models for the report (--no-latency leaves latency "
    "out, e.g. in CI).")]


LatencyBudgetOption = Annotated[float, typer.Option(
    min=0, help="Seconds for all the report's latency figures together; "
    "each gets at least 3 timed runs.")]


MaxCheckpointGbOpt = Annotated[float, typer.Option(
    '--max-checkpoint-gb', callback=max_checkpoint_gb,
    help='Refuse, before reading it, a checkpoint larger than this many GB '
    '(its file, or what its archive declares once unpacked).')]


ConfigOpt = Annotated[Optional[Path], typer.Option(
    '--config', callback=config, is_eager=True,
    help='TOML file of options (keys named like the options; the command '
    'line wins) (default: none).')]


ArchOpt = Annotated[Optional[str], typer.Option(
    '--arch', help='Override the teacher architecture (default: inferred '
    'from the weights).')]


AggrOpt = Annotated[Optional[str], typer.Option(
    help="SAGE aggregation (the weights cannot tell; default 'mean'; "
    "'gcn' for a SAGE without root weights that averages over the node "
    'and its neighbours).')]


JkOpt = Annotated[Optional[str], typer.Option(
    help="Jumping knowledge (default: inferred; 'last' and 'max' look "
    "alike in the weights).")]


NormOpt = Annotated[Optional[str], typer.Option(
    help='Normalisation (default: inferred; parameter-free norms leave no '
    'trace in weights).')]


ActOpt = Annotated[Optional[str], typer.Option(
    help="Activation (the weights cannot tell; default 'relu').")]


DataRootOpt = Annotated[Optional[Path], typer.Option(
    help='Folder holding datasets in PyG layout (default: a user cache '
    'folder, where PyG downloads when a network exists).')]


DeviceOpt = Annotated[str, typer.Option(help='auto, cpu or cuda.')]


EpochsOpt = Annotated[int, typer.Option(
    min=1, help='Most training epochs (--patience may stop sooner).')]


WeightDecayOpt = Annotated[float, typer.Option(
    help='Adam weight decay (L2 penalty).')]


SeedOpt = Annotated[int, typer.Option(
    help='Random seed (weights, splits, sampling).')]


ProgressOpt = Annotated[bool, typer.Option(help='Show a progress bar.')]


CheckpointEveryOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Save the training state every K epochs (to '
    '--checkpoint-dir), so that --resume can continue the run (default: '
    'no checkpoints).')]


CheckpointDirOpt = Annotated[Optional[Path], typer.Option(
    help='Folder of the training checkpoint (default: '
    'OUT/.gnncompress-checkpoint, removed when the run succeeds).')]


ResumeOpt = Annotated[Optional[Path], typer.Option(
    help='Continue the interrupted run whose checkpoint is in this folder '
    '(its --out or --checkpoint-dir); give the same options (default: a '
    'fresh run).')]


KOpt = Annotated[Optional[int], typer.Option(
    min=1, help="DGCNN: neighbours per point [default: 20; a student: its "
    "teacher's].")]


EmbOpt = Annotated[Optional[int], typer.Option(
    min=1, help='DGCNN: per-point embedding width before pooling '
    "[default: 4 x the last --hidden width, 1024 for 64,64,128,256; a "
    "student: its teacher's, scaled like --hidden].")]


HeadOpt = Annotated[Optional[str], typer.Option(
    help='DGCNN: MLP widths after pooling [default: half and a quarter of '
    "the embedding, e.g. 512,256; a student: its teacher's, scaled like "
    '--hidden].')]


PointsOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Point clouds: keep this many points of each cloud (a '
    'seeded random subset) (default: all).')]


AugmentOpt = Annotated[Optional[str], typer.Option(
    help='Point clouds: training augmentations, comma-separated: rotate '
    '(about z), jitter, scale, subsample (default: none).')]


BatchSizeOpt = Annotated[Optional[int], typer.Option(
    min=1, help='Point clouds: clouds per training step [default: 32]. '
    'Graph classification: graphs per step [default: 32]; several-graph '
    'node data: training graphs per step [default: 10 steps an epoch]. '
    'Node classification: train on sampled subgraphs of this many seed '
    'nodes (graphs too large for one full-batch pass).')]


FanoutOpt = Annotated[Optional[str], typer.Option(
    help='With --batch-size: neighbours sampled per node at each hop, one '
    'count per student layer, e.g. 15,10 (-1: all) [default: 15,10, then 5 '
    'per further layer].')]


NprocOpt = Annotated[Optional[int], typer.Option(
    help='Train in N processes with DistributedDataParallel (one per GPU '
    'with --device cuda; gloo on the CPU), sharing each batch: on one '
    'node-classification graph it needs --batch-size; batches of whole '
    'graphs or clouds have a default. Under torchrun, leave it out '
    '(default: one process).')]
