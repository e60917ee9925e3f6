"""The torch-free catalogue the help text reads (gnncompress/core/catalogue.py)
agrees with the registries that do the work; each command lists its own
methods, each with one line."""
from __future__ import annotations

from typer.testing import CliRunner

from gnncompress.cli import app
from gnncompress.core import catalogue
from gnncompress.methods import list_methods, method_class
from gnncompress.models import spec
from gnncompress.models.slimmable import SlimmableSpec
from gnncompress.tasks import datasets as data
from gnncompress.workflows import cotrain as online

runner = CliRunner()


def test_architectures_are_the_model_registry():
    assert spec.ARCHS == catalogue.ARCHS
    assert set(spec.ALL_ARCHS) == {*catalogue.STUDENT_ARCHS, spec.SEQUENCE}
    for arch in catalogue.SLIMMABLE_ARCHS:
        SlimmableSpec(arch=arch, in_channels=[4], hidden_channels=8,
                      num_layers=2, out_channels=[3])
    assert set(catalogue.ARCH_NAMES) == set(catalogue.STUDENT_ARCHS)
    assert set(catalogue.AMALGAMATE_TEACHERS) <= set(catalogue.ARCHS)


def test_methods_are_the_method_registry():
    online_registered = {entry[0] for entry in online.METHODS.values()
                         if entry is not None}
    assert set(list_methods()) == \
        set(catalogue.DISTILL_METHODS) | online_registered
    assert list(online.METHODS) == list(catalogue.COTRAIN_METHODS)
    for name in catalogue.DISTILL_METHODS:
        summary = method_class(name).summary
        assert summary and '\n' not in summary, name


def test_dataset_names_are_the_loaders():
    assert data.dataset_names() == catalogue.dataset_names()
    assert [v[1] for v in data.NODE_DATASETS.values()] == \
        list(catalogue.NODE_DATASETS)


def test_amalgamate_help_lists_every_teacher_architecture():
    out = ' '.join(runner.invoke(app, ['amalgamate', '--help'],
                                 env={'COLUMNS': '200'}).output.split())
    assert 'any mix of GCN, GAT, GATv2, GraphSAGE, GIN or GCNII' in out


def test_distill_list_gives_every_method_one_line():
    out = runner.invoke(app, ['distill', '--list-methods'],
                        env={'COLUMNS': '300'}).output
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in list_methods()}
    assert sorted(rows) == sorted(catalogue.DISTILL_METHODS)
    assert 'contrastive' in rows['g-crd']
    assert 'global structure' in rows['gsp']


def test_cotrain_lists_its_own_methods():
    result = runner.invoke(app, ['cotrain', '--list-methods'])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == \
        ['alignahead', 'oc', 'mutual', 'self']
    assert all(len(line.split()) > 3 for line in lines)


def test_distill_refuses_a_cotrain_method(tmp_path):
    result = runner.invoke(app, ['distill', str(tmp_path / 't.pt'),
                                 '--method', 'kd+alignahead'])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "'alignahead' is a cotrain method" in lines[0]
    assert 'gnncompress cotrain --method alignahead' in lines[0]


def test_dataset_table_finds_what_is_there(tmp_path):
    """The Python side of `gnncompress datasets`: a dataset counts as there
    when its raw folder exists in one of its places (the second place of
    ModelNet10 here), never for a generated one."""
    (tmp_path / 'ModelNet10' / 'raw').mkdir(parents=True)
    rows = {e.name: e for e in catalogue.dataset_table(tmp_path)}
    assert list(rows) == catalogue.dataset_names()
    assert (rows['ModelNet10'].here, rows['ModelNet10'].folder) == \
        ('yes', tmp_path / 'ModelNet10')
    assert (rows['Cora'].here, rows['Cora'].folder) == \
        ('no', tmp_path / 'Cora')
    assert rows['Cora'].task == 'node classification'
    assert (rows['SyntheticPPI'].here, rows['SyntheticPPI'].folder) == \
        ('generated', None)
