"""From a config's ``data`` section to the arrays a run uses.

``prepare`` loads the source, carves out the long-tailed training set (METHOD.md section 5), holds out a
stratified validation share of it (``data.val_fraction``, used by goal-driven preference choice), fixes
the normalisation, and indexes the 11 test-agnostic test sets and the shot groups. The test sets are
index subsets of the one balanced test set, so features for all of them are computed once.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from hyperlt.data import longtail, sources
from hyperlt.errors import require


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One run's data: uint8 images [N, H, W, C], int32 labels, and what is derived from them."""

  name: str
  class_names: tuple[str, ...]
  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  class_counts: np.ndarray        # training images per class (class index = frequency rank)
  mean: tuple[float, ...]
  std: tuple[float, ...]
  test_sets: dict[str, np.ndarray]
  groups: dict[str, np.ndarray]   # many / medium / few class masks

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_x.shape[1:])

  @property
  def prior(self) -> np.ndarray:
    return longtail.prior_from_counts(self.class_counts)

  def describe(self) -> dict:
    """JSON-ready facts stored beside checkpoints."""
    return {"dataset": self.name, "class_names": list(self.class_names),
            "class_counts": [int(c) for c in self.class_counts], "image_shape": list(self.image_shape),
            "mean": list(self.mean), "std": list(self.std), "num_train": int(len(self.train_y)),
            "num_val": int(len(self.val_y)), "num_test": int(len(self.test_y)),
            "test_set_sizes": {k: int(len(v)) for k, v in self.test_sets.items()},
            "groups": {k: [int(c) for c in np.flatnonzero(v)] for k, v in self.groups.items()}}


def load_dataset(data: ml_collections.ConfigDict) -> sources.Dataset:
  return sources.load_source(data.source, path=data.path or None, data_dir=data.data_dir or None,
                             manual_dir=data.manual_dir or None, download=data.download or None)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale."""
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  std = np.maximum(x.std(0), 1e-3)
  return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in std)


def prepare(data: ml_collections.ConfigDict, dataset: sources.Dataset | None = None) -> Prepared:
  """The long-tailed training, validation and test arrays described by ``data``."""
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
  return Prepared(
      name=dataset.name, class_names=tuple(dataset.class_names),
      train_x=dataset.x_train[train_idx], train_y=train_y,
      val_x=dataset.x_train[val_idx], val_y=dataset.y_train[val_idx],
      test_x=dataset.x_test, test_y=dataset.y_test, class_counts=counts, mean=mean, std=std,
      test_sets=longtail.all_test_sets(dataset.y_test, seed=data.test_seed),
      groups=longtail.shot_groups(counts, many_above=data.many_above, few_below=data.few_below))
