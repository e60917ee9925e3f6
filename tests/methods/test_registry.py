"""The method registry, and the contract every registered method keeps."""
from __future__ import annotations

import inspect

import pytest
import torch

from gnncompress.core.errors import GnnCompressError, UnknownMethodError
from gnncompress.methods import (
    DistillMethod,
    StudentInputs,
    list_methods,
    method_class,
    register_method,
    resolve_method,
)
from gnncompress.methods.kd import KD
from gnncompress.methods.lsp import LSP
from gnncompress.models import ArchSpec, build_model, run_model
from gnncompress.training.train import forward_frozen


@pytest.mark.parametrize('name', ['kd', 'KD', 'Kd', 'k_d', 'k-d', 'K-D',
                                  '_kd_', 'k d'])
def test_kd_lookup_ignores_case_dash_underscore(name):
    method = resolve_method(name)

    assert type(method) is KD
    assert method_class(name) is KD


@pytest.mark.parametrize('name', ['lsp', 'LSP', 'l-s-p', 'L_S_P', 'Lsp'])
def test_lsp_lookup_ignores_case_dash_underscore(name):
    assert type(resolve_method(name)) is LSP


def test_keyword_arguments_reach_the_method():
    method = resolve_method('KD', temperature=2.5)
    assert method.temperature == 2.5

    method = resolve_method('lsp', kernel='linear', direction='ts')
    assert (method.kernel, method.direction) == ('linear', 'ts')


def test_registered_names():
    names = list_methods()

    assert {'kd', 'lsp'} <= set(names)
    assert names == sorted(names)
    for name in names:
        cls = method_class(name)
        assert issubclass(cls, DistillMethod)
        assert cls.name == name
        assert cls.paper, f'{name} names no paper'
        # a method that only feeds the student features has no loss to
        # weigh (position: tests/methods/test_position.py)
        assert cls.default_weight > 0 or cls.adds_inputs


@pytest.mark.parametrize('name', ['nope', 'kdd', 'fitnet-x', ''])
def test_unknown_name_lists_choices(name):
    with pytest.raises(UnknownMethodError) as info:
        resolve_method(name)

    message = str(info.value)
    assert f"Unknown method '{name}'" in message
    for known in list_methods():
        assert known in message
    # A user error (exit code 1), and not a KeyError that quotes its message.
    assert isinstance(info.value, GnnCompressError)
    assert not isinstance(info.value, KeyError)
    assert not message.startswith('"')


def test_registering_a_name_twice_raises():
    class Other(DistillMethod):
        pass

    # 'K_D' is the same name as 'kd' once case and '_' are ignored.
    for name in ('kd', 'K_D'):
        with pytest.raises(ValueError, match='registered twice'):
            register_method(name)(Other)
    assert method_class('kd') is KD
    assert Other.name == ''


def _instance(name: str) -> DistillMethod:
    # Methods with trainable parts may need the widths (8 hidden, 2 out).
    accepted = inspect.signature(method_class(name)).parameters
    widths = {k: 8 for k in ('student_channels', 'teacher_channels')
              if k in accepted}
    return resolve_method(name, **widths)


@pytest.mark.parametrize('prepared', [False, True])
@pytest.mark.parametrize('name', [m for m in list_methods()
                                  if not method_class(m).adds_inputs])
def test_loss_is_differentiable_scalar(name, prepared, tiny_graph):
    spec = ArchSpec('gcn', 5, 8, 2, 2)
    torch.manual_seed(0)
    teacher = build_model(spec)
    student = build_model(spec)
    method = _instance(name)
    teacher_out = forward_frozen(teacher, tiny_graph)
    student_out = run_model(student, tiny_graph.x, tiny_graph.edge_index)
    if prepared:
        method.prepare([teacher_out], student_out, tiny_graph)
    if method.reruns_student:  # as the loop hands them (adv)
        method.see_inputs(StudentInputs(tiny_graph.x, lambda x: run_model(
            student, x, tiny_graph.edge_index)))

    loss = method.loss([teacher_out], student_out, tiny_graph)

    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    # Hidden-feature methods leave the output layer without a gradient.
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
