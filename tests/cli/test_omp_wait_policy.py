"""The CLI asks OpenMP's workers to sleep between parallel regions
(OMP_WAIT_POLICY=PASSIVE) before torch loads OpenMP, unless the user set
the variable: docs/BENCHMARKS.md, "Command overhead"."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ('import sys, os, gnncompress.cli; '
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def probe(env_value: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if env_value is not None:
        env['OMP_WAIT_POLICY'] = env_value
    done = subprocess.run([sys.executable, '-c', PROBE], env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_cli_sets_passive_before_torch_is_loaded():
    # PASSIVE is in place and torch not yet imported: OpenMP reads the
    # variable when torch loads it, so the order matters.
    assert probe(None) == ['PASSIVE', 'False']


@pytest.mark.parametrize('value', ['ACTIVE', 'passive'])
def test_a_user_setting_wins(value):
    assert probe(value)[0] == value
