"""The report formats shared by evaluate, sweep, choose, adapt and the CLI (hyperlt.analysis.format)."""

from __future__ import annotations

import numpy as np
import pytest

from hyperlt import preference
from hyperlt.analysis import format as fmt


@pytest.mark.parametrize("value, width, expected", [
    (0.91234, 6, " 91.23"), (1.0, 6, "100.00"), (None, 6, "     -"), (float("nan"), 11, "          -"),
    (np.float64(0.5), 7, "  50.00"),
])
def test_percent(value, width, expected):
  assert fmt.percent(value, width) == expected


def test_preference_text_reads_back():
  alpha = np.array([1 / 3, 0.5, 1 / 6], np.float32)
  assert fmt.preference(np.eye(3)[0]) == "1,0,0"
  assert fmt.preference(alpha) == "0.3333,0.5,0.1667"
  assert fmt.preference(alpha, digits=2) == "0.33,0.5,0.17"
  np.testing.assert_allclose(preference.parse(fmt.preference(alpha, digits=6), 3), alpha, rtol=1e-5)
