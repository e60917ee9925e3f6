"""Dataset resolution and splits; everything from literals or the bundled
Cora sample, never a download."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATASETS, needs_shared
from torch_geometric.data import Data

from gnncompress.core.errors import DataError, GnnCompressError
from gnncompress.tasks.datasets import (
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
    load_graph,
    stratified_split,
)

SAMPLES = Path(__file__).resolve().parents[2] / 'samples'


def _labels(sizes: list[int]) -> torch.Tensor:
    # Classes interleaved, so a split that ignored the labels would show.
    y = [c for c, n in enumerate(sizes) for _ in range(n)]
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    return torch.tensor(y)[perm]


def _per_class(mask: torch.Tensor, y: torch.Tensor) -> list[int]:
    return [sum(1 for m, c in zip(mask.tolist(), y.tolist()) if m and c == k)
            for k in range(int(y.max()) + 1)]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size,
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob('*'))}


# ------------------------------------------------------ stratified_split


def test_split_takes_20_train_30_val_per_class():
    # Val is capped at half of what training leaves, so 30 val nodes need a
    # class of at least 20 + 2 * 30 = 80 nodes.
    y = _labels([100, 80, 90])

    train, val, test = stratified_split(y, seed=0)

    assert (TRAIN_PER_CLASS, VAL_PER_CLASS) == (20, 30)
    assert _per_class(train, y) == [20, 20, 20]
    assert _per_class(val, y) == [30, 30, 30]
    # The rest is test: 100-50, 80-50, 90-50.
    assert _per_class(test, y) == [50, 30, 40]
    for mask in (train, val, test):
        assert mask.dtype == torch.bool and mask.shape == y.shape


def test_split_masks_are_disjoint_and_cover_all_nodes():
    y = _labels([100, 80, 60, 7])

    train, val, test = stratified_split(y, seed=3)

    assert not (train & val).any()
    assert not (train & test).any()
    assert not (val & test).any()
    assert (train | val | test).all()
    assert int(train.sum() + val.sum() + test.sum()) == 247


def test_split_small_class_keeps_nodes_for_val_and_test():
    # 7 nodes: train min(20, 7 // 2) = 3, val min(30, (7 - 3) // 2) = 2,
    # test the remaining 2. 60 nodes: train 20, val min(30, 40 // 2) = 20,
    # test 20.
    y = _labels([100, 7, 60])

    train, val, test = stratified_split(y, seed=0)

    assert _per_class(train, y) == [20, 3, 20]
    assert _per_class(val, y) == [30, 2, 20]
    assert _per_class(test, y) == [50, 2, 20]


def test_split_is_seeded():
    y = _labels([100, 80, 90])

    first = stratified_split(y, seed=0)
    again = stratified_split(y, seed=0)
    other = stratified_split(y, seed=1)

    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])


def test_split_custom_sizes():
    y = _labels([40, 40])

    train, val, _ = stratified_split(y, seed=0, train_per_class=5,
                                     val_per_class=10)

    assert _per_class(train, y) == [5, 5]
    assert _per_class(val, y) == [10, 10]


# ------------------------------------------------------ named datasets


def test_cora_sample(cora):
    assert cora.name == 'Cora'
    assert cora.num_nodes == 2708
    assert cora.num_features == 1433
    assert cora.num_classes == 7
    assert cora.edge_index.shape == (2, 10556)
    assert int(cora.train_mask.sum()) == 140
    assert int(cora.val_mask.sum()) == 500
    assert int(cora.test_mask.sum()) == 1000
    assert cora.split == {'kind': 'given', 'train': 140, 'val': 500,
                          'test': 1000}
    assert cora.x.dtype == torch.float32
    assert cora.edge_index.dtype == torch.int64
    assert cora.y.dtype == torch.int64
    assert 'Cora: 2,708 nodes, 10,556 edges' in cora.describe()


def test_name_lookup_ignores_case():
    graph = load_graph('cora', SAMPLES)

    assert graph.name == 'Cora'
    assert graph.num_nodes == 2708


def test_unknown_name_lists_choices():
    with pytest.raises(DataError) as info:
        load_graph('nope')

    message = str(info.value)
    assert "'nope'" in message
    assert 'Cora' in message and 'PubMed' in message
    assert isinstance(info.value, GnnCompressError)


@needs_shared('MUTAG', 'raw')
@pytest.mark.parametrize('name', ['MUTAG', 'mutag'])
def test_graph_classification_dataset_loads_as_batched_graph(name):
    shared = SHARED_DATASETS

    graph = load_graph(name, shared)

    assert graph.name == 'MUTAG' and graph.y.numel() == 188
    assert graph.batch is not None and graph.batch.numel() == 3371
    assert graph.split['kind'] == 'graphs'


def test_missing_dataset_under_root(tmp_path):
    with pytest.raises(DataError, match='not found under'):
        load_graph('CiteSeer', tmp_path)


def test_read_only_source_is_left_unchanged(tmp_path):
    source = tmp_path / 'source'
    shutil.copytree(SAMPLES / 'Cora', source / 'Cora')
    before = _snapshot(source)
    paths = [source, *source.rglob('*')]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        graph = load_graph('Cora', source)
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)

    assert graph.num_nodes == 2708
    assert graph.split['train'] == 140
    # No processed/ folder, no new or touched files in the source.
    assert _snapshot(source) == before
    assert not (source / 'Cora' / 'processed').exists()


# --------------------------------------------------------- saved files


def _data(num_nodes: int = 200) -> Data:
    gen = torch.Generator().manual_seed(0)
    src = torch.arange(num_nodes)
    dst = (src + 1) % num_nodes
    return Data(x=torch.randn(num_nodes, 4, generator=gen),
                edge_index=torch.stack([torch.cat([src, dst]),
                                        torch.cat([dst, src])]),
                y=torch.arange(num_nodes) % 2)


def test_saved_data_file_gets_a_stratified_split(tmp_path):
    data = _data()
    path = tmp_path / 'ring.pt'
    torch.save(data, path)

    graph = load_graph(path, seed=7)

    assert graph.name == 'ring'
    assert graph.num_nodes == 200 and graph.num_features == 4
    assert graph.num_classes == 2
    assert torch.equal(graph.edge_index, data.edge_index)
    assert graph.split['kind'] == 'stratified'
    assert graph.split['seed'] == 7
    # 100 nodes a class: 20 train, 30 val, 50 test each.
    assert (graph.split['train'], graph.split['val'], graph.split['test']) \
        == (40, 60, 100)
    train, val, test = stratified_split(data.y, 7)
    assert torch.equal(graph.train_mask, train)
    assert torch.equal(graph.val_mask, val)
    assert torch.equal(graph.test_mask, test)


def test_saved_data_file_as_string_path(tmp_path):
    path = tmp_path / 'ring.pt'
    torch.save(_data(), path)

    graph = load_graph(str(path))

    assert graph.split['kind'] == 'stratified' and graph.split['seed'] == 0


def test_saved_data_file_keeps_its_own_masks(tmp_path):
    data = _data()
    index = torch.arange(200)
    data.train_mask = index < 10
    data.val_mask = (index >= 10) & (index < 30)
    data.test_mask = index >= 30
    path = tmp_path / 'masked.pt'
    torch.save(data, path)

    graph = load_graph(path)

    assert graph.split == {'kind': 'given', 'train': 10, 'val': 20,
                           'test': 170}
    assert torch.equal(graph.train_mask, data.train_mask)


def test_saved_dict_of_tensors_loads(tmp_path):
    data = _data()
    path = tmp_path / 'plain.pt'
    torch.save({'x': data.x, 'edge_index': data.edge_index, 'y': data.y},
               path)

    graph = load_graph(path, seed=2)

    assert graph.num_nodes == 200
    assert graph.split['kind'] == 'stratified' and graph.split['seed'] == 2


def test_random_bytes_raise_data_error(tmp_path):
    path = tmp_path / 'junk.pt'
    path.write_bytes(os.urandom(4096))

    with pytest.raises(DataError, match='junk.pt'):
        load_graph(path)


def test_file_holding_something_else_raises(tmp_path):
    path = tmp_path / 'tensor.pt'
    torch.save(torch.zeros(3), path)

    with pytest.raises(DataError, match='not a torch_geometric Data'):
        load_graph(path)


class _Hostile:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize('case,message', [
    ('text', 'is not a file written by torch.save: save'),
    ('empty', 'is not a file written by torch.save: save'),
    ('truncated', 'is truncated or corrupted: save'),
    ('hostile', 'holds pickled Python objects other than PyG Data'),
])
def test_unreadable_data_file_says_why_in_one_line(tmp_path, case, message):
    path = tmp_path / f'{case}.pt'
    if case == 'text':
        path.write_text('hello, not a tensor file')
    elif case == 'empty':
        path.write_bytes(b'')
    else:
        torch.save({'x': torch.zeros(4, 2), 'edge_index':
                    torch.zeros(2, 0, dtype=torch.long),
                    'hostile': _Hostile()} if case == 'hostile' else
                   {'x': torch.zeros(400, 20)}, path)
        if case == 'truncated':
            path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=message) as info:
        load_graph(path)
    # torch's own advice (weights_only=False) would run the file's code
    assert 'weights_only' not in str(info.value)
    assert '\n' not in str(info.value)


def test_missing_data_file_raises(tmp_path):
    with pytest.raises(DataError, match='not found'):
        load_graph(tmp_path / 'missing.pt')


def test_data_without_labels_raises(tmp_path):
    data = _data()
    path = tmp_path / 'unlabelled.pt'
    torch.save({'x': data.x, 'edge_index': data.edge_index}, path)

    with pytest.raises(DataError, match="'y'"):
        load_graph(path)


def test_normalize_features_divides_each_row_by_its_sum(tiny_graph):
    from gnncompress.tasks.datasets import normalize_features

    tiny_graph.x = torch.tensor([[1.0, 3.0, 0.0, 0.0, 0.0]] * 5
                                + [[0.0] * 5])
    normed = normalize_features(tiny_graph)
    assert normed.feature_norm == 'row'
    assert torch.allclose(normed.x[0], torch.tensor([0.25, 0.75, 0, 0, 0]))
    assert torch.equal(normed.x[5], torch.zeros(5))  # no features: stays 0
    assert normalize_features(normed) is normed
    tiny_graph.x[0, 0] = -1.0
    with pytest.raises(DataError, match='negative features'):
        normalize_features(tiny_graph)


def test_graph_list_labels_may_exceed_one_graphs_node_count():
    """NCI1's node labels: 37 classes, graphs of a few nodes. A label above
    one graph's node count is fine; a negative or fractional one is not."""
    from gnncompress.tasks.inductive import graph_from_list

    def graph(labels):
        n = len(labels)
        return Data(x=torch.ones(n, 2),
                    edge_index=torch.tensor([[0, 1], [1, 0]]),
                    y=torch.tensor(labels))

    parts = {'train': [graph([0, 7, 1])], 'val': [graph([2, 3])],
             'test': [graph([4, 5])]}
    loaded = graph_from_list(parts, 'tiny')
    assert loaded.num_classes == 8
    for bad, message in (([0, -1, 1], 'must be 0..C-1'),
                         ([0.5, 1.0, 2.0], 'must be integers')):
        parts['train'] = [graph(bad)]
        with pytest.raises(DataError, match=message):
            graph_from_list(parts, 'tiny')
