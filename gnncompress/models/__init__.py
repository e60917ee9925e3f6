from gnncompress.models.build import (
    build_model,
    count_parameters,
    count_spec_parameters,
    forward_inputs,
    forward_logits,
    run_model,
)
from gnncompress.models.output import ModelOutput
from gnncompress.models.spec import (
    ARCHS,
    BASIC_GNN_ARCHS,
    GRAPHLESS,
    ArchSpec,
)

__all__ = ['ARCHS', 'BASIC_GNN_ARCHS', 'GRAPHLESS', 'ArchSpec', 'ModelOutput',
           'build_model', 'count_parameters', 'count_spec_parameters',
           'forward_inputs', 'forward_logits', 'run_model']
