"""The Python API: one function per command, with the command's options as
keyword arguments or as one typed settings object (:class:`DistillSettings`,
:class:`CotrainSettings` and their groups), so a script or a CI pipeline
gets exactly what the command line does (the CLI is a thin layer over
these functions). Each command lives in :mod:`gnncompress.workflows`; this
module gathers them with the few helpers scripts use (devices, seeds,
datasets, students, methods)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gnncompress.outputs.latency import REPORT_BUDGET_S
from gnncompress.workflows.bench import bench
from gnncompress.workflows.cotrain import cotrain as _cotrain
from gnncompress.workflows.distill import distill
from gnncompress.workflows.export import export
from gnncompress.workflows.inputs import resolve_data
from gnncompress.workflows.results import run_summary
from gnncompress.workflows.runs import (
    command_line,
    resolve_device,
    seed_everything,
    timed_command,
)
from gnncompress.workflows.saved_teacher import TeacherResult
from gnncompress.workflows.settings import (
    Batching,
    Checkpointing,
    Clouds,
    CotrainSettings,
    DistillSettings,
    Gates,
    Outputs,
    Peers,
    Student,
    Training,
)
from gnncompress.workflows.students import build_method, student_spec
from gnncompress.workflows.teacher import Inspection, inspect, train_teacher

__all__ = [
    'Batching',
    'Checkpointing',
    'Clouds',
    'CotrainSettings',
    'DistillSettings',
    'Gates',
    'Inspection',
    'Outputs',
    'Peers',
    'Student',
    'TeacherResult',
    'Training',
    'amalgamate',
    'bench',
    'build_method',
    'command_line',
    'cotrain',
    'distill',
    'export',
    'inspect',
    'resolve_data',
    'resolve_device',
    'run_summary',
    'seed_everything',
    'student_spec',
    'timed_command',
    'train_teacher',
]


@timed_command
def amalgamate(teachers: list[str | Path], *, latency: bool = True,
               latency_budget_s: float = REPORT_BUDGET_S, **kwargs: Any):
    """Merge several teachers into one slimmable student without labels;
    see :func:`gnncompress.workflows.amalgamate.amalgamate` for the options, and
    :func:`distill` for ``latency`` and ``latency_budget_s``."""
    from gnncompress.workflows.amalgamate import amalgamate as run
    return run(teachers, latency=latency, **kwargs)


cotrain = timed_command(_cotrain)
