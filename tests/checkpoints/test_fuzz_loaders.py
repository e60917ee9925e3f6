"""Property-based fuzzing of the two loaders users feed files to: the
checkpoint loader (``.pt``, ``.safetensors``, teacher cards) and the
``--data FILE`` loader. Whatever the input, each must either load something
consistent or raise the tool's own error (a ``GnnCompressError``, which the
CLI prints as one line with exit code 1): never another exception, a hang or
a memory blow-up.

The default run is short (``FUZZ_EXAMPLES`` cases per test); set
``GNNCOMPRESS_FUZZ_EXAMPLES`` for a long one (docs/robustness.md)."""
from __future__ import annotations

import io
import json
import math
import os
import resource
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch_geometric.data import Data

from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.reading import SPEC_KEY
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.errors import CheckpointError, GnnCompressError
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.datasets import load_graph

FUZZ_EXAMPLES = int(os.environ.get('GNNCOMPRESS_FUZZ_EXAMPLES', '50'))
# The test suite draws the same inputs every run, so that CI passes or
# fails on the code alone; GNNCOMPRESS_FUZZ_RANDOM=1 explores new ones.
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
                derandomize=os.environ.get('GNNCOMPRESS_FUZZ_RANDOM') != '1')
# A loader may use some memory, but a small file must never make it reserve
# gigabytes (ru_maxrss is in KiB on Linux).
MAX_RSS_GROWTH_KIB = 1_500_000


@pytest.fixture(autouse=True)
def _bounded_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MAX_RSS_GROWTH_KIB, f'peak memory grew by {grown} KiB'


# What the fuzzer starts from: small valid teachers of every family ---------

SPECS = [
    ArchSpec('gcn', 5, 8, 2, 3),
    ArchSpec('gat', 5, 8, 2, 3, heads=2),
    ArchSpec('gatv2', 5, 4, 1, 3),
    ArchSpec('sage', 5, 8, 2, 3, norm='batch_norm'),
    ArchSpec('gin', 5, 8, 2, 3, jk='cat'),
    ArchSpec('mlp', 5, 8, 2, 3),
    ArchSpec('gcnii', 5, 8, 2, 3),
]


def _state_dict(spec: ArchSpec) -> dict[str, Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model(spec).state_dict().items()}


BASE_STATES = [_state_dict(s) for s in SPECS]


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


VALID_PT = _torch_bytes(BASE_STATES[0])


def _write(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix='gnncompress-fuzz-'))
    path = folder / f'model{suffix}'
    path.write_bytes(data)
    return path


def _expect_clean(fn, *args: Any) -> Any:
    """Call ``fn``: success or a GnnCompressError with a one-line message;
    any other exception fails the test."""
    try:
        return fn(*args)
    except GnnCompressError as e:
        message = str(e)
        assert message and '\n' not in message, repr(message)
        assert 'Traceback' not in message
        return None


def _check_loaded(ckpt) -> None:
    """A checkpoint that loaded must give a model that runs and computes
    finite numbers."""
    if ckpt is None:
        return
    model = ckpt.build()
    x = torch.randn(4, ckpt.spec.in_channels)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    with torch.no_grad():
        out = model(x, edge_index)
    assert out.shape == (4, ckpt.spec.out_channels)
    assert torch.isfinite(out).all()


# Strategies: tensors gone wrong ---------------------------------------------

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int64, torch.int32, torch.uint8, torch.bool,
          torch.complex64]


@st.composite
def odd_tensor(draw, like: Tensor | None = None) -> Tensor:
    """A tensor of a random shape (0-d to 3-d, empty sizes included) and
    dtype, possibly holding NaN or infinity."""
    if like is not None and draw(st.booleans()):
        shape = list(like.shape)
    else:
        shape = draw(st.lists(st.integers(0, 9), max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    t = torch.randn(shape).to(dtype) if dtype.is_floating_point or \
        dtype.is_complex else torch.randint(0, 3, shape).to(dtype)
    if (dtype.is_floating_point or dtype.is_complex) and t.numel() and \
            draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf]))
    return t


MUTATIONS = ('drop', 'reshape', 'nan', 'rename', 'junk', 'dtype', 'expand',
             'non_tensor', 'int_key')


@st.composite
def mutated_state(draw) -> dict[Any, Any]:
    """A valid teacher's state_dict with a few things broken."""
    state: dict[Any, Any] = dict(draw(st.sampled_from(BASE_STATES)))
    for _ in range(draw(st.integers(1, 3))):
        keys = list(state)
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from(MUTATIONS))
        value = state[key]
        if isinstance(value, Tensor) and value.numel() > 10_000:
            continue  # an expanded view: copying it would take terabytes
        if kind == 'drop':
            del state[key]
        elif kind == 'reshape' or kind == 'dtype':
            state[key] = draw(odd_tensor(value if kind == 'dtype' and
                                         isinstance(value, Tensor) else None))
        elif kind == 'nan' and isinstance(value, Tensor) and \
                value.is_floating_point() and value.numel():
            value = value.clone()
            value.view(-1)[0] = draw(st.sampled_from(
                [math.nan, math.inf, -math.inf]))
            state[key] = value
        elif kind == 'rename':
            state[draw(st.sampled_from(
                ['convs.7.lin.weight', 'lins.3.weight', 'module.' + str(key),
                 'convs.0.att_src', 'convs.x.lin.weight', 'lin.weight',
                 'jk.lstm.weight_ih_l0', 'convs.0.nn.lins.0.weight',
                 'norms.0.running_mean', 'convs.0.weight2']))] = \
                state.pop(key)
        elif kind == 'junk':
            state[draw(st.text(max_size=12))] = draw(odd_tensor())
        elif kind == 'expand':
            # A view that claims far more elements than its storage holds.
            shape = draw(st.sampled_from([(100_000, 100_000), (1 << 20, 5),
                                          (8, 1 << 40)]))
            state[key] = torch.zeros(1).expand(*shape)
        elif kind == 'non_tensor':
            state[key] = draw(st.sampled_from([1, 2.5, 'w', None, [1, 2],
                                               {'a': 1}]))
        elif kind == 'int_key':
            state[draw(st.integers())] = state.pop(key)
    return state


def _save_state(state: dict[Any, Any], fmt: str,
                metadata: dict[str, str] | None = None) -> bytes:
    if fmt == 'pt':
        return _torch_bytes(state)
    from safetensors.torch import save

    tensors = {k: v.contiguous().clone() for k, v in state.items()
               if isinstance(k, str) and isinstance(v, Tensor)
               and v.numel() < 10_000_000}
    return save(tensors, metadata=metadata)


def _safetensors_bytes(header: dict[str, Any], payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack('<Q', len(text)) + text + payload


# Checkpoints ------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=2048),
       suffix=st.sampled_from(['.pt', '.pth', '.safetensors', '.bin']),
       prefix=st.sampled_from([b'', b'PK\x03\x04', VALID_PT[:64],
                               struct.pack('<Q', 40) + b'{',
                               struct.pack('<Q', 10 ** 15) + b'{']))
def test_random_bytes_never_crash_the_checkpoint_loader(data, suffix,
                                                        prefix):
    ckpt = _expect_clean(load_checkpoint, _write(prefix + data, suffix))
    assert ckpt is None, 'random bytes loaded as a checkpoint'


@FUZZ
@given(cut=st.integers(0, len(VALID_PT) - 1),
       flips=st.lists(st.tuples(st.integers(0, len(VALID_PT) - 1),
                                st.integers(1, 255)), max_size=4))
def test_truncated_or_corrupted_torch_files(cut, flips):
    data = bytearray(VALID_PT)
    for index, xor in flips:
        data[index] ^= xor
    if flips and cut < 8:
        cut = len(data)  # flips alone
    _check_loaded(_expect_clean(load_checkpoint,
                                _write(bytes(data[:cut] or data), '.pt')))


def _rewrite_zip(raw: bytes, edit) -> bytes:
    """The same torch archive with ``edit(name, data)`` applied to each
    entry."""
    source = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            target.writestr(name, edit(name, source.read(name)))
    return out.getvalue()


SMALL_PT = _torch_bytes({'convs.0.lin.weight': torch.randn(300)})
# In SMALL_PT's pickle, the storage's element count (300) follows its
# location: 'cpu', a memo slot, then BININT2 300.
STORAGE_NUMEL = b'cpuq\x06M,\x01'


@FUZZ
@given(numel=st.integers(301, 2 ** 62),
       entry=st.sampled_from(['data.pkl', 'data/0', 'version', 'byteorder']),
       size=st.integers(0, 2 ** 32 - 1), what=st.sampled_from(
           ['pickle', 'directory', 'local']))
def test_zip_entries_declaring_huge_sizes(numel, entry, size, what):
    """A torch archive whose pickle declares a storage of up to 2**62
    elements, or whose zip headers claim an entry of up to 4 GiB."""
    assert STORAGE_NUMEL in zipfile.ZipFile(io.BytesIO(SMALL_PT)).read(
        'archive/data.pkl')
    if what == 'pickle':
        data = _rewrite_zip(SMALL_PT, lambda name, d: d.replace(
            STORAGE_NUMEL, b'cpuq\x06\x8a\x08' + struct.pack('<q', numel))
            if name.endswith('data.pkl') else d)
    else:
        data = bytearray(SMALL_PT)
        info = zipfile.ZipFile(io.BytesIO(SMALL_PT)).getinfo(
            f'archive/{entry}')
        if what == 'local':
            offset = info.header_offset + 18  # local header sizes
        else:  # central directory sizes
            offset = _central_entry(SMALL_PT, info.filename) + 20
        data[offset:offset + 8] = struct.pack('<II', size, size)
        data = bytes(data)
    _check_loaded(_expect_clean(load_checkpoint, _write(data, '.pt')))


def _central_entry(raw: bytes, name: str) -> int:
    """Offset of ``name``'s central-directory header in a zip."""
    start = raw.index(b'PK\x01\x02')
    while True:
        name_len, extra_len, comment_len = struct.unpack(
            '<HHH', raw[start + 28:start + 34])
        if raw[start + 46:start + 46 + name_len].decode() == name:
            return start
        start += 46 + name_len + extra_len + comment_len


@FUZZ
@given(state=mutated_state(), fmt=st.sampled_from(['pt', 'safetensors']),
       wrap=st.sampled_from([None, 'state_dict', 'model_state_dict',
                             'model']))
def test_malformed_state_dicts(state, fmt, wrap):
    if wrap is not None and fmt == 'pt':
        state = {wrap: state, 'epoch': 3}
    data = _save_state(state, fmt)
    _check_loaded(_expect_clean(load_checkpoint,
                                _write(data, f'.{fmt}')))


@FUZZ
@given(obj=st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=20),
    st.lists(st.integers(), max_size=5),
    st.tuples(st.integers(), st.text(max_size=4)),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(torch.randn, st.integers(0, 5)),
    st.dictionaries(st.sampled_from(['state_dict', 'model']),
                    st.one_of(st.none(), st.integers(),
                              st.builds(torch.randn, st.integers(0, 5))),
                    max_size=2)))
def test_objects_that_are_not_state_dicts(obj):
    ckpt = _expect_clean(load_checkpoint, _write(_torch_bytes(obj), '.pt'))
    assert ckpt is None


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(),
              st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner,
                                            max_size=3)),
    max_leaves=8)
SPEC_VALUES = st.fixed_dictionaries({}, optional={
    'arch': st.sampled_from(['gcn', 'gat', 'mlp', 'nope', 3]),
    'in_channels': st.one_of(st.integers(-2, 10), st.just(10 ** 12),
                             st.text(max_size=3), st.floats()),
    'hidden_channels': st.one_of(st.integers(-2, 10), st.just(10 ** 9),
                                 st.none()),
    'num_layers': st.one_of(st.integers(-1, 5), st.just(10 ** 7)),
    'out_channels': st.integers(-1, 10), 'heads': st.integers(-1, 4),
    'norm': st.sampled_from([None, 'batch_norm', 'bogus', 7]),
    'jk': st.sampled_from([None, 'cat', 'max', 'bogus']),
    'act': st.sampled_from(['relu', 'gelu', 'bogus', 1]),
    'aggr': st.sampled_from(['mean', 'max', 'bogus', None]),
    'dropout': st.one_of(st.floats(), st.text(max_size=2)),
    'alpha': st.one_of(st.floats(), st.none()),
    'theta': st.one_of(st.floats(), st.integers(-3, 3)),
    'shared_weights': st.sampled_from([True, 'no', 2]),
    'extra_field': st.integers()})


@FUZZ
@given(spec=st.one_of(SPEC_VALUES, JSON),
       as_metadata=st.booleans(), raw=st.booleans(),
       base=st.integers(0, len(SPECS) - 1))
def test_malformed_specs_in_metadata_and_cards(spec, as_metadata, raw,
                                               base):
    """The spec a safetensors file carries in its metadata, or the one on a
    teacher card next to a .pt file, may say anything."""
    state = BASE_STATES[base]
    text = json.dumps(spec) if not raw else json.dumps(spec)[:-1]
    if as_metadata:
        path = _write(_save_state(state, 'safetensors', {SPEC_KEY: text}),
                      '.safetensors')
    else:
        path = _write(_save_state(state, 'pt'), '.pt')
        card = {'kind': CARD_KIND, 'spec': spec} if not raw else None
        path.with_suffix('.json').write_text(
            json.dumps(card) if card else text)
    _check_loaded(_expect_clean(load_checkpoint, path))


@FUZZ
@given(shape=st.lists(st.integers(0, 10 ** 15), min_size=0, max_size=3),
       dtype=st.sampled_from(['F32', 'F64', 'I64', 'BOOL', 'F16', 'XX']),
       offsets=st.tuples(st.integers(-5, 10 ** 15), st.integers(-5, 10 ** 15)),
       payload=st.integers(0, 64))
def test_safetensors_headers_declaring_anything(shape, dtype, offsets,
                                                payload):
    """A header may declare a tensor of 10**15 bytes in a tiny file."""
    header = {'convs.0.lin.weight': {'dtype': dtype, 'shape': shape,
                                     'data_offsets': list(offsets)}}
    path = _write(_safetensors_bytes(header, bytes(payload)),
                  '.safetensors')
    _check_loaded(_expect_clean(load_checkpoint, path))


# --data FILE -------------------------------------------------------------

def _valid_data(num_nodes: int = 12) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {'x': torch.randn(num_nodes, 4, generator=gen),
            'edge_index': torch.randint(0, num_nodes, (2, 30), generator=gen),
            'y': torch.arange(num_nodes) % 3}


VALID_DATA_FILE = _torch_bytes(Data(**_valid_data()))
FIELD_VALUES = {
    'x': st.one_of(odd_tensor(), st.just(torch.full((12, 4), math.nan)),
                   st.just(torch.randn(12)), st.just(torch.randn(3, 4))),
    'edge_index': st.one_of(
        odd_tensor(),
        st.just(torch.tensor([[0, 1], [1, 12]])),
        st.just(torch.tensor([[0, -1], [1, 2]])),
        st.just(torch.tensor([[0.0, 1.5], [1.0, 2.0]])),
        st.just(torch.tensor([[0, 1, 2]])),
        st.just(torch.tensor([[0, 10 ** 12], [1, 2]])),
        st.just(torch.zeros(2, 0, dtype=torch.long))),
    'y': st.one_of(odd_tensor(), st.just(torch.full((12,), -1)),
                   st.just(torch.full((12,), 10 ** 12)),
                   st.just(torch.tensor([0.5] * 12)),
                   st.just(torch.zeros(12, 2, dtype=torch.long)),
                   st.just(torch.zeros(0, dtype=torch.long))),
    'train_mask': st.one_of(odd_tensor(), st.just(torch.ones(12).bool())),
    'val_mask': st.one_of(odd_tensor(), st.just(torch.zeros(3).bool())),
    'test_mask': odd_tensor(),
    'num_nodes': st.one_of(st.integers(-3, 10 ** 12), st.just('many')),
}


@st.composite
def mutated_data(draw) -> Any:
    fields: dict[str, Any] = _valid_data()
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)),
                              min_size=1, max_size=3, unique=True)):
        fields[name] = draw(FIELD_VALUES[name])
    for name in draw(st.lists(st.sampled_from(['x', 'edge_index', 'y']),
                              max_size=1)):
        fields.pop(name, None)
    return fields


def _check_graph(graph) -> None:
    """A graph that loaded must be one the engine can train on."""
    if graph is None:
        return
    n = graph.num_nodes
    assert graph.x.dim() == 2 and graph.x.dtype == torch.float32
    assert torch.isfinite(graph.x).all()
    assert graph.edge_index.dim() == 2 and graph.edge_index.size(0) == 2
    assert graph.edge_index.dtype == torch.long
    if graph.edge_index.numel():
        assert 0 <= int(graph.edge_index.min())
        assert int(graph.edge_index.max()) < n
    assert graph.y.shape == (n,) and graph.y.dtype == torch.long
    assert 1 <= graph.num_classes <= n
    for mask in (graph.train_mask, graph.val_mask, graph.test_mask):
        assert mask.shape == (n,) and mask.dtype == torch.bool
    labelled = graph.y[graph.train_mask | graph.val_mask | graph.test_mask]
    assert ((labelled >= 0) & (labelled < graph.num_classes)).all()


@FUZZ
@given(fields=mutated_data(), as_dict=st.booleans())
def test_malformed_data_files(fields, as_dict):
    obj = fields if as_dict else Data(**fields)
    path = _write(_torch_bytes(obj), '.pt')
    _check_graph(_expect_clean(load_graph, path))


@FUZZ
@given(cut=st.integers(0, len(VALID_DATA_FILE) - 1),
       junk=st.binary(max_size=256), use_junk=st.booleans(),
       obj=st.one_of(st.none(), st.integers(), st.text(max_size=5),
                     st.lists(st.integers(), max_size=3)))
def test_broken_data_files(cut, junk, use_junk, obj):
    data = junk if use_junk else VALID_DATA_FILE[:cut]
    if obj is not None and not use_junk and cut == 0:
        data = _torch_bytes(obj)
    _check_graph(_expect_clean(load_graph, _write(data, '.pt')))


# Through the command line ---------------------------------------------------

@FUZZ
@given(state=mutated_state(), junk=st.binary(max_size=512),
       use_junk=st.booleans(), key=st.text(max_size=12))
def test_cli_inspect_exits_1_with_one_line(state, junk, use_junk, key):
    """Whatever the file holds, even tensor names that look like terminal
    markup, ``gnncompress inspect`` prints one line and exits with 1 (or
    succeeds)."""
    from typer.testing import CliRunner

    from gnncompress.cli import app

    state[key] = torch.zeros(2)
    path = _write(junk if use_junk else _save_state(state, 'pt'), '.pt')
    result = CliRunner().invoke(app, ['inspect', str(path)])

    assert result.exit_code in (0, 1), result.exception
    if result.exit_code == 1:
        assert isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('Error: '), lines


def test_zip_end_record_that_makes_zipfile_raise(tmp_path):
    """Found by the fuzzer: a damaged ZIP64 locator before the end record
    makes ``zipfile.is_zipfile`` raise ("zipfiles that span multiple
    disks") instead of answering; the loader must still give its one-line
    error."""
    import struct
    data = bytearray(VALID_PT)
    end = data.rindex(b'PK\x05\x06')
    locator = struct.pack('<4sLQL', b'PK\x06\x07', 0, 0, 2)  # 2 disks
    data[end - len(locator):end] = locator
    with pytest.raises(zipfile.BadZipFile):
        zipfile.is_zipfile(io.BytesIO(bytes(data)))
    path = tmp_path / 'model.pt'
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        load_checkpoint(path)


def test_an_empty_tensor_of_enormous_dimensions_is_refused_in_one_line():
    """Found by the long fuzz run: a header declaring shape
    [0, 2479700525, 7439101573] made torch's stride arithmetic overflow
    (a RuntimeError) where the loader checked the values."""
    header = {'convs.0.lin.weight': {
        'dtype': 'F32', 'shape': [0, 2_479_700_525, 7_439_101_573],
        'data_offsets': [0, 0]}}
    path = _write(_safetensors_bytes(header, b''), '.safetensors')
    with pytest.raises(GnnCompressError, match='declares a dimension of '
                       '7,439,101,573, more than any model weight has'):
        load_checkpoint(path)
