"""Several processes (DDP, gloo on the CPU): the seed shares, a two-rank
run against one-process runs, the whole command, and what is refused."""
from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Data
from typer.testing import CliRunner

import gnncompress.workflows.distill_sampled as mb
from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.graph import Graph
from gnncompress.methods.kd import KD
from gnncompress.models import ArchSpec, ModelOutput, build_model
from gnncompress.training import ranks as ranks_mod
from gnncompress.training.sampling import CSR
from gnncompress.workflows import distributed

runner = CliRunner()


def _graph(num_nodes: int = 300, classes: int = 3) -> Graph:
    """Random edges; the label is the largest of the first ``classes``
    features, so a student can learn it and a 'teacher' can know it."""
    gen = torch.Generator().manual_seed(0)
    half = torch.randint(0, num_nodes, (2, 3 * num_nodes), generator=gen)
    x = torch.randn(num_nodes, 6, generator=gen)
    split = torch.arange(num_nodes) % 4
    return Graph(name='random', x=x, edge_index=torch.cat([half, half.flip(0)],
                                                          1),
                 y=x[:, :classes].argmax(-1), train_mask=split == 0,
                 val_mask=split == 1, test_mask=split >= 2,
                 num_classes=classes)


def _train(seed: int) -> tuple[float, dict[str, torch.Tensor], int]:
    """KD from a teacher that knows the labelling rule; in a process group
    when there is one. Test accuracy (NaN off rank 0), the student's
    weights and the epochs run."""
    graph = _graph()
    csr = CSR.from_edges(graph.edge_index, graph.num_nodes)
    teacher = ModelOutput(logits=3 * graph.x[:, :3], hiddens=[])
    torch.manual_seed(seed)
    student = build_model(ArchSpec(arch='sage', in_channels=6,
                                   hidden_channels=16, num_layers=2,
                                   out_channels=3))
    result = mb.fit_minibatch(student, graph, csr, fanout=[4, 4],
                              batch_size=64, method=KD(),
                              teacher_outputs=[teacher], epochs=12, lr=0.02,
                              patience=None, progress=False, seed=seed)
    return result.test_accuracy, student.state_dict(), result.epochs_run


def _train_in_group(seed: int) -> tuple[float, dict[str, torch.Tensor], int]:
    import torch.distributed as dist
    dist.init_process_group('gloo')
    try:
        return _train(seed)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_process_and_hold_the_same_weights():
    ranks = distributed.spawn(_train_in_group, 2, 0)
    alone = [_train(seed)[0] for seed in (0, 1, 2)]

    (acc0, weights0, epochs0), (acc1, weights1, epochs1) = ranks
    assert epochs0 == epochs1 == 12
    assert weights0.keys() == weights1.keys()
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)
    assert acc1 != acc1  # rank 1 does not evaluate the test split
    mean, spread = statistics.mean(alone), statistics.pstdev(alone)
    assert mean > 0.8  # the student learnt the rule alone...
    assert abs(acc0 - mean) <= max(3 * spread, 0.04), (acc0, alone)


def test_epoch_seeds_split_one_shuffle_into_equal_shares():
    shares = []
    for rank in range(3):
        ranks = object.__new__(ranks_mod.Ranks)
        ranks.rank, ranks.world = rank, 3
        order = torch.Generator().manual_seed(5)
        mine, shuffle = ranks.epoch_seeds(torch.arange(10, 20), order)
        shares.append(mine)
        assert not shuffle
    # 10 seeds over 3 ranks: 4 each, two seeds visited twice (wrapped).
    assert [s.numel() for s in shares] == [4, 4, 4]
    # Rank r takes every third seed from r: interleaved back, the first
    # ten are one permutation and the last two repeat its start.
    order = torch.stack(shares, 1).reshape(-1)
    assert torch.equal(order[:10].sort().values, torch.arange(10, 20))
    assert torch.equal(order[10:], order[:2])
    assert ranks_mod.Ranks.share(ranks, 1000) == 334


def test_nproc_command_writes_the_outputs_once(tmp_path):
    data = tmp_path / 'graph.pt'
    g = _graph()
    torch.save(Data(x=g.x, edge_index=g.edge_index, y=g.y,
                    train_mask=g.train_mask, val_mask=g.val_mask,
                    test_mask=g.test_mask), data)
    teacher = tmp_path / 'teacher.pt'
    api.train_teacher(data, teacher, arch='sage', hidden=16, layers=2,
                      epochs=60, progress=False, device='cpu')
    out = tmp_path / 'out'
    result = runner.invoke(app, [
        'distill', str(teacher), '--data', str(data), '--batch-size', '64',
        '--fanout', '4,4', '--epochs', '10', '--hidden', '8', '--nproc', '2',
        '--student', 'sage',
        '--out', str(out), '--no-progress', '--device', 'cpu', '--lr',
        '0.02'])

    assert result.exit_code == 0, result.output
    assert result.output.count('wrote ') == 1
    report = json.loads((out / 'report.json').read_text())
    assert report['training']['processes'] == 2
    assert report['training']['epochs_run'] == 10
    # One process reaches 0.83 here; the teacher 0.80.
    assert report['student']['test_accuracy'] > \
        report['teacher']['test_accuracy'] - 0.1
    assert (out / 'student.safetensors').exists()
    assert (out / 'student.onnx').exists()


@pytest.mark.parametrize('args,needle', [
    (['--nproc', '0', '--batch-size', '64'], '--nproc must be at least 1'),
    (['--nproc', '2', '--batch-size', '64', '--device', 'cuda:1'],
     'use --device cuda (or auto)'),
])
def test_unsupported_options_fail_in_one_line(tmp_path, args, needle):
    out = tmp_path / 'out'
    result = runner.invoke(app, ['distill', 'missing.pt', '--out', str(out),
                                 '--no-progress', *args])

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    assert needle in lines[0]
    assert not out.exists()


def test_torchrun_environment_with_nproc_is_refused(monkeypatch):
    for key, value in (('RANK', '0'), ('WORLD_SIZE', '2'),
                       ('MASTER_ADDR', '127.0.0.1'), ('MASTER_PORT', '1')):
        monkeypatch.setenv(key, value)
    with pytest.raises(distributed.GnnCompressError,
                       match='drop --nproc when running under torchrun'):
        api.distill('missing.pt', batch_size=64, nproc=2)


def test_full_graph_under_torchrun_names_torchrun(monkeypatch):
    # What each rank checks once the data are loaded (the --nproc case runs
    # in tests/training/test_matrix_commands.py); batches of whole graphs,
    # several graphs and --batch-size pass.
    monkeypatch.setattr(distributed, 'joined', lambda: True)
    monkeypatch.delenv(distributed.NPROC_ENV, raising=False)
    one = SimpleNamespace(name='Cora', batch=None, node_graph=None)
    with pytest.raises(distributed.GnnCompressError) as info:
        distributed.check_batches([one, one], None)
    assert str(info.value) == (
        'torchrun splits each training batch between processes, and Cora '
        'trains full-graph (one step on the whole graph, no batch): add '
        '--batch-size (seed nodes per step, e.g. --batch-size 1024)')
    distributed.check_batches([one], 1024)
    distributed.check_batches([SimpleNamespace(
        name='MUTAG', batch=torch.zeros(3), node_graph=None)], None)
    distributed.check_batches([SimpleNamespace(
        name='PPI', batch=None, node_graph=torch.zeros(3))], None)
