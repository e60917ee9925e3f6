"""The `gnncompress` process (gnncompress.cli.process): the collector is
paused while the options are parsed and runs again, frozen, for the
command; the process ends without the interpreter's teardown, but only
after the atexit handlers, a flush of its output and any thread that is
not a daemon."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, SAMPLE_TEACHER

from gnncompress.cli import process

# A command run through process.main, reporting from an atexit handler
# (which must run, and whose output must reach the pipe) whether the
# collector was on during the command and what was frozen.
SCRIPT = '''
import atexit, gc, sys
from gnncompress.cli import app, common, process
seen = {}
original = common.Command.invoke
def invoke(self, ctx):
    seen['collecting while parsing'] = gc.isenabled()
    try:
        return original(self, ctx)
    finally:
        seen['collecting after the command'] = gc.isenabled()
        seen['frozen'] = gc.get_freeze_count() > 0
common.Command.invoke = invoke
atexit.register(lambda: print('atexit', seen, end=''))
sys.argv = ['gnncompress', *sys.argv[1:]]
process.main(app)
'''


def test_the_collector_is_paused_for_parsing_and_frozen_for_the_command():
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT, 'inspect', str(SAMPLE_TEACHER)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '448,375' in done.stdout  # the command's own output
    assert done.stdout.endswith(
        "atexit {'collecting while parsing': False, "
        "'collecting after the command': True, 'frozen': True}")


def test_an_error_exits_1_with_its_line_after_the_fast_exit():
    done = subprocess.run(
        [sys.executable, '-m', 'gnncompress', 'inspect', 'missing.pt'],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith('Error:') and 'missing.pt' in done.stderr
    assert 'Traceback' not in done.stderr


EXIT_SCRIPT = '''
import sys, threading, time
from pathlib import Path
from gnncompress.cli import process
out = Path(sys.argv[1])
def late():
    time.sleep(0.5)
    out.write_text('written')
if sys.argv[2] == 'thread':
    threading.Thread(target=late).start()
sys.stdout.write('x' * 1000)  # buffered, no newline
process.finish(int(sys.argv[3]))
'''


@pytest.mark.parametrize('thread', ['thread', 'none'])
def test_finish_flushes_and_waits_for_threads(tmp_path, thread):
    out = tmp_path / 'late.txt'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}
    done = subprocess.run(  # stdout buffered, as a pipe is by default
        [sys.executable, '-c', EXIT_SCRIPT, str(out), thread, '3'],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 3
    assert done.stdout == 'x' * 1000
    assert out.exists() == (thread == 'thread')


@pytest.mark.parametrize('code, status', [(None, 0), (0, 0), (2, 2),
                                          ('message', 1)])
def test_exit_code_is_sys_exits(code, status, capsys):
    assert process.exit_code(code) == status
    assert capsys.readouterr().err == ('message\n' if code == 'message'
                                       else '')


def test_the_console_script_is_main():
    text = (ROOT / 'pyproject.toml').read_text()
    assert 'gnncompress = "gnncompress.cli:main"' in text


def test_a_usage_error_exits_2_through_main():
    done = subprocess.run(
        [sys.executable, '-m', 'gnncompress', 'distill', '--epochs', '0',
         't.pt'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith('Error:') and '--epochs' in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('processes', [[], ['--nproc', '2', '--batch-size',
                                             '64', '--fanout', '4,4']],
                         ids=['one process', 'nproc 2'])
def test_sigterm_unwinds_the_run_and_leaves_nothing(tmp_path, processes):
    # A CI job's timeout sends SIGTERM. Without a handler the process died
    # where it stood, leaving its output folder's lock (and, while writing,
    # a stage folder) behind; now it unwinds as Ctrl-C does. With --nproc
    # the signal reaches this process alone, which interrupts its ranks
    # (else its exit would wait for them to finish training).
    out = tmp_path / 'run'
    lock = tmp_path / '.run.gnncompress-lock'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'gnncompress', 'distill',
         str(SAMPLE_TEACHER), '--method', 'kd', '--epochs', '100000',
         '--patience', '100000', '--no-progress', '--device', 'cpu',
         *processes, '--out', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not lock.exists() and proc.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.exists(), 'the run never claimed its folder'
        if processes:
            time.sleep(3)  # the ranks are started
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == process.TERMINATED_EXIT_CODE == 143
    assert 'Traceback' not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
