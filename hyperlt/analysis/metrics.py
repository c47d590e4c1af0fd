"""Classification metrics, vectorised over a leading preference axis P.

Every function takes predictions of many preferences at once (``[P, N]``; a single ``[N]`` row is also
accepted and gives results without the P axis), because sweeps score hundreds of preferences on the same
images. Pure NumPy: the inputs are already on the host after one device transfer per sweep.

Definitions, for labels ``y_i``, predictions ``yhat_i``, confidences ``p_i = max_k softmax(z_i)_k``:

* per-class recall ``r_c = #{i : y_i = c, yhat_i = c} / #{i : y_i = c}`` (NaN for a class with no image);
* balanced accuracy ``mean_c r_c`` over the classes that have images;
* accuracy under a class prior ``q``: ``sum_c q_c r_c / sum_c q_c`` over classes with images. On a test set
  drawn from ``q`` this is the expected accuracy; it is how hyperlt estimates test metrics from a
  validation set with another class distribution (label shift leaves ``r_c`` unchanged);
* expected calibration error (Guo et al., 2017) with M equal-width bins ``B_m = ((m-1)/M, m/M]`` and
  optional per-image weights ``w``:  ``ECE = sum_m |sum_{i in B_m} w_i (1[yhat_i = y_i] - p_i)| / sum_i w_i``,
  which equals ``sum_m (W_m / W) |acc_m - conf_m|`` of the usual form.
"""

from __future__ import annotations

import numpy as np

from hyperlt.errors import require

DEFAULT_ECE_BINS = 15


def _rows(x: np.ndarray) -> tuple[np.ndarray, bool]:
  """``x`` as a 2-D [P, N] array, and whether the caller passed a single row."""
  x = np.asarray(x)
  return (x[None], True) if x.ndim == 1 else (x, False)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Images per class, int64 [K]."""
  return np.bincount(np.asarray(labels), minlength=num_classes).astype(np.int64)


def per_class_recall(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Recall of each class, float64 [P, K] (or [K] for predictions [N]); NaN where a class has no image."""
  preds, single = _rows(predictions)
  labels = np.asarray(labels)
  require(preds.shape[-1] == labels.shape[0],
          f"predictions have {preds.shape[-1]} images but labels have {labels.shape[0]}")
  p = preds.shape[0]
  # Correct predictions counted per (row, class) in one bincount over the flattened row-class index.
  row_class = labels[None, :] + num_classes * np.arange(p)[:, None]
  hits = np.bincount(row_class[preds == labels], minlength=p * num_classes).reshape(p, num_classes)
  counts = class_counts(labels, num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(counts > 0, hits / counts, np.nan)
  return recall[0] if single else recall


def balanced_accuracy(recall: np.ndarray) -> np.ndarray:
  """Mean recall over the classes that have images ([..., K] -> [...]); NaN if none has."""
  recall = np.asarray(recall, np.float64)
  present = ~np.isnan(recall)
  total = np.where(present, recall, 0.0).sum(-1)
  n = present.sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def prior_weighted_accuracy(recall: np.ndarray, prior: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
  """Expected accuracy under class prior ``prior`` [K] from per-class recall [..., K].

  ``sum_c q_c r_c / sum_c q_c`` over the classes in the boolean mask ``classes`` (default: all) whose recall
  is defined; with a shot-group mask this is that group's accuracy on a test set drawn from ``prior``.
  NaN where no class with positive prior mass is left.
  """
  recall = np.asarray(recall, np.float64)
  prior = np.asarray(prior, np.float64)
  require(prior.shape == recall.shape[-1:], f"prior has {prior.shape[0]} classes but recall has "
          f"{recall.shape[-1]}")
  mask = np.ones(prior.shape, bool) if classes is None else np.asarray(classes, bool)
  weights = np.where(mask & ~np.isnan(recall), prior, 0.0)
  mass = weights.sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(mass > 0, (weights * np.nan_to_num(recall)).sum(-1) / np.where(mass > 0, mass, 1.0),
                    np.nan)


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, num_bins: int = DEFAULT_ECE_BINS,
                               weights: np.ndarray | None = None) -> np.ndarray:
  """ECE of each row of confidences [P, N] and correctness [P, N] (see the module docstring).

  ``weights`` [N] (optional, non-negative) re-weights images, e.g. to estimate the ECE on a test set with
  another class prior (:func:`prior_weights`). Returns float64 [P] (a scalar for 1-D inputs); NaN for
  rows without images.
  """
  require(num_bins >= 1, f"num_bins: expected >= 1, got {num_bins}")
  conf, single = _rows(np.asarray(confidences, np.float64))
  hits, _ = _rows(np.asarray(correct, np.float64))
  require(conf.shape == hits.shape, f"confidences {conf.shape} and correct {hits.shape} differ in shape")
  p, n = conf.shape
  w = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64)
  require(w.shape == (n,) and bool(np.all(w >= 0)), "weights: expected one non-negative number per image")
  # Bin m holds confidences in ((m-1)/M, m/M]; a confidence of exactly 0 joins the first bin.
  bins = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  flat = (bins + num_bins * np.arange(p)[:, None]).ravel()
  gap = np.bincount(flat, weights=((hits - conf) * w).ravel(), minlength=p * num_bins).reshape(p, num_bins)
  total = w.sum()
  ece = np.abs(gap).sum(1) / total if total > 0 else np.full(p, np.nan)
  return ece[0] if single else ece


def prior_weights(labels: np.ndarray, prior: np.ndarray) -> np.ndarray:
  """Per-image weights ``w_i = q_{y_i} / n_{y_i}`` that make a labelled set count like one drawn from ``q``.

  With them, any per-image average over the set (accuracy, ECE) becomes its expectation under the class
  prior ``q`` while the images within a class keep equal weight.
  """
  labels = np.asarray(labels)
  prior = np.asarray(prior, np.float64)
  counts = class_counts(labels, len(prior)).astype(np.float64)
  per_class = np.divide(prior, counts, out=np.zeros_like(prior), where=counts > 0)
  return per_class[labels]


def pareto_front(points: np.ndarray) -> np.ndarray:
  """Boolean mask [P] of the points [P, D] that no other point dominates (every coordinate maximised).

  Point a dominates b when ``a >= b`` in every coordinate and ``a > b`` in at least one. Rows with NaN are
  never on the front. Duplicates of a front point are all on the front.
  """
  pts = np.asarray(points, np.float64)
  require(pts.ndim == 2, f"points: expected a [P, D] array, got shape {pts.shape}")
  valid = ~np.isnan(pts).any(1)
  geq = (pts[:, None, :] >= pts[None, :, :]).all(-1)   # geq[a, b]: a >= b everywhere
  gt = (pts[:, None, :] > pts[None, :, :]).any(-1)
  dominated = ((geq & gt) & valid[:, None]).any(0)
  return valid & ~dominated
