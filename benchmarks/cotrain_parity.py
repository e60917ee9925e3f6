"""Cotrain's results at seed 0 on tiny data, for checking that a change
keeps them float for float: each student's validation and test scores,
best epoch and per-epoch loss and validation history, for alignahead, oc,
mutual and self on one graph, sampled subgraphs, several graphs (multi-
and single-label) and MUTAG (with and without folds; skipped without
../shared/datasets).

    python benchmarks/cotrain_parity.py before.json   # on the old code
    python benchmarks/cotrain_parity.py after.json    # on the new code
    cmp before.json after.json

Optional further arguments name the configurations to run. About 2
minutes on 2 CPU cores."""
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch_geometric.data import Data

from gnncompress.outputs.latency import latency_budget
from gnncompress.tasks.synthetic import synthetic_ppi
from gnncompress.workflows.cotrain import cotrain

tmp = Path(tempfile.mkdtemp())
gen = torch.Generator().manual_seed(0)
y = torch.arange(60) % 3
x = torch.randn(60, 6, generator=gen) + y.view(-1, 1).float()
src = torch.randint(0, 60, (300,), generator=gen)
dst = torch.randint(0, 60, (300,), generator=gen)
keep = (y[src] == y[dst]) | (torch.rand(300, generator=gen) < 0.3)
ei = torch.stack([src[keep], dst[keep]])
ei = torch.cat([ei, ei.flip(0)], 1)
toy = tmp / 'toy.pt'
torch.save(Data(x=x, edge_index=ei, y=y), toy)
TINY = dict(num_graphs=(3, 1, 1), num_nodes=60, num_features=6,
            num_labels=5, num_communities=12)
ppi = tmp / 'ppi.pt'
torch.save(synthetic_ppi(**TINY), ppi)
single = synthetic_ppi(**TINY)
for split in single.values():
    for g in split:
        g.y = g.y.argmax(-1)
ppi1 = tmp / 'ppi1.pt'
torch.save(single, ppi1)
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'datasets'

configs = {}
for m in ('alignahead', 'mutual', 'oc', 'self'):
    configs[f'full-{m}'] = dict(data=toy, method=m, students=3, hidden=16,
                                epochs=6)
configs['full-alignahead-patience'] = dict(data=toy, method='alignahead',
                                           students=2, hidden=16, epochs=12,
                                           patience=2, lr=0.05)
for m in ('alignahead', 'mutual'):
    configs[f'sampled-{m}'] = dict(data=toy, method=m, students=3, hidden=16,
                                   layers=2, epochs=4, batch_size=16,
                                   fanout='5,3')
    configs[f'inductive-ml-{m}'] = dict(data=ppi, method=m, students=2,
                                        hidden=8, layers=2, epochs=3,
                                        batch_size=2)
    configs[f'inductive-sl-{m}'] = dict(data=ppi1, method=m, students=3,
                                        hidden=8, layers=2, epochs=3)
    configs[f'mutag-{m}'] = dict(data='MUTAG', data_root=SHARED, method=m,
                                 arch='gin', hidden=16, layers=2,
                                 readout='sum', norm='batch_norm',
                                 epochs=3, batch_size=64, students=2)
configs['sampled-self'] = dict(data=toy, method='self', students=2,
                               hidden=16, layers=2, epochs=3, batch_size=8)
configs['mutag-folds'] = dict(data='MUTAG', data_root=SHARED,
                              method='mutual', arch='gin', hidden=16,
                              layers=2, epochs=2, batch_size=64, folds=3)

results = {}
only = sys.argv[2:] if len(sys.argv) > 2 else None
for name, cfg in configs.items():
    if only and name not in only or \
            cfg['data'] == 'MUTAG' and not (SHARED / 'MUTAG').is_dir():
        continue
    with latency_budget(0.0, False):
        r = cotrain(**cfg, out=tmp / name, export=False, progress=False,
                    seed=0).to_dict()
    t = r['training']
    results[name] = dict(
        students=[(s['val_accuracy'], s['test_accuracy'])
                  for s in r['students']],
        best_student=r['best_student'], folds=r['folds'],
        best_epochs=t['best_epochs'], epochs_run=t['epochs_run'],
        histories=[[{k: h[k] for k in ('epoch', 'loss', 'val')} for h in hist]
                   for hist in t['histories']],
        test_mean=r['test_accuracy_mean'])
    print(name, results[name]['best_epochs'], results[name]['students'],
          flush=True)
Path(sys.argv[1]).write_text(json.dumps(results, indent=1))
