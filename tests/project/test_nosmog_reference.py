"""benchmarks/nosmog_reference.py: it runs NOSMOG's scripts through the
launcher that gives DGL 2 the old loader name, reads the figures from the
last lines of their logs, and skips what is stored. NOSMOG's scripts and
DGL are stand-ins here; the real run needs both (the script's
docstring)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stands for NOSMOG's train_teacher.py and train_student.py: writes the
# log lines theirs write, where theirs write them, an earlier run's line
# first (a log is appended to, so the last line is the run's).
SCRIPT = """
import argparse, pathlib, sys
import dgl.dataloading as loading
assert loading.NodeDataLoader is loading.DataLoader
p = argparse.ArgumentParser()
for name in ('output_path', 'seed', 'dataset', 'student', 'out_t_path'):
    p.add_argument('--' + name)
a, rest = p.parse_known_args()
student = a.student is not None
if student:
    teacher = pathlib.Path(a.out_t_path, 'transductive', a.dataset, 'SAGE',
                           f'seed_{a.seed}', 'out.npz')
    assert teacher.exists(), teacher
out = pathlib.Path(a.output_path, 'transductive', a.dataset,
                   'SAGE_MLP' if student else 'SAGE', f'seed_{a.seed}')
out.mkdir(parents=True, exist_ok=True)
test = {'teacher': 0.9, 'glnn': 0.91, 'nosmog': 0.93}[
    ('nosmog' if '--dw' in rest else 'glnn') if student else 'teacher']
with open(out / 'log', 'a') as f:
    f.write('x: Best valid model at epoch:  7, score_val: 0.1000, '
            'score_test: 0.1000\\n')
    if student:
        f.write('x: teacher score on test data: 0.9\\n')
    f.write(f'x: Best valid model at epoch:  12, score_val: 0.9500, '
            f'score_test: {test:.4f}\\n')
if not student:  # log-probabilities, as NOSMOG's teacher saves them
    import numpy as np
    np.savez(out / 'out', np.log(np.array([[0.9, 0.1], [0.4, 0.6]])))
"""


def _module():
    if str(ROOT / 'benchmarks') not in sys.path:
        sys.path.insert(0, str(ROOT / 'benchmarks'))
    spec = importlib.util.spec_from_file_location(
        'nosmog_reference', ROOT / 'benchmarks' / 'nosmog_reference.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_dgl(tmp_path, monkeypatch):
    """A package ``dgl`` with DGL 2's loader name only."""
    fake = tmp_path / 'site' / 'dgl'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('')
    (fake / 'dataloading.py').write_text('class DataLoader:\n    pass\n')
    monkeypatch.setenv('PYTHONPATH', str(tmp_path / 'site'))


def test_runs_read_from_the_logs_and_skipped_when_stored(tmp_path,
                                                         monkeypatch):
    reference = _module()
    _fake_dgl(tmp_path, monkeypatch)
    checkout = tmp_path / 'NOSMOG'
    checkout.mkdir()
    for name in ('train_teacher.py', 'train_student.py'):
        (checkout / name).write_text(SCRIPT)
    data = tmp_path / 'datasets' / 'Photo' / 'raw'
    data.mkdir(parents=True)
    (data / 'amazon_electronics_photo.npz').write_bytes(b'')
    monkeypatch.setattr(reference, 'OUT', tmp_path / 'results')
    about = {'machine': 'test', 'their_python': 'fake'}
    reference.run_seed('Photo', 3, sys.executable, checkout,
                       tmp_path / 'work', tmp_path / 'datasets', about)
    rows = {p.name: json.loads(p.read_text())
            for p in (tmp_path / 'results').glob('*.json')}
    assert sorted(rows) == ['Photo-glnn-seed3.json', 'Photo-nosmog-seed3.json',
                            'Photo-teacher-seed3.json']
    assert rows['Photo-teacher-seed3.json']['test_accuracy'] == 0.9
    assert abs(rows['Photo-teacher-seed3.json']['top_probability'] - 0.75) \
        < 1e-9
    assert rows['Photo-glnn-seed3.json']['test_accuracy'] == 0.91
    assert rows['Photo-nosmog-seed3.json']['test_accuracy'] == 0.93
    assert rows['Photo-nosmog-seed3.json']['teacher_test_accuracy'] == 0.9
    assert rows['Photo-nosmog-seed3.json']['best_epoch'] == 12
    assert rows['Photo-nosmog-seed3.json']['val_accuracy'] == 0.95
    link = tmp_path / 'work' / 'data' / 'a-photo.npz'
    assert link.resolve() == (data / 'amazon_electronics_photo.npz')
    # Stored runs are not run again: a checkout whose scripts fail
    # would stop the script if they were.
    for name in ('train_teacher.py', 'train_student.py'):
        (checkout / name).write_text('raise SystemExit(5)\n')
    reference.run_seed('Photo', 3, sys.executable, checkout,
                       tmp_path / 'work', tmp_path / 'datasets', about)
    assert len(list((tmp_path / 'results').glob('*.json'))) == 3


def test_a_failing_script_stops_with_its_error(tmp_path, monkeypatch):
    reference = _module()
    _fake_dgl(tmp_path, monkeypatch)
    checkout = tmp_path / 'NOSMOG'
    checkout.mkdir()
    (checkout / 'train_teacher.py').write_text(
        'import sys; sys.exit("no such dataset")\n')
    (tmp_path / 'd' / 'Photo' / 'raw').mkdir(parents=True)
    monkeypatch.setattr(reference, 'OUT', tmp_path / 'results')
    try:
        reference.run_seed('Photo', 0, sys.executable, checkout,
                           tmp_path / 'work', tmp_path / 'd', {})
    except SystemExit as stop:
        assert 'train_teacher.py' in str(stop.code)
        assert 'no such dataset' in str(stop.code)
    else:
        raise AssertionError('a failing script did not stop the run')
    assert not list(tmp_path.glob('results/*.json'))
