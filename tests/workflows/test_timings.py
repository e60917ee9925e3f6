"""Where a command's time goes (report.json ``timings``), the latency
budget and --no-latency."""
from __future__ import annotations

import json
import time

from conftest import SAMPLE_TEACHER
from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core.timing import breakdown, phase, timed_run
from gnncompress.outputs.latency import LatencyBudget, latency_budget, measuring
from gnncompress.outputs.report import timings_line

runner = CliRunner()


def test_nested_phases_pause_the_outer_one_and_add_up():
    with timed_run():
        with phase('export'):
            time.sleep(0.05)
            with phase('check'):
                time.sleep(0.1)
            time.sleep(0.05)
        got = breakdown()
    assert 0.09 <= got['export'] < 0.2  # 0.1 s of its own, not 0.2
    assert 0.09 <= got['check'] < 0.2
    covered = got['export'] + got['check'] + got['other']
    assert abs(covered - got['total']) < 0.01


def test_phase_outside_a_run_records_nothing():
    with phase('load'):
        pass
    assert breakdown() == {}


def test_budget_gives_each_figure_half_of_what_is_left():
    budget = LatencyBudget(4.0)
    assert budget.next_figure() == 2.0
    budget.spent(3.0)
    assert budget.next_figure() == 0.5
    budget.spent(5.0)
    assert budget.next_figure() == 0.0  # measure_latency's floor still holds
    with latency_budget(1.0, enabled=False):
        assert not measuring()
    assert measuring()


def test_timings_line():
    assert timings_line({'load': 1.0, 'train': 2.25, 'other': 0.5,
                         'total': 3.75}) == \
        'time: 3.8 s (load 1.0, train 2.2, other 0.5)'


def test_distill_no_latency_records_timings_and_no_latency(tmp_path):
    out = tmp_path / 'run'
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--epochs',
                                 '2', '--no-latency', '--no-progress',
                                 '--out', str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['teacher']['latency'] == {}
    assert report['student']['latency'] == {}
    assert report['speedups'] == []
    timings = report['timings']
    assert {'load', 'teacher', 'train', 'export', 'check', 'other',
            'total'} <= set(timings)
    assert 'measure' not in timings
    parts = sum(v for k, v in timings.items() if k != 'total')
    assert abs(parts - timings['total']) < 0.01
    assert 'time: ' in result.output


def test_negative_latency_budget_is_refused_in_the_api(tmp_path):
    from gnncompress import api
    from gnncompress.core.errors import GnnCompressError
    try:
        api.distill(SAMPLE_TEACHER, epochs=1, latency_budget_s=-1,
                    out=tmp_path / 'x', progress=False)
    except GnnCompressError as e:
        assert '--latency-budget-s' in str(e)
    else:
        raise AssertionError('a negative budget was accepted')
