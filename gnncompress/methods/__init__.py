"""Distillation methods, one file each, registered by name. Every module in
this package is imported here, so adding a method is adding its file."""
import importlib
import pkgutil

from gnncompress.methods.base import (
    DistillMethod,
    StudentInputs,
    canonical_name,
    hidden_layer,
    layer_pairs,
    list_methods,
    method_class,
    register_method,
    resolve_method,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != 'base':
        importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['DistillMethod', 'StudentInputs', 'canonical_name',
           'hidden_layer', 'layer_pairs', 'list_methods', 'method_class',
           'register_method', 'resolve_method']
