"""MKL's conditional numerical reproducibility: importing gnncompress asks
for it (MKL_CBWR=AUTO) unless the user chose a mode."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = ('import os, gnncompress, torch; '
          'print(os.environ["MKL_CBWR"])')


def _mode(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, '-c', SCRIPT], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_importing_gnncompress_sets_mkl_cbwr_auto():
    env = {k: v for k, v in os.environ.items() if k != 'MKL_CBWR'}
    assert _mode(env) == 'AUTO'


def test_a_users_mkl_cbwr_wins():
    env = {**os.environ, 'MKL_CBWR': 'COMPATIBLE'}
    assert _mode(env) == 'COMPATIBLE'


def test_mkl_reads_the_mode_after_torch_is_imported():
    """A mode set after torch's import, as gnncompress sets it, reaches
    MKL as one set before Python starts does (MKL reads it on its first
    call): the same bits of a product under COMPATIBLE either way."""
    script = '''
import hashlib, os, sys
import torch
if sys.argv[1] == 'late':
    os.environ["MKL_CBWR"] = "COMPATIBLE"
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
a, b = torch.randn(2000, 767, generator=g), torch.randn(767, 128, generator=g)
print(hashlib.md5((a @ b).numpy().tobytes()).hexdigest())
'''
    base = {k: v for k, v in os.environ.items() if k != 'MKL_CBWR'}

    def product(when: str, env: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, '-c', script, when], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert product('late', base) == product(
        'early', {**base, 'MKL_CBWR': 'COMPATIBLE'})
