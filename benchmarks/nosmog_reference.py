"""NOSMOG's own public code, run on this machine: the reference for the gap
between our MLP students and NOSMOG's published row (issue 22).

Our students in GLNN's setting (``benchmarks/nosmog.py``) stay 1 to 2
points under NOSMOG's published figures on the Amazon graphs. Either our
implementation misses something, or the published figures are not what the
setting gives on this machine. This script runs the authors' code itself
(github.com/meettyj/NOSMOG, commit 7f8ef63), with the settings of its own
scripts (experiments/sage_cpf.sh for the SAGE teacher, nosmog_cpf.sh for
the student: transductive, at most 200 epochs, patience 50; the student
configuration from its tran.conf.yaml), on the npz files its loader reads
(for Photo and Computers ../shared's, byte-identical to CPF's; for Cora
and CiteSeer CPF's own, which ../shared does not hold: ``--cpf-data DIR``,
DIR holding cora.npz and citeseer.npz from github.com/BUPT-GAMMA/CPF's
data/npz; its PubMed file was not in the copy we could fetch, so for
PubMed the script writes Planetoid's PubMed, as our loader reads it from
../shared, in CPF's npz layout: the same graph, features and labels, in
that order), on the CPU. Per seed: the teacher, then two MLP students of
that teacher: GLNN (``glnn``, no flags) and NOSMOG (``nosmog``: ``--dw
--feat_distill --adv``). One difference from its scripts: they run ten
seeds in one process, which computes the DeepWalk features once, at seed
0, and reuses them; here each seed is its own process (resumable) and
computes its own.

None of NOSMOG's code is in this repository: pass ``--nosmog`` a checkout
of it and ``--python`` a Python that runs it (it needs DGL and gensim,
which the project does not: ``python -m venv /tmp/nv && /tmp/nv/bin/pip
install torch==2.2.1 dgl==2.1.0 gensim==4.4.0 torchdata==0.7.1 pydantic
pyyaml scikit-learn ogb category_encoders 'numpy<2'``). DGL 2 renamed
``NodeDataLoader`` to ``DataLoader``; a five-line launcher written to the
work folder gives the old name before running the authors' script, whose
files are not changed. One JSON file per dataset x run x seed under
results/nosmog_reference/; existing files are skipped.

    python benchmarks/nosmog_reference.py --nosmog /tmp/NOSMOG \
        --python /tmp/nv/bin/python
    python benchmarks/nosmog_reference.py --nosmog /tmp/NOSMOG \
        --python /tmp/nv/bin/python --datasets Cora CiteSeer --cpf-data DIR
    python benchmarks/nosmog_reference.py --report
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
import nosmog
import numpy as np
import published as papers
import scipy.sparse as sp
import torch
from common import RESULTS, SHARED, mean_std, read_rows, write_json

from gnncompress.tasks.datasets import load_graph

OUT = RESULTS / 'nosmog_reference'
# Our dataset name -> (NOSMOG's name for it, its npz under --data-root
# for the Amazon graphs, under --cpf-data for the citation graphs).
DATASETS = {
    'Cora': ('cora', 'cora.npz'),
    'CiteSeer': ('citeseer', 'citeseer.npz'),
    'PubMed': ('pubmed', 'pubmed.npz'),
    'Photo': ('a-photo', 'Photo/raw/amazon_electronics_photo.npz'),
    'Computers': ('a-computer',
                  'Computers/raw/amazon_electronics_computers.npz'),
}
CITATION = ('Cora', 'CiteSeer')
# Written by this script from ../shared (write_npz): CPF's file for it was
# not in the copy of CPF we could fetch.
WRITTEN = ('PubMed',)
# The student runs and their flags (nosmog_cpf.sh's for NOSMOG).
STUDENTS = {'glnn': [], 'nosmog': ['--dw', '--feat_distill', '--adv']}
COMMON_FLAGS = ['--exp_setting', 'tran', '--teacher', 'SAGE',
                '--max_epoch', '200', '--patience', '50', '--device', '-1',
                '--num_exp', '1']
LAUNCHER = """import runpy, sys
import dgl.dataloading as loading
if not hasattr(loading, 'NodeDataLoader'):  # renamed in DGL 2
    loading.NodeDataLoader = loading.DataLoader
sys.path.insert(0, '.')
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name='__main__')
"""
BEST = re.compile(r'Best valid model at epoch:\s*(\d+), score_val: '
                  r'([0-9.]+), score_test: ([0-9.]+)')
TEACHER_TEST = re.compile(r'teacher score on test data: ([0-9.]+)')
VERSIONS = ('import torch, dgl, gensim; print(f"torch {torch.__version__}, '
            'dgl {dgl.__version__}, gensim {gensim.__version__}")')


def write_npz(dataset: str, path: Path, data_root: Path) -> None:
    """``dataset`` as our loader reads it (no pickle: Planetoid's raw
    files are parsed, not unpickled), in the npz layout of CPF's loader:
    the adjacency and the features as CSR matrices, the labels, no
    names."""
    graph = load_graph(dataset, data_root)
    n = graph.num_nodes
    src, dst = graph.edge_index.numpy()
    adj = sp.csr_matrix((np.ones(src.size, dtype=np.float32), (src, dst)),
                        shape=(n, n))
    attr = sp.csr_matrix(graph.x.numpy())
    tmp = path.with_suffix('.tmp.npz')
    np.savez(tmp, adj_data=adj.data, adj_indices=adj.indices,
             adj_indptr=adj.indptr, adj_shape=np.array(adj.shape),
             attr_data=attr.data, attr_indices=attr.indices,
             attr_indptr=attr.indptr, attr_shape=np.array(attr.shape),
             labels=graph.y.numpy())
    tmp.replace(path)


def top_probability(out: Path) -> float:
    """The teacher's mean top class probability over all nodes, from the
    log-probabilities NOSMOG's script saves (1 / classes when flat)."""
    with np.load(out, allow_pickle=False) as saved:
        return float(np.exp(saved['arr_0']).max(axis=1).mean())


def _last(pattern: re.Pattern, log: Path) -> tuple[str, ...] | str:
    """The groups of the last line of ``log`` that ``pattern`` matches
    (a log is appended to: the last is this run's)."""
    found = pattern.findall(log.read_text()) if log.exists() else []
    if not found:
        sys.exit(f'{log}: no line matching {pattern.pattern!r}; see the '
                 'output above')
    return found[-1]


def _run(python: str, checkout: Path, script: str, flags: list[str],
         work: Path) -> float:
    """Run one of NOSMOG's scripts; the seconds it took."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    start = time.perf_counter()
    done = subprocess.run([python, str(work / 'launcher.py'), script,
                           *flags], cwd=checkout, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f'{script} {" ".join(flags)} failed:\n'
                 f'{done.stderr[-3000:]}')
    return time.perf_counter() - start


def run_seed(dataset: str, seed: int, python: str, checkout: Path,
             work: Path, data_root: Path, about: dict) -> None:
    name, npz = DATASETS[dataset]
    data = work / 'data'
    data.mkdir(parents=True, exist_ok=True)
    link = data / f'{name}.npz'
    if dataset in WRITTEN:
        if not link.exists():
            write_npz(dataset, link, data_root)
    elif not link.exists():
        link.symlink_to((data_root / npz).resolve())
    (work / 'launcher.py').write_text(LAUNCHER)
    base = COMMON_FLAGS + ['--dataset', name, '--seed', str(seed),
                           '--data_path', str(data)]
    teachers = work / 'teacher'
    teacher_dir = teachers / 'transductive' / name / 'SAGE' / f'seed_{seed}'
    path = OUT / f'{dataset}-teacher-seed{seed}.json'
    if not path.exists():
        seconds = _run(python, checkout, 'train_teacher.py',
                       base + ['--save_results', '--output_path',
                               str(teachers)], work)
        epoch, val, test = _last(BEST, teacher_dir / 'log')
        write_json(path, dict(about, dataset=dataset, run='teacher',
                              seed=seed, best_epoch=int(epoch),
                              val_accuracy=float(val),
                              test_accuracy=float(test),
                              top_probability=top_probability(
                                  teacher_dir / 'out.npz'),
                              seconds=seconds))
        print(f'{dataset} teacher seed {seed}: {100 * float(test):.2f} '
              f'({seconds:.0f} s)', flush=True)
    for student, flags in STUDENTS.items():
        path = OUT / f'{dataset}-{student}-seed{seed}.json'
        if path.exists():
            continue
        if not (teacher_dir / 'out.npz').exists():
            sys.exit(f'{teacher_dir}/out.npz missing: the teacher of seed '
                     f'{seed} was trained in another --work folder; remove '
                     f'{OUT}/{dataset}-teacher-seed{seed}.json to retrain '
                     'it')
        outputs = work / student
        seconds = _run(python, checkout, 'train_student.py',
                       base + ['--student', 'MLP', '--output_path',
                               str(outputs), '--out_t_path', str(teachers),
                               *flags], work)
        log = (outputs / 'transductive' / name / 'SAGE_MLP' /
               f'seed_{seed}' / 'log')
        epoch, val, test = _last(BEST, log)
        teacher = float(_last(TEACHER_TEST, log))
        write_json(path, dict(about, dataset=dataset, run=student,
                              seed=seed, best_epoch=int(epoch),
                              val_accuracy=float(val),
                              test_accuracy=float(test),
                              teacher_test_accuracy=teacher,
                              seconds=seconds))
        print(f'{dataset} {student} seed {seed}: {100 * float(test):.2f} '
              f'(teacher {100 * teacher:.2f}, {seconds:.0f} s)', flush=True)


def report() -> str:
    rows = read_rows(OUT)
    ours = read_rows(nosmog.OUT)
    lines = [
        "NOSMOG's public code (github.com/meettyj/NOSMOG at 7f8ef63) run "
        'on this machine in its own transductive setting (SAGE teacher, '
        'MLP student 2 x 128, its tran.conf.yaml, at most 200 epochs, '
        'patience 50, CPU), on the npz files its loader reads (PubMed\'s '
        'written from ours in their layout: the script\'s docstring); '
        'each seed its own '
        'split, teacher and DeepWalk features. `glnn`: its student without '
        'flags; `nosmog`: `--dw --feat_distill --adv`, the published '
        'recipe. Beside it, the published figures (GLNN\'s SAGE teacher '
        'and, on Photo, its MLP student as VQGraph tabulates it; NOSMOG '
        'Table 1) and gnncompress in GLNN\'s setting on this machine '
        '(`benchmarks/nosmog.py`: its teacher column, its `glnn` row, and '
        'the label chosen on validation). Test accuracy (%), mean ± std '
        '(seeds). Command: `python benchmarks/nosmog_reference.py '
        '--nosmog DIR --python PY` (DIR a checkout of NOSMOG, PY a Python '
        'with DGL and gensim; the script\'s docstring says which).', '',
        '| dataset | run | NOSMOG\'s code here | seeds | published | '
        'gnncompress here | median s |', '|---|---|---|---|---|---|---|']
    published = {'teacher': nosmog.GLNN, 'glnn': papers.GLNN_STUDENT,
                 'nosmog': nosmog.NOSMOG}
    for dataset in DATASETS:
        chosen = nosmog.chosen_on_validation(ours, dataset)
        glnn = [r for r in ours if r['dataset'] == dataset
                and r['method'] == 'glnn']
        mine = {
            'teacher': [r['teacher_test_accuracy'] for r in glnn],
            'glnn': [r['test_accuracy'] for r in glnn],
            'nosmog': [r['test_accuracy'] for r in ours
                       if r['dataset'] == dataset
                       and r['method'] == chosen],
        }
        for run in ['teacher', *STUDENTS]:
            theirs = [r for r in rows
                      if r['dataset'] == dataset and r['run'] == run]
            if not theirs:
                continue
            figure = published.get(run, {}).get(dataset)
            label = f' (`{chosen}`)' if run == 'nosmog' and chosen else ''
            seconds = statistics.median(r['seconds'] for r in theirs)
            lines.append(
                f'| {dataset} | {run} | '
                f'{mean_std([r["test_accuracy"] for r in theirs], digits=2)}'
                f' | {len(theirs)} | '
                f'{"-" if figure is None else f"{figure:.2f}"} | '
                f'{mean_std(mine[run], digits=2)}{label} | {seconds:.0f} |')
    tops = []
    for dataset in DATASETS:
        values = [r['top_probability'] for r in rows
                  if r['dataset'] == dataset and r['run'] == 'teacher'
                  and 'top_probability' in r]
        if values:
            tops.append(f'{dataset} {statistics.fmean(values):.2f} '
                        f'(lowest {min(values):.2f}, {len(values)} seeds)')
    if tops:
        lines += ['', 'Mean top class probability of the soft labels of '
                  'NOSMOG\'s teachers (1 / classes when flat): ' +
                  '; '.join(tops) + '.']
    machines = sorted({r['machine'] for r in rows})
    envs = sorted({r['their_python'] for r in rows})
    lines += ['', 'Machine: ' + '; '.join(machines) +
              '. NOSMOG\'s code ran under ' + '; '.join(envs) + '.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nosmog', type=Path, default=None,
                        help='a checkout of NOSMOG\'s public code')
    parser.add_argument('--python', default=None,
                        help='a Python with DGL and gensim')
    parser.add_argument('--datasets', nargs='+',
                        default=['Photo', 'Computers'],
                        choices=list(DATASETS))
    parser.add_argument('--seeds', default='0-9')
    parser.add_argument('--work', type=Path,
                        default=Path('/tmp/gnncompress-nosmog-reference'),
                        help='where NOSMOG\'s outputs go (teachers kept '
                        'for the students of the same seed)')
    parser.add_argument('--data-root', type=Path, default=SHARED)
    parser.add_argument('--cpf-data', type=Path, default=None,
                        help='a folder with CPF\'s cora.npz and '
                        'citeseer.npz (for Cora and CiteSeer)')
    parser.add_argument('--report', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(1)  # as NOSMOG's runs (OMP_NUM_THREADS=1)
    if not args.report:
        if args.nosmog is None or args.python is None:
            parser.error('give --nosmog DIR and --python PY (or --report)')
        if not (args.nosmog / 'train_student.py').exists():
            sys.exit(f'{args.nosmog}: no train_student.py; give a checkout '
                     'of github.com/meettyj/NOSMOG')
        versions = subprocess.run([args.python, '-c', VERSIONS],
                                  capture_output=True, text=True)
        if versions.returncode != 0:
            sys.exit(f'{args.python} cannot import torch, dgl and gensim: '
                     'see the docstring for the packages')
        commit = subprocess.run(['git', '-C', str(args.nosmog), 'rev-parse',
                                 '--short', 'HEAD'], capture_output=True,
                                text=True).stdout.strip() or 'unknown'
        about = {'machine': common.machine(), 'nosmog_commit': commit,
                 'their_python': versions.stdout.strip()}
        for dataset in args.datasets:
            root = args.data_root
            if dataset in CITATION:
                root = args.cpf_data
                if root is None or not (root / DATASETS[dataset][1]).exists():
                    sys.exit(f'{dataset} needs CPF\'s {DATASETS[dataset][1]}:'
                             ' give --cpf-data DIR (the docstring says where '
                             'to get it)')
            for seed in common.parse_seeds(args.seeds):
                run_seed(dataset, seed, args.python, args.nosmog.resolve(),
                         args.work.resolve(), root, about)
    common.update_doc('nosmog-reference', report())
    print(report())


if __name__ == '__main__':
    main()
