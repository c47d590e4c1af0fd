"""Fixed-shape batches: the one padding helper of the inference path.

A jitted function compiles once per input shape. Feeding it every remainder (the last 37 images of a
set, a test subset of 135) would compile a program per size, so :func:`map_padded` cuts the input into
slices of one size, zero-pads the last slice to that size, and cuts the padding's rows off the output
again. It follows big_vision's ``pad_shard_unpad`` (pad on the host, call, un-pad the result), with the
slicing added because the sets here can be larger than one batch; splitting a batch over devices is the
caller's ``fn`` (see hyperlt.inference.predictor).

:func:`bucket` picks the slice size: a power of two for sets smaller than the largest batch, so any number
of items compiles at most ``log2(largest) + 1`` programs, not one per distinct size.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import progress


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is >= n (and >= ``multiple``)."""
  return max(multiple, -(-n // multiple) * multiple)


def bucket(n: int, largest: int, multiple: int = 1) -> int:
  """The slice size for ``n`` items: the next power of two of n, at most ``largest``, then rounded up to a
  multiple of ``multiple`` (the device count, so every device gets the same number of rows)."""
  return round_up(min(largest, 1 << max(n - 1, 0).bit_length()), multiple)


def pad_axis(x: Any, size: int, axis: int = 0) -> Any:
  """``x`` zero-padded along ``axis`` to length ``size`` (NumPy stays NumPy on the host, a JAX array stays
  on its device); unchanged if it is that long already."""
  pad = size - x.shape[axis]
  if pad <= 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return np.pad(x, widths) if isinstance(x, np.ndarray) else jnp.pad(x, widths)


def map_padded(fn: Callable[[Any], Any], x: Any, size: int, *, axis: int = 0, out_axis: int = 0,
               desc: str | None = None) -> Any:
  """``fn`` over slices of ``size`` items of ``x`` along ``axis``, outputs concatenated along ``out_axis``.

  Every call of ``fn`` gets exactly ``size`` items (the last slice zero-padded), and the padding's items
  are cut from its output, so the result has one entry per item of ``x``. ``x`` may be a NumPy or JAX
  array or, for ``axis=0``, anything with ``len()`` whose slices are arrays (a lazily decoded image
  list). With no items ``fn`` still runs once, on padding only, so the result has the right shape.
  With ``desc``, a progress bar (hyperlt.progress) counts the slices when there is more than one.
  """
  n = len(x) if axis == 0 else x.shape[axis]
  index = (slice(None),) * axis
  outputs = []
  starts = range(0, max(n, 1), size)
  shown = desc is not None and len(starts) > 1 and progress.enabled()
  for start in progress.bar(starts, desc=desc, unit="batch") if shown else starts:
    part = x[start:start + size] if axis == 0 else x[index + (slice(start, start + size),)]
    kept = min(size, n - start)
    out = fn(pad_axis(part, size, axis))
    outputs.append(out[(slice(None),) * out_axis + (slice(0, kept),)])
    if shown and len(outputs) > 1:
      # JAX dispatches asynchronously: without waiting, the bar would count dispatches, not finished
      # batches. Waiting on the previous slice keeps one slice queued behind the running one.
      jax.block_until_ready(outputs[-2])
  return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=out_axis)
