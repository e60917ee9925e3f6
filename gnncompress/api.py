"""The Python API: one function per command, with the command's options as
keyword arguments or as one typed settings object (:class:`DistillSettings`,
:class:`CotrainSettings`, :class:`AmalgamateSettings` and their groups),
so a script or a CI pipeline gets exactly what the command line does (the
CLI is a thin layer over these functions). Each command lives in
:mod:`gnncompress.workflows`; this module gathers them with the few
helpers scripts use (devices, seeds, datasets, students, methods)."""
from __future__ import annotations

from gnncompress.workflows.amalgamate import amalgamate as _amalgamate
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
    AmalgamateSettings,
    Batching,
    Checkpointing,
    Clouds,
    CotrainSettings,
    DistillSettings,
    Gates,
    Outputs,
    Peers,
    SlimmableStudent,
    Student,
    Training,
)
from gnncompress.workflows.students import build_method, student_spec
from gnncompress.workflows.teacher import Inspection, inspect, train_teacher

__all__ = [
    'AmalgamateSettings',
    'Batching',
    'Checkpointing',
    'Clouds',
    'CotrainSettings',
    'DistillSettings',
    'Gates',
    'Inspection',
    'Outputs',
    'Peers',
    'SlimmableStudent',
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


amalgamate = timed_command(_amalgamate)
cotrain = timed_command(_cotrain)
