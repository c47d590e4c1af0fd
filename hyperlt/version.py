"""The installed hyperlt version, read without importing JAX (``hyperlt --version``, export sidecars)."""

from __future__ import annotations

import importlib.metadata


def installed() -> str:
  """The installed distribution's version (importlib.metadata); the package's own for a source tree that
  is not installed."""
  try:
    return importlib.metadata.version("hyperlt")
  except importlib.metadata.PackageNotFoundError:
    from hyperlt import __version__  # pylint: disable=g-import-not-at-top
    return __version__
