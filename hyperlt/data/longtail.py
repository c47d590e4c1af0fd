"""Long-tailed training subsets, test-agnostic test sets, shot groups and splits.

Pure NumPy. Everything here follows the SADE / LDAM-DRW data protocol (METHOD.md section 5):

* Long-tailed training set from a balanced one with ``n_max`` images per class and ``K`` classes:
  ``n_c = floor(n_max * IR^(-c/(K-1)))`` for ``c = 0..K-1``, so class 0 is the head and class
  ``K-1`` the tail with ``floor(n_max / IR)`` images.
* Test-agnostic test sets from a balanced test set with ``m`` images per class (classes in
  training-frequency order): forward-rho ``n_c = floor(m * rho^(-c/(K-1)))``, backward-rho
  ``n_c = floor(m * rho^(-(K-1-c)/(K-1)))``, uniform = the whole test set.

All selections are seeded and reproducible: one ``np.random.default_rng(seed)`` walks the classes in
order and shuffles each class's indices, and a class keeps a prefix of its shuffle. Because the shuffle
does not depend on how many images are kept, smaller selections are nested in larger ones (forward50
is a subset of forward25 and so on).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from hyperlt.errors import UserInputError, require

TEST_SET_NAMES: tuple[str, ...] = (
    "forward50", "forward25", "forward10", "forward5", "forward2", "uniform",
    "backward2", "backward5", "backward10", "backward25", "backward50",
)

SHOT_GROUPS: tuple[str, ...] = ("many", "medium", "few")

# Relative tolerance for snapping m * rho^(-t) to an integer before flooring: pow() can land one ulp
# below an exact integer (e.g. 500 * 100^-1 -> 4.999...), and floor would then lose a whole image.
_SNAP_RTOL = 1e-9


def _floor_decay(m: int, rho: float, exponents: np.ndarray) -> np.ndarray:
  """Returns ``floor(m * rho^(-t))`` for each ``t`` in ``exponents`` as int64.

  Values within a relative ``1e-9`` of an integer are snapped to it first, so floating-point error in
  the power never drops an image from a count that is mathematically an integer.
  """
  values = float(m) * np.power(float(rho), -np.asarray(exponents, dtype=np.float64))
  nearest = np.round(values)
  snapped = np.where(np.abs(values - nearest) <= _SNAP_RTOL * np.maximum(nearest, 1.0), nearest, values)
  return np.floor(snapped).astype(np.int64)


def _check_labels(labels: np.ndarray, what: str = "labels") -> np.ndarray:
  """Validates a 1-D array of non-negative integer class labels and returns it as int64."""
  labels = np.asarray(labels)
  require(labels.ndim == 1, f"{what} must be a 1-D array of class ids, got shape {labels.shape}")
  require(labels.size > 0, f"{what} must not be empty")
  require(np.issubdtype(labels.dtype, np.integer),
          f"{what} must have an integer dtype, got {labels.dtype}")
  require(int(labels.min()) >= 0, f"{what} must be non-negative class ids, found {int(labels.min())}")
  return labels.astype(np.int64, copy=False)


def _class_indices(labels: np.ndarray) -> list[np.ndarray]:
  """Indices of each class ``0..max(labels)``, in ascending order."""
  order = np.argsort(labels, kind="stable")
  counts = np.bincount(labels)
  return np.split(order, np.cumsum(counts)[:-1])


def _select(labels: np.ndarray, counts: np.ndarray, seed: int, what: str) -> np.ndarray:
  """Seeded per-class selection: class ``c`` keeps the first ``counts[c]`` of a shuffle of its indices."""
  per_class = _class_indices(labels)
  require(len(per_class) == len(counts),
          f"{what}: labels have {len(per_class)} classes but {len(counts)} counts were requested")
  rng = np.random.default_rng(seed)
  chosen = []
  for c, (idx, n_c) in enumerate(zip(per_class, counts)):
    if len(idx) < n_c:
      raise UserInputError(
          f"{what}: class {c} has {len(idx)} images but {int(n_c)} are needed; lower n_max or use a "
          "larger source set")
    # Shuffle every class, even when keeping all or none, so the random stream (and therefore every
    # later class's selection) does not depend on the requested counts.
    chosen.append(rng.permutation(idx)[:n_c])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
  """Per-class image counts of a long-tailed training set.

  ``n_c = floor(n_max * IR^(-c/(K-1)))`` for ``c = 0..K-1``: an exponential decay from ``n_max``
  (class 0) to ``floor(n_max / IR)`` (class ``K-1``). ``IR = 1`` gives ``n_max`` for every class.

  Args:
    n_max: images of the most frequent class (>= 1).
    num_classes: number of classes ``K`` (>= 1).
    imbalance_ratio: ``IR = n_max / n_min`` (>= 1).

  Returns:
    int64 array of shape ``[K]``, non-increasing.

  Raises:
    UserInputError: on out-of-range arguments, or when the tail class would get no image.
  """
  require(isinstance(n_max, (int, np.integer)) and n_max >= 1,
          f"n_max must be a positive integer, got {n_max!r}")
  require(isinstance(num_classes, (int, np.integer)) and num_classes >= 1,
          f"num_classes must be a positive integer, got {num_classes!r}")
  require(isinstance(imbalance_ratio, (int, float, np.number)) and math.isfinite(imbalance_ratio)
          and imbalance_ratio >= 1, f"imbalance_ratio must be a finite number >= 1, got {imbalance_ratio!r}")
  if num_classes == 1:
    return np.array([n_max], dtype=np.int64)
  exponents = np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
  counts = _floor_decay(n_max, imbalance_ratio, exponents)
  require(counts[-1] >= 1,
          f"imbalance_ratio {imbalance_ratio} is too large for n_max {n_max}: the rarest class would get "
          f"no image (need imbalance_ratio <= n_max)")
  return counts


def longtail_indices(labels: np.ndarray, imbalance_ratio: float, n_max: int | None = None,
                     seed: int = 0) -> np.ndarray:
  """Indices into ``labels`` of a long-tailed subset (see :func:`longtail_counts`).

  Class ``c`` keeps the first ``n_c`` of a seeded shuffle of its indices.

  Args:
    labels: ``[N]`` integer class ids ``0..K-1`` of a (usually balanced) training set.
    imbalance_ratio: ``IR >= 1``.
    n_max: images kept for class 0; defaults to the smallest class count in ``labels``.
    seed: seed of ``np.random.default_rng``.

  Returns:
    int64 indices, sorted ascending.
  """
  labels = _check_labels(labels)
  class_counts = np.bincount(labels)
  if n_max is None:
    n_max = int(class_counts.min())
    require(n_max >= 1, f"labels contain no image of class {int(np.argmin(class_counts))}; every class "
            f"0..{len(class_counts) - 1} needs images to build a long-tailed subset")
  counts = longtail_counts(n_max, len(class_counts), imbalance_ratio)
  return _select(labels, counts, seed, "longtail_indices")


_TEST_SET_RE = re.compile(r"^(forward|backward)(\d+)$")


def parse_test_set(name: str) -> tuple[str, float]:
  """``(direction, rho)`` of a test-agnostic test set name: ``"forward50"`` -> ``("forward", 50.0)``,
  ``"backward2"`` -> ``("backward", 2.0)``, ``"uniform"`` -> ``("uniform", 1.0)``.

  The one reader of these names: the counts (:func:`test_set_counts`) and the priors
  (:func:`hyperlt.data.suites.test_set_prior`) both take the shape of a set from here.

  Raises:
    UserInputError: ``name`` is not one of :data:`TEST_SET_NAMES`.
  """
  require(name in TEST_SET_NAMES, f"unknown test set {name!r}; expected one of: {', '.join(TEST_SET_NAMES)}")
  if name == "uniform":
    return "uniform", 1.0
  direction, rho = _TEST_SET_RE.match(name).groups()
  return direction, float(rho)


def decay_exponents(direction: str, num_classes: int) -> np.ndarray:
  """``t_c`` of the profile ``rho^(-t_c)`` over ``K >= 2`` classes in training-frequency order.

  forward: ``t_c = c / (K-1)`` (the head keeps most); backward: ``t_c = (K-1-c) / (K-1)`` (the tail
  keeps most); uniform: ``t_c = 0``.
  """
  if direction == "uniform":
    return np.zeros(num_classes)
  exponents = np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
  return exponents[::-1] if direction == "backward" else exponents


def test_set_counts(name: str, m: int, num_classes: int) -> np.ndarray:
  """Per-class image counts of one of the test-agnostic test sets.

  With ``K`` classes and ``m`` test images per class:

  * ``forward<rho>``: ``n_c = floor(m * rho^(-c/(K-1)))`` (same shape as the training set's tail);
  * ``backward<rho>``: ``n_c = floor(m * rho^(-(K-1-c)/(K-1)))`` (the tail becomes the head);
  * ``uniform``: ``n_c = m``.

  Args:
    name: one of :data:`TEST_SET_NAMES`.
    m: images per class of the balanced test set.
    num_classes: ``K``.

  Returns:
    int64 array of shape ``[K]``.
  """
  direction, rho = parse_test_set(name)
  require(isinstance(m, (int, np.integer)) and m >= 1, f"m must be a positive integer, got {m!r}")
  require(isinstance(num_classes, (int, np.integer)) and num_classes >= 1,
          f"num_classes must be a positive integer, got {num_classes!r}")
  if num_classes == 1:
    return np.full(num_classes, m, dtype=np.int64)
  return _floor_decay(m, rho, decay_exponents(direction, num_classes))


def test_set_indices(labels: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
  """Indices into balanced test ``labels`` of the test-agnostic test set ``name``.

  ``m`` is the smallest class count; class ``c`` keeps the first ``n_c`` (:func:`test_set_counts`) of
  a seeded shuffle of its indices. ``"uniform"`` is the whole test set, ``np.arange(len(labels))``,
  even when classes have unequal counts.

  Args:
    labels: ``[N]`` integer class ids ``0..K-1``, classes numbered in training-frequency order.
    name: one of :data:`TEST_SET_NAMES`.
    seed: seed of ``np.random.default_rng``.

  Returns:
    int64 indices, sorted ascending.
  """
  direction, _ = parse_test_set(name)
  labels = _check_labels(labels, "test labels")
  if direction == "uniform":
    return np.arange(len(labels), dtype=np.int64)
  class_counts = np.bincount(labels)
  require(class_counts.min() >= 1,
          f"test labels contain no image of class {int(np.argmin(class_counts))}; every class "
          f"0..{len(class_counts) - 1} needs test images")
  counts = test_set_counts(name, int(class_counts.min()), len(class_counts))
  return _select(labels, counts, seed, f"test set {name}")


def all_test_sets(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """All eleven test sets, ``{name: indices}`` in :data:`TEST_SET_NAMES` order."""
  return {name: test_set_indices(labels, name, seed) for name in TEST_SET_NAMES}


def shot_groups(train_counts: Sequence[int] | np.ndarray, many_above: int = 100,
                few_below: int = 20) -> dict[str, np.ndarray]:
  """Boolean class masks of the many / medium / few-shot groups.

  many: ``n_c > many_above``; medium: ``few_below <= n_c <= many_above``; few: ``n_c < few_below``.
  The three masks partition the classes.

  Args:
    train_counts: ``[K]`` training images per class.
    many_above: classes with more images than this are many-shot.
    few_below: classes with fewer images than this are few-shot.

  Returns:
    ``{"many": mask, "medium": mask, "few": mask}``, each a bool array of shape ``[K]``.
  """
  counts = np.asarray(train_counts)
  require(counts.ndim == 1 and counts.size > 0,
          f"train_counts must be a non-empty 1-D array, got shape {counts.shape}")
  require(np.all(counts >= 0), "train_counts must be non-negative")
  require(few_below <= many_above + 1,
          f"few_below ({few_below}) must be at most many_above + 1 ({many_above + 1})")
  return {
      "many": counts > many_above,
      "medium": (counts >= few_below) & (counts <= many_above),
      "few": counts < few_below,
  }


def validation_split(labels: np.ndarray, fraction: float,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Stratified split of a (long-tailed) training set into ``(train_idx, val_idx)``.

  A class with ``n_c`` images sends ``v_c = floor(fraction * n_c + 1/2)`` (round half up) of them to
  validation, clamped so that ``v_c >= 1`` when ``n_c >= 2`` and ``fraction > 0`` (every class is
  validated) and ``v_c <= n_c - 1`` (every class keeps a training image). Which images go is a seeded
  shuffle per class.

  Args:
    labels: ``[N]`` integer class ids.
    fraction: in ``[0, 1)``; 0 returns ``(arange(N), [])``.
    seed: seed of ``np.random.default_rng``.

  Returns:
    ``(train_idx, val_idx)``, disjoint int64 index arrays covering ``0..N-1``, each sorted.
  """
  labels = _check_labels(labels)
  require(isinstance(fraction, (int, float, np.number)) and 0 <= fraction < 1,
          f"validation fraction must be in [0, 1), got {fraction!r}")
  if fraction == 0:
    return np.arange(len(labels), dtype=np.int64), np.zeros(0, dtype=np.int64)
  rng = np.random.default_rng(seed)
  train, val = [], []
  for idx in _class_indices(labels):
    n_c = len(idx)
    v_c = int(math.floor(fraction * n_c + 0.5))
    if n_c >= 2:
      v_c = max(v_c, 1)
    v_c = min(v_c, max(n_c - 1, 0))
    perm = rng.permutation(idx)
    val.append(perm[:v_c])
    train.append(perm[v_c:])
  return (np.sort(np.concatenate(train)).astype(np.int64),
          np.sort(np.concatenate(val)).astype(np.int64))


def prior_from_counts(counts: Sequence[float] | np.ndarray) -> np.ndarray:
  """Class prior ``p_c = n_c / sum_k n_k`` as float64."""
  counts = np.asarray(counts, dtype=np.float64)
  require(counts.ndim == 1 and counts.size > 0,
          f"counts must be a non-empty 1-D array, got shape {counts.shape}")
  require(bool(np.all(np.isfinite(counts))) and bool(np.all(counts >= 0)),
          "counts must be finite and non-negative")
  total = counts.sum()
  require(total > 0, "counts must not all be zero")
  return counts / total


# These two are library functions whose names merely start with "test"; tell pytest not to collect them
# when a test module imports them by name.
test_set_counts.__test__ = False  # type: ignore[attr-defined]
test_set_indices.__test__ = False  # type: ignore[attr-defined]
