"""Tests of the JAX augmentation functions."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt.data import augment
from hyperlt.errors import UserInputError


def batch(b: int = 16, h: int = 6, w: int = 5, c: int = 2) -> np.ndarray:
  # Strictly positive values, so a real pixel can never be mistaken for zero fill.
  return np.random.default_rng(0).uniform(1.0, 2.0, (b, h, w, c)).astype(np.float32)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """``out[y, x] = image[y - dy, x - dx]`` with zero fill."""
  h, w = image.shape[:2]
  out = np.zeros_like(image)
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def find_transform(out: np.ndarray, image: np.ndarray, padding: int) -> list[tuple[int, int, bool]]:
  """All (dy, dx, flipped) with ``out`` equal to ``image`` shifted by (dy, dx), then maybe flipped."""
  hits = []
  for dy in range(-padding, padding + 1):
    for dx in range(-padding, padding + 1):
      candidate = shifted(image, dy, dx)
      for flipped in (False, True):
        if np.array_equal(out, candidate[:, ::-1] if flipped else candidate):
          hits.append((dy, dx, flipped))
  return hits


def test_normalize():
  images = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
  out = augment.normalize(images, mean=[0.5, 0.5, 0.2], std=[0.5, 0.25, 0.1])
  assert out.dtype == jnp.float32 and out.shape == images.shape
  np.testing.assert_allclose(np.asarray(out)[0, 0, 0], [-1.0, 2.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(augment.normalize(images, 0.0, 1.0), images / 255.0, atol=1e-7)


def test_identity_without_padding_or_flip():
  images = jnp.asarray(batch())
  out = augment.random_crop_flip(jax.random.key(0), images, padding=0, flip=False)
  np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("padding, flip", [(2, False), (0, True), (2, True)])
def test_every_output_is_a_shifted_copy(padding, flip):
  images = batch()
  out = np.asarray(augment.random_crop_flip(jax.random.key(1), jnp.asarray(images), padding, flip))
  assert out.shape == images.shape and out.dtype == np.float32
  transforms = []
  for o, x in zip(out, images):
    hits = find_transform(o, x, padding)
    assert hits, "output is not a shifted (and maybe flipped) copy of its input"
    transforms.append(hits[0])
  # With 16 images the random draws are not all the same.
  if padding:
    assert len({t[:2] for t in transforms}) > 1
  if flip:
    assert {t[2] for t in transforms} == {False, True}


def test_keys_and_jit():
  images = jnp.asarray(batch())
  jitted = jax.jit(augment.random_crop_flip, static_argnums=(2, 3))
  a = jitted(jax.random.key(0), images, 4, True)
  b = jitted(jax.random.key(1), images, 4, True)
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, augment.random_crop_flip(jax.random.key(0), images, 4, True))
  # Also traced inside a larger jitted function, as in a training step.
  step = jax.jit(functools.partial(augment.random_crop_flip, padding=4, flip=True))
  np.testing.assert_array_equal(step(jax.random.key(0), images), a)


def test_rejects_bad_arguments():
  images = jnp.asarray(batch())
  with pytest.raises(UserInputError, match="padding"):
    augment.random_crop_flip(jax.random.key(0), images, -1, False)
  with pytest.raises(UserInputError, match=r"\[B, H, W, C\]"):
    augment.random_crop_flip(jax.random.key(0), images[0], 1, False)


def _images(batch=4, size=8, channels=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, size, size, channels)), jnp.float32)


@pytest.mark.parametrize("size", [5, 8])
def test_rotate_quarter_turn_is_rot90(size):
  x = _images(size=size)
  out = augment.rotate(x, jnp.full((x.shape[0],), math.pi / 2))
  chex.assert_trees_all_equal(out, jnp.rot90(x, k=-1, axes=(1, 2)))


def test_rotate_by_zero_is_identity_and_corners_fill_with_zero():
  x = _images(batch=2, size=9)
  out = augment.rotate(x, jnp.array([0.0, math.pi / 4]))
  chex.assert_trees_all_equal(out[0], x[0])
  chex.assert_trees_all_equal(out[1, 0, 0], jnp.zeros(3))       # a corner comes from outside the image
  chex.assert_trees_all_equal(out[1, 4, 4], x[1, 4, 4])         # the centre stays


def test_random_rotation_stays_within_the_angle():
  # A single bright pixel at distance 10 from the centre moves along an arc of at most 15 degrees.
  size, radius = 25, 10
  x = np.zeros((64, size, size, 1), np.float32)
  x[:, 12, 12 + radius] = 1.0
  out = np.asarray(augment.random_rotation(jax.random.PRNGKey(3), jnp.asarray(x), 15.0))
  angles = []
  for image in out:
    ys, xs = np.nonzero(image[..., 0])
    assert len(ys) >= 1
    angles.append(np.degrees(np.arctan2(ys.mean() - 12, xs.mean() - 12)))
  angles = np.abs(np.array(angles))
  assert angles.max() <= 15.0 + 360 / (2 * math.pi * radius)    # plus one pixel of rounding
  assert angles.max() > 5.0                                       # it does rotate


def test_augmentation_without_rotation_keeps_the_crop_flip_stream():
  x, key = _images(batch=8), jax.random.PRNGKey(4)
  chex.assert_trees_all_equal(augment.Augmentation(2, True)(key, x), augment.random_crop_flip(key, x, 2, True))
  rotated = augment.Augmentation(2, True, 15.0)(key, x)
  chex.assert_shape(rotated, x.shape)
  assert not np.array_equal(np.asarray(rotated), np.asarray(x))


def test_augmentation_compiles_once_under_jit():
  augmentation = augment.Augmentation(4, True, 15.0)
  step = jax.jit(augmentation)
  for seed in range(3):
    step(jax.random.PRNGKey(seed), _images(size=32, seed=seed)).block_until_ready()
  assert step._cache_size() == 1


def test_negative_rotation_is_refused():
  with pytest.raises(UserInputError, match="rotation"):
    augment.random_rotation(jax.random.PRNGKey(0), _images(), -1.0)
