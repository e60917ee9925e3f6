"""Processed dataset caches are mapped, not copied, when read, and written
whole (temporary file, then rename), so that a run that has one mapped is
never left reading a file truncated under it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch_geometric.io.fs as fs_io
from conftest import SAMPLES

from gnncompress.tasks.datasets import load_graph
from gnncompress.tasks.safe_pickle import load_mapped, pyg_reading, save_whole


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / 'cache'
    monkeypatch.setenv('GNNCOMPRESS_CACHE', str(folder))
    return folder


def _mapped_files(tensor: torch.Tensor) -> set[str]:
    """The files whose mapping holds ``tensor``'s first byte (Linux)."""
    address, found = tensor.data_ptr(), set()
    for line in Path('/proc/self/maps').read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(v, 16) for v in fields[0].split('-'))
        if low <= address < high and len(fields) == 6:
            found.add(fields[5].strip())
    return found


@pytest.mark.skipif(not Path('/proc/self/maps').exists(),
                    reason='reads the mappings from /proc')
def test_a_processed_cache_is_mapped_not_copied(tmp_path):
    path = tmp_path / 'data.pt'
    save_whole({'x': torch.arange(1 << 16, dtype=torch.float32)}, str(path))
    loaded = load_mapped(str(path))
    assert torch.equal(loaded['x'], torch.arange(1 << 16,
                                                 dtype=torch.float32))
    assert str(path) in _mapped_files(loaded['x'])
    assert str(path) not in _mapped_files(torch.load(path)['x'])


def test_a_rewrite_replaces_the_file_and_a_mapped_reader_keeps_its_data(
        tmp_path):
    path = tmp_path / 'data.pt'
    save_whole({'x': torch.ones(1 << 16)}, str(path))
    before = os.stat(path).st_ino
    mapped = load_mapped(str(path))
    save_whole({'x': torch.zeros(1 << 16)}, str(path))
    assert os.stat(path).st_ino != before  # a new file, not truncated
    assert float(mapped['x'].sum()) == 1 << 16  # the old data, intact
    assert float(load_mapped(str(path))['x'].sum()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data.pt']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path):
    path = tmp_path / 'data.pt'
    save_whole({'x': torch.ones(4)}, str(path))
    with pytest.raises(Exception):
        save_whole({'x': lambda: None}, str(path))  # cannot be pickled
    assert torch.equal(load_mapped(str(path))['x'], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data.pt']


def test_a_file_that_cannot_be_mapped_is_read_as_before(tmp_path):
    path = tmp_path / 'legacy.pt'
    torch.save({'x': torch.ones(3)}, path,
               _use_new_zipfile_serialization=False)
    assert torch.equal(load_mapped(str(path))['x'], torch.ones(3))


@pytest.mark.skipif(not Path('/proc/self/maps').exists(),
                    reason='reads the mappings from /proc')
def test_a_shared_mapping_set_by_the_caller_is_not_used(tmp_path,
                                                         monkeypatch):
    """Under a shared mapping, writing to a loaded tensor would write the
    cache file: the file is read into memory instead."""
    import mmap
    path = tmp_path / 'data.pt'
    save_whole({'x': torch.ones(1 << 16)}, str(path))
    monkeypatch.setattr(torch.serialization, 'get_default_mmap_options',
                        lambda: mmap.MAP_SHARED)
    loaded = load_mapped(str(path))
    assert str(path) not in _mapped_files(loaded['x'])
    loaded['x'].mul_(3)
    monkeypatch.undo()
    assert float(load_mapped(str(path))['x'].sum()) == 1 << 16


@pytest.mark.skipif(not Path('/proc/self/maps').exists(),
                    reason='reads the mappings from /proc')
def test_pyg_reads_and_writes_its_cache_through_them_and_gets_its_own_back(
        cache, monkeypatch):
    load, save = fs_io.torch_load, fs_io.torch_save
    with pyg_reading():
        assert (fs_io.torch_load, fs_io.torch_save) == (load_mapped,
                                                        save_whole)
    assert (fs_io.torch_load, fs_io.torch_save) == (load, save)
    saved = []

    def spy(data, path):
        saved.append(Path(path).name)
        save_whole(data, path)
    monkeypatch.setattr('gnncompress.tasks.safe_pickle.save_whole', spy)
    graph = load_graph('Cora', SAMPLES)  # processed, then read mapped
    assert 'data.pt' in saved
    again = load_graph('Cora', SAMPLES)  # read from the cache alone
    assert torch.equal(graph.x, again.x)
    processed = [p for p in cache.rglob('processed') if p.is_dir()]
    assert len(processed) == 1 and not list(processed[0].glob('*.tmp'))
    data = str((processed[0] / 'data.pt').resolve())
    assert data in _mapped_files(again.x)
