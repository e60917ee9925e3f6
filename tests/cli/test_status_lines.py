"""On a terminal, the command line names each step after training as it
starts (export, check, timing): no silent minutes after the bar ends.
Captured output (logs, tests) stays as it was."""
from __future__ import annotations

from conftest import SAMPLE_TEACHER, quick_latency
from typer.testing import CliRunner

from gnncompress.cli import app, common
from gnncompress.core.timing import announce_phases, phase, timed_run


def test_each_phase_is_announced_once_per_run_in_order():
    heard = []
    with announce_phases(heard.append), timed_run():
        for name in ('load', 'export', 'measure', 'check', 'measure'):
            with phase(name):
                pass
    assert heard == ['load', 'export', 'measure', 'check']
    with timed_run(), phase('export'):  # no listener: nothing to call
        pass


def _distill(tmp_path, monkeypatch, terminal: bool) -> str:
    quick_latency(monkeypatch)
    monkeypatch.setattr(type(common.err_console), 'is_terminal',
                        property(lambda self: terminal))
    result = CliRunner().invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--method', 'kd', '--epochs', '1',
        '--no-progress', '--out', str(tmp_path / 'run')])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_terminal_sees_the_steps_after_training(tmp_path, monkeypatch,
                                                  capsys):
    lines = []
    monkeypatch.setattr(common.err_console, 'print',
                        lambda text, **kw: lines.append(text))
    _distill(tmp_path, monkeypatch, terminal=True)
    steps = [line for line in lines if line.endswith('...')]
    assert steps == [common.PHASE_LINES[name] + '...' for name in
                     ('teacher', 'measure', 'export', 'check')]


def test_captured_output_has_no_status_lines(tmp_path, monkeypatch):
    output = _distill(tmp_path, monkeypatch, terminal=False)
    assert not any(line in output for line in common.PHASE_LINES.values())
