"""Progress bars for long work (training, feature extraction, sweeps, adaptation), on stderr only.

One switch decides whether bars are drawn: :func:`set_enabled` (the CLI's ``--no-progress`` sets it to
False). Left at None, bars are drawn only when stderr is a terminal, so piped output, log files and test
runs get no control characters. Bars never write to stdout, whose content (tables, ``--json``) stays the
same with and without them.
"""

from __future__ import annotations

import sys
from typing import Iterable

import tqdm

_enabled: bool | None = None


def set_enabled(value: bool | None) -> None:
  """True: always draw bars; False: never; None (the default): only when stderr is a terminal."""
  global _enabled
  _enabled = value


def enabled() -> bool:
  """Whether bars are drawn now (see :func:`set_enabled`)."""
  if _enabled is not None:
    return _enabled
  isatty = getattr(sys.stderr, "isatty", None)
  return bool(isatty and isatty())


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
        leave: bool = False, initial: int = 0) -> tqdm.tqdm:
  """A tqdm bar on stderr, disabled unless :func:`enabled`. ``leave=False`` (the default for inner work
  such as feature batches) clears the bar when done, so the command's own output follows undisturbed."""
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                   disable=not enabled(), file=sys.stderr, dynamic_ncols=True)
