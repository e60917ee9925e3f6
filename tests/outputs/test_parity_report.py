"""The reports state the ONNX check by the figure its tolerance bounds:
the difference over the output's scale."""
from __future__ import annotations

import pytest

from gnncompress.outputs.parity import Parity
from gnncompress.outputs.report import parity_line


def test_relative_cases_divide_by_each_graphs_scale():
    parity = Parity(cases={'a': 0.5, 'b': 2e-5},
                    scales={'a': 5000.0, 'b': 1.0})
    assert parity.relative_cases() == pytest.approx({'a': 1e-4, 'b': 2e-5})


def test_the_report_line_leads_with_the_relative_difference():
    line = parity_line(0.688, {'a': 0.688, 'b': 1e-6},
                       {'a': 2.3e-6, 'b': 1e-6})
    assert line == ("ONNX max difference: 2.30e-06 of the output's scale "
                    '(absolute 6.88e-01; over 2 check graphs)')
    # Reports without the relative figures keep the absolute line.
    assert parity_line(1e-6, {'a': 1e-6}, {}) == \
        'ONNX max abs difference: 1.00e-06 (over 1 check graphs)'
