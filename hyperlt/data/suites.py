"""Extra test suites beyond the 11 test-agnostic sets: partial class sets and Dirichlet-perturbed priors.

Like the standard sets (:mod:`hyperlt.data.longtail`), every set here is an index subset of the one
balanced test set, so a sweep scores it from the same features and predictions at the cost of indexing.

Anchor priors. The three anchors are the forward50, uniform and backward50 test sets. With K classes in
training-frequency order their class priors are

    forward-rho:  q_c  proportional to  rho^(-c/(K-1))
    backward-rho: q_c  proportional to  rho^(-(K-1-c)/(K-1))
    uniform:      q_c = 1/K

Partial class sets (METHOD.md section 5, "only some classes present"). For each anchor set, keep the images
of a subset of classes: the ``ceil(K/2)`` most frequent classes (``partial_<anchor>_head``), the
``ceil(K/2)`` rarest (``partial_<anchor>_tail``), and ``draws`` seeded random subsets of that size
(``partial_<anchor>_rand<j>``).

Dirichlet-perturbed priors (the DirMixE setting). For each anchor prior ``q`` and draw ``j``, sample
``p ~ Dir(gamma * K * q)`` (mean ``q``; the per-class concentration ``gamma`` sets how far ``p`` strays:
for a class with ``q_c = 1/K`` the relative spread of ``p_c`` is about ``1/sqrt(gamma)``), then keep
``n_c = floor(m * p_c / max_k p_k)`` images of class c (m = images per class of the balanced set, so the
most likely class keeps all of its images, as in forward-rho). Classes whose ``n_c`` is 0 are absent.
Images are chosen by a seeded per-class shuffle (``dirichlet_<anchor>_<j>``).
"""

from __future__ import annotations

import math

import numpy as np

from hyperlt.data import longtail
from hyperlt.errors import require

ANCHOR_SETS: tuple[str, ...] = ("forward50", "uniform", "backward50")
SUITES: tuple[str, ...] = ("partial", "dirichlet")


def test_set_prior(name: str, num_classes: int) -> np.ndarray:
  """Class prior [K] (float64, sums to 1) that the test-agnostic test set ``name`` is drawn from."""
  direction, rho = longtail.parse_test_set(name)
  require(num_classes >= 1, f"num_classes: expected >= 1, got {num_classes}")
  if num_classes == 1:
    return np.ones(1)
  weights = rho ** -longtail.decay_exponents(direction, num_classes)
  return weights / weights.sum()


def _select(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Sorted indices keeping the first ``counts[c]`` of a shuffle of class c's indices."""
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in enumerate(counts)]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def partial_class_sets(labels: np.ndarray, anchor_sets: dict[str, np.ndarray], draws: int = 3,
                       seed: int = 0) -> dict[str, np.ndarray]:
  """Partial class test sets (see the module docstring), ``{name: indices into labels}``.

  Args:
    labels: [N] class ids of the balanced test set, classes in training-frequency order.
    anchor_sets: the standard test sets (at least :data:`ANCHOR_SETS`), e.g. ``ResidentData.test_sets``.
    draws: random class subsets per anchor.
    seed: seed of the random class subsets.
  """
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1
  missing = [a for a in ANCHOR_SETS if a not in anchor_sets]
  require(not missing, f"anchor_sets: missing {missing}")
  require(draws >= 0, f"draws: expected >= 0, got {draws}")
  keep = math.ceil(num_classes / 2)
  rng = np.random.default_rng(seed)
  subsets = {"head": np.arange(keep), "tail": np.arange(num_classes - keep, num_classes)}
  subsets.update({f"rand{j}": np.sort(rng.choice(num_classes, keep, replace=False)) for j in range(draws)})
  sets = {}
  for anchor in ANCHOR_SETS:
    idx = np.asarray(anchor_sets[anchor])
    for tag, classes in subsets.items():
      sets[f"partial_{anchor}_{tag}"] = idx[np.isin(labels[idx], classes)]
  return sets


def dirichlet_sets(labels: np.ndarray, draws: int = 5, concentration: float = 5.0,
                   seed: int = 0) -> dict[str, np.ndarray]:
  """Dirichlet-perturbed test sets around the three anchors (see the module docstring).

  Args:
    labels: [N] class ids of the balanced test set (every class present), training-frequency order.
    draws: test priors sampled per anchor.
    concentration: per-class concentration ``gamma`` (> 0); larger stays closer to the anchor.
    seed: seed of the priors and of the image selection.
  """
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1
  per_class = np.bincount(labels, minlength=num_classes)
  require(bool(np.all(per_class > 0)), "labels: every class needs test images")
  require(draws >= 0, f"draws: expected >= 0, got {draws}")
  require(concentration > 0 and math.isfinite(concentration),
          f"concentration: expected a positive number, got {concentration}")
  m = int(per_class.min())
  rng = np.random.default_rng(seed)
  sets = {}
  for anchor in ANCHOR_SETS:
    alpha = concentration * num_classes * test_set_prior(anchor, num_classes)
    for j in range(draws):
      prior = rng.dirichlet(alpha)
      # The small epsilon keeps floor(m * 1.0) at m: NumPy's vectorised division can land one ulp low.
      counts = np.minimum(np.floor(m * prior / prior.max() + 1e-9), m).astype(np.int64)
      sets[f"dirichlet_{anchor}_{j}"] = _select(labels, counts, rng)
  return sets


def build(suites: tuple[str, ...] | list[str], labels: np.ndarray, standard_sets: dict[str, np.ndarray],
          seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """``{suite: {set name: indices}}`` for the named extra suites, each with its default settings."""
  unknown = [s for s in suites if s not in SUITES]
  require(not unknown, f"--suites: unknown {unknown}; expected names from {', '.join(SUITES)}")
  out = {}
  for suite in suites:
    if suite == "partial":
      out[suite] = partial_class_sets(labels, standard_sets, seed=seed)
    else:
      out[suite] = dirichlet_sets(labels, seed=seed)
  return out


test_set_prior.__test__ = False  # type: ignore[attr-defined]
