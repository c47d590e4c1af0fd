"""Data streamed from list files: the run's data and its host-decoded, prefetched training input.

The lists are read by :mod:`hyperlt.data.lists` (classes renumbered by training frequency) and the pixels
decoded on demand by :mod:`hyperlt.data.streaming`: random-resized crops for training, resize plus centre
crop for evaluation. Normalisation happens on the device, so the host sends uint8.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from hyperlt import distributed
from hyperlt.data import augment, longtail, lists, streaming
from hyperlt.data.dataset import Facts, StepInput, channel_stats
from hyperlt.errors import require

_STATS_SAMPLE = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamedData(Facts):
  """A run's data from list files: the shared :class:`Facts` with the images left on disk.

  ``val_x`` and ``test_x`` are :class:`~hyperlt.data.streaming.DecodedImages` views (test transform) that
  index like uint8 arrays ``[N, S, S, 3]``, so evaluation code written for in-memory arrays works
  unchanged. The data owns these views and their threads: :meth:`close` (or a ``with`` block) ends them.
  """

  train: lists.ImageList
  val: lists.ImageList | None
  test: lists.ImageList
  image_size: int
  resize: int
  workers: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  @property
  def train_y(self) -> np.ndarray:
    return self.train.labels

  @property
  def val_y(self) -> np.ndarray:
    return self.val.labels if self.val is not None else np.zeros(0, np.int32)

  @property
  def test_y(self) -> np.ndarray:
    return self.test.labels

  def _view(self, images: lists.ImageList | None) -> streaming.DecodedImages:
    return streaming.DecodedImages(images, self.image_size, self.resize, self.workers)

  # cached_property writes the instance __dict__ directly, so it works on a frozen dataclass: one view,
  # and so one thread pool, per split.
  @functools.cached_property
  def val_x(self) -> streaming.DecodedImages:
    return self._view(self.val)

  @functools.cached_property
  def test_x(self) -> streaming.DecodedImages:
    return self._view(self.test)

  def close(self) -> None:
    """Ends the decoding threads of the views made so far."""
    for name in ("val_x", "test_x"):
      view = self.__dict__.get(name)
      if view is not None:
        view.close()

  def describe(self) -> dict:
    """The facts of :meth:`Facts.describe`, plus where the lists are."""
    return {**super().describe(),
            "lists": {"root": str(self.train.root), "train": self.train.source,
                      "val": self.val.source if self.val is not None else "", "test": self.test.source}}

  def train_input(self, config: ml_collections.ConfigDict, key: jax.Array, mesh: Mesh) -> "StreamingInput":
    """Host-decoded batches of ``config.optim.batch_size``, transformed per ``config.data`` and seeded by
    ``config.seed`` (``key`` is not used: the host draws its own randomness, see hyperlt.data.streaming)."""
    del key
    data, batch_size = config.data, config.optim.batch_size
    loader = streaming.Loader(
        self.train, batch_size, self.image_size, config.seed, min_scale=data.min_scale, flip=data.flip,
        color_jitter=data.color_jitter, workers=data.workers, prefetch=data.prefetch,
        rows=distributed.process_rows(batch_size),
        put=lambda x, y: (distributed.global_batch(x, mesh, batch_size),
                          distributed.global_batch(y.astype(np.int32), mesh, batch_size)))
    return StreamingInput(loader, step_input(self.mean, self.std, mesh))


def step_input(mean, std, mesh: Mesh) -> StepInput:
  """Step arguments ``(images_uint8 [B, S, S, C], labels [B])``, split over the "data" axis of ``mesh`` and
  augmented on the host already: the step only normalises them (on the device, so the host sends uint8)."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  rows = distributed.batch_sharding(mesh)

  def prepare(key, images, labels):
    del key
    return augment.normalize(images, mean, std), labels

  return StepInput(prepare, (rows, rows))


class StreamingInput:
  """The training input of list-file data: a :class:`~hyperlt.data.streaming.Loader`'s epochs, and how long
  the loop waited for them; a :class:`~hyperlt.data.dataset.TrainInput`."""

  def __init__(self, loader: streaming.Loader, step: StepInput):
    self.loader, self.step_input = loader, step
    self.steps_per_epoch = loader.steps_per_epoch
    self._waited = 0.0

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple]:
    return self.loader.epoch(epoch, start)

  def interval_metrics(self, seconds: float) -> dict[str, float]:
    """``input_wait_fraction``: the share of the interval the loop waited for a batch. With at most
    ``STEPS_IN_FLIGHT`` steps queued that is about the share the device sat idle for want of input
    (0 = decoding keeps up)."""
    waited, self._waited = self.loader.wait_s - self._waited, self.loader.wait_s
    return {"input_wait_fraction": waited / seconds}

  def close(self) -> None:
    self.loader.close()


def estimate_stats(images: lists.ImageList, image_size: int, resize: int, workers: int,
                   seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std (0..1 scale) of a seeded sample of up to 256 training images."""
  take = np.sort(np.random.default_rng(seed).permutation(len(images))[:_STATS_SAMPLE])
  with streaming.DecodedImages(images, image_size, resize, workers) as view:
    return channel_stats(view[take])


def prepare(data: ml_collections.ConfigDict) -> StreamedData:
  """The :class:`StreamedData` described by a validated ``config.data`` with ``source = "lists"``."""
  split = lists.read_lists(data)
  class_counts = np.bincount(split.train.labels, minlength=len(split.class_names))
  if data.mean:
    require(len(data.mean) == 3, f"data.mean: expected 3 values (RGB), got {len(data.mean)}")
    mean, std = tuple(data.mean), tuple(data.std)
  else:
    mean, std = estimate_stats(split.train, data.image_size, data.resize, data.workers, seed=data.subset_seed)
  return StreamedData(
      name=pathlib.Path(data.train_list).stem, class_names=split.class_names,
      train=split.train, val=split.val, test=split.test, class_counts=class_counts, mean=mean, std=std,
      test_sets=longtail.all_test_sets(split.test.labels, seed=data.test_seed),
      groups=longtail.shot_groups(class_counts, many_above=data.many_above, few_below=data.few_below),
      image_size=data.image_size, resize=data.resize, workers=data.workers)
