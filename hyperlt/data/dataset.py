"""What training and evaluation need of a run's data, whether it lives in memory or is streamed from disk.

:class:`RunData` is the protocol. Two implementations provide it:

* :class:`hyperlt.data.resident.ResidentData` -- uint8 arrays in memory (digits, .npz, TFDS); training
  copies them to every device once and samples and augments batches inside the jitted step;
* :class:`hyperlt.data.streamed.StreamedData` -- SADE-style list files over an image directory
  (ImageNet-LT, Places-LT, iNaturalist); threads decode and augment on the host and the batches are
  prefetched.

Both derive from :class:`Facts`, which holds what every run's data has (names, class counts,
normalisation, the test sets and shot groups) and writes the one ``data.json`` record
(:meth:`Facts.describe`).

Training input. ``data.train_input(config, key, mesh)`` returns a :class:`TrainInput`: the training loop
asks it for each epoch's step arguments and lets it turn those into a batch inside the jitted step
(:class:`StepInput`), so the loop itself is the same for both kinds of data. The split keeps the
random-key scheme of the step (which key augments, which samples preferences) in
:mod:`hyperlt.training`, and what a batch is made of here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, Sharding

from hyperlt.data import longtail


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale."""
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  std = np.maximum(x.std(0), 1e-3)
  return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in std)


@dataclasses.dataclass(frozen=True)
class StepInput:
  """How the jitted training step turns its input arguments into a batch.

  ``prepare(key, *args) -> (images, labels)`` is traced inside the step: ``args`` are what
  :meth:`TrainInput.epoch` yields for one step, ``key`` is the step's augmentation key, ``images`` are
  normalised float32 ``[B, H, W, C]`` split over the mesh's "data" axis and ``labels`` int32 ``[B]``.
  ``shardings`` are the ``in_shardings`` of ``args``. ``indexed``: the last argument is the batch index
  within the epoch and the others stay the same for the whole epoch, so one call can run several
  consecutive steps from the first step's arguments (hyperlt.training.loop.make_multi_step).
  """

  prepare: Callable[..., tuple[jax.Array, jax.Array]]
  shardings: tuple[Sharding, ...]
  indexed: bool = False


@runtime_checkable
class TrainInput(Protocol):
  """One run's training batches: the step arguments of every epoch, and how the step reads them."""

  step_input: StepInput
  steps_per_epoch: int

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, ...]]:
    """Step arguments of steps ``start..steps_per_epoch-1`` of ``epoch``; a function of the run's seed and
    ``epoch`` only, so a resumed run sees the batches it would have seen. Close it to stop early."""

  def interval_metrics(self, seconds: float) -> dict[str, float]:
    """Input facts over the ``seconds`` since the previous call, merged into the logged metrics record."""

  def close(self) -> None:
    """Releases what the input holds (threads, device buffers)."""


@runtime_checkable
class RunData(Protocol):
  """One run's data as training, evaluation, sweeps, choice and adaptation read it.

  Classes are numbered by training frequency (class 0 is the most frequent). ``val_x`` and ``test_x``
  are uint8 ``[N, H, W, C]`` images; for streamed data an array-like whose ``len()`` is ``N`` and whose
  slices and index arrays are uint8 arrays, decoded on demand.
  """

  name: str
  class_names: tuple[str, ...]
  class_counts: np.ndarray
  mean: tuple[float, ...]
  std: tuple[float, ...]
  test_sets: dict[str, np.ndarray]
  groups: dict[str, np.ndarray]

  @property
  def num_classes(self) -> int: ...

  @property
  def prior(self) -> np.ndarray: ...

  @property
  def image_shape(self) -> tuple[int, int, int]: ...

  @property
  def train_y(self) -> np.ndarray: ...

  @property
  def val_y(self) -> np.ndarray: ...

  @property
  def test_y(self) -> np.ndarray: ...

  @property
  def val_x(self) -> Any: ...

  @property
  def test_x(self) -> Any: ...

  def describe(self) -> dict: ...

  def train_input(self, config: ml_collections.ConfigDict, key: jax.Array, mesh: Mesh) -> TrainInput: ...

  def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
  """What every run's data has, whatever holds its images; subclasses add the images and labels
  (``train_y``, ``val_y``, ``test_y``, ``image_shape`` ...)."""

  name: str
  class_names: tuple[str, ...]
  class_counts: np.ndarray         # training images per class (class index = frequency rank)
  mean: tuple[float, ...]
  std: tuple[float, ...]
  test_sets: dict[str, np.ndarray]
  groups: dict[str, np.ndarray]    # many / medium / few class masks

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def prior(self) -> np.ndarray:
    return longtail.prior_from_counts(self.class_counts)

  def describe(self) -> dict:
    """JSON-ready facts stored beside checkpoints (``data.json``); later commands read these keys."""
    return {"dataset": self.name, "class_names": list(self.class_names),
            "class_counts": [int(c) for c in self.class_counts], "image_shape": list(self.image_shape),
            "mean": list(self.mean), "std": list(self.std), "num_train": int(len(self.train_y)),
            "num_val": int(len(self.val_y)), "num_test": int(len(self.test_y)),
            "test_set_sizes": {k: int(len(v)) for k, v in self.test_sets.items()},
            "groups": {k: [int(c) for c in np.flatnonzero(v)] for k, v in self.groups.items()}}

  def close(self) -> None:
    """Releases threads the data holds (nothing, unless a subclass decodes on demand)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()
