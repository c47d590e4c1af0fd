"""Image classification data sources: the embedded digits, local ``.npz`` files and TFDS.

Every source returns a :class:`Dataset`: balanced train and test arrays held in memory as uint8
``[N, H, W, C]`` images and int32 labels. Long-tailed subsets and test-agnostic test sets are carved
out of it afterwards by :mod:`hyperlt.data.longtail`.

Sources are named by a spec string (see :func:`load_source`): ``"digits"``, ``"npz"`` with a
``path`` option, or ``"tfds:<name>"``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hyperlt.errors import UserInputError, require

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL_KEYS: tuple[str, ...] = ("class_names",)

SOURCE_FORMS: tuple[str, ...] = ("digits", "npz (with option path)", "tfds:<name>")
_SOURCE_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "npz": ("path",),
    "tfds": ("data_dir", "manual_dir", "download"),
}

_TFDS_EXTRA_HINT = 'preparing a TFDS dataset needs TensorFlow: pip install "hyperlt[tfds]" (tensorflow-cpu)'


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A balanced image classification dataset held in memory.

  Attributes:
    x_train: uint8 ``[N, H, W, C]`` training images.
    y_train: int32 ``[N]`` training labels in ``[0, K)``.
    x_test: uint8 ``[M, H, W, C]`` test images.
    y_test: int32 ``[M]`` test labels in ``[0, K)``.
    class_names: ``K`` class names; ``K`` is the number of classes.
    name: short name of the source, for logs and run directories.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: tuple[str, ...]
  name: str

  def __post_init__(self):
    # Labels of any integer dtype are accepted and stored as int32, so every consumer sees one dtype.
    require(not isinstance(self.class_names, (str, bytes)),
            f"dataset {self.name!r}: class_names must be a sequence of names, not one string")
    names = tuple(str(n) for n in self.class_names)
    require(len(names) >= 1, f"dataset {self.name!r}: class_names must not be empty")
    require(len(names) >= 2, f"dataset {self.name!r}: class_names: a classifier needs at least 2 classes, got "
            f"{names}")
    object.__setattr__(self, "class_names", names)
    for split in ("train", "test"):
      x = getattr(self, f"x_{split}")
      y = getattr(self, f"y_{split}")
      require(isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4,
              f"dataset {self.name!r}: x_{split} must be a uint8 array of shape [N, H, W, C], got "
              f"{_describe(x)}")
      require(isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.integer) and y.ndim == 1,
              f"dataset {self.name!r}: y_{split} must be a 1-D integer array, got {_describe(y)}")
      require(len(x) == len(y),
              f"dataset {self.name!r}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
      require(len(y) > 0, f"dataset {self.name!r}: the {split} split is empty")
      lo, hi = int(y.min()), int(y.max())
      require(0 <= lo and hi < len(names),
              f"dataset {self.name!r}: y_{split} must hold class ids in [0, {len(names)}) for "
              f"{len(names)} class names, found values in [{lo}, {hi}]")
      require(lo < hi, f"dataset {self.name!r}: y_{split} holds only class {lo}; a classifier needs at least 2 "
              "classes")
      object.__setattr__(self, f"y_{split}", y.astype(np.int32, copy=False))
    require(self.x_train.shape[1:] == self.x_test.shape[1:],
            f"dataset {self.name!r}: x_train images have shape (H, W, C) = {self.x_train.shape[1:]} but "
            f"x_test images have {self.x_test.shape[1:]}")

  @property
  def num_classes(self) -> int:
    """Number of classes ``K``."""
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of every image."""
    h, w, c = self.x_train.shape[1:]
    return int(h), int(w), int(c)


def _describe(a: Any) -> str:
  if isinstance(a, np.ndarray):
    return f"dtype {a.dtype} and shape {a.shape}"
  return f"a {type(a).__name__}"


# ------------------------------------------------------------------------------------------------
# Embedded default: scikit-learn's handwritten digits.

DIGITS_TEST_PER_CLASS = 50


def load_digits() -> Dataset:
  """The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits.

  1,797 images with grey levels ``0..16`` in 10 classes (174..183 per class). Pixels are rescaled to
  uint8 by ``round(x * 255 / 16)``. A seeded split (``np.random.default_rng(0)``, classes in order)
  puts 50 images of every class in the balanced test set (500 images) and the remaining 124..133 per
  class in the training set; both keep the original order.
  """
  from sklearn import datasets as sk_datasets  # sklearn is slow to import; only pay when used.

  digits = sk_datasets.load_digits()
  images = np.round(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0))
  x = images.astype(np.uint8)[..., None]
  y = np.asarray(digits.target, dtype=np.int64)
  rng = np.random.default_rng(0)
  test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:DIGITS_TEST_PER_CLASS]
                             for c in range(10)])
  is_test = np.zeros(len(y), dtype=bool)
  is_test[test_idx] = True
  return Dataset(x_train=x[~is_test], y_train=y[~is_test], x_test=x[is_test], y_test=y[is_test],
                 class_names=tuple(str(c) for c in range(10)), name="digits")


# ------------------------------------------------------------------------------------------------
# Local .npz files.


# The pixel formats an .npz may hold, as every refusal states them.
PIXEL_FORMATS = ("uint8 pixels 0..255, other integer dtypes holding 0..255 (used as pixel values), or floats in "
                 "[0, 1] (pixel = round(255 x))")


def _images_to_uint8(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
  """Converts ``x_train`` and ``x_test`` to uint8 ``[N, H, W, C]``; the rules are PIXEL_FORMATS:

  * ``[N, H, W]`` gets a channel axis, ``[N, H, W, 1]``.
  * uint8 is kept as is; other integer dtypes must hold values in ``0..255`` and are kept as pixel values.
  * Floating point images must be finite and in ``[0, 1]``; they are mapped by ``round(255 x)``.

  Floats are never read as another range by looking at their values: an earlier rule that took floats with
  a maximum above 1 as 0..255 read scikit-learn's 0..16 digits as near-black images without a word.
  """
  out = {}
  for key in ("x_train", "x_test"):
    x = arrays[key]
    require(x.ndim in (3, 4) and x.size > 0,
            f"{path}: {key} must be an image array of shape [N, H, W] or [N, H, W, C], got shape {x.shape}")
    if x.ndim == 3:
      x = x[..., None]
    if np.issubdtype(x.dtype, np.floating):
      finite = bool(np.all(np.isfinite(x)))
      low, high = (float(x.min()), float(x.max())) if finite else (math.nan, math.nan)
      require(finite and 0 <= low and high <= 1,
              f"{path}: {key} has dtype {x.dtype} with values "
              f"{f'in [{low:g}, {high:g}]' if finite else 'that are not finite'}; expected {PIXEL_FORMATS}. "
              "Rescale other ranges yourself, e.g. 0..16 data with (x * 255 / 16).round().astype(np.uint8)")
      x = np.round(x.astype(np.float64) * 255.0)
    elif np.issubdtype(x.dtype, np.integer):
      if x.dtype != np.uint8:
        require(int(x.min()) >= 0 and int(x.max()) <= 255,
                f"{path}: {key} has dtype {x.dtype} with values outside 0..255 (found {int(x.min())}..{int(x.max())}); "
                f"expected {PIXEL_FORMATS}")
    else:
      raise UserInputError(f"{path}: {key} has dtype {x.dtype}; expected {PIXEL_FORMATS}")
    out[key] = x.astype(np.uint8, copy=False)
  return out


def load_npz(path: str | os.PathLike) -> Dataset:
  """Loads a dataset from a local ``.npz`` archive.

  Expected arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``class_names``.
  Images are ``[N, H, W]`` or ``[N, H, W, C]``, uint8 (or floats, converted as documented in
  :func:`_images_to_uint8`); labels are 1-D integers ``0..K-1``. ``class_names`` must be a 1-D string
  array (``np.array(names, dtype=str)``, which needs no pickle); without it classes are named
  ``"0".."K-1"`` with ``K = max label + 1``.

  Args:
    path: the ``.npz`` file.

  Returns:
    The :class:`Dataset`, named after the file's stem.

  Raises:
    UserInputError: when the file is missing or unreadable, or an array is missing or malformed.
  """
  path = Path(path).expanduser()
  require(path.exists(), f"data file {path} does not exist")
  require(path.is_file(), f"data file {path} is not a file")
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    # NumPy answers any non-array file with advice to enable pickle loading; that is never the fix here.
    reason = "not a zip archive of .npy arrays" if "pickle" in str(e) else str(e)
    raise UserInputError(f"data file {path} is not a readable .npz archive ({reason})") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise UserInputError(f"data file {path} is not a readable .npz archive (it holds a single array; "
                         f"save the arrays {', '.join(NPZ_KEYS)} with np.savez)")
  with archive:
    missing = [k for k in NPZ_KEYS if k not in archive.files]
    require(not missing,
            f"data file {path} lacks array(s) {', '.join(missing)}; expected arrays "
            f"{', '.join(NPZ_KEYS)} and optionally {', '.join(NPZ_OPTIONAL_KEYS)}, found "
            f"{', '.join(archive.files) or 'none'}")
    arrays = {}
    for key in NPZ_KEYS + NPZ_OPTIONAL_KEYS:
      if key not in archive.files:
        continue
      try:
        arrays[key] = archive[key]
      except ValueError as e:
        if "allow_pickle" in str(e):
          raise UserInputError(
              f"data file {path}: array {key} is an object array, which hyperlt does not unpickle; save "
              f"it as a plain array (for class_names: np.array(names, dtype=str))") from e
        raise UserInputError(f"data file {path} is not a readable .npz archive (array {key}: {e})") from e
      except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserInputError(f"data file {path} is not a readable .npz archive (array {key}: {e})") from e

  images = _images_to_uint8(arrays, path)
  labels = {}
  for key in ("y_train", "y_test"):
    y = arrays[key]
    require(y.ndim == 1 and np.issubdtype(y.dtype, np.integer),
            f"{path}: {key} must be a 1-D integer label array, got dtype {y.dtype} and shape {y.shape}")
    require(y.size > 0, f"{path}: {key} is empty")
    require(int(y.min()) >= 0, f"{path}: {key} must hold class ids >= 0, found {int(y.min())}")
    labels[key] = y
  if "class_names" in arrays:
    names = arrays["class_names"]
    require(names.ndim == 1 and names.dtype.kind in "US",
            f"{path}: class_names must be a 1-D string array, got dtype {names.dtype} and shape "
            f"{names.shape}")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
  else:
    num_classes = int(max(labels["y_train"].max(), labels["y_test"].max())) + 1
    class_names = tuple(str(c) for c in range(num_classes))
  # One class trains to a trivial 100%; say so instead of reporting it.
  for key in ("y_train", "y_test"):
    present = np.unique(labels[key])
    require(len(present) >= 2, f"{path}: {key} holds only class {int(present[0])}; a classifier needs at least 2 "
            "classes in the training and the test labels")
  return Dataset(x_train=images["x_train"], y_train=labels["y_train"], x_test=images["x_test"],
                 y_test=labels["y_test"], class_names=class_names, name=path.stem)


# ------------------------------------------------------------------------------------------------
# TensorFlow Datasets, read through array_record data sources (no TensorFlow needed to read).


def _tfds_not_prepared_message(name: str, where: str) -> str:
  return (
      f"TFDS dataset {name!r} is not prepared in {where}, and downloading is off. Do one of: "
      f"(1) set data.data_dir to a TFDS data directory where {name} is already prepared in the "
      f"array_record format; (2) set data.manual_dir to a folder holding the dataset's downloaded "
      f"archive (for cifar10: cifar-10-binary.tar.gz, for cifar100: cifar-100-binary.tar.gz) so it "
      f"can be prepared offline into data.data_dir; (3) allow the download with data.download=True. "
      f"Options (2) and (3) prepare the dataset, which needs TensorFlow: "
      f'pip install "hyperlt[tfds]" (tensorflow-cpu). From Python: '
      f"load_tfds({name!r}, data_dir=..., manual_dir=...) or load_tfds({name!r}, data_dir=..., "
      f"download=True)."
  )


def _read_split(source: Any, name: str, split: str, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Reads and stacks every ``(image, label)`` of one split of a TFDS random-access data source."""
  n = len(source)
  require(n > 0, f"TFDS dataset {name!r}: the {split} split is empty")
  images, labels = [], []
  get_many = getattr(source, "__getitems__", None)
  for start in range(0, n, batch):
    keys = list(range(start, min(start + batch, n)))
    records = get_many(keys) if get_many is not None else [source[k] for k in keys]
    for r in records:
      images.append(np.asarray(r["image"]))
      labels.append(int(r["label"]))
  shapes = {im.shape for im in images}
  require(len(shapes) == 1,
          f"TFDS dataset {name!r}: {split} images have {len(shapes)} different shapes (e.g. "
          f"{sorted(shapes)[:3]}); hyperlt needs images of one fixed size")
  x = np.stack(images)
  if x.ndim == 3:
    x = x[..., None]
  require(x.dtype == np.uint8,
          f"TFDS dataset {name!r}: {split} images have dtype {x.dtype}; hyperlt needs uint8 images")
  return x, np.asarray(labels, dtype=np.int64)


def load_tfds(name: str, data_dir: str | os.PathLike | None = None,
              manual_dir: str | os.PathLike | None = None, download: bool = False) -> Dataset:
  """Loads a TFDS image classification dataset (e.g. ``cifar10``, ``cifar100``) into memory.

  The dataset needs an ``image`` feature, a ``label`` ClassLabel feature and ``train`` and ``test``
  splits. Reading goes through ``tfds.data_source`` (array_record files, decoded with PIL), which does
  not need TensorFlow. When the dataset is not prepared in ``data_dir`` it is prepared in the
  array_record format only if ``download=True`` or a ``manual_dir`` holding the downloaded archive is
  given; preparing needs TensorFlow (``pip install "hyperlt[tfds]"``).

  Args:
    name: TFDS name, optionally with config and version (``"cifar100"``, ``"mnist:3.0.1"``).
    data_dir: TFDS data directory; ``None`` uses TFDS's default (``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    manual_dir: folder with the manually downloaded archive, for offline preparation.
    download: allow downloading and preparing the dataset.

  Returns:
    The :class:`Dataset`, named ``name``.

  Raises:
    UserInputError: unknown dataset, not prepared and not allowed to prepare, preparation failed,
      prepared in a format without random access, or not an image classification dataset.
  """
  require(isinstance(name, str) and name.strip() != "", f"TFDS dataset name must be non-empty, got {name!r}")
  import tensorflow_datasets as tfds  # heavy import; only pay when TFDS is used.

  data_dir = os.fspath(Path(data_dir).expanduser()) if data_dir else None
  manual_dir = os.fspath(Path(manual_dir).expanduser()) if manual_dir else None
  if manual_dir is not None:
    require(Path(manual_dir).is_dir(), f"data.manual_dir {manual_dir} is not an existing folder")

  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserInputError(f"TFDS has no dataset named {name!r} (data.source 'tfds:{name}'); see "
                         "https://www.tensorflow.org/datasets/catalog for names") from e
  except ValueError as e:  # e.g. an unknown config or version in "name/config:version"
    raise UserInputError(f"TFDS cannot build dataset {name!r} (data.source 'tfds:{name}'): {e}") from e
  where = f"data_dir {data_dir}" if data_dir else "the default TFDS data_dir"

  if not builder.is_prepared():
    if not (download or manual_dir):
      raise UserInputError(_tfds_not_prepared_message(name, where))
    config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        # With only a manual archive the user asked not to go online; don't fetch a prepared copy either.
        try_download_gcs=bool(download))
    try:
      builder.download_and_prepare(download_config=config, file_format="array_record")
    except Exception as e:  # pylint: disable=broad-except
      # TFDS raises many types here (network, checksum, missing archive, missing TensorFlow); all mean
      # the user's setup must change, so report them as one actionable error.
      hint = "" if importlib.util.find_spec("tensorflow") else f"; note: {_TFDS_EXTRA_HINT}"
      raise UserInputError(
          f"preparing TFDS dataset {name!r} in {where} failed: {type(e).__name__}: {e}{hint}") from e

  features = builder.info.features
  feature_names = list(getattr(features, "keys", lambda: [])())
  require("image" in feature_names and "label" in feature_names,
          f"TFDS dataset {name!r} is not an image classification dataset: it needs features 'image' and "
          f"'label', has {', '.join(feature_names)}")
  label_feature = features["label"]
  require(isinstance(label_feature, tfds.features.ClassLabel),
          f"TFDS dataset {name!r}: feature 'label' must be a ClassLabel, got {type(label_feature).__name__}")
  splits = set(builder.info.splits.keys())
  require({"train", "test"} <= splits,
          f"TFDS dataset {name!r} needs 'train' and 'test' splits, has {', '.join(sorted(splits))}")

  try:
    sources = builder.as_data_source(split=["train", "test"])
  except NotImplementedError as e:
    raise UserInputError(
        f"TFDS dataset {name!r} is prepared in {where} in the {builder.info.file_format} format, which has "
        "no random access; prepare it again with file_format='array_record' into another data_dir "
        f"(e.g. load_tfds({name!r}, data_dir=NEW_DIR, download=True)) or delete the prepared copy") from e

  x_train, y_train = _read_split(sources[0], name, "train")
  x_test, y_test = _read_split(sources[1], name, "test")
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 class_names=tuple(label_feature.names), name=name)


# ------------------------------------------------------------------------------------------------
# Dispatcher.


def load_source(spec: str, **options: Any) -> Dataset:
  """Loads the data source named by a config's ``spec``.

  * ``"digits"``: :func:`load_digits`.
  * ``"npz"``: :func:`load_npz` of ``options["path"]``.
  * ``"tfds:<name>"``: :func:`load_tfds` with ``data_dir``, ``manual_dir`` and ``download`` from
    ``options``.

  Options a source does not use may be passed unset (``None``, ``False`` or ``""``), so a config can
  hand over all its data options; setting one that the source ignores is an error.

  Args:
    spec: the source spec.
    **options: ``path``, ``data_dir``, ``manual_dir``, ``download``.

  Returns:
    The :class:`Dataset`.
  """
  require(isinstance(spec, str), f"data.source must be a string, got {spec!r}")
  kind, colon, tfds_name = spec.partition(":")
  kind = kind.strip()
  # "tfds" needs the ":<name>" part and the other kinds must not have one.
  require(kind in _SOURCE_OPTIONS and (kind == "tfds") == bool(colon),
          f"unknown data.source {spec!r}; expected one of: {', '.join(SOURCE_FORMS)}")
  known = {o for opts in _SOURCE_OPTIONS.values() for o in opts}
  unknown = sorted(set(options) - known)
  require(not unknown, f"unknown data option(s) {', '.join(unknown)}; expected some of "
          f"{', '.join(sorted(known))}")
  ignored = sorted(k for k, v in options.items()
                   if k not in _SOURCE_OPTIONS[kind] and v is not None and v is not False and v != "")
  require(not ignored, f"data option(s) {', '.join(ignored)} are not used by data.source {spec!r}")

  if kind == "digits":
    return load_digits()
  if kind == "npz":
    path = options.get("path")
    require(bool(path), "data.source 'npz' needs data.path, the .npz file to load")
    return load_npz(path)
  tfds_name = tfds_name.strip()
  require(tfds_name != "", f"data.source {spec!r} needs a dataset name after 'tfds:', e.g. 'tfds:cifar100'")
  return load_tfds(tfds_name, data_dir=options.get("data_dir"), manual_dir=options.get("manual_dir"),
                   download=bool(options.get("download", False)))
