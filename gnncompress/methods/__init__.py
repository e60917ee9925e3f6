"""Distillation methods, one file each, registered by name."""
from gnncompress.methods.base import (DistillMethod, list_methods,
                                      method_class, register_method,
                                      resolve_method)
from gnncompress.methods.kd import KD
from gnncompress.methods.lsp import LSP

__all__ = ['KD', 'LSP', 'DistillMethod', 'list_methods', 'method_class',
           'register_method', 'resolve_method']
