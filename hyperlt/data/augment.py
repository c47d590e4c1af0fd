"""Image normalisation and training augmentation as pure JAX functions.

All functions are traceable and meant to run inside jitted training steps. Their shape arguments
(``padding``, ``flip``, ``max_degrees``, an :class:`Augmentation`) are Python values, so mark them static
when jitting a function directly (``jax.jit(random_crop_flip, static_argnums=(2, 3))``). Test images get
:func:`normalize` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from hyperlt.errors import require


def normalize(images_uint8: jax.Array, mean: float | Sequence[float] | jax.Array,
              std: float | Sequence[float] | jax.Array) -> jax.Array:
  """Maps uint8 pixels to normalised float32: ``(x / 255 - mean) / std``.

  Args:
    images_uint8: ``[..., C]`` pixels in ``0..255``.
    mean: per-channel mean of ``x / 255``, shape ``[C]`` or a scalar.
    std: per-channel standard deviation of ``x / 255``, shape ``[C]`` or a scalar.

  Returns:
    float32 array of the same shape, ``mean`` and ``std`` broadcast over the last (channel) axis.
  """
  x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
  mean = jnp.asarray(mean, dtype=jnp.float32)
  std = jnp.asarray(std, dtype=jnp.float32)
  return (x - mean) / std


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int, flip: bool) -> jax.Array:
  """Random translation by zero-padded cropping, then an optional random horizontal flip.

  Each image is padded with ``padding`` zeros on every side of H and W and an ``H x W`` window is
  cropped at an offset ``(oy, ox)`` drawn uniformly from ``{0..2p}^2`` per image, so the output is the
  input shifted by ``(p - oy, p - ox)`` with zero fill. Because ``images`` are already normalised, the
  fill is 0 in normalised space, i.e. the dataset mean colour. If ``flip``, each image is then mirrored
  left-right with probability 1/2.

  Args:
    key: PRNG key; one draw of offsets and flips for the whole batch.
    images: float ``[B, H, W, C]`` normalised images.
    padding: ``p >= 0`` (static).
    flip: whether to flip at random (static).

  Returns:
    Array with the shape and dtype of ``images``. ``padding=0, flip=False`` returns ``images``.
  """
  require(isinstance(padding, int) and padding >= 0,
          f"augmentation padding must be a non-negative integer, got {padding!r}")
  require(images.ndim == 4, f"images must have shape [B, H, W, C], got {images.shape}")
  if padding == 0 and not flip:
    return images
  crop_key, flip_key = jax.random.split(key)
  batch, height, width, channels = images.shape
  if padding > 0:
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    images = jax.vmap(crop)(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (batch,))
    images = jnp.where(do_flip[:, None, None, None], images[:, :, ::-1, :], images)
  return images


def rotate(images: jax.Array, angles: jax.Array) -> jax.Array:
  r"""Rotates image b about its centre by ``angles[b]`` radians (clockwise as displayed, rows down).

  Output pixel ``p = (y, x)`` takes the input at the pixel nearest to ``c + R(theta) (p - c)``, with
  ``c = ((H - 1) / 2, (W - 1) / 2)`` and ``R(theta) = [[cos, -sin], [sin, cos]]``; pixels whose source
  falls outside the image are 0, the dataset mean colour of normalised images (as in
  :func:`random_crop_flip`). Nearest sampling is torchvision ``RandomRotation``'s default, which the
  published CIFAR recipe uses.

  Args:
    images: float ``[B, H, W, C]``.
    angles: ``[B]`` radians.

  Returns:
    Array with the shape and dtype of ``images``; ``angles = pi / 2`` gives ``rot90(images, -1)`` for
    square images.
  """
  require(images.ndim == 4, f"images must have shape [B, H, W, C], got {images.shape}")
  _, height, width, _ = images.shape
  cy, cx = (height - 1) / 2, (width - 1) / 2
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) - cy, jnp.arange(width, dtype=jnp.float32) - cx,
                        indexing="ij")

  def rotate_one(image: jax.Array, angle: jax.Array) -> jax.Array:
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = jnp.round(cos * ys - sin * xs + cy).astype(jnp.int32)
    src_x = jnp.round(sin * ys + cos * xs + cx).astype(jnp.int32)
    inside = (src_y >= 0) & (src_y < height) & (src_x >= 0) & (src_x < width)
    picked = image[jnp.clip(src_y, 0, height - 1), jnp.clip(src_x, 0, width - 1)]
    return jnp.where(inside[..., None], picked, jnp.zeros_like(picked))

  return jax.vmap(rotate_one)(images, jnp.asarray(angles, jnp.float32))


def random_rotation(key: jax.Array, images: jax.Array, max_degrees: float) -> jax.Array:
  """:func:`rotate` each image by an angle drawn uniformly from ``[-max_degrees, max_degrees]`` degrees.

  Args:
    key: PRNG key; one angle per image.
    images: float ``[B, H, W, C]`` normalised images.
    max_degrees: largest absolute angle, ``>= 0`` (static); 0 returns ``images``.
  """
  require(max_degrees >= 0, f"rotation angle must be >= 0 degrees, got {max_degrees!r}")
  if max_degrees == 0:
    return images
  limit = math.radians(max_degrees)
  return rotate(images, jax.random.uniform(key, (images.shape[0],), minval=-limit, maxval=limit))


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The training augmentation of in-memory image data: crop with ``padding``, ``flip``, then rotate
  by up to ``rotation`` degrees (the published CIFAR recipe: 4, True, 15)."""

  padding: int = 0
  flip: bool = False
  rotation: float = 0.0

  @classmethod
  def from_config(cls, data) -> "Augmentation":
    """From a ``config.data`` section (fields ``crop_padding``, ``flip``, ``rotation``)."""
    return cls(int(data.crop_padding), bool(data.flip), float(data.rotation))

  def __call__(self, key: jax.Array, images: jax.Array) -> jax.Array:
    if self.rotation == 0:  # the same random stream as before rotation existed: runs stay reproducible
      return random_crop_flip(key, images, self.padding, self.flip)
    crop_key, rotate_key = jax.random.split(key)
    images = random_crop_flip(crop_key, images, self.padding, self.flip)
    return random_rotation(rotate_key, images, self.rotation)
