"""Bad options, usage errors and memory exhaustion give one ``Error:`` line
and a documented exit code, never a traceback (docs/robustness.md,
"One-line errors and exit codes")."""
from __future__ import annotations

import pytest
import torch
from conftest import SAMPLE_TEACHER, SAMPLES
from typer.testing import CliRunner

from gnncompress import api
from gnncompress.cli import app
from gnncompress.core.errors import GnnCompressError, out_of_memory

runner = CliRunner()


def _one_error_line(result, code: int, *names: str) -> str:
    assert result.exit_code == code, result.output
    assert 'Traceback' not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith('Error: '), lines[0]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


BAD_OPTIONS = [
    (['--lr', '-1'], '--lr'), (['--lr', 'nan'], '--lr'),
    (['--lr', '-inf'], '--lr'), (['--lr', 'inf'], '--lr'),
    (['--weight-decay', '-1'], '--weight-decay'),
    (['--weight-decay', 'nan'], '--weight-decay'),
    (['--weight', 'nan'], '--weight'), (['--weight', '-2'], '--weight'),
    (['--label-weight', 'nan'], '--label-weight'),
    (['--seed', str(2 ** 70)], '--seed'), (['--seed', '-1'], '--seed'),
    (['--ratio', '0.5'], '--ratio'), (['--ratio', '1'], '--ratio'),
    (['--ratio', 'nan'], '--ratio'),
    (['--method', 'kd+kd'], "--method 'kd+kd' repeats kd"),
    (['--method', 'kd+'], '--method'),
    (['--out', ''], '--out'),
]


@pytest.mark.parametrize('args,name', BAD_OPTIONS,
                         ids=[' '.join(a) for a, _ in BAD_OPTIONS])
def test_bad_distill_option_is_one_line_naming_it(tmp_path, args, name):
    out = ['--out', str(tmp_path / 'o')] if '--out' not in args else []
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), *out,
                                 '--epochs', '1', '--no-progress', *args])
    line = _one_error_line(result, 1, name)
    assert ': give' in line or 'name each method once' in line
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('args,name', [
    (['--lr', 'nan'], '--lr'), (['--weight-decay', '-1'], '--weight-decay'),
    (['--seed', str(2 ** 40)], '--seed')])
def test_bad_train_teacher_option_is_one_line(tmp_path, args, name):
    result = runner.invoke(app, ['train-teacher', '--data', 'Cora',
                                 '--out', str(tmp_path / 't.pt'), *args])
    _one_error_line(result, 1, name)


def test_api_validates_like_the_cli(tmp_path):
    with pytest.raises(GnnCompressError, match='--ratio must be'):
        api.distill(SAMPLE_TEACHER, ratio=0.5, out=tmp_path / 'o')
    with pytest.raises(GnnCompressError, match='--weight must be'):
        api.distill(SAMPLE_TEACHER, weight=float('nan'), out=tmp_path / 'o')


@pytest.mark.parametrize('layer', ['99', '-5'])
def test_missing_teacher_layer_is_one_line(tmp_path, layer):
    result = runner.invoke(app, [
        'distill', str(SAMPLE_TEACHER), '--method', 'fitnet', '--epochs',
        '1', '--no-progress', '--out', str(tmp_path / 'o'),
        f'--layers-t={layer}'])
    line = _one_error_line(result, 1, '--layers-t')
    assert f'layer {layer} does not exist' in line


USAGE = [
    (['distill', str(SAMPLE_TEACHER), '--epochs', '0'], '--epochs'),
    (['distill', str(SAMPLE_TEACHER), '--layers', '0'], '--layers'),
    (['distill', str(SAMPLE_TEACHER), '--bogus'], '--bogus'),
    (['distill'], 'TEACHER'),
    (['no-such-command'], 'no-such-command'),
]


@pytest.mark.parametrize('args,name', USAGE,
                         ids=[' '.join(a[-2:]) for a, _ in USAGE])
def test_usage_error_is_one_line_with_exit_code_2(args, name):
    line = _one_error_line(runner.invoke(app, args), 2, name)
    assert '--help' in line


@pytest.mark.parametrize('error', [
    torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20 GiB'),
    MemoryError(),
    RuntimeError('[enforce fail at alloc_cpu.cpp:117] data. '
                 'DefaultCPUAllocator: not enough memory: you tried to '
                 'allocate 5732000000000 bytes.'),
], ids=['cuda', 'python', 'cpu-allocator'])
def test_out_of_memory_is_one_line_naming_the_fix(tmp_path, monkeypatch,
                                                  error):
    def exhausted(*args, **kwargs):
        raise error
    monkeypatch.setattr(api, 'distill', exhausted)
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER),
                                 '--out', str(tmp_path / 'o')])
    _one_error_line(result, 1, 'Ran out of memory', '--hidden',
                    '--batch-size')


def test_other_runtime_errors_are_not_taken_for_memory():
    assert out_of_memory(RuntimeError('shape mismatch')) is None
    assert out_of_memory(ValueError('out of memory')) is None


def _protocol5(path):
    import pickle
    with open(path, 'wb') as f:
        pickle.dump({'a': 1}, f, protocol=5)


def _qint8(path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        q = torch.quantize_per_tensor(torch.ones(2, 2), 0.1, 0, torch.qint8)
    torch.save({'convs.0.lin.weight': q}, path)


@pytest.mark.parametrize('write', [_protocol5, _qint8],
                         ids=['protocol-5', 'qint8'])
def test_no_torch_warning_before_the_error(tmp_path, write, recwarn):
    path = tmp_path / 'bad.pt'
    write(path)
    result = runner.invoke(app, ['inspect', str(path)])
    _one_error_line(result, 1, str(path))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)
                and 'torch' in str(w.filename)]


def _teacher_with_card(tmp_path, text: bytes):
    import shutil
    teacher = tmp_path / 't.pt'
    shutil.copy(SAMPLE_TEACHER, teacher)
    teacher.with_suffix('.json').write_bytes(text)
    return teacher


def test_inspect_card_without_accuracy(tmp_path):
    import json
    card = json.loads(SAMPLE_TEACHER.with_suffix('.json').read_text())
    del card['test_accuracy']
    teacher = _teacher_with_card(tmp_path, json.dumps(card).encode())
    result = runner.invoke(app, ['inspect', str(teacher)])
    assert result.exit_code == 0, result.output
    assert 'test accuracy not recorded' in result.output


@pytest.mark.parametrize('field,value,must', [
    ('test_accuracy', 'high', "int or float (got 'high')"),
    ('test_accuracy', [1], 'int or float (got [1])'),
    ('test_accuracy', True, 'int or float (got True)'),
    ('spec', [1, 2], 'dict (got [1, 2])'),
    ('data', 5, 'str or null (got 5)'),
    ('data_is_file', 'yes', "bool (got 'yes')"),
    ('classes', '0-4', "list (got '0-4')"),
])
def test_malformed_card_field_is_one_line(tmp_path, field, value, must):
    import json
    card = json.loads(SAMPLE_TEACHER.with_suffix('.json').read_text())
    card[field] = value
    teacher = _teacher_with_card(tmp_path, json.dumps(card).encode())
    line = _one_error_line(runner.invoke(app, ['inspect', str(teacher)]), 1)
    assert line == (f"Error: Teacher card {teacher.with_suffix('.json')}: "
                    f"'{field}' must be {must}: fix it, or move the card "
                    f'away to load t.pt without it')


@pytest.mark.parametrize('split,field,must', [
    ('glnn', 'split', "dict (got 'glnn')"),
    ({'kind': 'glnn', 'seed': 'abc'}, 'split.seed', "int (got 'abc')"),
    ({'kind': 'glnn', 'seed': True}, 'split.seed', 'int (got True)'),
    ({'kind': 3, 'seed': 0}, 'split.kind', 'str (got 3)'),
])
def test_malformed_card_split_is_one_line(tmp_path, split, field, must):
    """A glnn split's seed on the card picks the student's split: one that
    is not a whole number is refused, not replaced by the run's seed."""
    import json
    card = json.loads(SAMPLE_TEACHER.with_suffix('.json').read_text())
    card['split'] = split
    teacher = _teacher_with_card(tmp_path, json.dumps(card).encode())
    line = _one_error_line(runner.invoke(app, ['inspect', str(teacher)]), 1)
    assert f"'{field}' must be {must}: fix it" in line


@pytest.mark.parametrize('text,reason', [
    (b'\xff\xfe{"kind": 1}', 'not UTF-8'),
    (b'[' * 100_000 + b']' * 100_000, 'nested too deeply'),
    (b'{"kind": "gnncompress.teacher-card", ', 'not valid JSON'),
], ids=['not-utf8', 'deeply-nested', 'truncated'])
def test_unreadable_card_is_one_line(tmp_path, text, reason):
    teacher = _teacher_with_card(tmp_path, text)
    line = _one_error_line(runner.invoke(app, ['inspect', str(teacher)]), 1)
    assert line == (f"Error: Teacher card {teacher.with_suffix('.json')} "
                    f'cannot be read ({reason}): fix it, or move it away to '
                    f'load t.pt without a card')


def test_json_of_another_tool_beside_a_checkpoint_is_not_a_card(tmp_path):
    teacher = _teacher_with_card(tmp_path, b'{"model_type": "gat"}')
    result = runner.invoke(app, ['inspect', str(teacher)])
    assert result.exit_code == 0, result.output
    assert 'teacher card' not in result.output


@pytest.mark.parametrize('name', ['folder.onnx', 'a' * 300 + '.onnx'],
                         ids=['folder', 'long-name'])
def test_export_out_that_cannot_be_a_file(tmp_path, name):
    out = tmp_path / name
    if name == 'folder.onnx':
        out.mkdir()
    result = runner.invoke(app, ['export', str(SAMPLE_TEACHER),
                                 '--out', str(out)])
    _one_error_line(result, 1, '--out')


# --out and checkpoint paths ---------------------------------------------------

FOLDER = 'give a folder, e.g. --out gnncompress-out/run'
EMPTY_OUT = [
    (['train-teacher', '--data', 'Cora'], 'give a file, e.g. --out teacher.pt'),
    (['export', str(SAMPLE_TEACHER)], 'give a file, e.g. --out student.onnx'),
    (['bench', str(SAMPLE_TEACHER), '--graph-size', '50:100:1433'], FOLDER),
    (['cotrain', '--data', 'Cora'], FOLDER),
    (['amalgamate', str(SAMPLE_TEACHER), str(SAMPLE_TEACHER)], FOLDER),
    (['distill', str(SAMPLE_TEACHER)], FOLDER),
]


@pytest.mark.parametrize('args,fix', EMPTY_OUT, ids=[a[0] for a, _ in
                                                     EMPTY_OUT])
def test_empty_out_on_every_command(tmp_path, monkeypatch, args, fix):
    # Path('') is the current folder: bench, cotrain and amalgamate used
    # to publish their files by swapping it out from under the shell.
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(runner.invoke(app, [*args, '--out', '']), 1)
    assert line == f'Error: --out is empty: {fix}'
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('out,inside', [('.', 'run'), ('..', '../run')])
def test_out_that_holds_the_current_folder_is_refused(tmp_path, monkeypatch,
                                                      out, inside):
    (tmp_path / 'here').mkdir()
    monkeypatch.chdir(tmp_path / 'here')
    result = runner.invoke(app, ['bench', str(SAMPLE_TEACHER), '--graph-size',
                                 '50:100:1433', '--out', out])
    line = _one_error_line(result, 1)
    assert line == (f'Error: --out {out} is the current folder or holds it, '
                    f'which a run replaces whole: give a folder inside it, '
                    f'e.g. --out {inside}')
    assert [p.name for p in tmp_path.rglob('*')] == ['here']


@pytest.mark.parametrize('command', ['distill', 'bench'])
@pytest.mark.parametrize('kind', ['long-name', 'long-path'])
def test_out_folder_longer_than_the_file_system_allows(tmp_path, command,
                                                       kind):
    out = tmp_path / ('a' * 300) if kind == 'long-name' else \
        tmp_path.joinpath(*['b' * 200] * 25)
    extra = ['--graph-size', '50:100:1433'] if command == 'bench' else []
    result = runner.invoke(app, [command, str(SAMPLE_TEACHER), *extra,
                                 '--out', str(out)])
    line = _one_error_line(result, 1)
    assert line == ('Error: --out has a name of 300 characters, longer than '
                    'the file system allows: give a shorter name'
                    if kind == 'long-name' else
                    'Error: --out is a path of over 4,000 bytes: give a '
                    'shorter path')


@pytest.mark.parametrize('kind', ['long-name', 'long-path', 'proc-mem'])
def test_unreadable_checkpoint_path_is_one_line(tmp_path, kind):
    import os
    if kind == 'proc-mem':
        path = tmp_path / 'mem.pt'
        os.symlink('/proc/self/mem', path)  # reading it: Errno 5
        reason, shown = 'Input/output error', str(path)
    else:
        path = tmp_path / (('a' * 300 + '.pt') if kind == 'long-name' else
                           '/'.join(['b' * 200] * 25) + '/t.pt')
        reason = 'File name too long'
        shown = f'{str(path)[:60]}...{str(path)[-40:]}'
    result = runner.invoke(app, ['inspect', str(path)])
    line = _one_error_line(result, 1)
    assert line == (f'Error: Checkpoint {shown} cannot be read ({reason}): '
                    f'give the path of a readable checkpoint file')


# Weights and specs of the wrong kind ----------------------------------------

def _weights_as(tmp_path, change):
    import warnings
    state = torch.load(SAMPLE_TEACHER, weights_only=True)
    with warnings.catch_warnings():  # sparse CSR is "in beta"
        warnings.simplefilter('ignore')
        state['convs.0.lin.weight'] = change(state['convs.0.lin.weight'])
    path = tmp_path / 't.pt'
    torch.save(state, path)
    return path


@pytest.mark.parametrize('change,what', [
    (lambda t: t.to_sparse(), 'is a sparse_coo tensor, which no model weight '
     'is: save the dense weights (tensor.to_dense())'),
    (lambda t: t.to_sparse_csr(), 'is a sparse_csr tensor, which no model '
     'weight is: save the dense weights (tensor.to_dense())'),
    (lambda t: torch.empty(t.shape, device='meta'), 'is a meta tensor (a '
     'shape without values): save the model after its weights are '
     'initialised or loaded'),
], ids=['coo', 'csr', 'meta'])
def test_sparse_or_meta_weights_are_one_line(tmp_path, change, what):
    path = _weights_as(tmp_path, change)
    line = _one_error_line(runner.invoke(app, ['inspect', str(path)]), 1)
    assert line == f"Error: Tensor 'convs.0.lin.weight' of {path} {what}"


def _dgcnn_with_spec(tmp_path, change):
    import json

    from safetensors.torch import save_file

    from gnncompress.checkpoints.reading import SPEC_KEY
    from gnncompress.models import ArchSpec, build_model
    spec = ArchSpec('dgcnn', 3, 8, 2, 4, widths=[8, 8], k=4,
                    emb_channels=16, head=[8])
    state = {k: v.contiguous() for k, v in build_model(spec).state_dict()
             .items()}
    path = tmp_path / 'd.safetensors'
    save_file(state, str(path), metadata={
        SPEC_KEY: json.dumps({**spec.to_dict(), **change})})
    return path


DGCNN_SPECS = [
    ({'widths': ['a', 'b']}, 'widths', "a list of int or null (got ['a', "
     "'b'])"),
    ({'widths': 5}, 'widths', 'a list of int or null (got 5)'),
    ({'widths': [8.5, 8]}, 'widths', 'a list of int or null (got [8.5, 8])'),
    ({'head': [None]}, 'head', 'a list of int or null (got [None])'),
    ({'k': 'many'}, 'k', "int or null (got 'many')"),
    ({'emb_channels': 'x'}, 'emb_channels', "int or null (got 'x')"),
    ({'readout': 3}, 'readout', 'str or null (got 3)'),
    ({'layers': 5}, 'layers', 'a list of dict or null (got 5)'),
]


@pytest.mark.parametrize('change,field,must', DGCNN_SPECS,
                         ids=[str(c) for c, _, _ in DGCNN_SPECS])
def test_dgcnn_spec_of_the_wrong_type_is_one_line(tmp_path, change, field,
                                                  must):
    path = _dgcnn_with_spec(tmp_path, change)
    line = _one_error_line(runner.invoke(app, ['inspect', str(path)]), 1)
    assert line == (f"Error: The architecture field '{field}' of {path} "
                    f'must be {must}: fix it on the teacher card, the '
                    f'metadata or the command line')


@pytest.mark.parametrize('change,message', [
    ({'widths': ['a', 'b']}, "DGCNN 'widths' must hold whole numbers "
     "(got 'a')"),
    ({'k': float('inf')}, "DGCNN 'k' must hold whole numbers (got inf)"),
    ({'head': [None]}, "DGCNN 'head' must hold whole numbers (got None)"),
    ({'widths': 5}, 'A DGCNN needs one EdgeConv width per layer: got '
     'widths 5 for 2 layers'),
])
def test_dgcnn_archspec_refuses_wrong_types(change, message):
    from gnncompress.core.errors import ArchitectureError
    from gnncompress.models import ArchSpec
    with pytest.raises(ArchitectureError) as info:
        ArchSpec('dgcnn', 3, 8, 2, 4, **{'widths': [8, 8], **change})
    assert str(info.value).startswith(message)


# bench: ONNX files bench cannot feed or score, rows that all fail -----------

def _onnx(path, inputs, output_type, node):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [node], 'g',
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info('y', output_type, ['n', 4])])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, TensorProto


def _signature_case(tmp_path, case):
    from onnx import TensorProto as T
    from onnx import helper
    x = ('x', T.FLOAT, ['n', 4])
    edges = ('edge_index', T.INT64, [2, 'e'])
    cast = helper.make_node
    cases = {
        'bool-output': ([x, edges], T.BOOL, cast('Cast', ['x'], ['y'],
                                                  to=T.BOOL)),
        'string-output': ([x, edges], T.STRING, cast('Cast', ['x'], ['y'],
                                                      to=T.STRING)),
        'int64-x': ([('x', T.INT64, ['n', 4]), edges], T.FLOAT,
                    cast('Cast', ['x'], ['y'], to=T.FLOAT)),
        '3d-x': ([('x', T.FLOAT, ['a', 'n', 4]), edges], T.FLOAT,
                 cast('Identity', ['x'], ['y'])),
        'other-names': ([('feat', T.FLOAT, ['n', 4])], T.FLOAT,
                        cast('Identity', ['feat'], ['y'])),
    }
    return _onnx(tmp_path / f'{case}.onnx', *cases[case])[0]


SIGNATURES = {
    'bool-output': 'has bool output, not float logits',
    'string-output': 'has string output, not float logits',
    'int64-x': "takes 'x' as a 2-d int64 tensor, but bench feeds a 2-d "
               'float one',
    '3d-x': "takes 'x' as a 3-d float tensor, but bench feeds a 2-d float "
            'one',
    'other-names': "has no input named 'x' (inputs: feat)",
}


@pytest.mark.parametrize('case', list(SIGNATURES))
def test_bench_refuses_onnx_it_cannot_feed_or_score(tmp_path, case):
    path = _signature_case(tmp_path, case)
    result = runner.invoke(app, ['bench', str(path), '--graph-size',
                                 '50:100:4', '--out', str(tmp_path / 'b')])
    line = _one_error_line(result, 1)
    assert line == (f'Error: {path} {SIGNATURES[case]}: bench takes the ONNX '
                    f'files gnncompress exports')
    assert not (tmp_path / 'b').exists()


def test_bench_where_every_row_fails_is_one_line(tmp_path):
    from tests.checkpoints.test_bounded_inputs import _loop_onnx
    endless = _loop_onnx(tmp_path / 'endless.onnx', 10 ** 12)
    result = runner.invoke(app, [
        'bench', str(endless), '--graph-size', '50:100:4', '--runtimes',
        'onnxruntime', '--threads', '1,2', '--warmup', '0', '--repeat', '1',
        '--row-budget-s', '0.2', '--out', str(tmp_path / 'b')])
    assert result.exit_code == 1 and 'Traceback' not in result.output
    *progress, line = result.output.strip().splitlines()
    assert all(p.startswith('measuring endless.onnx') for p in progress)
    assert line == ('Error: No bench row ran, nothing was written: '
                    'endless.onnx onnxruntime cpu failed (stopped: over its '
                    'time budget of 0.2 s (--row-budget-s)) (and 1 more '
                    'failed row): bench models that take this graph, or try '
                    'other --runtimes')
    assert not (tmp_path / 'b').exists()


# Sparse tensors in a --data file --------------------------------------------

def _graph_file(tmp_path, x_layout=None, sparse_edges=False):
    from torch_geometric.data import Data
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 5, generator=gen)
    x[x < 0.6] = 0
    edge_index = torch.randint(0, 20, (2, 60), generator=gen)
    data = Data(x=x if x_layout is None else x_layout(x),
                edge_index=edge_index.to_sparse() if sparse_edges
                else edge_index, y=torch.arange(20) % 3)
    path = tmp_path / 'g.pt'
    torch.save(data, path)
    return path, x


@pytest.mark.parametrize('layout', [lambda x: x.to_sparse(),
                                    lambda x: x.to_sparse_csr()],
                         ids=['coo', 'csr'])
def test_sparse_features_in_a_data_file_are_densified(tmp_path, layout):
    import warnings

    from gnncompress.tasks.datasets import load_graph
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # sparse CSR is "in beta"
        path, x = _graph_file(tmp_path, layout)
    graph = load_graph(path)
    assert graph.x.layout == torch.strided
    assert torch.equal(graph.x, x)


def test_sparse_edge_index_in_a_data_file_is_one_line(tmp_path):
    path, _ = _graph_file(tmp_path, sparse_edges=True)
    result = runner.invoke(app, ['train-teacher', '--data', str(path),
                                 '--out', str(tmp_path / 't.pt')])
    line = _one_error_line(result, 1)
    assert line == ("Error: Dataset 'g': 'edge_index' is a sparse_coo "
                    'tensor: save it dense (.to_dense())')


# Sizes that cannot fit, refused before anything is allocated ---------------

@pytest.mark.parametrize('args,what', [
    (['distill', str(SAMPLE_TEACHER), '--hidden', '1000000000'],
     'A student of --hidden 1000000000 needs at least 66.4 TB of memory'),
    (['bench', str(SAMPLE_TEACHER), '--graph-size', '1000000000000:10:1433'],
     '--graph-size 1000000000000:10:1433 needs at least 5,743 TB of memory'),
], ids=['hidden', 'graph-size'])
def test_sizes_beyond_memory_are_refused_up_front(tmp_path, monkeypatch,
                                                  args, what):
    from gnncompress.core import options
    # An allocation would fail with "Ran out of memory" instead.
    monkeypatch.setattr(options, 'memory_bytes', lambda: 64 * 10 ** 9)
    result = runner.invoke(app, [*args, '--data-root', str(SAMPLE_TEACHER
                                                           .parent),
                                 '--out', str(tmp_path / 'o')])
    line = _one_error_line(result, 1)
    fix = 'give a smaller graph' if 'graph-size' in what else \
        'give a smaller --hidden or fewer --layers'
    assert line == f'Error: {what}, more than the 64 GB of this machine: ' \
        f'{fix}'
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('layers', [[{}], [{'x': 1}]], ids=['empty', 'no-kind'])
def test_sequence_layers_without_their_fields_are_one_line(tmp_path, layers):
    import json

    from safetensors.torch import save_file

    from gnncompress.checkpoints.reading import SPEC_KEY
    path = tmp_path / 's.safetensors'
    save_file({'a.weight': torch.ones(4, 3)}, str(path), metadata={
        SPEC_KEY: json.dumps({'arch': 'sequence', 'in_channels': 3,
                              'hidden_channels': 4, 'num_layers': 1,
                              'out_channels': 4, 'layers': layers})})
    line = _one_error_line(runner.invoke(app, ['inspect', str(path)]), 1)
    assert line == (f"Error: The architecture of {path} (sequence) cannot be "
                    f"built (KeyError: 'name'): fix the teacher card, the "
                    f'metadata or the command line options')


# Found by feeding every command bad values (each was a traceback, or
# accepted): method options of the wrong type, a part's weight, the
# training options of cotrain and amalgamate, architecture values, bench's
# gates and degree.
BAD_METHOD_OPTIONS = [
    (['--method', 'kd', '-o', 'temperature=abc'], 'temperature', 'number'),
    (['--method', 'kd', '-o', 'temperature=nan'], 'temperature', 'number'),
    (['--method', 'fitnet', '-o', 'teacher_layers=abc'], 'teacher_layers',
     'list of layer indices'),
    (['--method', 'fitnet', '-o', 'teacher_layers=1.5'], 'teacher_layers',
     'list of layer indices'),
    (['--method', 'kd+lsp', '-o', 'lsp.weight=abc'], 'lsp.weight',
     'finite number, 0 or more'),
    (['--method', 'kd+lsp', '-o', 'lsp.weight=-1'], 'lsp.weight',
     'finite number, 0 or more'),
    (['--method', 'adv', '-o', 'steps=5.0'], 'steps', 'whole number'),
    (['--method', 'rsd', '-o', 'sample=true'], 'sample', 'whole number'),
]


@pytest.mark.parametrize('args,name,takes', BAD_METHOD_OPTIONS,
                         ids=[' '.join(a) for a, _, _ in BAD_METHOD_OPTIONS])
def test_method_option_of_the_wrong_type_is_one_line(tmp_path, args, name,
                                                     takes):
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--out',
                                 str(tmp_path / 'o'), '--epochs', '1',
                                 '--no-progress', *args])
    line = _one_error_line(result, 1, name, takes)
    assert 'give e.g. -o' in line
    assert not (tmp_path / 'o').exists()


def test_a_single_layer_index_is_a_list_of_one():
    from gnncompress.workflows.students import build_method

    assert build_method('fitnet', {'teacher_layers': 1}).pairs == [(1, -1)]
    assert build_method('mutual', {'adaptive': True}).adaptive is True


def test_python_numbers_and_sequences_of_any_kind_are_taken():
    import numpy as np

    from gnncompress.workflows.students import build_method

    method = build_method('fitnet', {'teacher_layers': range(2),
                                     'student_layers': np.array([0, 1])})
    assert method.pairs == [(0, 0), (1, 1)]
    assert all(type(i) is int for pair in method.pairs for i in pair)
    assert build_method('kd', {'temperature': np.float32(2.0)}) \
        .temperature == 2.0
    assert build_method('kd', {'temperature': torch.tensor(3.0)}) \
        .temperature == 3.0
    assert build_method('kd+lsp', {'lsp.weight': np.float32(1)}) \
        .weights[1] == 1.0
    with pytest.raises(GnnCompressError, match='Option kd.temperature of '
                       "method 'kd' takes a finite number .* -o "
                       'kd.temperature=4.0'):
        build_method('kd+lsp', {'kd.temperature': 'abc'})
    with pytest.raises(GnnCompressError, match='takes a finite number'):
        build_method('kd', {'temperature': torch.tensor([1.0, 2.0])})


@pytest.mark.parametrize('command', ['cotrain', 'amalgamate'])
@pytest.mark.parametrize('args,name', [
    (['--lr', 'nan'], '--lr'), (['--lr', '-1'], '--lr'),
    (['--weight-decay', '-1'], '--weight-decay')])
def test_cotrain_and_amalgamate_check_training_options(tmp_path, command,
                                                       args, name):
    head = ['cotrain', '--data', 'Cora'] if command == 'cotrain' else \
        ['amalgamate', str(SAMPLE_TEACHER), str(SAMPLE_TEACHER)]
    result = runner.invoke(app, [*head, '--epochs', '1', '--out',
                                 str(tmp_path / 'o'), *args])
    _one_error_line(result, 1, name, ': give')
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('args,name', [
    (['cotrain', '--data', 'Cora', '--weight', '-1'], '--weight'),
    (['amalgamate', str(SAMPLE_TEACHER), str(SAMPLE_TEACHER), '--lambda',
      'nan'], '--lambda')])
def test_online_and_topology_weights_are_checked(tmp_path, args, name):
    result = runner.invoke(app, [*args, '--epochs', '1', '--out',
                                 str(tmp_path / 'o')])
    _one_error_line(result, 1, name)


@pytest.mark.parametrize('args,message', [
    (['--jk', 'bogus'], "Unknown jumping knowledge 'bogus'"),
    (['--dropout', '2'], 'dropout is a probability'),
    (['--dropout', '-0.5'], 'dropout is a probability'),
    (['--dropout', 'nan'], 'dropout is a probability')])
def test_bad_architecture_values_are_one_line(tmp_path, args, message):
    result = runner.invoke(app, ['train-teacher', '--data', 'Cora',
                                 '--data-root', str(SAMPLES), '--epochs',
                                 '1', '--out', str(tmp_path / 't.pt'),
                                 *args])
    _one_error_line(result, 1, message)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('args,flag', [
    (['--degree', '-1'], '--degree'), (['--degree', 'nan'], '--degree'),
    (['--max-latency-ms', '-1'], '--max-latency-ms'),
    (['--max-latency-ms', '0'], '--max-latency-ms'),
    (['--min-speedup', 'nan'], '--min-speedup'),
    (['--max-accuracy-drop', 'nan'], '--max-accuracy-drop'),
    (['--max-accuracy-drop', 'inf'], '--max-accuracy-drop')])
def test_bench_gates_and_degree_are_checked(tmp_path, args, flag):
    gate = [] if 'speedup' not in flag and 'accuracy' not in flag else \
        ['--baseline', str(SAMPLE_TEACHER)]
    result = runner.invoke(app, ['bench', str(SAMPLE_TEACHER), '--data',
                                 'Cora', '--out', str(tmp_path / 'b'),
                                 *gate, *args])
    _one_error_line(result, 1, flag, ': give e.g.')
    assert not (tmp_path / 'b').exists()


def test_out_file_in_a_folder_that_cannot_be_entered(tmp_path, monkeypatch):
    from pathlib import Path

    def denied(self):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr(Path, 'is_dir', denied)
    with pytest.raises(GnnCompressError, match='cannot be reached '
                       r'\(Permission denied\)'):
        from gnncompress.core.options import check_out_file
        check_out_file(tmp_path / 'closed' / 'x.onnx')


def test_an_error_quotes_values_as_given(tmp_path):
    # ':abc:' was printed as an emoji
    result = runner.invoke(app, ['bench', str(SAMPLE_TEACHER),
                                 '--graph-size', '10:abc:5', '--out',
                                 str(tmp_path / 'b')])
    _one_error_line(result, 1, "'10:abc:5'")


@pytest.mark.parametrize('args', [['--sizes', '1e12'],
                                  ['--sizes', '1000', '--degree', '1e9']])
def test_bench_sizes_beyond_memory_are_refused_before_any_row(tmp_path,
                                                              args):
    # They ran the main rows, then ran out of memory with a fix (--hidden,
    # --batch-size) that bench does not have.
    result = runner.invoke(app, ['bench', str(SAMPLE_TEACHER), '--data',
                                 'Cora', '--data-root', str(SAMPLES),
                                 '--out', str(tmp_path / 'b'), *args])
    _one_error_line(result, 1, '--sizes', 'give smaller --sizes')
    assert not (tmp_path / 'b').exists()


def test_datasets_data_root_naming_a_file_is_one_line(tmp_path):
    file = tmp_path / 'notes.txt'
    file.write_text('not a folder')
    result = runner.invoke(app, ['datasets', '--data-root', str(file)])
    line = _one_error_line(result, 1, '--data-root', 'is a file')
    assert 'pass the folder' in line


@pytest.mark.parametrize('command', [
    ['distill', str(SAMPLE_TEACHER)],
    ['cotrain', '--data', 'Cora', '--data-root', str(SAMPLES)],
    ['amalgamate', str(SAMPLE_TEACHER), str(SAMPLE_TEACHER)],
], ids=['distill', 'cotrain', 'amalgamate'])
def test_checkpoint_dir_without_checkpoint_every_is_one_line(tmp_path,
                                                             command):
    """Alone, --checkpoint-dir would save nothing: refused before anything
    is loaded or written."""
    result = runner.invoke(app, [*command, '--checkpoint-dir',
                                 str(tmp_path / 'ck'), '--out',
                                 str(tmp_path / 'o'), '--no-progress'])
    line = _one_error_line(result, 1, '--checkpoint-dir',
                           '--checkpoint-every N')
    assert 'drop --checkpoint-dir' in line
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'ck').exists()


def test_teacher_args_without_teacher_class_is_one_line(tmp_path):
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER),
                                 '--teacher-args', 'hidden=16', '--out',
                                 str(tmp_path / 'o'), '--no-progress'])
    line = _one_error_line(result, 1, '--teacher-args', '--teacher-class')
    assert 'drop --teacher-args' in line
    assert not (tmp_path / 'o').exists()


def test_cotrain_unknown_readout_on_a_node_task_is_one_line(tmp_path):
    """A node task does not use --readout, but a value that no task could
    use is still refused rather than ignored."""
    result = runner.invoke(app, ['cotrain', '--data', 'Cora', '--data-root',
                                 str(SAMPLES), '--readout', 'bogus', '--out',
                                 str(tmp_path / 'o'), '--no-progress'])
    line = _one_error_line(result, 1, "--readout 'bogus'")
    assert 'choose from mean, sum, max' in line


@pytest.mark.parametrize('args, name', [
    (['--jk', 'bogus'], "jumping knowledge 'bogus'"),
    (['--norm', 'bogus'], "norm 'bogus'"),
    (['--arch', 'sage', '--aggr', 'bogus'], "aggregation 'bogus'"),
    (['--dropout', '2'], 'dropout'),
    (['--readout', 'bogus'], "readout 'bogus'"),
])
def test_train_teacher_checks_the_architecture_before_the_data(tmp_path,
                                                               args, name):
    """The architecture error comes first: the data root does not exist,
    so reading the data would have failed with another message."""
    result = runner.invoke(app, ['train-teacher', '--data', 'Cora',
                                 '--data-root', str(tmp_path / 'none'),
                                 '--out', str(tmp_path / 't.pt'), *args])
    _one_error_line(result, 1, name)


def test_train_teacher_on_a_node_task_still_ignores_a_valid_readout(
        tmp_path):
    """The early check does not apply a readout's rules (no jk, a
    message-passing model) to a node dataset, which never reads it."""
    result = runner.invoke(app, ['train-teacher', '--data', 'Cora',
                                 '--data-root', str(SAMPLES), '--arch',
                                 'mlp', '--readout', 'mean', '--hidden',
                                 '8', '--layers', '2', '--epochs', '1',
                                 '--out', str(tmp_path / 't.pt'),
                                 '--no-progress'])
    assert result.exit_code == 0, result.output
    assert (tmp_path / 't.pt').exists()


def test_explicit_auto_with_checkpoint_dir_says_to_pick_a_method(tmp_path):
    """--method auto keeps no checkpoints: the message says to drop the
    option or pick a method, not to add --checkpoint-every (which auto
    would refuse next)."""
    result = runner.invoke(app, ['distill', str(SAMPLE_TEACHER), '--method',
                                 'auto', '--checkpoint-dir',
                                 str(tmp_path / 'ck'), '--out',
                                 str(tmp_path / 'o'), '--no-progress'])
    line = _one_error_line(result, 1, 'drop --checkpoint-dir')
    assert 'pick a method' in line
