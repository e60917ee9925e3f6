"""The feature matrix of ``cotrain`` and ``amalgamate``, and of ``--nproc``
for all three commands (the ``distill`` cells of one process are in
``test_feature_matrix.py``, whose tiny datasets and teachers this file
shares).

One process: every cotrain method and amalgamation under every regime that
takes it, two epochs: the method's own term is in the history of every
student, and a run interrupted after its epoch-1 checkpoint and resumed
ends bit-identical to an uninterrupted one (student tensors and history);
a regime that cannot take the command is refused in one line.

Two processes (gloo, one process group for every cell): each command in
every regime that has batches to split (sampled subgraphs, batches of whole
graphs, point clouds) trains, ends with the processes in step, reports 2
processes, and a run resumed from its epoch-2 checkpoint ends bit-identical
to the uninterrupted one. Where one process and two compute the same
gradient (batches of whole graphs, a student without dropout or batch
norm), two processes end with one process's student, to float rounding.
Full-graph training has no batch to split, and is refused.

A NaN after two good epochs stops cotrain and amalgamate in every regime
in one line, and the file written is the best student the loop put back.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.catalogue import COTRAIN_METHODS
from gnncompress.core.errors import TrainingError
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.datasets import load_graph
from gnncompress.training import loop, peer_regimes, train
from gnncompress.training.resume import DEFAULT_FOLDER
from gnncompress.workflows import distill_sampled as minibatch
from gnncompress.workflows import distributed
from gnncompress.workflows.amalgamate import regimes as amalgamation
from gnncompress.workflows.cotrain import build_online_methods
from tests.training.test_feature_matrix import (  # noqa: F401 (fixtures)
    Cell,
    _one_thread,
    _same,
    _state,
    files,
    interrupted_after_epoch_1,
)

runner = CliRunner()
EPOCHS = 2
QUIET = dict(progress=False, export=False, latency=False, device='cpu')

# regime: data (relative to the fixture's root; MUTAG under 'tu') and
# options
DATA: dict[str, tuple[str, dict[str, Any]]] = {
    'full': ('node.pt', {}),
    'sampled': ('node.pt', {'batch_size': 16, 'fanout': '3,2'}),
    'graphs': ('MUTAG', {'data_root': 'tu'}),
    'inductive': ('list.pt', {}),
    'graph-batches': ('MUTAG', {'data_root': 'tu', 'batch_size': 4}),
    'inductive-batches': ('list.pt', {'batch_size': 2}),
    'clouds': ('clouds.pt', {'batch_size': 6}),
}
# The teachers of a regime's data (amalgamate and distill).
TEACHERS = {'node.pt': 't_node.pt', 'list.pt': 't_list.pt',
            'MUTAG': 't_tu.pt', 'clouds.pt': 't_clouds.pt'}
CLOUDS_REFUSED = (
    "Dataset 'clouds' holds point clouds (points, no edges), which distill "
    'alone trains, from a DGCNN teacher (gnncompress distill TEACHER --data '
    'FILE): give this command a dataset of graphs')
COTRAIN_REFUSED = {'clouds': CLOUDS_REFUSED}
GRAPH_CLASSIFICATION = (
    'MUTAG is graph classification (one label per graph); amalgamation '
    'merges node-classification teachers: distill a graph classifier with '
    'gnncompress distill')
AMALGAMATE_REFUSED = {
    'graphs': GRAPH_CLASSIFICATION,
    'graph-batches': GRAPH_CLASSIFICATION,
    'clouds': CLOUDS_REFUSED,
}


def _cells() -> list[Cell]:
    cells = []
    for regime in DATA:
        for method in COTRAIN_METHODS:
            check = 'refused' if regime in COTRAIN_REFUSED else \
                'resume' if method in ('alignahead', 'mutual') else 'train'
            cells.append(Cell('cotrain', method, regime, check))
        cells.append(Cell('amalgamate', 'tam', regime,
                          'refused' if regime in AMALGAMATE_REFUSED
                          else 'resume'))
    return cells


CELLS = _cells()


def _data(files, regime: str) -> tuple[Any, dict[str, Any]]:
    root = files['root']
    data, options = DATA[regime]
    options = dict(options)
    if 'data_root' in options:
        options['data_root'] = root / options['data_root']
    return (data if data == 'MUTAG' else root / data), options


def _second_teacher(files, data: str) -> Path:
    """A second teacher of ``data`` (another seed), for amalgamation."""
    root = files['root']
    path = root / f'second_{TEACHERS[data]}'
    if not path.exists():
        source = root / data if data != 'MUTAG' else 'MUTAG'
        extra = {'readout': 'sum', 'data_root': root / 'tu',
                 'arch': 'gin'} if data == 'MUTAG' else {'arch': 'gcn'}
        api.train_teacher(source, path, hidden=8, layers=2, epochs=2,
                          seed=1, progress=False, device='cpu', **extra)
    return path


def run_command(files, command: str, method: str, regime: str, out: Path,
                epochs: int = EPOCHS, **extra):
    """The command of a cell through the API, quiet and without export."""
    data, options = _data(files, regime)
    if command == 'cotrain':
        return api.cotrain(data, method=method, hidden=8, layers=2,
                           epochs=epochs, out=out, **QUIET, **options,
                           **extra)
    name = DATA[regime][0]
    teacher = files['root'] / TEACHERS[name]
    if command == 'amalgamate':
        teachers = [teacher, _second_teacher(files, name)]
        return api.amalgamate(teachers, data=[str(data), str(data)],
                              hidden=8, widths='0.5,1', epochs=epochs,
                              out=out, **QUIET, **options, **extra)
    size = {} if regime == 'clouds' else {'hidden': 8}
    return api.distill(teacher, data=data, method=method, epochs=epochs,
                       out=out, **QUIET, **size, **options, **extra)


def _recorded(files, cell: Cell, out: Path, monkeypatch, **extra):
    """The cell's run, and the model and FitResult its loop trained."""
    seen = []
    real = loop.fit

    def recording(model, regime, **kw):
        result = real(model, regime, **kw)
        seen.append((model, result))
        return result

    with monkeypatch.context() as mp:
        for module in (loop, peer_regimes, amalgamation, minibatch):
            mp.setattr(module, 'fit', recording)
        report = run_command(files, cell.command, cell.method, cell.regime,
                             out, **extra)
    model, result = seen[-1]
    return report, model, result


def _own_terms(cell: Cell, history: dict[str, Any]) -> list[float]:
    """The values the method's own loss put in one epoch's history: TAM's
    soft targets per task, the online method's term per student."""
    if cell.command == 'amalgamate':
        return [v for k, v in history.items() if k.endswith('/soft')]
    name = build_online_methods(cell.method, 2, None)[0].name
    return [v for k, v in history.items() if k.startswith(f'loss_{name}/')]


@pytest.mark.parametrize('cell', CELLS, ids=[c.id for c in CELLS])
def test_cell(files, cell, tmp_path, monkeypatch):
    if cell.check == 'refused':
        data, options = _data(files, cell.regime)
        args = [cell.command]
        if cell.command == 'cotrain':
            args += ['--data', str(data), '--method', cell.method]
        else:
            teacher = str(files['root'] / TEACHERS[DATA[cell.regime][0]])
            args += [teacher, teacher, '--data', f'{data},{data}']
        args += ['--epochs', str(EPOCHS), '--no-progress', '--device',
                 'cpu', '--out', str(tmp_path / 'out')]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        refused = COTRAIN_REFUSED if cell.command == 'cotrain' \
            else AMALGAMATE_REFUSED
        assert lines == [f'Error: {refused[cell.regime]}']
        assert not (tmp_path / 'out').exists()
        return

    report, model, result = _recorded(files, cell, tmp_path / 'whole',
                                      monkeypatch)
    assert [h['epoch'] for h in result.history] == [1, 2]
    for h in result.history:
        if cell.method != 'self':  # the students alone have no term
            values = _own_terms(cell, h)
            assert len(values) >= 2, sorted(h)  # two students, two tasks
            assert all(math.isfinite(v) for v in values), h
    if cell.check != 'resume':
        return
    whole = _state(model)
    out = tmp_path / 'cut'
    interrupted_after_epoch_1(monkeypatch, lambda: _recorded(
        files, cell, out, monkeypatch, checkpoint_every=1))
    torch.manual_seed(123)  # the resumed run must not depend on it
    _, resumed, again = _recorded(files, cell, out, monkeypatch,
                                  checkpoint_every=1, resume=out)
    assert again.history[-1]['epoch'] == 2
    assert _same(_state(resumed), whole)
    assert again.history == result.history
    assert not (out / DEFAULT_FOLDER).exists()  # removed after success


def test_every_cotrain_method_and_regime_has_a_cell():
    cells = {(c.command, c.method, c.regime) for c in CELLS}
    assert {('cotrain', m, r) for m in COTRAIN_METHODS for r in DATA} <= \
        cells
    assert {('amalgamate', 'tam', r) for r in DATA} <= cells


# Two processes --------------------------------------------------------------

# (command, method, regime) of each two-process cell: every regime with
# batches to split.
NPROC = [
    ('distill', 'kd', 'sampled'), ('distill', 'kd', 'graph-batches'),
    ('distill', 'kd', 'inductive-batches'), ('distill', 'kd', 'clouds'),
    ('cotrain', 'mutual', 'sampled'), ('cotrain', 'mutual', 'graph-batches'),
    ('cotrain', 'mutual', 'inductive-batches'),
    ('amalgamate', 'tam', 'sampled'),
    ('amalgamate', 'tam', 'inductive-batches'),
]
# Regimes where one process and two compute the same gradient: the global
# batch split in equal shares of graphs of equal size.
SAME_GRADIENT = ('graph-batches', 'inductive-batches')


def _exact_student(root: Path, regime: str) -> dict[str, torch.Tensor]:
    """A student without dropout or batch norm distilled with KD for two
    epochs in batches of whole graphs (one process or a rank of several)."""
    from gnncompress.checkpoints.teachers import load_checkpoint

    data, options = DATA[regime]
    graph = load_graph(data if data == 'MUTAG' else root / data,
                       root / 'tu' if 'data_root' in options else None,
                       seed=0)
    teacher = load_checkpoint(root / TEACHERS[data]).build()
    teacher_out = train.forward_frozen(teacher, graph)
    torch.manual_seed(0)
    student = build_model(ArchSpec(
        arch='gcn', in_channels=graph.num_features, hidden_channels=8,
        num_layers=2, out_channels=graph.num_classes, dropout=0.0,
        readout='sum' if graph.batch is not None else None))
    train.fit(student, graph, method=api.build_method('kd'),
              teacher_outputs=[teacher_out], epochs=2, patience=None,
              progress=False, batch_size=options['batch_size'])
    return _state(student)


def _in_group(root: str, progress: bool = False) -> dict[str, Any]:
    """Every two-process cell, on one rank of the group: the student of a
    run of 3 epochs with a checkpoint at epoch 2, and of the run resumed
    from it; and the exact students. Rank 0's values are returned."""
    import pytest as _pytest

    files = {'root': Path(root)}
    results: dict[str, Any] = {}
    with _pytest.MonkeyPatch.context() as mp:
        for command, method, regime in NPROC:
            cell = Cell(command, method, regime, 'nproc')
            folder = files['root'] / f'nproc-{cell.id}'
            whole, model, _ = _recorded(
                files, cell, folder / 'whole', mp, epochs=3,
                checkpoint_every=2, checkpoint_dir=folder / 'ckpt')
            states = [_state(model)]
            _, again, _ = _recorded(files, cell, folder / 'again', mp,
                                    epochs=3, resume=folder / 'ckpt')
            states.append(_state(again))
            results[cell.id] = (states, None if whole is None
                                else whole.training.get('processes'))
    for regime in SAME_GRADIENT:
        results[regime] = _exact_student(files['root'], regime)
    results['full'] = _full_graph_refusals(files['root'])
    results['default'] = _default_batches(files)
    return results


@pytest.fixture(scope='module')
def group(files):
    """The two-process cells, run in one group of two gloo processes."""
    for command, _, regime in NPROC:  # amalgamation's second teachers
        if command == 'amalgamate':
            _second_teacher(files, DATA[regime][0])
    return distributed.spawn(distributed._run_rank, 2, _in_group,
                             {'root': str(files['root'])})[0]


@pytest.mark.parametrize('command,method,regime', NPROC,
                         ids=[f'{c}-{r}' for c, _, r in NPROC])
def test_two_processes(group, command, method, regime):
    (whole, resumed), processes = group[Cell(command, method, regime,
                                             'nproc').id]
    assert processes == 2
    # The processes stayed in step (the loop checks it at the end) and
    # the run resumed from epoch 2 ends where the uninterrupted one did.
    assert _same(whole, resumed)


@pytest.mark.parametrize('regime', SAME_GRADIENT)
def test_two_processes_train_the_student_of_one(files, group, regime):
    one = _exact_student(files['root'], regime)
    two = group[regime]
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k
    # ... and the comparison can fail: one epoch more moves the student.
    assert any(not torch.allclose(one[k], _other_batching(files, regime)[k],
                                  atol=1e-5) for k in one)


def _other_batching(files, regime: str) -> dict[str, torch.Tensor]:
    data, options = DATA[regime]
    DATA[regime] = (data, {**options, 'batch_size': 1})
    try:
        return _exact_student(files['root'], regime)
    finally:
        DATA[regime] = (data, options)


# Full-graph training on one graph: no batch to split.
FULL_GRAPH = {
    'distill': ['t_node.pt', '--data', 'node.pt'],
    'cotrain': ['--data', 'node.pt'],
    'amalgamate': ['t_node.pt', 'second_t_node.pt', '--data',
                   'node.pt,node.pt'],
}
# Batches of whole graphs or clouds left at their default size (no
# --batch-size): (command, regime) -> the options of its data.
DEFAULT_BATCH = {
    ('distill', 'graphs'): DATA['graphs'][1],
    ('distill', 'clouds'): {},
    ('cotrain', 'inductive'): {},
    ('amalgamate', 'inductive'): {},
}


def _full_graph_refusals(root: Path) -> dict[str, Any]:
    """Each command on one graph without --batch-size, through the command
    line on this rank: exit code, output, and whether --out exists."""
    seen = {}
    for command, args in FULL_GRAPH.items():
        out = root / f'full-{command}'
        paths = [','.join(str(root / p) for p in a.split(','))
                 if a.endswith('.pt') else a for a in args]
        result = runner.invoke(app, [command, *paths, '--out', str(out),
                                     '--no-progress', '--device', 'cpu',
                                     '--epochs', '1'])
        seen[command] = (result.exit_code, result.output, out.exists())
    return seen


def _default_batches(files) -> dict[Any, Any]:
    """Each cell of DEFAULT_BATCH, one epoch on this rank: the report's
    ``training`` (None on the other ranks)."""
    root, seen = files['root'], {}
    for (command, regime), options in DEFAULT_BATCH.items():
        data, _ = DATA[regime]
        options = {k: root / v if k == 'data_root' else v
                   for k, v in options.items()}
        source = data if data == 'MUTAG' else root / data
        out = root / f'default-{command}-{regime}'
        teacher = root / TEACHERS[data]
        if command == 'cotrain':
            report = api.cotrain(source, hidden=8, layers=2, epochs=1,
                                 out=out, **QUIET, **options)
        elif command == 'amalgamate':
            report = api.amalgamate(
                [teacher, root / f'second_{TEACHERS[data]}'],
                data=[str(source)] * 2, hidden=8, widths='0.5,1', epochs=1,
                out=out, **QUIET, **options)
        else:
            size = {} if regime == 'clouds' else {'hidden': 8}
            report = api.distill(teacher, data=source, epochs=1, out=out,
                                 **QUIET, **size, **options)
        seen[command, regime] = None if report is None else report.training
    return seen


@pytest.mark.parametrize('command', FULL_GRAPH)
def test_full_graph_has_no_batch_to_split(group, command):
    """Refused on every process once the data are loaded and found to be
    one graph, before anything is written."""
    code, output, written = group['full'][command]
    assert code == 1, output
    assert output.strip().splitlines() == [
        'Error: --nproc splits each training batch between processes, and '
        'node trains full-graph (one step on the whole graph, no batch): '
        'add --batch-size (seed nodes per step, e.g. --batch-size 1024)']
    assert not written


@pytest.mark.parametrize('command,regime', DEFAULT_BATCH,
                         ids=[f'{c}-{r}' for c, r in DEFAULT_BATCH])
def test_batches_of_whole_graphs_start_without_batch_size(
        files, monkeypatch, command, regime):
    """--nproc without --batch-size on graph classification, point clouds
    and several graphs starts its processes (before: refused, asking for
    --batch-size). The processes are not started here: what they do is
    the next test's."""
    started = []
    monkeypatch.setattr(distributed, 'spawn',
                        lambda fn, nproc, *args: started.append(nproc)
                        or [None])
    root = files['root']
    data, _ = DATA[regime]
    options = {k: root / v if k == 'data_root' else v
               for k, v in DEFAULT_BATCH[command, regime].items()}
    source = data if data == 'MUTAG' else root / data
    teacher = root / TEACHERS[data]
    if command == 'cotrain':
        api.cotrain(source, nproc=2, **QUIET, **options)
    elif command == 'amalgamate':
        api.amalgamate([teacher, teacher], data=[str(source)] * 2, nproc=2,
                       **QUIET, **options)
    else:
        api.distill(teacher, data=source, nproc=2, **QUIET, **options)
    assert started == [2]


@pytest.mark.parametrize('command,regime', DEFAULT_BATCH,
                         ids=[f'{c}-{r}' for c, r in DEFAULT_BATCH])
def test_two_processes_share_the_default_batch(group, command, regime):
    training = group['default'][command, regime]
    assert training['processes'] == 2
    assert training['epochs_run'] == 1
    if regime == 'clouds':  # the default batch, recorded
        assert training['batch_size'] == 32
    if command == 'cotrain':  # 4 training graphs: 1 a step, 10 steps max
        assert training['batch_size'] == 1


@pytest.mark.parametrize('command', ['distill', 'cotrain', 'amalgamate'])
@pytest.mark.parametrize('regime', ['full', 'sampled', 'inductive'])
def test_one_process_reports_its_number(files, command, regime, tmp_path):
    """``training.processes`` is in every report, 1 in one process (before:
    written by the sampled and cotrain paths only); the two-process cells
    above report 2."""
    method = 'kd' if command == 'distill' else 'mutual'
    report = run_command(files, command, method, regime, tmp_path / 'out',
                         epochs=1)
    assert report.training['processes'] == 1


# A NaN after good epochs ----------------------------------------------------

@pytest.mark.parametrize('command,regime', [
    (c, r) for c in ('cotrain', 'amalgamate') for r in DATA
    if r not in (COTRAIN_REFUSED if c == 'cotrain' else AMALGAMATE_REFUSED)])
def test_nan_keeps_the_best_student(files, command, regime, tmp_path,
                                    monkeypatch):
    """The loss turns NaN at the first step of epoch 3: the run stops in
    one line and writes the best student of epochs 1-2 (the one the loop
    put back, compared with the file)."""
    if command == 'amalgamate':  # trained before the counting starts
        _second_teacher(files, DATA[regime][0])
    epochs: list[int] = []
    real_record, real_total = loop.record_epoch, loop.process_ranks.Solo.total

    def record(selection, bar, history, epoch, *args):
        epochs.append(epoch)
        return real_record(selection, bar, history, epoch, *args)

    def total(self, loss):
        return real_total(self, loss) * math.nan if len(epochs) >= 2 \
            else real_total(self, loss)

    monkeypatch.setattr(loop, 'record_epoch', record)
    monkeypatch.setattr(loop.process_ranks.Solo, 'total', total)
    kept = []
    real_fit = loop.fit

    def fit(model, regime_, **kw):
        kept.append(model)
        return real_fit(model, regime_, **kw)

    for module in (loop, peer_regimes, amalgamation, minibatch):
        monkeypatch.setattr(module, 'fit', fit)
    out = tmp_path / 'out'
    with pytest.raises(TrainingError) as info:
        run_command(files, command, 'mutual', regime, out, epochs=5)
    assert epochs == [1, 2]
    message = str(info.value)
    assert '\n' not in message and 'became nan at epoch 3' in message
    assert message.endswith(f"is in {out / 'student.safetensors'}")
    saved = load_file(out / 'student.safetensors')
    model = kept[-1]
    if command == 'cotrain':  # the best peer's weights, as put back
        assert any(_same(_state(m), saved) for m in model), sorted(saved)
    else:
        assert _same(_state(model), saved)
