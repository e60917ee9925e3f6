"""ABKD's deep setting taken apart (issue 22 part 5): which part of our ABKD
keeps the GCNII 4x4 student below the student alone on Cora, where the
paper (Ahluwalia et al. 2023, Table 3) reports 84.27 against 74.22.

The setting is benchmarks/abkd_deep.py's at student dropout 0, where the
student alone comes within 2 points of the paper's: the deep suite's GCNII
64x64 teacher (results/accuracy/teachers/Cora-gcnii64.pt, trained here if
missing), a GCNII student of 4 layers x 4 hidden, 200 epochs, lr 0.01,
weight decay 5e-4, no early stopping. Each variant changes one thing of
the default ``abkd`` row (weight 0.1, standardised scores, learnt
attention, pre-activation layers plus the logits, summed over the 65
teacher layers); VARIANTS says which. Two variants are built here only,
as subclasses of the library's ABKD: ``abkd-uniform`` (the attention
frozen at 1/L_s for every pair) and ``abkd-post-act`` (the layers after
their ReLU instead of before).

One JSON file per variant x seed under results/abkd-ablation/; existing
files are skipped. Each keeps every 20th epoch of the loss history, so the
table can show the weighted distillation term next to the cross-entropy.
``--report`` only rewrites the table.

    python benchmarks/abkd_ablation.py [--seeds 0-4] [--variants a,b]
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from abkd_deep import DATASET, PAPER
from accuracy import _teacher
from common import (
    RESULTS,
    SHARED,
    machine,
    mean_std,
    parse_seeds,
    read_rows,
    student_run,
    update_doc,
    write_json,
)
from torch import Tensor

from gnncompress import api
from gnncompress.checkpoints.teachers import load_checkpoint
from gnncompress.core.graph import Graph
from gnncompress.methods.abkd import ABKD
from gnncompress.methods.base import register_method
from gnncompress.models import ArchSpec, ModelOutput

HERE = RESULTS / 'abkd-ablation'
DROPOUT = 0.0
EPOCHS = 200
HISTORY_EVERY = 20


@register_method('abkd-uniform')
class UniformABKD(ABKD):
    """ABKD with the attention frozen: every student layer counts
    ``1 / L_s`` for every teacher layer."""

    def attention(self, k: int, teacher: Any,
                  s_stacks: list[Tensor]) -> Tensor:
        rows = self.pairings[k].teacher.widths
        cols = self.pairings[k].student.widths
        return s_stacks[0].new_full((len(rows), len(cols)), 1 / len(cols))


@register_method('abkd-post-act')
class PostActivationABKD(ABKD):
    """ABKD on the hidden layers after their ReLU (the logits unchanged)."""

    def layers(self, out: ModelOutput, who: str) -> list[Tensor]:
        layers = super().layers(out, who)
        hidden = len(layers) - (1 if self.include_logits else 0)
        return [F.relu(h) for h in layers[:hidden]] + layers[hidden:]


@register_method('abkd-recorded')
class RecordedABKD(ABKD):
    """ABKD that keeps its attention and dissimilarity of the first and
    the latest step (for ``--inspect``); the loss is unchanged."""

    seen: dict[str, Tensor] = {}

    def _keep(self, name: str, value: Tensor) -> Tensor:
        self.seen.setdefault(f'first_{name}', value.detach().clone())
        self.seen[f'last_{name}'] = value.detach().clone()
        return value

    def attention(self, k: int, teacher: Any,
                  s_stacks: list[Tensor]) -> Tensor:
        return self._keep('attention',
                          super().attention(k, teacher, s_stacks))

    def dissimilarity(self, k: int, teacher: Any,
                      s_stacks: list[Tensor]) -> Tensor:
        return self._keep('dissimilarity',
                          super().dissimilarity(k, teacher, s_stacks))


# name -> (method, options, weight (None: the method's default), meaning)
VARIANTS: dict[str, tuple[str | None, dict[str, Any], float | None,
                          str]] = {
    'alone': (None, {}, None, 'the student trained alone'),
    'abkd': ('abkd', {}, None, 'our default: weight 0.1'),
    'abkd-w0.01': ('abkd', {}, 0.01, 'weight 0.01'),
    'abkd-w1': ('abkd', {}, 1.0, 'weight 1'),
    'abkd-mean': ('abkd', {'teacher_reduction': 'mean'}, None,
                  'mean over the 65 teacher layers, not the sum'),
    'abkd-mean-w1': ('abkd', {'teacher_reduction': 'mean'}, 1.0,
                     'mean over teacher layers, weight 1'),
    'abkd-uniform': ('abkd-uniform', {}, None,
                     'attention frozen uniform (1/5 per pair)'),
    'abkd-post-act': ('abkd-post-act', {}, None,
                      'layers after the ReLU'),
    'abkd-no-logits': ('abkd', {'include_logits': False}, None,
                       'hidden layers only, no logits'),
    'abkd-raw-w10': ('abkd', {'normalize': False}, 10.0,
                     "the paper's raw D (no standardisation), its β = 10"),
    'abkd-raw': ('abkd', {'normalize': False}, None,
                 'raw D (no standardisation), weight 0.1'),
    'kd': ('kd', {}, None, 'KD on logits alone (τ 4, weight 1)'),
    'kd+abkd': ('kd+abkd', {}, None, 'KD (weight 1) + ABKD (weight 0.1)'),
    'kd+abkd-mean': ('kd+abkd', {'teacher_reduction': 'mean'}, None,
                     'KD + ABKD with the mean over teacher layers'),
    'alone-full-split': (None, {}, None,
                         'alone on a random 60/20/20 split (GCNII\'s '
                         'full-supervised setting, where GCNII reaches '
                         'the 88.4 of the paper\'s teacher)'),
}
# Variants trained on a random 60/20/20 split of their seed instead of the
# public one.
FULL_SPLIT = {'alone-full-split'}


def full_split(graph: Graph, seed: int) -> Graph:
    """``graph`` with a random 60/20/20 train/val/test split."""
    n = graph.num_nodes
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    masks = []
    for lo, hi in ((0, 0.6), (0.6, 0.8), (0.8, 1.0)):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[int(lo * n):int(hi * n)]] = True
        masks.append(mask)
    return replace(graph, train_mask=masks[0], val_mask=masks[1],
                   test_mask=masks[2], split={'kind': 'random-60-20-20',
                                              'seed': seed})


def run(seeds: list[int], names: list[str], data_root: str) -> None:
    spec = None
    for seed in seeds:
        for name in names:
            method, options, weight, _ = VARIANTS[name]
            path = HERE / f'{name}-seed{seed}.json'
            if path.exists():
                continue
            teacher = _teacher(DATASET, data_root, deep=True)
            if spec is None:
                t_spec = load_checkpoint(teacher).spec
                spec = ArchSpec('gcnii', t_spec.in_channels, 4, 4,
                                t_spec.out_channels, dropout=DROPOUT)
            graph = None
            if name in FULL_SPLIT:
                graph = full_split(api.resolve_data(
                    DATASET, data_root, load_checkpoint(teacher), seed), seed)
            result = student_run(teacher, DATASET, data_root, seed, method,
                                 spec=spec, options=options, weight=weight,
                                 epochs=EPOCHS, history_every=HISTORY_EVERY,
                                 graph=graph)
            write_json(path, {**result, 'variant': name})
            print(f"{name} seed {seed}: "
                  f"{100 * result['test_accuracy']:.1f}%", flush=True)


def inspect(seed: int, name: str, data_root: str) -> None:
    """Train variant ``name`` once with the recorded ABKD and store where
    its attention goes and how far the attended pairs are, at the first and
    the last step."""
    method, options, weight, _ = VARIANTS[name]
    path = HERE / 'inspect' / f'{name}-seed{seed}.json'
    if path.exists() or method != 'abkd':
        return
    teacher = _teacher(DATASET, data_root, deep=True)
    t_spec = load_checkpoint(teacher).spec
    spec = ArchSpec('gcnii', t_spec.in_channels, 4, 4, t_spec.out_channels,
                    dropout=DROPOUT)
    RecordedABKD.seen.clear()
    result = student_run(teacher, DATASET, data_root, seed, 'abkd-recorded',
                         spec=spec, options=options, weight=weight,
                         epochs=EPOCHS)
    row: dict[str, Any] = {'variant': name, 'seed': seed,
                           'test_accuracy': result['test_accuracy']}
    for when in ('first', 'last'):
        att = RecordedABKD.seen[f'{when}_attention']   # [L_t, L_s]
        dis = RecordedABKD.seen[f'{when}_dissimilarity']
        row[when] = {
            # share of the attention each student layer gets, over the
            # teacher layers (the last student layer is the logits)
            'student_layer_share': att.mean(0).tolist(),
            'max_attention_mean': float(att.max(1).values.mean()),
            'dissimilarity_mean': float(dis.mean()),
            'attended_dissimilarity_mean': float((att * dis).sum(1).mean()),
            'dissimilarity_min_per_student_layer':
                dis.min(0).values.tolist(),
        }
    write_json(path, row)
    print(json.dumps(row, indent=1), flush=True)


def _distill_term(row: dict[str, Any], last: bool) -> float | None:
    """The weighted distillation term (total loss - CE) of the first or
    last recorded epoch."""
    history = row.get('history') or []
    if not history or 'loss_ce' not in history[0]:
        return None
    entry = history[-1 if last else 0]
    return entry['loss'] - entry['loss_ce']


def _mean(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    return f'{statistics.fmean(values):.{digits}f}' if values else '-'


def report() -> str:
    rows = read_rows(HERE)
    by = {name: [r for r in rows if r['variant'] == name]
          for name in VARIANTS}
    alone = [r['test_accuracy'] for r in by['alone']]
    base = statistics.fmean(alone) if alone else None
    lines = [
        '`python benchmarks/abkd_ablation.py`: ABKD in the deep setting on '
        'Cora (GCNII 64 x 64 teacher, 84.0; GCNII 4 x 4 student at dropout '
        f'{DROPOUT}, {EPOCHS} epochs, lr 0.01, weight decay 5e-4), one '
        'change per row against our default `abkd`. Test accuracy (%), '
        'mean ± std over seeds; Δ against the student alone; the weighted '
        'distillation term (total loss - CE) and the CE at the first and '
        'last epoch, means over seeds:', '',
        '| variant | what changes | test acc | Δ alone | distill term '
        'first → last | CE first → last | seeds |',
        '|---|---|---|---|---|---|---|']
    for name, (_, _, _, meaning) in VARIANTS.items():
        got = by[name]
        if not got:
            continue
        acc = [r['test_accuracy'] for r in got]
        delta = '-' if base is None or name == 'alone' else \
            f'{100 * (statistics.fmean(acc) - base):+.1f}'
        ce = [[h['loss_ce'] for h in r.get('history') or [] if 'loss_ce' in h]
              for r in got]
        ce_first = _mean([c[0] if c else None for c in ce])
        ce_last = _mean([c[-1] if c else None for c in ce])
        term = '-' if VARIANTS[name][0] is None else (
            f'{_mean([_distill_term(r, False) for r in got])} → '
            f'{_mean([_distill_term(r, True) for r in got])}')
        ce_text = f'{ce_first} → {ce_last}'
        lines.append(f'| `{name}` | {meaning} | {mean_std(acc)} | {delta} | '
                     f'{term} | {ce_text} | {len(got)} |')
    lines.append(f"| paper (Table 3) | | alone {PAPER['alone']}, ABKD "
                 f"{PAPER['abkd']} | +{PAPER['abkd'] - PAPER['alone']:.1f} "
                 '| | | |')
    for row in read_rows(HERE / 'inspect'):
        first, last = row['first'], row['last']
        shares = ' / '.join(f'{v:.3f}' for v in last['student_layer_share'])
        lines += ['', f"`--inspect`, `{row['variant']}` seed {row['seed']}: "
                  'the largest attention weight of a teacher layer, mean '
                  f"over teacher layers, {first['max_attention_mean']:.3f} "
                  f"at the first step and {last['max_attention_mean']:.3f} "
                  'at the last (uniform: 0.200); share of each student layer '
                  f'(4 hidden, logits) at the last step {shares}; mean '
                  f"dissimilarity {first['dissimilarity_mean']:.3f} → "
                  f"{last['dissimilarity_mean']:.3f}."]
    lines += ['', f'Machine: {machine()}; shared with other jobs, loaded.']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', default='0-4')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help='comma-separated, from: ' + ', '.join(VARIANTS))
    parser.add_argument('--data-root', default=str(SHARED))
    parser.add_argument('--report', action='store_true')
    parser.add_argument('--inspect', action='store_true',
                        help='record the attention of the ABKD variants '
                        '(results/abkd-ablation/inspect/)')
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(',') if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}")
    if args.inspect:
        for seed in parse_seeds(args.seeds):
            for name in names:
                inspect(seed, name, args.data_root)
        return
    if not args.report:
        run(parse_seeds(args.seeds), names, args.data_root)
    body = report()
    print(body)
    update_doc('abkd-ablation', body)


if __name__ == '__main__':
    main()
