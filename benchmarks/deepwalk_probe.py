"""Are our DeepWalk position features as good as the ones NOSMOG used?

NOSMOG's code (Tian et al., ICLR 2023) trains gensim's skip-gram with
hierarchical softmax on its walks; the ``position`` method trains our own
vectorised skip-gram with negative sampling (gnncompress/methods/
position.py). This script gives both trainers the same walks (ours, with
NOSMOG's walk settings for the dataset) and scores each set of embeddings
by a linear probe: a logistic regression on the standardised embeddings
alone (no node features), trained on GLNN's training nodes (20 per class)
and scored on its test nodes, and again trained on a random half of the
nodes and scored on the other half. The better embedding of a graph's
positions is the one whose probe scores higher.

gensim is not a dependency of the project: pass ``--gensim-python`` a
Python that has it (``python -m venv /tmp/gv && /tmp/gv/bin/pip install
gensim``); without it only ours runs. One JSON file per dataset x trainer
x seed under results/deepwalk_probe/; existing files are skipped.
``--ours-as NAME`` stores our rows under another name: the rows
``ours-sgd`` are this script run in a checkout of 81eb978, whose
skip-gram took SGD steps at word2vec's rate whatever the budget of pairs
(a row's updates averaged within a batch), with ``--ours-as ours-sgd``;
``ours-adam`` the same at d697319, where it trained with Adam.

    python benchmarks/deepwalk_probe.py --gensim-python /tmp/gv/bin/python
    python benchmarks/deepwalk_probe.py --report
    python benchmarks/deepwalk_probe.py --same-as /tmp/old --datasets Cora
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import common
import nosmog
import numpy as np
import torch
from common import RESULTS, SHARED, read_rows, write_json

from gnncompress.methods import position
from gnncompress.tasks.datasets import load_graph

OUT = RESULTS / 'deepwalk_probe'
TRAINERS = ['ours', 'ours-sgd', 'ours-adam', 'gensim', 'gensim-sgns']
GENSIMS = {'gensim': 1, 'gensim-sgns': 0}  # their hierarchical softmax

# Runs in the Python that has gensim: NOSMOG's Word2Vec settings (skip-gram,
# hierarchical softmax besides gensim's default 5 negatives, every node
# kept, one worker) on the walks given; hs 0 for negative sampling alone.
GENSIM = """
import sys
import numpy as np
from gensim.models import Word2Vec
walks, out, dim, window, epochs, seed, hs = sys.argv[1:]
walks = np.load(walks)
model = Word2Vec(sentences=[[str(v) for v in w] for w in walks.tolist()],
                 vector_size=int(dim), window=int(window), min_count=0,
                 sg=1, hs=int(hs), workers=1, epochs=int(epochs),
                 seed=int(seed))
n = int(walks.max()) + 1
np.save(out, np.stack([model.wv[str(i)] for i in range(n)]).astype('f4'))
"""


def probe(embedding: torch.Tensor, y: torch.Tensor, train: torch.Tensor,
          test: torch.Tensor, epochs: int = 300) -> float:
    """Test accuracy (%) of a logistic regression on the standardised
    embeddings (Adam, lr 0.01, weight decay 5e-4, full batch)."""
    z = (embedding - embedding.mean(0)) / (embedding.std(0) + 1e-8)
    torch.manual_seed(0)
    linear = torch.nn.Linear(z.size(1), int(y.max()) + 1)
    opt = torch.optim.Adam(linear.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear(z[train]), y[train]) \
            .backward()
        opt.step()
    with torch.no_grad():
        return float((linear(z[test]).argmax(1) == y[test]).float().mean()
                     * 100)


def walks_of(graph, settings: dict, seed: int) -> torch.Tensor:
    """The walks ``position.deepwalk`` draws for ``seed``: its generator,
    in its order."""
    generator = torch.Generator().manual_seed(seed)
    rowptr, sources = position.in_neighbours(graph.edge_index,
                                             graph.num_nodes)
    starts = torch.arange(graph.num_nodes).repeat(settings['walks_per_node'])
    return position.random_walks(rowptr, sources, starts,
                                 settings['walk_length'], generator)


def run(dataset: str, trainer: str, seed: int,
        gensim_python: str | None, name: str) -> dict:
    settings = nosmog.STUDENT[dataset]
    graph = load_graph(dataset, SHARED, seed=seed, split='glnn')
    start = time.perf_counter()
    if trainer not in GENSIMS:
        embedding = position.deepwalk(
            graph.edge_index, graph.num_nodes, settings['dim'],
            walk_length=settings['walk_length'],
            walks_per_node=settings['walks_per_node'],
            window=settings['window'], epochs=settings['walk_epochs'],
            seed=seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            walks, out = Path(tmp) / 'walks.npy', Path(tmp) / 'emb.npy'
            np.save(walks, walks_of(graph, settings, seed).numpy())
            subprocess.run([gensim_python, '-c', GENSIM, str(walks),
                            str(out), str(settings['dim']),
                            str(settings['window']),
                            str(settings['walk_epochs']), str(seed),
                            str(GENSIMS[trainer])],
                           check=True)
            embedding = torch.from_numpy(np.load(out))
    seconds = time.perf_counter() - start
    half = torch.randperm(graph.num_nodes,
                          generator=torch.Generator().manual_seed(seed))
    cut = graph.num_nodes // 2
    return {'dataset': dataset, 'trainer': name, 'seed': seed,
            'settings': settings, 'seconds': seconds,
            'mean_norm': float(embedding.norm(dim=1).mean()),
            'probe_split': probe(embedding, graph.y,
                                 graph.train_mask.nonzero().view(-1),
                                 graph.test_mask.nonzero().view(-1)),
            'probe_half': probe(embedding, graph.y, half[:cut], half[cut:]),
            'machine': common.machine()}


def same_as(checkout: Path, datasets: list[str], seeds: list[int]) -> None:
    """Whether our embeddings equal those of the skip-gram in another
    checkout (its gnncompress/methods/position.py), dataset by dataset and
    seed by seed, with NOSMOG's settings: where they do, the student runs
    of that checkout stand for this one's."""
    import importlib.util

    file = checkout / 'gnncompress' / 'methods' / 'position.py'
    source = file.read_text().split("@register_method('position')")[0]
    spec = importlib.util.spec_from_loader('other_position', loader=None)
    other = importlib.util.module_from_spec(spec)
    exec(compile(source, str(file), 'exec'), other.__dict__)
    for dataset in datasets:
        settings = nosmog.STUDENT[dataset]
        kwargs = dict(walk_length=settings['walk_length'],
                      walks_per_node=settings['walks_per_node'],
                      window=settings['window'],
                      epochs=settings['walk_epochs'])
        for seed in seeds:
            graph = load_graph(dataset, SHARED, seed=seed, split='glnn')
            a, b = (module.deepwalk(graph.edge_index, graph.num_nodes,
                                    settings['dim'], seed=seed, **kwargs)
                    for module in (position, other))
            print(f'{dataset} seed {seed}: '
                  f"{'equal' if torch.equal(a, b) else 'different'}",
                  flush=True)


def report() -> str:
    rows = read_rows(OUT)
    lines = [
        'DeepWalk embeddings of the same walks (NOSMOG\'s walk settings per '
        'dataset, nosmog.py\'s table) trained by our skip-gram (negative '
        'sampling, gnncompress/methods/position.py: `ours` now, SGD with '
        'a row\'s updates averaged within a batch, at a starting rate of '
        'word2vec\'s 0.025 times 1,460 / the expected pairs per node, '
        'between 1 and 10; `ours-sgd` as it was at 81eb978, always at '
        '0.025; `ours-adam` as it was at d697319, Adam on the rows a batch '
        'touches) and by '
        'gensim\'s Word2Vec with NOSMOG\'s settings (`gensim`: skip-gram, '
        'hierarchical softmax and gensim\'s default 5 negatives; '
        '`gensim-sgns`: the same without hierarchical softmax, the loss '
        'ours minimises), scored by a linear probe on the embeddings '
        'alone: test '
        'accuracy (%) of a logistic regression trained on GLNN\'s training '
        'nodes (20 per class), and on a random half of the nodes scored on '
        'the other half; mean ± std over seeds (each seed its walks and '
        'split); the mean norm of an embedding row (at the start about '
        '0.04 at 64 dimensions, 0.07 at 16). '
        'Command: `python benchmarks/deepwalk_probe.py '
        '--gensim-python PY` (PY a Python with gensim; `ours-sgd` and '
        '`ours-adam`: the same with `PYTHONPATH` a checkout of 81eb978 and '
        'of d697319, and `--ours-as ours-sgd` or `ours-adam`).', '',
        '| dataset | trainer | seeds | probe, GLNN split | probe, half | '
        'mean norm | seconds |', '|---|---|---|---|---|---|---|']
    for dataset in nosmog.DATASETS:
        for trainer in TRAINERS:
            mine = [r for r in rows
                    if r['dataset'] == dataset and r['trainer'] == trainer]
            if not mine:
                continue

            def cell(key: str) -> str:
                values = [r[key] for r in mine]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f'{statistics.mean(values):.2f} ± {spread:.2f}'
            seconds = statistics.median(r['seconds'] for r in mine)
            norm = statistics.mean(r['mean_norm'] for r in mine)
            lines.append(f'| {dataset} | {trainer} | {len(mine)} | '
                         f'{cell("probe_split")} | {cell("probe_half")} | '
                         f'{norm:.2f} | {seconds:.1f} |')
    machines = sorted({r['machine'] for r in rows})
    lines += ['', 'Machine: ' + '; '.join(machines) + '.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', nargs='+', default=nosmog.DATASETS)
    parser.add_argument('--seeds', default='0-2')
    parser.add_argument('--gensim-python', default=None)
    parser.add_argument('--ours-as', default='ours',
                        help='store our rows under this trainer name')
    parser.add_argument('--same-as', type=Path, default=None,
                        help='only say whether our embeddings equal those '
                        'of the checkout DIR')
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args()
    if args.same_as is not None:
        torch.set_num_threads(1)
        same_as(args.same_as, args.datasets, common.parse_seeds(args.seeds))
        return
    if not args.report:
        torch.set_num_threads(1)
        trainers = [args.ours_as] + (list(GENSIMS) if args.gensim_python
                                     else [])
        for dataset in args.datasets:
            for seed in common.parse_seeds(args.seeds):
                for trainer in trainers:
                    path = OUT / f'{dataset}-{trainer}-seed{seed}.json'
                    if path.exists():
                        continue
                    row = run(dataset, trainer if trainer in GENSIMS
                              else 'ours', seed, args.gensim_python,
                              trainer)
                    write_json(path, row)
                    print(f"{dataset} {trainer} seed {seed}: probe "
                          f"{row['probe_split']:.2f} / "
                          f"{row['probe_half']:.2f} "
                          f"({row['seconds']:.1f} s)", flush=True)
    common.update_doc('deepwalk-probe', report())


if __name__ == '__main__':
    main()
