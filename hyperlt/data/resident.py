"""Data held in memory: the long-tailed arrays of a run, and the device-resident training input.

``prepare`` loads the source, carves out the long-tailed training set (the SADE / LDAM-DRW protocol of
:mod:`hyperlt.data.longtail`), holds out a stratified validation share of it (``data.val_fraction``, used by goal-driven
preference choice), fixes the normalisation, and indexes the 11 test-agnostic test sets and the shot
groups. The test sets are index subsets of the one balanced test set, so features for all of them are
computed once.

Training (:class:`ResidentInput`): the uint8 training set is copied to every device once; every epoch a
device-side permutation is drawn and each step gathers, normalises and augments its batch on the device,
so the loop moves no data from host to device.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from hyperlt import distributed
from hyperlt.data import augment, longtail, sources
from hyperlt.data.dataset import Facts, StepInput, channel_stats
from hyperlt.errors import require

# A seed offset that keeps the epoch permutations apart from every other use of the run's key.
_PERMUTATION_STREAM = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResidentData(Facts):
  """One run's data in memory: uint8 images [N, H, W, C], int32 labels, and the shared :class:`Facts`."""

  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_x.shape[1:])

  def train_input(self, config: ml_collections.ConfigDict, key: jax.Array, mesh: Mesh) -> "ResidentInput":
    """Device-resident batches of ``config.optim.batch_size``, augmented per ``config.data``; the epoch
    permutations derive from ``key`` (the run's training key)."""
    return ResidentInput(self.train_x, self.train_y, batch_size=config.optim.batch_size, mean=self.mean,
                         std=self.std, augmentation=augment.Augmentation.from_config(config.data), key=key,
                         mesh=mesh)


def step_input(batch_size: int, mean, std, augmentation: augment.Augmentation, mesh: Mesh) -> StepInput:
  """Step arguments ``(x_all, y_all, perm, index)``: batch ``index`` of the epoch permutation ``perm`` over
  the device-resident uint8 images ``x_all``, normalised and augmented on the device.

  ``x_all``, ``y_all`` and ``perm`` are replicated over ``mesh``; the gathered batch is constrained to the
  "data" sharding, so each device augments only its own rows.
  """
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  rows = distributed.batch_sharding(mesh)

  def prepare(key, x_all, y_all, perm, index):
    idx = jax.lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
    images = jax.lax.with_sharding_constraint(x_all[idx], rows)
    labels = jax.lax.with_sharding_constraint(y_all[idx], rows)
    return augmentation(key, augment.normalize(images, mean, std)), labels

  return StepInput(prepare, (distributed.replicated(mesh),) * 4, indexed=True)


def make_permutation(num_train: int, mesh: Mesh):
  """Jitted ``(key, epoch) -> perm``: the epoch's shuffle of the training set, replicated over ``mesh``."""

  def permutation(key, epoch):
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, _PERMUTATION_STREAM), epoch),
                                  num_train)

  whole = distributed.replicated(mesh)
  return jax.jit(permutation, in_shardings=(whole, whole), out_shardings=whole)


class ResidentInput:
  """The training input of in-memory data (see the module docstring); a :class:`~hyperlt.data.dataset.TrainInput`."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, mean, std,
               augmentation: augment.Augmentation, key: jax.Array, mesh: Mesh):
    self.steps_per_epoch = len(labels) // batch_size
    self.step_input = step_input(batch_size, mean, std, augmentation, mesh)
    self._permutation = make_permutation(len(labels), mesh)
    self._x = distributed.replicate(images, mesh)
    self._y = distributed.replicate(np.asarray(labels).astype(np.int32), mesh)
    # A copy, because the step donates (and so invalidates) the buffers of the state the key came from.
    self._key = distributed.replicate(key, mesh)

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple]:
    perm = self._permutation(self._key, epoch)
    for i in range(start, self.steps_per_epoch):
      yield self._x, self._y, perm, i

  def interval_metrics(self, seconds: float) -> dict[str, float]:
    return {}  # Nothing waits for input: the batches are on the device already.

  def close(self) -> None:
    self._x = self._y = None  # The device copies of the training set go with the last reference.


def load_dataset(data: ml_collections.ConfigDict) -> sources.Dataset:
  return sources.load_source(data.source, path=data.path or None, data_dir=data.data_dir or None,
                             manual_dir=data.manual_dir or None, download=data.download or None)


def prepare(data: ml_collections.ConfigDict, dataset: sources.Dataset | None = None) -> ResidentData:
  """The long-tailed training, validation and test arrays described by ``data`` (of ``dataset`` if given)."""
  dataset = load_dataset(data) if dataset is None else dataset
  lt = longtail.longtail_indices(dataset.y_train, data.imbalance_ratio, n_max=data.n_max or None,
                                 seed=data.subset_seed)
  fit, val = longtail.validation_split(dataset.y_train[lt], data.val_fraction, seed=data.subset_seed)
  train_idx, val_idx = lt[fit], lt[val]
  train_y = dataset.y_train[train_idx]
  counts = np.bincount(train_y, minlength=dataset.num_classes)
  require(bool(np.all(counts > 0)), "data: every class needs at least one training image after the "
          "long-tailed selection and the validation split; lower data.imbalance_ratio or data.val_fraction")
  if data.mean:
    channels = dataset.image_shape[-1]
    require(len(data.mean) == channels, f"data.mean: expected {channels} values (one per channel), "
            f"got {len(data.mean)}")
    mean, std = tuple(data.mean), tuple(data.std)
  else:
    mean, std = channel_stats(dataset.x_train[train_idx])
  return ResidentData(
      name=dataset.name, class_names=tuple(dataset.class_names),
      train_x=dataset.x_train[train_idx], train_y=train_y,
      val_x=dataset.x_train[val_idx], val_y=dataset.y_train[val_idx],
      test_x=dataset.x_test, test_y=dataset.y_test, class_counts=counts, mean=mean, std=std,
      test_sets=longtail.all_test_sets(dataset.y_test, seed=data.test_seed),
      groups=longtail.shot_groups(counts, many_above=data.many_above, few_below=data.few_below))
