"""Dataset files cannot run code. Each raw format the tool reads gets a
pickle that would create a marker file when unpickled, planted in a
teacher card's data root and in ``--data-root``: the marker must never
appear and the CLI must answer with one line and exit code 1. Processed
caches that do not load weights-only are rebuilt from the raw files
(gnncompress/tasks/safe_pickle.py; docs/robustness.md)."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch_geometric.io.npz as npz_io
import torch_geometric.io.planetoid as planetoid_io
from conftest import SAMPLE_TEACHER, SAMPLES
from torch_geometric.data import Data
from typer.testing import CliRunner

from gnncompress.api import resolve_data
from gnncompress.checkpoints.cards import CARD_KIND
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.cli import app
from gnncompress.core.errors import DataError
from gnncompress.models import ArchSpec, build_model
from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.point_clouds import load_clouds
from gnncompress.tasks.pyg import load_pyg_dataset
from gnncompress.tasks.safe_pickle import load_pickle, pyg_reading

runner = CliRunner()
PLANETOID_PICKLES = ('x', 'tx', 'allx', 'y', 'ty', 'ally', 'graph')


class Payload:
    """Unpickling it creates the file ``marker``, and does nothing else."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache per test, so no processed copy hides a raw file."""
    folder = tmp_path / 'cache'
    monkeypatch.setenv('GNNCOMPRESS_CACHE', str(folder))
    return folder / 'datasets'


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / 'PAYLOAD-RAN'


def payload_bytes(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


# Tiny copies of each raw format ----------------------------------------------

def cora_raw(root: Path) -> Path:
    """The bundled Cora sample's raw files, copied under ``root``."""
    raw = root / 'Cora' / 'raw'
    shutil.copytree(SAMPLES / 'Cora' / 'raw', raw)
    for path in raw.iterdir():
        path.chmod(0o644)
    return raw


def photo_npz(root: Path, **arrays: np.ndarray) -> Path:
    """An Amazon Photo ``.npz`` of 6 nodes, 3 features and a ring, with
    ``arrays`` replacing its members."""
    members = dict(
        attr_data=np.ones(6, np.float32),
        attr_indices=np.array([0, 1, 2, 0, 1, 2], np.int32),
        attr_indptr=np.arange(7), attr_shape=np.array([6, 3]),
        adj_data=np.ones(6, np.float32),
        adj_indices=np.array([1, 2, 3, 4, 5, 0], np.int32),
        adj_indptr=np.arange(7), adj_shape=np.array([6, 6]),
        labels=np.array([0, 1, 0, 1, 0, 1]))
    members.update(arrays)
    path = root / 'Photo' / 'raw' / 'amazon_electronics_photo.npz'
    path.parent.mkdir(parents=True)
    np.savez(path, **members)  # pickles object arrays, as an attacker may
    return path


def mutag_raw(root: Path) -> Path:
    """TU text files of 10 triangles, 2 classes."""
    raw = root / 'MUTAG' / 'raw'
    raw.mkdir(parents=True)
    edges, indicator = [], []
    for g in range(10):
        a, b, c = 3 * g + 1, 3 * g + 2, 3 * g + 3
        edges += [(a, b), (b, a), (b, c), (c, b), (a, c), (c, a)]
        indicator += [g + 1] * 3
    (raw / 'MUTAG_A.txt').write_text(
        ''.join(f'{s}, {d}\n' for s, d in edges))
    (raw / 'MUTAG_graph_indicator.txt').write_text(
        ''.join(f'{g}\n' for g in indicator))
    (raw / 'MUTAG_graph_labels.txt').write_text(
        ''.join(f'{1 if g % 2 else -1}\n' for g in range(10)))
    (raw / 'MUTAG_node_labels.txt').write_text(
        ''.join(f'{i % 3}\n' for i in range(30)))
    return raw


def pcd_bytes(points: np.ndarray) -> bytes:
    header = ('VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n'
              f'COUNT 1 1 1\nWIDTH {len(points)}\nHEIGHT 1\n'
              f'POINTS {len(points)}\nDATA binary\n')
    return header.encode() + points.astype(np.float32).tobytes()


def pcd_archive(root: Path, payload: bytes | None = None) -> Path:
    """The ModelNet10-PCD archive with 4 clouds of 2 classes per split;
    ``payload`` replaces the bytes of the first cloud."""
    path = root / 'ModelNet10-PCD' / 'raw' / 'modelnet10_pcd1024.tar.gz'
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with tarfile.open(path, 'w:gz') as tar:
        for i, (cls, split) in enumerate(
                (c, s) for c in ('chair', 'desk') for s in ('train', 'test')
                for _ in range(4)):
            data = pcd_bytes(rng.normal(size=(16, 3)))
            if payload is not None and i == 0:
                data = payload
            member = tarfile.TarInfo(f'ModelNet10/pcd/{cls}/{split}/{i}.pcd')
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


# Running the CLI on a planted folder -----------------------------------------

def _card_teacher(root: Path, data: str, dgcnn: bool = False) -> Path:
    """A teacher in ``root`` whose card names ``data`` and the root '.'."""
    teacher = root / 'T.pt'
    if dgcnn:
        spec = ArchSpec('dgcnn', 3, 16, 3, 2, widths=[8, 8, 16], k=4,
                        emb_channels=16, head=[8])
        torch.save(build_model(spec).state_dict(), teacher)
        card = {'kind': CARD_KIND}
    else:
        shutil.copyfile(SAMPLE_TEACHER, teacher)
        card = json.loads(SAMPLE_TEACHER.with_suffix('.json').read_text())
    card.update(data=data, data_is_file=False, data_root='.')
    teacher.with_suffix('.json').write_text(json.dumps(card))
    return teacher


def run_cli(where: str, root: Path, data: str, tmp_path: Path,
            dgcnn: bool = False):
    """``distill`` of a teacher whose card names ``root`` ('card'), or
    ``train-teacher --data-root root`` ('data-root')."""
    arch = ['--arch', 'dgcnn', '--hidden', '8,8,16', '--k', '4'] \
        if dgcnn else []
    if where == 'card':
        teacher = _card_teacher(root, data, dgcnn)
        args = ['distill', str(teacher), '--out', str(tmp_path / 'out')]
    else:
        args = ['train-teacher', '--data', data, '--data-root', str(root),
                '--out', str(tmp_path / 't.pt'), *arch]
    return runner.invoke(app, [*args, '--epochs', '1', '--no-progress'])


def assert_refused(result, marker: Path, *needles: str) -> str:
    """The payload did not run; one 'Error:' line, exit code 1."""
    assert not marker.exists(), 'the payload ran'
    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


WHERE = pytest.mark.parametrize('where', ['card', 'data-root'])


# Planetoid: pickled raw files -----------------------------------------------

@WHERE
@pytest.mark.parametrize('part', PLANETOID_PICKLES)
def test_planetoid_payload_never_runs(tmp_path, marker, where, part):
    root = tmp_path / 'root'
    raw = cora_raw(root)
    (raw / f'ind.cora.{part}').write_bytes(payload_bytes(marker))

    result = run_cli(where, root, 'Cora', tmp_path)

    # The error names the user's file, not the cache's copy of it.
    assert_refused(result, marker, str(raw / f'ind.cora.{part}'),
                   'holds a pickled io.open', 'never unpickles')


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_planetoid_payload_any_protocol(tmp_path, marker, protocol):
    raw = cora_raw(tmp_path / 'root')
    (raw / 'ind.cora.graph').write_bytes(payload_bytes(marker, protocol))

    with pytest.raises(DataError, match='holds a pickled io.open'):
        load_graph('Cora', tmp_path / 'root')
    assert not marker.exists()


def test_planetoid_sparse_index_out_of_range(tmp_path):
    """No pickle payload, but a csr matrix whose column index is past its
    width: scipy's todense would write outside the dense array."""
    raw = cora_raw(tmp_path / 'root')
    with open(raw / 'ind.cora.tx', 'rb') as f:
        tx = load_pickle(f, 'ind.cora.tx', encoding='latin1')
    tx.indices[0] = tx.shape[1]  # one past the last column
    (raw / 'ind.cora.tx').write_bytes(pickle.dumps(tx, protocol=2))

    result = run_cli('data-root', tmp_path / 'root', 'Cora', tmp_path)

    assert_refused(result, tmp_path / 'none', 'ind.cora.tx',
                   'is not a readable dataset file', 'indices must be <')


def test_truncated_planetoid_file(tmp_path):
    raw = cora_raw(tmp_path / 'root')
    data = (raw / 'ind.cora.allx').read_bytes()
    (raw / 'ind.cora.allx').write_bytes(data[:len(data) // 2])

    result = run_cli('data-root', tmp_path / 'root', 'Cora', tmp_path)

    assert_refused(result, tmp_path / 'none', 'ind.cora.allx',
                   'is not a readable dataset file')


def test_link_to_a_device_is_refused(tmp_path):
    """A link to /dev/zero would be copied until the disk is full; the
    test uses /dev/null, which ends, so that a regression cannot fill
    the disk."""
    raw = cora_raw(tmp_path / 'root')
    (raw / 'ind.cora.x').unlink()
    os.symlink('/dev/null', raw / 'ind.cora.x')

    with pytest.raises(DataError, match='is not a regular file'):
        load_graph('Cora', tmp_path / 'root')


# Amazon / Coauthor: .npz ------------------------------------------------------

def test_npz_control_loads(tmp_path):
    photo_npz(tmp_path / 'root')
    graph = load_graph('Photo', tmp_path / 'root')
    assert (graph.num_nodes, graph.num_features, graph.num_classes) == \
        (6, 3, 2)


@WHERE
def test_npz_object_array_never_unpickled(tmp_path, marker, where):
    root = tmp_path / 'root'
    path = photo_npz(root, attr_data=np.array([Payload(marker)] * 6,
                                              dtype=object))

    result = run_cli(where, root, 'Photo', tmp_path)

    assert_refused(result, marker, str(path),
                   'Object arrays cannot be loaded when allow_pickle=False')


@WHERE
def test_npz_index_out_of_range(tmp_path, where):
    """A plain npz (no pickle) whose feature matrix has a column index
    past its width; PyG would expand it with scipy's unchecked C++."""
    root = tmp_path / 'root'
    path = photo_npz(root, attr_indices=np.array([0, 1, 2, 0, 1, 3],
                                                 np.int32))

    result = run_cli(where, root, 'Photo', tmp_path)

    assert_refused(result, tmp_path / 'none', str(path),
                   'indices must be < 3')


# TU: plain text ---------------------------------------------------------------

def test_tu_control_loads(tmp_path):
    mutag_raw(tmp_path / 'root')
    dataset = load_pyg_dataset('TUDataset', 'MUTAG', tmp_path / 'root')
    assert len(dataset) == 10


@WHERE
def test_tu_text_is_parsed_not_unpickled(tmp_path, marker, where):
    root = tmp_path / 'root'
    raw = mutag_raw(root)
    (raw / 'MUTAG_A.txt').write_bytes(payload_bytes(marker))

    result = run_cli(where, root, 'MUTAG', tmp_path)

    assert_refused(result, marker, "Dataset 'MUTAG' could not be loaded",
                   str(root / 'MUTAG'))


# ModelNet10-PCD: the point-cloud archive -------------------------------------

def test_pcd_archive_control_loads(tmp_path):
    pcd_archive(tmp_path / 'root')
    graph = load_clouds('ModelNet10', tmp_path / 'root')
    assert graph.y.numel() == 16 and graph.split['points'] == 16


@WHERE
def test_pcd_archive_payload_never_runs(tmp_path, marker, where):
    root = tmp_path / 'root'
    pcd_archive(root, payload_bytes(marker))

    result = run_cli(where, root, 'ModelNet10', tmp_path, dgcnn=True)

    assert_refused(result, marker, 'ModelNet10/pcd/chair/train/0.pcd',
                   'is not a binary PCD file')


# Processed caches -------------------------------------------------------------

def plant_processed(folder: Path, marker: Path) -> None:
    """Payloads as PyG's processed data and pre-transform files: PyG
    falls back to a full unpickle of the first and reads the second with
    ``weights_only=False``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(Payload(marker), folder / 'data.pt')
    torch.save(Payload(marker.with_suffix('.2')), folder / 'pre_transform.pt')


def assert_cora(graph) -> None:
    assert (graph.num_nodes, graph.edge_index.size(1), graph.num_features,
            graph.num_classes) == (2708, 10556, 1433, 7)
    assert (graph.split['train'], graph.split['val'],
            graph.split['test']) == (140, 500, 1000)


@pytest.mark.parametrize('where', ['cache', 'copy'])
def test_unsafe_processed_cache_is_rebuilt(tmp_path, cache, marker, where):
    """The cache's own Cora folder, or the cache's copy of a --data-root:
    a processed file that needs a full unpickle is deleted and rebuilt."""
    root = cache if where == 'cache' else tmp_path / 'root'
    cora_raw(root)
    assert_cora(load_graph('Cora', root))
    processed = [p for p in cache.rglob('processed') if p.is_dir()]
    assert len(processed) == 1

    plant_processed(processed[0], marker)
    assert_cora(load_graph('Cora', root))

    assert not marker.exists() and not marker.with_suffix('.2').exists()
    with pyg_reading():  # the rebuilt cache loads weights-only
        assert torch.load(processed[0] / 'data.pt')


@WHERE
def test_processed_folder_of_a_data_root_is_never_read(tmp_path, marker,
                                                       where):
    root = tmp_path / 'root'
    cora_raw(root)
    plant_processed(root / 'Cora' / 'processed', marker)

    if where == 'card':
        ckpt = load_checkpoint(_card_teacher(root, 'Cora'))
        graph = resolve_data(None, None, ckpt, seed=0)
    else:
        graph = load_graph('Cora', root)

    assert_cora(graph)
    assert not marker.exists() and not marker.with_suffix('.2').exists()


# Saved files: --data, point-cloud lists, training checkpoints ---------------

@pytest.mark.parametrize('obj', ['bare', 'in Data', 'clouds'])
def test_saved_data_file_payload_never_runs(tmp_path, marker, obj):
    """``--data FILE`` (and a saved list of clouds) is read with
    ``weights_only=True``: a payload anywhere in it is refused."""
    path = tmp_path / 'data.pt'
    value = {'bare': Payload(marker),
             'in Data': Data(x=torch.zeros(2, 1), edge_index=torch.zeros(
                 2, 0, dtype=torch.long), y=torch.zeros(2, dtype=torch.long),
                 trap=Payload(marker)),
             'clouds': [Data(pos=torch.zeros(8, 3), y=torch.tensor([0])),
                        Payload(marker)]}[obj]
    torch.save(value, path)
    arch = ['--arch', 'dgcnn'] if obj == 'clouds' else []

    result = runner.invoke(app, ['train-teacher', '--data', str(path),
                                 '--out', str(tmp_path / 't.pt'), *arch,
                                 '--epochs', '1', '--no-progress'])

    assert_refused(result, marker, str(path), 'Unsupported global')


def test_training_checkpoint_payload_never_runs(tmp_path, marker):
    from gnncompress.core.errors import CheckpointError
    from gnncompress.training.resume import FILE_NAME, TrainingCheckpoint

    torch.save({'kind': Payload(marker)}, tmp_path / FILE_NAME)

    with pytest.raises(CheckpointError, match='cannot be read'):
        TrainingCheckpoint(tmp_path, None, {}, resume=True)
    assert not marker.exists()


# The restricted unpickler itself ---------------------------------------------

@pytest.mark.parametrize('protocol', [2, 4, 5])
@pytest.mark.parametrize('kind', ['csr', 'csc', 'coo'])
@pytest.mark.parametrize('form', ['matrix', 'array'])
def test_sparse_round_trip(protocol, kind, form):
    dense = np.array([[0, 1.5, 0], [2, 0, 0], [0, 0, -3]], np.float32)
    matrix = getattr(sp, f'{kind}_{form}')(dense)

    loaded = load_pickle(io.BytesIO(pickle.dumps(matrix, protocol)), 'm')

    assert type(loaded) is type(matrix)
    assert np.array_equal(loaded.toarray(), dense)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_arrays_and_graph_round_trip(protocol):
    graph = defaultdict(list, {0: [1, 2], 1: [0], 2: [0]})
    value = [np.arange(6, dtype=np.int32).reshape(2, 3), np.float64(2.5),
             np.array([True, False]), graph]

    loaded = load_pickle(io.BytesIO(pickle.dumps(value, protocol)), 'v')

    assert np.array_equal(loaded[0], value[0]) and loaded[0].dtype == np.int32
    assert loaded[1] == 2.5 and loaded[2].tolist() == [True, False]
    assert loaded[3] == graph and loaded[3].default_factory is list


@pytest.mark.parametrize('value, message', [
    (np.array([1, 'a'], dtype=object), 'an array of Python objects'),
    (defaultdict(set), "a pickled builtins.set"),
    ([sp.csr_matrix(np.eye(2))], 'csr_matrix inside a container'),
    (np.matrix(np.eye(2)), 'a pickled numpy.matrix'),
])
def test_other_objects_refused(value, message):
    with pytest.raises(DataError, match=message):
        load_pickle(io.BytesIO(pickle.dumps(value, 4)), 'f')


def test_sample_cora_still_loads_and_nothing_leaks():
    safe = torch.serialization.get_safe_globals()
    graph = load_graph('Cora', SAMPLES)
    assert_cora(graph)
    assert planetoid_io.pickle is pickle
    assert npz_io.parse_npz.__name__ == 'parse_npz' and \
        not hasattr(npz_io.parse_npz, '__wrapped__')
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ
    assert set(map(repr, torch.serialization.get_safe_globals())) == \
        set(map(repr, safe))


def test_an_unknown_reader_is_refused(monkeypatch):
    """If PyG stops reading Planetoid with ``pickle``, the tool refuses to
    guess rather than read unguarded."""
    monkeypatch.setattr(planetoid_io, 'pickle', None)
    with pytest.raises(DataError, match='cannot make safe'):
        with pyg_reading():
            pass
