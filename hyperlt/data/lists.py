"""Large image datasets described by SADE-style list files over an image root.

A list file has one image per line, ``relative/path label``, e.g. ``train/n01440764/n01440764_10026.JPEG 0``
(ImageNet-LT, Places-LT and iNaturalist 2018 are distributed this way). Paths are relative to the image
root the user provides; labels are integer class ids ``0..K-1``. Blank lines are skipped; a path may
contain spaces because the label is the last field.

The training list is used as given: these lists are long-tailed already, so ``data.imbalance_ratio``
and ``data.n_max`` do not apply. Classes are renumbered by training frequency (the most frequent class
becomes 0, ties keep the list's order), as everywhere in hyperlt, so the forward/backward test sets and
the shot groups follow the long tail; ``class_names[c]`` is the list file's own label of class ``c``.

This module only reads lists (a leaf of the data layer). Images stay on disk: pixels are decoded on demand
by :mod:`hyperlt.data.streaming`, and :class:`hyperlt.data.streamed.StreamedData` is the run's data.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import ml_collections
import numpy as np

from hyperlt.data import longtail
from hyperlt.errors import require

SOURCE = "lists"
# How many entries of each list are checked for existence before training starts; the rest are
# reported (with their list line) when a worker fails to open them.
_CHECK_FIRST = 8


@dataclasses.dataclass(frozen=True)
class ImageList:
  """Images named by one list file: absolute-able paths, labels, and where each came from."""

  root: pathlib.Path
  paths: tuple[str, ...]
  labels: np.ndarray       # int32 [N]
  lines: np.ndarray        # int32 [N], 1-based line numbers in ``source``
  source: str              # the list file, for messages

  def __len__(self) -> int:
    return len(self.paths)

  def path(self, i: int) -> pathlib.Path:
    return self.root / self.paths[i]

  def where(self, i: int) -> str:
    return f"{self.source} line {int(self.lines[i])}"

  def subset(self, index: np.ndarray) -> "ImageList":
    index = np.asarray(index, np.int64)
    return ImageList(self.root, tuple(self.paths[i] for i in index), self.labels[index], self.lines[index],
                     self.source)

  def relabel(self, mapping: np.ndarray) -> "ImageList":
    return dataclasses.replace(self, labels=mapping[self.labels].astype(np.int32))


def read_list(list_file: str | pathlib.Path, root: str | pathlib.Path, field: str) -> ImageList:
  """Parses a list file; every malformed line is an error naming ``field``, the file and the line."""
  list_file, root = pathlib.Path(list_file), pathlib.Path(root)
  require(list_file.is_file(), f"{field}: {list_file} is not a file")
  paths, labels, lines = [], [], []
  with open(list_file, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      parts = line.rsplit(maxsplit=1)
      require(len(parts) == 2 and parts[1].lstrip("-").isdigit(),
              f"{field}: {list_file} line {number}: expected 'relative/path label', got {line!r}")
      label = int(parts[1])
      require(label >= 0, f"{field}: {list_file} line {number}: labels must be >= 0, got {label}")
      require(not pathlib.PurePath(parts[0]).is_absolute(),
              f"{field}: {list_file} line {number}: the path must be relative to data.root, got {parts[0]!r}")
      paths.append(parts[0])
      labels.append(label)
      lines.append(number)
  require(paths, f"{field}: {list_file} lists no images")
  images = ImageList(root, tuple(paths), np.asarray(labels, np.int32), np.asarray(lines, np.int32),
                     str(list_file))
  for i in range(min(_CHECK_FIRST, len(images))):
    require(images.path(i).is_file(), f"{field}: {images.where(i)} names {paths[i]!r}, but "
            f"{images.path(i)} does not exist; is data.root ({root}) the directory the list is relative to?")
  return images


def frequency_order(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """``order[r]`` = the list label of the r-th most frequent class (a stable sort, so ties keep label order)."""
  counts = np.bincount(labels, minlength=num_classes)
  return np.argsort(-counts, kind="stable")


@dataclasses.dataclass(frozen=True)
class RunLists:
  """The lists of one run: classes renumbered by training frequency, validation held out if asked."""

  train: ImageList
  val: ImageList | None
  test: ImageList
  class_names: tuple[str, ...]   # class_names[c] = the list files' label of class c


def read_lists(data: ml_collections.ConfigDict) -> RunLists:
  """The lists named by a validated ``config.data`` with ``source = "lists"`` (see the module docstring).

  Without ``data.val_list``, a stratified ``data.val_fraction`` of the training list is held out for
  validation (seeded by ``data.subset_seed``).
  """
  require(bool(data.root), "data.root: the image directory the list files are relative to is required "
          "for data.source='lists'")
  require(pathlib.Path(data.root).is_dir(), f"data.root: {data.root} is not a directory")
  train = read_list(data.train_list, data.root, "data.train_list")
  test = read_list(data.test_list, data.root, "data.test_list")
  val = read_list(data.val_list, data.root, "data.val_list") if data.val_list else None
  num_classes = int(train.labels.max()) + 1
  for images, field in ((test, "data.test_list"), (val, "data.val_list")):
    if images is not None:
      top = int(images.labels.max())
      require(top < num_classes, f"{field}: label {top} at {images.where(int(np.argmax(images.labels)))} "
              f"has no training image (data.train_list has labels 0..{num_classes - 1})")
  counts = np.bincount(train.labels, minlength=num_classes)
  missing = np.flatnonzero(counts == 0)
  require(missing.size == 0, f"data.train_list: classes {missing[:10].tolist()} have no training image; "
          "labels must be 0..K-1 with every class present")
  order = frequency_order(train.labels, num_classes)
  rank = np.empty(num_classes, np.int64)
  rank[order] = np.arange(num_classes)
  train, test = train.relabel(rank), test.relabel(rank)
  val = val.relabel(rank) if val is not None else None
  if val is None and data.val_fraction > 0:
    keep, held = longtail.validation_split(train.labels, data.val_fraction, seed=data.subset_seed)
    train, val = train.subset(keep), train.subset(held)
  require(bool(np.all(np.bincount(train.labels, minlength=num_classes) > 0)), "data.val_fraction: the "
          "validation split left a class without training images; lower data.val_fraction")
  return RunLists(train, val, test, tuple(str(int(c)) for c in order))


def write_example_tree(root: str | pathlib.Path, train_counts: Sequence[int], test_per_class: int,
                       size_range: tuple[int, int] = (40, 96), seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes a small synthetic list-file dataset (for smoke tests and input-pipeline benchmarks).

  Class ``c`` gets ``train_counts[c]`` training and ``test_per_class`` test images: JPEGs of random
  sizes in ``size_range`` (a few grayscale PNGs among them, to exercise mode conversion), each a noisy
  field of a class-specific colour with a class-specific stripe, so a model can learn them. Returns the
  paths of ``train.txt`` and ``test.txt`` (written under ``root``, SADE format).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  num_classes = len(train_counts)
  colours = rng.integers(30, 226, size=(num_classes, 3))
  lists = {}
  for split, counts in (("train", train_counts), ("test", [test_per_class] * num_classes)):
    lines = []
    for c, n in enumerate(counts):
      folder = root / split / f"class{c:03d}"
      folder.mkdir(parents=True, exist_ok=True)
      for k in range(n):
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        pixels = np.clip(colours[c] + rng.normal(0, 25, size=(h, w, 3)), 0, 255)
        stripe = slice(int(h * c / num_classes), int(h * (c + 1) / num_classes) + 1)
        pixels[stripe] = 255 - pixels[stripe]
        image = Image.fromarray(pixels.astype(np.uint8))
        if k % 7 == 3:
          name = f"{k:05d}.png"
          image.convert("L").save(folder / name)
        else:
          name = f"{k:05d}.jpg"
          image.save(folder / name, quality=90)
        lines.append(f"{split}/class{c:03d}/{name} {c}")
    order = rng.permutation(len(lines))
    lists[split] = root / f"{split}.txt"
    lists[split].write_text("".join(lines[i] + "\n" for i in order))
  return lists["train"], lists["test"]

