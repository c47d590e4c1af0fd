"""User-supplied image arrays: validation and loading, shared by prediction, adaptation and the CLI.

Every entry point that takes a user's images (``Model.predict``, ``adapt``, ``hyperlt predict``,
``hyperlt adapt --images``) goes through :func:`check_images`, so the same input gets the same message
wherever it is given.
"""

from __future__ import annotations

import pathlib
import zipfile
from typing import Any, Sequence

import numpy as np

from hyperlt.errors import UserInputError, require

# Array names looked up, in order, in an .npz file that holds several arrays.
NPZ_IMAGE_NAMES = ("images", "x", "x_test")


def check_images(images: Any, image_shape: Sequence[int], field: str = "images",
                 allow_empty: bool = False) -> np.ndarray:
  """uint8 ``[N, H, W, C]`` from ``images`` (``[N, H, W]`` accepted for one channel).

  Raises:
    UserInputError naming ``field``: not an array, not uint8, the wrong image shape, or (unless
    ``allow_empty``) no images.
  """
  h, w, c = image_shape
  expected = f"[N, {h}, {w}, {c}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
  require(isinstance(images, np.ndarray) or hasattr(images, "__array__"),
          f"{field}: expected a uint8 array of shape {expected}, got a {type(images).__name__}")
  images = np.asarray(images)
  require(images.dtype == np.uint8, f"{field}: expected dtype uint8 (pixels 0..255) of shape {expected}, got "
          f"dtype {images.dtype}; convert floats in [0, 1] with (x * 255).round().astype(np.uint8)")
  if c == 1 and images.ndim == 3 and images.shape[1:] == (h, w):
    images = images[..., None]
  require(images.ndim == 4 and images.shape[1:] == (h, w, c),
          f"{field}: expected shape {expected} (this run's images are {h}x{w} with {c} channel"
          f"{'s' if c != 1 else ''}), got {images.shape}")
  require(allow_empty or len(images) >= 1, f"{field}: expected at least one image, got none")
  return images


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())[:200]


def load_image_file(path: str | pathlib.Path, field: str = "--images") -> np.ndarray:
  """The image array of a ``.npy`` file, or of an ``.npz`` file holding one array or one named
  ``images``, ``x`` or ``x_test``. Shape and dtype are left to :func:`check_images`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserInputError(f"{field}: {path} " + ("is a folder; expected a .npy or .npz file" if path.is_dir()
                                                else "does not exist"))
  # A damaged or foreign file fails in np.load or, for an .npz, only when an array is read; both are
  # reported as this field's file. NumPy's advice to allow pickles is never the fix: images are plain arrays.
  unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile)
  try:
    loaded = np.load(path, allow_pickle=False)
  except unreadable as e:
    reason = "not a NumPy array file" if "pickle" in str(e) else _one_line(e)
    raise UserInputError(f"{field}: {path} is not a readable .npy or .npz file of images ({reason})") from None
  if isinstance(loaded, np.ndarray):
    return loaded
  with loaded:
    names = list(loaded.files)
    chosen = next((name for name in NPZ_IMAGE_NAMES if name in names), names[0] if len(names) == 1 else None)
    if chosen is not None:
      try:
        return loaded[chosen]
      except unreadable as e:
        raise UserInputError(f"{field}: array {chosen} of {path} is not readable ({_one_line(e)})") from None
  raise UserInputError(f"{field}: {path} holds arrays {names}; expected one array, or one named "
                       f"{', '.join(NPZ_IMAGE_NAMES[:-1])} or {NPZ_IMAGE_NAMES[-1]}")
