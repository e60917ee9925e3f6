"""A corpus of malformed and malicious checkpoints through the command line
(docs/robustness.md, "The fuzz corpus").

tests/checkpoints/test_fuzz_loaders.py fuzzes the loaders' Python API with a few
hundred cases; this file draws, from its strategies and from the hostile
files of issue 25 (pickles that would run code, zip bombs, absurd layer
counts, huge declared sizes), a derandomised corpus of CORPUS_SIZE
checkpoints and feeds each to ``gnncompress inspect`` in-process, and a
few to ``gnncompress distill``. Every one must end with exit code 1 and
exactly one ``Error:`` line (or 0, for a file that legitimately loads), no
traceback, and no payload run: each pickle payload would create a marker
file, and none may exist at the end.
"""
from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors_bytes
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.checkpoints.reading import SPEC_KEY
from gnncompress.cli import app
from tests.checkpoints.test_fuzz_loaders import (
    BASE_STATES,
    FUZZ,
    SMALL_PT,
    STORAGE_NUMEL,
    VALID_PT,
    _rewrite_zip,
    _safetensors_bytes,
    _save_state,
    _torch_bytes,
    mutated_state,
)

CORPUS_SIZE = int(os.environ.get('GNNCOMPRESS_CORPUS_SIZE', '1000'))
CORPUS = settings(FUZZ, max_examples=CORPUS_SIZE)


class Payload:
    """A pickled object that, if ever unpickled, creates ``marker``."""

    def __init__(self, marker: str, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == 'open':
            return open, (self.marker, 'w')
        if self.how == 'system':
            return os.system, (f'touch {self.marker}',)
        return exec, (f'open({self.marker!r}, "w").close()',)


# The corpus: each strategy draws (kind, file bytes, suffix) -----------------

def _case(kind: str, data: bytes, suffix: str = '.pt'):
    return kind, data, suffix


@st.composite
def malicious(draw, markers: Path):
    """A pickle payload in each place a checkpoint can carry one."""
    marker = str(markers / f'm{draw(st.integers(0, 10 ** 12))}')
    payload = Payload(marker, draw(st.sampled_from(
        ['open', 'system', 'exec'])))
    state = dict(draw(st.sampled_from(BASE_STATES)))
    where = draw(st.sampled_from(['value', 'wrapper', 'whole', 'legacy',
                                  'raw', 'swapped']))
    if where == 'value':
        state['convs.0.extra'] = payload
        return _case('payload', _torch_bytes(state))
    if where == 'wrapper':
        return _case('payload', _torch_bytes({'state_dict': state,
                                              'epoch': payload}))
    if where == 'whole':
        return _case('payload', _torch_bytes(payload))
    if where == 'legacy':  # torch's pre-zip format
        buffer = io.BytesIO()
        torch.save({**state, 'x': payload}, buffer,
                   _use_new_zipfile_serialization=False)
        return _case('payload', buffer.getvalue())
    protocol = draw(st.integers(0, pickle.HIGHEST_PROTOCOL))
    raw = pickle.dumps({'convs.0.lin.weight': payload}, protocol=protocol)
    if where == 'raw':
        return _case('payload', raw, draw(st.sampled_from(
            ['.pt', '.pth', '.bin', '.safetensors'])))
    return _case('payload', _rewrite_zip(
        VALID_PT, lambda name, d: raw if name.endswith('data.pkl') else d))


@st.composite
def random_bytes(draw):
    prefix = draw(st.sampled_from([
        b'', b'PK\x03\x04', VALID_PT[:64], struct.pack('<Q', 40) + b'{',
        struct.pack('<Q', 10 ** 15) + b'{', b'\x80\x02']))
    return _case('bytes', prefix + draw(st.binary(max_size=1024)),
                 draw(st.sampled_from(['.pt', '.safetensors', '.bin'])))


@st.composite
def damaged_torch(draw):
    data = bytearray(VALID_PT)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(
            st.integers(1, 255))
    cut = draw(st.integers(8, len(data)))
    return _case('damaged', bytes(data[:cut]))


@st.composite
def malformed_state(draw):
    fmt = draw(st.sampled_from(['pt', 'safetensors']))
    data = _save_state(draw(mutated_state()), fmt)
    return _case('state', data, '.' + fmt)


@st.composite
def declared_sizes(draw):
    """Pickles declaring huge storages, zip headers declaring huge
    entries, deflated entries that would inflate to gigabytes."""
    what = draw(st.sampled_from(['pickle', 'bomb', 'headers']))
    if what == 'pickle':
        numel = draw(st.integers(301, 2 ** 62))
        return _case('sizes', _rewrite_zip(SMALL_PT, lambda n, d: d.replace(
            STORAGE_NUMEL, b'cpuq\x06\x8a\x08' + struct.pack('<q', numel))
            if n.endswith('data.pkl') else d))
    source = zipfile.ZipFile(io.BytesIO(SMALL_PT))
    out = io.BytesIO()
    # Zeros deflate about 1000:1; the bomb was 2.4 MB -> 2.38 GB.
    size = draw(st.integers(2, 12)) * 1_000_000
    with zipfile.ZipFile(out, 'w') as target:
        for name in source.namelist():
            data = source.read(name)
            bomb = what == 'bomb' and name.endswith('/data/0')
            target.writestr(name, bytes(size) if bomb else data,
                            compress_type=zipfile.ZIP_DEFLATED if bomb
                            else zipfile.ZIP_STORED)
    data = bytearray(out.getvalue())
    if what == 'headers':  # a central directory claiming up to 4 GiB
        start = data.index(b'PK\x01\x02')
        claim = draw(st.integers(0, 2 ** 32 - 1))
        data[start + 20:start + 28] = struct.pack('<II', claim, claim)
    return _case('sizes', bytes(data))


@functools.cache
def _deep_state(layers: int) -> dict[str, torch.Tensor]:
    """A GCN of ``layers`` [1 x 1] layers (the issue's was 10,000)."""
    state = {}
    for i in range(layers):
        state[f'convs.{i}.lin.weight'] = torch.ones(1, 1)
        state[f'convs.{i}.bias'] = torch.zeros(1)
    return state


@st.composite
def hostile_specs(draw):
    """safetensors whose metadata declares absurd architectures, or whose
    header declares any shape and offsets."""
    if draw(st.booleans()):
        layers = draw(st.sampled_from([1001, 10_000, 10 ** 7]))
        many = draw(st.sampled_from([2, 3, 30, 1001, 2000]))
        state = _deep_state(many)
        spec = {'arch': 'gcn', 'in_channels': 1, 'hidden_channels': 1,
                'out_channels': 1, 'num_layers': draw(st.sampled_from(
                    [layers, many, -1, 'x', None]))}
        metadata = {SPEC_KEY: draw(st.sampled_from([
            json.dumps(spec), '[' * 100_000, '{"arch": ', '']))} \
            if draw(st.booleans()) else None
        return _case('spec', save_safetensors_bytes(state, metadata),
                     '.safetensors')
    shape = draw(st.lists(st.integers(0, 10 ** 15), max_size=3))
    header = {'convs.0.lin.weight': {
        'dtype': draw(st.sampled_from(['F32', 'F16', 'I64', 'BOOL', 'C64',
                                       'X'])),
        'shape': shape, 'data_offsets': [0, draw(st.integers(0, 2 ** 40))]}}
    return _case('spec', _safetensors_bytes(header, bytes(
        draw(st.integers(0, 64)))), '.safetensors')


def corpus(markers: Path):
    return st.one_of(malicious(markers), random_bytes(), damaged_torch(),
                     malformed_state(), declared_sizes(), hostile_specs())


# Running it -------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _command_built_once(monkeypatch):
    """typer rebuilds the click command from the annotations on every
    invoke (0.3 s); the corpus runs a thousand: build it once."""
    import typer.main
    import typer.testing

    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, '_get_command', lambda _: command)


def _check_result(result, kind: str) -> None:
    """Exit 1 with one ``Error:`` line and no traceback, or 0 for a file
    that loads (never for a payload)."""
    assert result.exit_code in (0, 1), (kind, result.exception)
    assert 'Traceback' not in result.output, result.output
    if result.exit_code == 1:
        assert isinstance(result.exception, SystemExit), result.exception
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('Error: '), lines
    else:
        assert kind in ('state', 'damaged', 'spec'), (kind, result.output)


def test_corpus_through_cli_inspect(tmp_path):
    markers = tmp_path / 'markers'
    markers.mkdir()
    files = tmp_path / 'files'
    files.mkdir()
    seen: collections.Counter[str] = collections.Counter()
    runner = CliRunner()

    @CORPUS
    @given(case=corpus(markers))
    def run(case):
        kind, data, suffix = case
        path = files / f'{sum(seen.values())}{suffix}'
        path.write_bytes(data)
        seen[kind] += 1
        _check_result(runner.invoke(app, ['inspect', str(path)]), kind)
        path.unlink()

    run()
    assert sum(seen.values()) >= CORPUS_SIZE, seen
    assert set(seen) == {'payload', 'bytes', 'damaged', 'state', 'sizes',
                         'spec'}, seen
    assert not list(markers.iterdir()), 'a pickle payload ran'


@pytest.fixture(scope='module')
def graph_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('corpus') / 'graph.pt'
    n = 30
    torch.manual_seed(0)
    edge_index = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    torch.save(Data(x=torch.randn(n, 5), edge_index=edge_index,
                    y=torch.arange(n) % 3), path)
    return path


def test_corpus_samples_through_cli_distill(tmp_path, graph_file):
    markers = tmp_path / 'markers'
    markers.mkdir()
    runner = CliRunner()
    count = collections.Counter()

    @settings(FUZZ, max_examples=12)
    @given(case=st.one_of(malicious(markers), declared_sizes(),
                          hostile_specs(), random_bytes()))
    def run(case):
        kind, data, suffix = case
        path = tmp_path / f'teacher{sum(count.values())}{suffix}'
        path.write_bytes(data)
        count[kind] += 1
        result = runner.invoke(app, [
            'distill', str(path), '--data', str(graph_file), '--epochs', '1',
            '--out', str(tmp_path / 'out')])
        assert result.exit_code == 1, (kind, result.output)
        _check_result(result, kind)
        assert not (tmp_path / 'out').exists()

    run()
    assert sum(count.values()) >= 12
    assert not list(markers.iterdir()), 'a pickle payload ran'
