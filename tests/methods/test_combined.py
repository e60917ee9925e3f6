import pytest
import torch

from gnncompress import api
from gnncompress.core.errors import GnnCompressError
from gnncompress.methods.combined import Combined
from gnncompress.methods.kd import KD
from gnncompress.methods.lsp import LSP
from gnncompress.models import ModelOutput


def _outputs(tiny_graph):
    gen = torch.Generator().manual_seed(0)
    n = tiny_graph.num_nodes
    teacher = ModelOutput(torch.randn(n, 2, generator=gen),
                          [torch.randn(n, 4, generator=gen)])
    student = ModelOutput(torch.randn(n, 2, generator=gen),
                          [torch.randn(n, 3, generator=gen)])
    return teacher, student


def test_weighted_sum_of_parts(tiny_graph):
    teacher, student = _outputs(tiny_graph)
    kd, lsp = KD(), LSP(kernel='linear')
    combined = Combined([kd, lsp], [0.5, 7.0])

    loss = combined.loss([teacher], student, tiny_graph)

    expected = 0.5 * kd.loss([teacher], student, tiny_graph) + \
        7.0 * lsp.loss([teacher], student, tiny_graph)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert combined.name == 'kd+lsp'
    assert combined.requires == {'logits', 'hiddens'}


def test_build_method_routes_options():
    method = api.build_method('kd+lsp', {'kd.temperature': 2.0,
                                         'lsp.kernel': 'poly',
                                         'lsp.weight': 10.0,
                                         'student_layers': [-1]})
    kd, lsp = method.parts
    assert kd.temperature == 2.0
    assert lsp.kernel == 'poly' and lsp.pairs == [(-1, -1)]
    # kd keeps its own default weight, lsp gets the one asked for.
    assert method.weights == [KD.default_weight, 10.0]


@pytest.mark.parametrize('name,options,message', [
    ('kd+lsp', {'nope.kernel': 'rbf'}, 'name no method'),
    ('kd+lsp', {'bogus': 1}, 'has option bogus'),
    ('kd', {'kernel': 'rbf'}, "has no option kernel"),
    ('kd+nope', {}, "Unknown method 'nope'"),
])
def test_build_method_errors(name, options, message):
    with pytest.raises(GnnCompressError, match=message):
        api.build_method(name, options)
