"""NOSMOG's additions to GLNN in GLNN's setting: representation similarity
distillation (``rsd``) and adversarial feature augmentation (``adv``),
alone and together, against plain ``glnn`` (Tian et al., ICLR 2023).

Per dataset and seed: a GraphSAGE teacher by benchmarks/teachers.py's
recipe (configs/teacher-glnn-sage*.toml, GLNN's split drawn with the seed;
kept under ``--teachers``, default a folder in /tmp), then one MLP student
(2 x 128) per method on that teacher's split, with NOSMOG's student
settings for the dataset (its public configuration, which repeats GLNN's:
learning rate, weight decay, dropout; at most 200 epochs, patience 50; the
KL to the teacher on all nodes and no label loss, NOSMOG's ``lamb = 1``)
and NOSMOG's weights (rsd 0.1, adv 0.1 with its epsilon for the dataset).
One JSON file per dataset x method x seed under results/nosmog/; existing
files are skipped, so an interrupted run resumes. Run it niced, one
thread:

    nice -n 10 python benchmarks/nosmog.py      # Cora, CiteSeer, seeds 0-4
    nice -n 10 python benchmarks/nosmog.py --datasets Cora --seeds 0
    python benchmarks/nosmog.py --report        # only rewrite the doc

NOSMOG's third addition, position features (DeepWalk embeddings after
the inputs, the ``position`` method), runs as ``glnn+position`` and with
the other two as ``glnn+rsd+adv+position``, NOSMOG itself; the student's
graph gets the columns as ``distill`` gives them
(``with_student_inputs``).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import statistics
import time
from pathlib import Path

import common
import teachers
import torch
from common import RESULTS, SHARED, read_rows

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.methods.base import method_class
from gnncompress.models import build_model, count_parameters
from gnncompress.training.sampling import CSR
from gnncompress.training.train import fit, forward_frozen
from gnncompress.workflows.distill_sampled import fit_minibatch
from gnncompress.workflows.students import with_student_inputs

OUT = RESULTS / 'nosmog'
# Runs whose position features came from earlier trainers, kept and
# reported with their labels marked: [SGD] word2vec's rate whatever the
# budget (up to 81eb978), [Adam] Adam on the touched rows (d697319).
ARCHIVES = {'SGD': RESULTS / 'nosmog-sgd-positions',
            'Adam': RESULTS / 'nosmog-adam-positions'}
DEFAULT_TEACHERS = Path('/tmp/gnncompress-nosmog-teachers')
DATASETS = ['Cora', 'CiteSeer', 'PubMed', 'Computers', 'Photo']
# The methods compared; the last is NOSMOG's three additions together.
METHODS = ['glnn', 'glnn+rsd', 'glnn+adv', 'glnn+rsd+adv', 'glnn+position',
           'glnn+rsd+adv+position']
# NOSMOG's MLP student per dataset (tran.conf.yaml of its public code: the
# student's lr, weight decay and dropout are GLNN's), its adv epsilon, its
# rsd weight (feat_distill_weight) and its DeepWalk settings (walk length,
# walks per node, window, skip-gram epochs, dimensions). adv's weight is
# 0.1 everywhere (the method's default).
STUDENT = {
    'Cora': dict(lr=0.01, weight_decay=0.005, dropout=0.6, epsilon=0.04,
                 rsd=0.1, walk_length=50, walks_per_node=5, window=5,
                 walk_epochs=1, dim=64),
    'CiteSeer': dict(lr=0.01, weight_decay=0.001, dropout=0.1,
                     epsilon=0.045, rsd=0.1, walk_length=50,
                     walks_per_node=3, window=5, walk_epochs=5, dim=16),
    'PubMed': dict(lr=0.005, weight_decay=0.001, dropout=0.4, epsilon=0.005,
                   rsd=0.9, walk_length=50, walks_per_node=1, window=5,
                   walk_epochs=3, dim=16),
    'Computers': dict(lr=0.003, weight_decay=0.005, dropout=0.1,
                      epsilon=0.07, rsd=1e-9, walk_length=70,
                      walks_per_node=1, window=5, walk_epochs=1, dim=64),
    'Photo': dict(lr=0.001, weight_decay=0.001, dropout=0.1, epsilon=0.1,
                  rsd=1e-9, walk_length=30, walks_per_node=1, window=5,
                  walk_epochs=1, dim=64),
}
HIDDEN, LAYERS, EPOCHS, PATIENCE = 128, 2, 200, 50
# Published test accuracy (%), transductive, SAGE teacher: NOSMOG (Tian et
# al., ICLR 2023, Table 1) and GLNN as NOSMOG's source (Zhang et al., ICLR
# 2022).
NOSMOG = {'Cora': 83.04, 'CiteSeer': 73.78, 'PubMed': 77.34,
          'Computers': 84.04, 'Photo': 93.36}
GLNN = {'Cora': 80.64, 'CiteSeer': 70.49, 'PubMed': 75.56,
        'Computers': 82.82, 'Photo': 90.85}


def teacher_file(folder: Path, dataset: str, seed: int,
                 dropout: float | None = None, ties: str = 'first') -> Path:
    """The seed's teacher by the dataset's recipe (with ``dropout``
    instead of the recipe's, if given, and keeping the last of its epochs
    of equal best validation accuracy if ``ties`` is 'last'), trained once
    and kept."""
    variant = ('' if dropout is None else f'-D{dropout:g}') + \
        ('-tL' if ties == 'last' else '')
    path = folder / f'{dataset}-seed{seed}{variant}.pt'
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix('.tmp.pt')
        settings = teachers.recipe(dataset)
        if dropout is not None:
            settings['dropout'] = dropout
        api.train_teacher(dataset, tmp, data_root=str(SHARED), seed=seed,
                          progress=False, ties=ties, **settings)
        card = tmp.with_suffix('.json')  # train-teacher's card, then the
        if card.exists():                 # file whose presence says done
            card.replace(path.with_suffix('.json'))
        tmp.replace(path)
    return path


def split_label(label: str) -> tuple[str, float | None]:
    """``'glnn+position@T0.1'`` -> ``('glnn+position', 0.1)``: a label may
    name glnn's temperature after ``@T`` (default: GLNN's 1), and a batch
    size after ``@B`` (:func:`batch_of`)."""
    method, _, rest = label.partition('@')
    temperature = next((part[1:] for part in rest.split('@')
                        if part.startswith('T')), None) if rest else None
    return method, float(temperature) if temperature else None


def batch_of(label: str) -> int | None:
    """``'glnn@B512'`` -> 512: the student trains on random batches of that
    many nodes, one step each, as NOSMOG's and GLNN's code train their MLP
    (NOSMOG: batches of 512 over all nodes, the last partial one dropped;
    ours keeps it); without ``@B``, one full-graph step per epoch."""
    parts = label.split('@')[1:]
    size = next((part[1:] for part in parts if part.startswith('B')), None)
    if size is None:
        return None
    if not size.isdigit() or int(size) < 1:
        raise SystemExit(f'{label}: @B takes a positive whole number of '
                         f'nodes, e.g. @B512')
    return int(size)


def teacher_dropout_of(label: str) -> float | None:
    """``'glnn@D0'`` -> 0.0: the student learns from a teacher trained by
    the dataset's recipe but at this dropout (GLNN's and NOSMOG's SAGE
    teachers train at 0); without ``@D``, the recipe's teacher."""
    parts = label.split('@')[1:]
    rate = next((part[1:] for part in parts if part.startswith('D')), None)
    if rate is None:
        return None
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise SystemExit(f'{label}: @D takes the teacher\'s dropout, a '
                         f'number in [0, 1), e.g. @D0')
    return value


def teacher_ties_of(label: str) -> str:
    """``'glnn@tL'`` -> ``'last'``: the teacher keeps the last of its
    epochs of equal best validation accuracy, as GLNN's and NOSMOG's code
    select their teachers; without ``@tL``, the recipe's (the first)."""
    return 'last' if 'tL' in label.split('@')[1:] else 'first'


def ties_of(label: str) -> str:
    """``'glnn@L'`` -> ``'last'``: among epochs of equal best validation
    accuracy the student keeps the last, and an equal score restarts the
    patience count, as GLNN's and NOSMOG's code select (``>=``); without
    ``@L``, the first (the project's default)."""
    return 'last' if 'L' in label.split('@')[1:] else 'first'


def options(label: str, dataset: str) -> dict:
    """NOSMOG's settings for the parts of the method that ``label`` names
    (a.key for a part of a sum, plain keys for a method alone), and the
    label's glnn temperature."""
    method, temperature = split_label(label)
    settings = STUDENT[dataset]
    parts = method.split('+')
    rsd = {'weight': settings['rsd']}
    tags = label.split('@')[1:]
    if 'cos' in tags:
        # rsd on cosines (our variant), at weight 1: its term is bounded
        # (each similarity in [-1, 1]), where NOSMOG's weights were tuned
        # for plain products whose size follows the teacher's features.
        rsd = {'weight': 1.0, 'similarity': 'cosine'}
    weight = next((tag[1:] for tag in tags if tag.startswith('W')), None)
    if weight is not None:  # rsd at another weight than NOSMOG's
        try:
            rsd['weight'] = float(weight)
        except ValueError:
            raise SystemExit(f'{label}: @W takes rsd\'s weight, e.g. '
                             f'@W0.01') from None
    own = {'adv': {'epsilon': settings['epsilon']},
           'rsd': rsd,
           'position': {key: settings[key if key != 'epochs'
                                      else 'walk_epochs']
                        for key in ('dim', 'walk_length', 'walks_per_node',
                                    'window', 'epochs')},
           'glnn': {} if temperature is None else
           {'temperature': temperature}}
    if len(parts) == 1:
        return {k: v for k, v in own.get(method, {}).items()
                if k != 'weight'}
    return {f'{part}.{key}': value for part in parts
            for key, value in own.get(part, {}).items()}


def _set_apart(method: str, opts: dict) -> dict:
    """The options that differ from the methods' defaults: two runs with
    the same such options ran the same settings."""
    out = {}
    for key, value in opts.items():
        part, name = key.split('.', 1) if '.' in key else \
            (split_label(method)[0], key)
        cls = method_class(part)
        default = cls.default_weight if name == 'weight' else \
            inspect.signature(cls.__init__).parameters[name].default
        if value != default:
            out[key] = value
    return out


# How the position features are trained (SGD at a rate scaled to the
# budget of pairs per node): rows of a method with position features from
# another trainer are run again. Earlier trainers' rows are kept in
# ARCHIVES.
DEEPWALK = 'sgd-budget'


def uses_position(method: str) -> bool:
    return 'position' in split_label(method)[0].split('+')


def stale(row: dict, method: str, dataset: str) -> bool:
    """A stored run whose method settings are not the ones this script now
    gives (e.g. NOSMOG's DeepWalk settings per dataset, or position
    features of another trainer) is run again."""
    if uses_position(method) and row.get('deepwalk') != DEEPWALK:
        return True
    return _set_apart(method, row.get('options', {})) != \
        _set_apart(method, options(method, dataset))


def run(dataset: str, method: str, seed: int, folder: Path) -> dict:
    teacher = teacher_file(folder, dataset, seed,
                           teacher_dropout_of(method),
                           teacher_ties_of(method))
    ckpt = load_checkpoint(teacher)
    graph = api.resolve_data(dataset, str(SHARED), ckpt, seed)
    teacher_out = forward_frozen(ckpt.build(), graph)
    settings = STUDENT[dataset]
    distiller = api.build_method(split_label(method)[0],
                                 options(method, dataset))
    start = time.perf_counter()
    # The student's graph: x, then the columns a method adds (position
    # features, computed once with the run's seed), as distill does.
    student_graph, _ = with_student_inputs(distiller, graph, 'mlp', seed)
    spec = dataclasses.replace(
        api.student_spec(ckpt.spec, student_graph, arch='mlp',
                         hidden=HIDDEN, layers=LAYERS),
        dropout=settings['dropout'])
    api.seed_everything(seed)
    model = build_model(spec)
    train = dict(method=distiller, teacher_outputs=[teacher_out],
                 epochs=EPOCHS, patience=PATIENCE, lr=settings['lr'],
                 weight_decay=settings['weight_decay'],
                 label_weight=distiller.default_label_weight, progress=False,
                 ties=ties_of(method))
    batch = batch_of(method)
    if batch is None:
        result = fit(model, student_graph, **train)
    else:  # an MLP reads no neighbour: the fewest the sampler allows
        result = fit_minibatch(
            model, student_graph,
            CSR.from_edges(student_graph.edge_index,
                           student_graph.num_nodes),
            fanout=[1] * LAYERS, batch_size=batch, seed=seed, **train)
    seconds = time.perf_counter() - start
    term = f'loss_{distiller.name}'
    return {'dataset': dataset, 'method': method, 'seed': seed,
            'options': options(method, dataset),
            'weights': getattr(distiller, 'weights',
                               [distiller.default_weight]),
            'label_weight': distiller.default_label_weight,
            'ties': ties_of(method),
            'deepwalk': DEEPWALK if uses_position(method) else None,
            'student': spec.to_dict(), 'student_settings': settings,
            'student_parameters': count_parameters(model),
            'teacher_recipe': teachers.config(dataset).name,
            'teacher_dropout': teacher_dropout_of(method),
            'teacher_ties': teacher_ties_of(method),
            # how confident the soft labels are (1 / classes when flat)
            'teacher_top_probability': float(
                teacher_out.logits.softmax(-1).max(-1).values.mean()),
            'teacher_test_accuracy': ckpt.card.get('test_accuracy'),
            'test_accuracy': result.test_accuracy,
            'val_accuracy': result.val_accuracy,
            'best_epoch': result.best_epoch, 'epochs': result.epochs_run,
            'first_loss': result.history[0][term],
            'last_loss': result.history[-1][term],
            'seconds': seconds, 'threads': torch.get_num_threads(),
            'machine': common.machine()}


def collect(datasets: list[str], methods: list[str], seeds: list[int],
            folder: Path) -> None:
    # Seeds outermost: an interrupted run leaves every method on the same
    # seeds.
    for seed in seeds:
        for dataset in datasets:
            for method in methods:
                path = OUT / f'{dataset}-{method}-seed{seed}.json'
                if path.exists() and not stale(json.loads(path.read_text()),
                                               method, dataset):
                    continue
                row = run(dataset, method, seed, folder)
                common.write_json(path, row)
                print(f"{dataset} {method} seed {seed}: test "
                      f"{100 * row['test_accuracy']:.2f} (val "
                      f"{100 * row['val_accuracy']:.2f}, teacher "
                      f"{100 * row['teacher_test_accuracy']:.2f}, "
                      f"{row['epochs']} epochs, {row['seconds']:.0f} s)",
                      flush=True)


def _cell(values: list[float], signed: bool = False) -> str:
    """mean ± std (%) and the number of seeds behind it."""
    if not values:
        return '-'
    text = common.mean_std(values, digits=2)
    if signed and not text.startswith('-'):
        text = '+' + text
    return f'{text} ({len(values)})'


def _settings_text() -> str:
    """STUDENT as one line per dataset, for the report's prose."""
    return '; '.join(
        f"{d}: lr {v['lr']}, weight decay {v['weight_decay']}, dropout "
        f"{v['dropout']}, adv epsilon {v['epsilon']}, rsd weight {v['rsd']}, "
        f"walks {v['walks_per_node']} x {v['walk_length']}, window "
        f"{v['window']}, {v['walk_epochs']} skip-gram epoch(s), "
        f"{v['dim']} dims" for d, v in STUDENT.items())


def chosen_on_validation(rows: list[dict], dataset: str) -> str | None:
    """The label with the best mean validation accuracy on ``dataset``,
    among those run on every seed any label ran there (first of ties in
    sorted order); None when no label has."""
    mine = [r for r in rows if r['dataset'] == dataset]
    seeds = {r['seed'] for r in mine}
    scores = {}
    for method in sorted({r['method'] for r in mine}):
        runs = [r for r in mine if r['method'] == method]
        if {r['seed'] for r in runs} == seeds:
            scores[method] = statistics.fmean(r['val_accuracy']
                                              for r in runs)
    return max(scores, key=scores.get) if scores else None


def report() -> str:
    current = read_rows(OUT)
    rows = current + [dict(r, method=f"{r['method']} [{tag}]")
                      for tag, folder in ARCHIVES.items() if folder.is_dir()
                      for r in read_rows(folder)]
    machines = sorted({r['machine'] for r in rows})
    # The fixed methods, then any extra labels run (e.g. glnn@T0.1), then
    # the archived ones.
    extra = sorted({r['method'] for r in current} - set(METHODS))
    archived = sorted({r['method'] for r in rows} - set(METHODS)
                      - set(extra))
    labels = METHODS + extra + archived
    present = [d for d in DATASETS if any(r['dataset'] == d for r in rows)]
    lines = [
        "NOSMOG's additions to GLNN (Tian et al., ICLR 2023) in GLNN's "
        'setting: SAGE teacher by benchmarks/teachers.py\'s recipe, MLP '
        'student 2 x 128 with NOSMOG\'s settings per dataset (from the '
        'tran.conf.yaml of its public code; ' + _settings_text() + '), KL '
        'to the teacher on all nodes and no label loss, adv weight 0.1, at '
        'most 200 epochs, patience 50. A label `@T<t>` runs glnn at '
        'temperature t (default 1); `@cos` compares rsd\'s rows by '
        'cosine (our variant, at weight 1); `@W<w>` runs rsd at weight w; '
        '`@B<n>` trains on random '
        'batches of n nodes, one step each, as NOSMOG\'s code does '
        '(n = 512), instead of one full-graph step per epoch; `@L` keeps '
        'the last of the epochs of equal best validation accuracy, an '
        'equal score restarting the patience count, as GLNN\'s and '
        'NOSMOG\'s code select (without it: the first); `@D<p>` '
        'distils a teacher trained by the recipe at dropout p (GLNN\'s '
        'and NOSMOG\'s teachers: 0) and `@tL` one that keeps the last of '
        'its epochs of equal best validation accuracy (as their code '
        'selects); the teacher row leaves both out. Test '
        'accuracy (%), mean ± std over '
        'seeds (in brackets: how many; each seed its own split and '
        'teacher). Published: the SAGE teacher in GLNN (Zhang et al., ICLR '
        '2022) and NOSMOG (Table 1, transductive: glnn+rsd+adv+position). '
        'The times include computing the position features. Command: '
        '`nice -n 10 python benchmarks/nosmog.py` (add `--datasets PubMed '
        '--methods glnn@T0.1 glnn+position@T0.1` for the temperature '
        'runs, `--datasets Computers Photo --methods glnn@B512 '
        'glnn@T0.1@B512` for the batch runs, `--methods glnn@L '
        'glnn+position@L glnn+position@T0.1@L` for the selection '
        'runs). Position features come from our skip-gram at a rate '
        'scaled to the budget of pairs per node (gnncompress/methods/'
        'position.py); labels marked [SGD] are runs whose features came from '
        'it at word2vec\'s rate whatever the budget (up to 81eb978: the '
        'same embeddings on Cora and CiteSeer, whose rows are therefore '
        'kept unmarked, and barely trained ones on the Amazon graphs), '
        '[Adam] from Adam on the touched rows (d697319); "Position '
        'features" below compares them. Marked rows are kept in '
        'results/nosmog-sgd-positions/ and nosmog-adam-positions/ and take '
        'no part in the choice on validation.', '',
        '| | ' + ' | '.join(present) + ' |',
        '|---|' + '---|' * len(present)]

    def accuracies(dataset: str, method: str,
                   key: str = 'test_accuracy') -> list[float]:
        return [r[key] for r in rows
                if r['dataset'] == dataset and r['method'] == method]

    def teacher(dataset: str) -> list[float]:
        return list({r['seed']: r['teacher_test_accuracy'] for r in rows
                     if r['dataset'] == dataset
                     and teacher_dropout_of(r['method']) is None
                     and teacher_ties_of(r['method']) == 'first'}.values())

    lines.append('| teacher | ' + ' | '.join(
        _cell(teacher(d)) for d in present) + ' |')
    lines.append('| published teacher (GLNN) | ' + ' | '.join(
        f'{GLNN[d]:.2f}' for d in present) + ' |')
    for method in labels:
        if any(accuracies(d, method) for d in present):
            lines.append(f'| {method} | ' + ' | '.join(
                _cell(accuracies(d, method)) for d in present) + ' |')
    lines.append('| published NOSMOG | ' + ' | '.join(
        f'{NOSMOG[d]:.2f}' for d in present) + ' |')
    chosen = {d: chosen_on_validation(current, d) for d in present}
    lines.append('| ours, chosen on validation | ' + ' | '.join(
        '-' if c is None else
        f"{_cell(accuracies(d, c))}: `{c}`" for d, c in chosen.items())
        + ' |')
    lines += ['', 'The last row takes, per dataset, the label with the '
              'best mean validation accuracy among those run on all its '
              'seeds, and gives its test accuracy: no test score enters '
              'the choice.', '',
              'Against glnn on the same seeds (points, mean ± std of the '
              'per-seed differences):', '',
              '| | ' + ' | '.join(present) + ' |',
              '|---|' + '---|' * len(present)]
    base = {d: {r['seed']: r['test_accuracy'] for r in rows
                if r['dataset'] == d and r['method'] == 'glnn'}
            for d in present}
    for method in labels[1:]:
        cells = [_cell([r['test_accuracy'] - base[d][r['seed']]
                        for r in rows if r['dataset'] == d
                        and r['method'] == method
                        and r['seed'] in base[d]], signed=True)
                 for d in present]
        if any(cell != '-' for cell in cells):
            lines.append(f"| {method} | {' | '.join(cells)} |")
    seconds = {m: statistics.fmean(r['seconds'] for r in rows
                                   if r['method'] == m)
               for m in labels if any(r['method'] == m for r in rows)}
    lines += ['', 'Mean training time per run (s, all datasets run, with '
              'other jobs on the machine): ' + ', '.join(
                  f'{m} {s:.0f}' for m, s in seconds.items()) + '.']
    lines += ['', 'Machine: ' + '; '.join(machines) + '.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', nargs='+', default=DATASETS,
                        choices=DATASETS)
    parser.add_argument('--methods', nargs='+', default=METHODS)
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--teachers', type=Path, default=DEFAULT_TEACHERS,
                        help='where the teachers are kept between runs')
    parser.add_argument('--report', action='store_true',
                        help='only rewrite the section of docs/BENCHMARKS.md')
    args = parser.parse_args()
    if not args.report:
        torch.set_num_threads(1)
        collect(args.datasets, args.methods,
                common.parse_seeds(args.seeds), args.teachers)
    common.publish_folder(OUT, 'nosmog', report)


if __name__ == '__main__':
    main()
