"""Image normalisation and training augmentation as pure JAX functions.

Both functions are traceable and meant to run inside jitted training steps; ``random_crop_flip``
takes ``padding`` and ``flip`` as Python values, so mark them static when jitting it directly
(``jax.jit(random_crop_flip, static_argnums=(2, 3))``). Test images get :func:`normalize` only.
"""

from __future__ import annotations

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
