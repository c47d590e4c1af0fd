"""The padding helper of the inference path (hyperlt.inference.batching)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt.inference import batching


@pytest.mark.parametrize("n, largest, multiple, expected", [
    (1, 1000, 1, 1), (7, 1000, 1, 8), (500, 1000, 1, 512), (1000, 1000, 1, 1000), (5000, 1000, 1, 1000),
    (30, 12, 8, 16), (3, 12, 8, 8), (0, 128, 1, 1),
])
def test_bucket_is_a_power_of_two_below_the_largest_batch(n, largest, multiple, expected):
  assert batching.bucket(n, largest, multiple) == expected


def test_pad_axis_keeps_the_array_kind():
  x = np.arange(6, dtype=np.uint8).reshape(2, 3)
  padded = batching.pad_axis(x, 4, axis=0)
  assert isinstance(padded, np.ndarray) and padded.dtype == np.uint8
  np.testing.assert_array_equal(padded, [[0, 1, 2], [3, 4, 5], [0, 0, 0], [0, 0, 0]])
  on_device = batching.pad_axis(jnp.asarray(x, jnp.float32), 5, axis=1)
  assert isinstance(on_device, type(jnp.zeros(1))) and on_device.shape == (2, 5)
  np.testing.assert_array_equal(np.asarray(on_device)[:, 3:], 0)
  assert batching.pad_axis(x, 2) is x


@pytest.mark.parametrize("n", [1, 7, 16, 17, 40])
def test_map_padded_calls_one_shape_and_returns_one_row_per_item(n):
  seen = []

  def fn(batch):
    seen.append(batch.shape)
    return jnp.stack([batch.sum(axis=1), batch.max(axis=1)])      # [2, B]: the item axis moves to 1

  x = np.random.default_rng(n).integers(0, 255, (n, 3)).astype(np.float32)
  out = batching.map_padded(fn, x, 16, axis=0, out_axis=1)
  assert set(seen) == {(16, 3)} and len(seen) == -(-n // 16)
  np.testing.assert_allclose(np.asarray(out), np.stack([x.sum(1), x.max(1)]))


def test_map_padded_along_a_later_axis_and_with_no_items():
  x = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
  out = batching.map_padded(lambda part: part * 2, x, 4, axis=1, out_axis=1)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x) * 2)
  empty = batching.map_padded(lambda part: part[:, :, 0], jnp.zeros((2, 0, 3)), 4, axis=1, out_axis=1)
  assert empty.shape == (2, 0)
