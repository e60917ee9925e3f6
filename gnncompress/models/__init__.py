from gnncompress.models.build import (
                                      build_model,
                                      count_parameters,
                                      count_spec_parameters,
                                      run_model,
)
from gnncompress.models.output import ModelOutput
from gnncompress.models.spec import ARCHS, ArchSpec

__all__ = ['ARCHS', 'ArchSpec', 'ModelOutput', 'build_model',
           'count_parameters', 'count_spec_parameters', 'run_model']
