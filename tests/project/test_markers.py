"""The device markers (pyproject.toml): every test marked ``cuda`` takes
the ``device`` fixture, so it runs where GNNCOMPRESS_TEST_DEVICE points;
no test is both ``cuda`` and ``cpu_only``; the markers are registered
(``--strict-markers`` refuses any other)."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _marks(node: ast.AST) -> set[str]:
    """Names of the ``pytest.mark.X`` decorators (or a ``pytestmark =``)."""
    out = set()
    for dec in getattr(node, 'decorator_list', []):
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and \
                isinstance(target.value, ast.Attribute) and \
                target.value.attr == 'mark':
            out.add(target.attr)
    return out


def _module_marks(tree: ast.Module) -> set[str]:
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'pytestmark'
                for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and \
                        isinstance(sub.value, ast.Attribute) and \
                        sub.value.attr == 'mark':
                    out.add(sub.attr)
    return out


def device_marked_tests(folder: Path = ROOT / 'tests'
                        ) -> list[tuple[str, set[str], list[str]]]:
    """(test, its device marks, its arguments) for every test function
    that carries ``cuda`` or ``cpu_only``, itself or by its module."""
    rows = []
    for path in sorted(folder.rglob('test_*.py')):
        tree = ast.parse(path.read_text())
        module = _module_marks(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and \
                    node.name.startswith('test_'):
                marks = (module | _marks(node)) & {'cuda', 'cpu_only'}
                if marks:
                    rows.append((f'{path.name}::{node.name}', marks,
                                 [a.arg for a in node.args.args]))
    return rows


def misplaced(rows: list[tuple[str, set[str], list[str]]]) -> list[str]:
    """Tests marked cuda without the device fixture, or marked both."""
    return [name for name, marks, args in rows
            if ('cuda' in marks and 'device' not in args)
            or marks == {'cuda', 'cpu_only'}]


def test_cuda_tests_take_the_device_and_none_is_also_cpu_only():
    rows = device_marked_tests()
    cuda = [name for name, marks, _ in rows if 'cuda' in marks]
    assert len(cuda) >= 3  # tests/workflows/test_on_device.py at least
    assert any('cpu_only' in marks for _, marks, _ in rows)
    assert misplaced(rows) == []


def test_the_markers_are_registered_and_strict():
    config = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    pytest_ini = config['tool']['pytest']['ini_options']
    assert '--strict-markers' in pytest_ini['addopts']
    names = {line.split(':')[0] for line in pytest_ini['markers']}
    assert names == {'cuda', 'cpu_only'}


def test_the_scan_finds_a_misplaced_mark(tmp_path):
    (tmp_path / 'test_bad.py').write_text(
        'import pytest\n'
        'pytestmark = pytest.mark.cuda\n'
        'def test_no_fixture(tmp_path):\n    pass\n'
        '@pytest.mark.cpu_only\n'
        'def test_both(device):\n    pass\n'
        'def test_fine(device):\n    pass\n')
    assert misplaced(device_marked_tests(tmp_path)) == [
        'test_bad.py::test_no_fixture', 'test_bad.py::test_both']
