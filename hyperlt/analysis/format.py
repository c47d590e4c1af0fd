"""Text formats shared by the reports of evaluate, sweep, choose, adapt and the command line.

Accuracies travel as fractions (JSON) and are shown as percentages; preferences are shown as
comma-separated numbers, the form ``--preference`` reads back.
"""

from __future__ import annotations

import math
from typing import Iterable


def percent(value: float | None, width: int = 6, decimals: int = 2) -> str:
  """A fraction as a percentage right-aligned in ``width`` characters; "-" where it is undefined (None or
  NaN: a shot group with no image in a test set)."""
  if value is None or math.isnan(value):
    return f"{'-':>{width}}"
  return f"{100 * value:{width}.{decimals}f}"


def preference(values: Iterable[float], digits: int = 4) -> str:
  """A preference as "a,b,c", each entry with at most ``digits`` significant digits (1,0,0 stays 1,0,0)."""
  return ",".join(f"{float(v):.{digits}g}" for v in values)
