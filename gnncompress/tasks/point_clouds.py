"""Point-cloud classification data: ModelNet10-PCD (the archive in
../shared/datasets), PyG's ``ModelNet`` and ``GeometricShapes`` by name, and
saved lists of ``Data`` objects, as one batched Graph of equally sized
clouds normalised to the unit sphere.

A point-cloud set is a :class:`~gnncompress.core.Graph` whose ``x`` holds
the points of all clouds one after the other (``[B * n, 3]``), ``batch``
their cloud, ``edge_index`` nothing (DGCNN builds its own graphs) and
``y`` and the masks one entry per cloud.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from gnncompress.core.catalogue import default_root
from gnncompress.core.errors import DataError, error_line
from gnncompress.core.graph import Graph
from gnncompress.tasks.datasets import POINT_DATASETS
from gnncompress.tasks.pyg import build_dataset, working_copy

MODELNET10_CLASSES = ('bathtub', 'bed', 'chair', 'desk', 'dresser',
                      'monitor', 'night_stand', 'sofa', 'table', 'toilet')
ARCHIVE = Path('ModelNet10-PCD') / 'raw' / 'modelnet10_pcd1024.tar.gz'
POINTS = 1024          # points drawn from each mesh (PyG datasets)
_PCD_DATA = b'DATA binary\n'


def is_point_dataset(data: str | Path) -> bool:
    return str(data).lower() in POINT_DATASETS


def is_clouds(graph: Graph) -> bool:
    return graph.split.get('kind') == 'clouds'


def cloud_points(graph: Graph) -> Tensor:
    """The clouds of a point-cloud set as ``[B, n, 3]`` (a view)."""
    return graph.x.view(graph.y.numel(), -1, graph.x.size(-1))


def parse_pcd(raw: bytes, name: str = 'cloud') -> Tensor:
    """The ``[n, 3]`` float32 points of a binary PCD file with fields
    ``x y z``."""
    start = raw.find(_PCD_DATA)
    if start < 0:
        raise DataError(f'{name} is not a binary PCD file (no '
                        f"'DATA binary' line in its header)")
    header = raw[:start].decode('ascii', 'replace').split('\n')
    fields = dict((line.split(' ', 1) + [''])[:2] for line in header if line)
    if fields.get('FIELDS', '').split() != ['x', 'y', 'z'] or \
            fields.get('SIZE', '').split() != ['4', '4', '4'] or \
            fields.get('TYPE', '').split() != ['F', 'F', 'F']:
        raise DataError(f'{name}: expected float32 fields x y z in the PCD '
                        f"header (got FIELDS {fields.get('FIELDS')!r})")
    body = raw[start + len(_PCD_DATA):]
    count = int(fields.get('POINTS', '0') or 0)
    if count < 1 or len(body) != 12 * count:
        raise DataError(f'{name} is truncated: its header promises {count} '
                        f'points ({12 * count} bytes), the file holds '
                        f'{len(body)} bytes')
    pos = torch.frombuffer(bytearray(body), dtype=torch.float32)
    return pos.view(count, 3)


def read_pcd_archive(path: Path, limit: int | None = None,
                     ) -> Iterator[tuple[str, str, Tensor]]:
    """``(class, split, points)`` for each member
    ``ModelNet10/pcd/<class>/<split>/<file>.pcd`` of the archive, the first
    ``limit`` only if given."""
    try:
        with tarfile.open(path, 'r:gz') as tar:
            seen = 0
            for member in tar:
                if not member.isfile() or not member.name.endswith('.pcd'):
                    continue
                parts = member.name.split('/')
                if len(parts) < 3:
                    continue
                category, split = parts[-3], parts[-2]
                file = tar.extractfile(member)
                assert file is not None
                yield category, split, parse_pcd(file.read(), member.name)
                seen += 1
                if limit is not None and seen >= limit:
                    return
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f'{path} is not a readable .tar.gz archive '
                        f'({error_line(e)})') from None


def normalise(pos: Tensor) -> Tensor:
    """Centred on its mean and scaled into the unit sphere (the farthest
    point at distance 1), per cloud ``[n, 3]``."""
    pos = pos - pos.mean(0)
    return pos / pos.norm(dim=1).max().clamp_min(1e-12)


def load_clouds(data: str | Path, root: str | Path | None = None,
                seed: int = 0, points: int | None = None) -> Graph:
    """A point-cloud dataset as one batched Graph with a seeded validation
    split taken from its training clouds (10% of each class); the test
    split is the official one where a dataset has it, and never used for
    selection. ``points`` keeps that many points of every cloud (a seeded
    random subset); by default all of them, or the smallest cloud's count
    when sizes differ."""
    text = str(data)
    key = text.lower()
    if key == 'modelnet10':
        archive = Path(root).expanduser() / ARCHIVE if root is not None \
            else default_root() / ARCHIVE
        if archive.is_file():
            clouds, y, train = _from_archive(archive)
            name = 'ModelNet10'
        else:
            clouds, y, train = _from_pyg('ModelNet10', root, seed, points)
            name = 'ModelNet10'
    elif key in POINT_DATASETS:
        name = POINT_DATASETS[key]
        clouds, y, train = _from_pyg(name, root, seed, points)
    else:
        path = Path(text)
        if not path.is_file():
            raise DataError(f"Unknown point-cloud dataset '{text}' (choose "
                            f"from {', '.join(POINT_DATASETS.values())}, or "
                            f'pass a saved list of Data objects with pos and '
                            f'y)')
        clouds, y, train = _from_file(path)
        name = path.stem
    return clouds_graph(name, clouds, y, train, seed, points)


def clouds_graph(name: str, clouds: Sequence[Tensor], y: Tensor,
                 train: Tensor | None, seed: int,
                 points: int | None = None) -> Graph:
    """Normalised clouds of one size as a Graph. ``train`` marks the
    clouds of an official training split (the rest are its test set);
    ``None`` splits all clouds 80/10/10 per class; an integer ``train``
    gives each cloud's split itself (1 train, 2 validation, 0 test)."""
    from gnncompress.tasks.graph_level import graph_split

    sizes = [int(c.size(0)) for c in clouds]
    if not clouds:
        raise DataError(f'{name} holds no point clouds')
    points = min(sizes) if points is None else points
    if points < 1 or points > min(sizes):
        raise DataError(f"'points' must be between 1 and {min(sizes)}, the "
                        f'smallest cloud of {name} (got {points})')
    gen = torch.Generator().manual_seed(seed)
    kept = []
    for cloud in clouds:
        if not torch.isfinite(cloud).all():
            raise DataError(f'{name} has a cloud with NaN or infinite '
                            f'coordinates')
        cloud = normalise(cloud.float())
        if cloud.size(0) > points:
            cloud = cloud[torch.randperm(cloud.size(0), generator=gen)
                          [:points].sort().values]
        kept.append(cloud)
    pos = torch.stack(kept)                                    # [B, n, 3]
    y = y.long()
    if train is None:
        train, val, test = graph_split(y, seed)
        scheme = 'stratified 80/10/10 of the clouds'
    elif train.dtype != torch.bool:
        train, val, test = train == 1, train == 2, train == 0
        scheme = 'official train/test, validation: the training meshes ' \
            'sampled again'
    else:
        ids = train.nonzero().view(-1)
        _, _, held = graph_split(y[ids], seed)  # 10% of each class
        val = torch.zeros_like(train)
        val[ids[held]] = True
        test, train = ~train, train & ~val
        scheme = 'official train/test, 10% of train (per class) for ' \
            'validation'
    num_clouds = y.numel()
    split = {'kind': 'clouds', 'scheme': scheme, 'seed': seed,
             'clouds': num_clouds, 'points': points,
             'train': int(train.sum()), 'val': int(val.sum()),
             'test': int(test.sum())}
    return Graph(name=name, x=pos.reshape(-1, pos.size(-1)),
                 edge_index=torch.zeros(2, 0, dtype=torch.long), y=y,
                 train_mask=train, val_mask=val, test_mask=test,
                 num_classes=int(y.max()) + 1, split=split,
                 batch=torch.arange(num_clouds).repeat_interleave(points))


def _from_archive(path: Path) -> tuple[list[Tensor], Tensor, Tensor]:
    clouds, labels, train = [], [], []
    for category, split, pos in read_pcd_archive(path):
        if category not in MODELNET10_CLASSES or \
                split not in ('train', 'test'):
            raise DataError(f'{path}: unexpected member {category}/{split} '
                            f'(expected ModelNet10/pcd/<class>/<train|test>)')
        clouds.append(pos)
        labels.append(MODELNET10_CLASSES.index(category))
        train.append(split == 'train')
    return clouds, torch.tensor(labels), torch.tensor(train)


def _from_pyg(name: str, root: str | Path | None, seed: int,
              points: int | None) -> tuple[list[Tensor], Tensor, Tensor]:
    """PyG's meshes with points drawn uniformly by face area (seeded, once:
    the same cloud every epoch). GeometricShapes has one mesh per class
    and split, and its test meshes are its training meshes (datasets
    README): its validation set is a second sampling of the training
    meshes, and its test set measures robustness to sampling only."""
    from torch_geometric.transforms import SamplePoints

    folder = 'ModelNet10' if name == 'ModelNet10' else \
        'ModelNet40' if name == 'ModelNet40' else 'GeometricShapes'
    cls_name = 'GeometricShapes' if name == 'GeometricShapes' else 'ModelNet'
    sets = []
    for train in (True, False):
        dataset = _pyg_split(cls_name, folder, root, train)
        sets.append((dataset, train))
    sample = SamplePoints(points or POINTS)
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # SamplePoints draws from the global generator
    try:
        clouds, labels, flags = [], [], []
        if name == 'GeometricShapes':
            sets.insert(1, (sets[0][0], 2))
        for dataset, code in sets:
            for item in dataset:
                clouds.append(sample(item.clone()).pos)
                labels.append(int(item.y))
                flags.append(int(code))
    finally:
        torch.set_rng_state(state)
    flags_t = torch.tensor(flags)
    return clouds, torch.tensor(labels), \
        flags_t if name == 'GeometricShapes' else flags_t.bool()


def _pyg_split(cls_name: str, folder: str, root: str | Path | None,
               train: bool):
    """One split of a PyG mesh dataset, processed in the cache and read
    safely, as every PyG dataset
    (gnncompress.tasks.pyg.load_pyg_dataset)."""
    import torch_geometric.datasets as pyg_datasets

    source = Path(root).expanduser() if root is not None else default_root()
    if (source / folder / 'raw').is_dir():
        work = working_copy(source / folder)
    elif root is not None:
        raise DataError(f"Dataset '{folder}' not found under {source} "
                        f'(expected {source / folder / "raw"}): fix '
                        f'--data-root')
    else:
        work = default_root() / 'clouds' / folder
    if cls_name == 'ModelNet':
        def construct():
            return pyg_datasets.ModelNet(str(work), folder[-2:], train=train)
    else:
        def construct():
            return pyg_datasets.GeometricShapes(str(work), train=train)
    return build_dataset(construct, folder, work, source / folder)


def _from_file(path: Path) -> tuple[list[Tensor], Tensor, Tensor | None]:
    """A saved list of ``Data(pos=[n, 3], y=[1])`` (all clouds, split
    80/10/10), or a dict ``{'train': [...], 'test': [...]}``."""
    from gnncompress.tasks.datasets import load_saved

    obj = load_saved(path, 'list of torch_geometric Data objects')
    if isinstance(obj, dict) and set(obj) == {'train', 'test'}:
        items = [(d, True) for d in obj['train']] + \
            [(d, False) for d in obj['test']]
    elif isinstance(obj, (list, tuple)):
        items = [(d, None) for d in obj]
    else:
        raise DataError(f'{path} holds a {type(obj).__name__}: save a list '
                        f"of Data(pos=..., y=...) or {{'train': [...], "
                        f"'test': [...]}}")
    clouds, labels = [], []
    for i, (d, _) in enumerate(items):
        pos, y = getattr(d, 'pos', None), getattr(d, 'y', None)
        if not isinstance(pos, Tensor) or pos.dim() != 2 or \
                pos.size(1) != 3 or not isinstance(y, Tensor) or \
                y.numel() != 1:
            raise DataError(f'{path}: item {i} needs pos [n, 3] and one '
                            f'label y')
        clouds.append(pos)
        labels.append(int(y))
    train = None if items and items[0][1] is None else \
        torch.tensor([flag for _, flag in items])
    return clouds, torch.tensor(labels), train
