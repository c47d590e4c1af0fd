"""Tests of hyperlt.analysis.metrics against scikit-learn and straightforward reference implementations."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from hyperlt.analysis import metrics


def _random_predictions(seed: int, p: int = 7, n: int = 300, k: int = 6):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  # Mostly right, so recalls spread over (0, 1) instead of sitting near 1/k.
  preds = np.where(rng.random((p, n)) < rng.uniform(0.3, 0.9, (p, 1)), labels, rng.integers(0, k, (p, n)))
  return preds, labels, k


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_recall_and_balanced_accuracy_match_sklearn(seed):
  preds, labels, k = _random_predictions(seed)
  recall = metrics.per_class_recall(preds, labels, k)
  assert recall.shape == (len(preds), k)
  for row, pred in zip(recall, preds):
    np.testing.assert_allclose(row, sk_metrics.recall_score(labels, pred, labels=range(k), average=None,
                                                            zero_division=0))
  np.testing.assert_allclose(metrics.balanced_accuracy(recall),
                             [sk_metrics.balanced_accuracy_score(labels, pred) for pred in preds])
  np.testing.assert_allclose(metrics.per_class_recall(preds[0], labels, k), recall[0])


def test_recall_of_an_absent_class_is_nan_and_skipped_by_balanced_accuracy():
  labels = np.array([0, 0, 1, 1, 1])
  preds = np.array([0, 1, 1, 1, 0])
  recall = metrics.per_class_recall(preds, labels, 3)
  np.testing.assert_allclose(recall[:2], [0.5, 2 / 3])
  assert np.isnan(recall[2])
  assert metrics.balanced_accuracy(recall) == pytest.approx((0.5 + 2 / 3) / 2)


def _ece_reference(conf, correct, bins):
  """Guo et al.'s definition, one bin at a time: sum_m |B_m|/n * |acc(B_m) - conf(B_m)|."""
  total = 0.0
  for m in range(bins):
    lo, hi = m / bins, (m + 1) / bins
    in_bin = (conf > lo) & (conf <= hi) if m else (conf <= hi)
    if in_bin.any():
      total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return total


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_ece_matches_the_per_bin_definition(bins):
  rng = np.random.default_rng(bins)
  conf = rng.uniform(0.1, 1.0, (4, 500))
  correct = rng.random((4, 500)) < conf ** 2     # overconfident on purpose
  ece = metrics.expected_calibration_error(conf, correct, bins)
  np.testing.assert_allclose(ece, [_ece_reference(c, k, bins) for c, k in zip(conf, correct)], rtol=1e-12)
  assert np.all(ece > 0)


def test_ece_extremes_and_integer_weights_equal_duplication():
  ones = np.ones(10)
  assert metrics.expected_calibration_error(ones, np.ones(10, bool)) == 0.0
  assert metrics.expected_calibration_error(ones, np.zeros(10, bool)) == 1.0
  rng = np.random.default_rng(3)
  conf, correct = rng.uniform(0.2, 1, 50), rng.random(50) < 0.6
  weights = rng.integers(0, 4, 50)
  duplicated = metrics.expected_calibration_error(np.repeat(conf, weights), np.repeat(correct, weights))
  assert metrics.expected_calibration_error(conf, correct, weights=weights.astype(float)) == pytest.approx(duplicated)


def test_prior_weighted_accuracy_with_the_empirical_prior_is_plain_accuracy():
  preds, labels, k = _random_predictions(4)
  recall = metrics.per_class_recall(preds, labels, k)
  empirical = np.bincount(labels, minlength=k) / len(labels)
  np.testing.assert_allclose(metrics.prior_weighted_accuracy(recall, empirical), (preds == labels).mean(1))
  group = np.arange(k) >= k // 2
  in_group = group[labels]
  np.testing.assert_allclose(metrics.prior_weighted_accuracy(recall, empirical, group),
                             (preds[:, in_group] == labels[in_group]).mean(1))


def test_prior_weights_reproduce_the_prior_weighted_accuracy():
  preds, labels, k = _random_predictions(5)
  prior = np.random.default_rng(5).dirichlet(np.ones(k))
  w = metrics.prior_weights(labels, prior)
  assert w.sum() == pytest.approx(1.0)
  weighted = ((preds == labels) * w).sum(1) / w.sum()
  np.testing.assert_allclose(weighted, metrics.prior_weighted_accuracy(metrics.per_class_recall(preds, labels, k),
                                                                       prior))


def test_pareto_front_matches_brute_force():
  rng = np.random.default_rng(6)
  points = rng.integers(0, 6, (80, 2)).astype(float)   # many ties and duplicates
  points[3] = np.nan
  front = metrics.pareto_front(points)
  for i, a in enumerate(points):
    if np.isnan(a).any():
      assert not front[i]
      continue
    dominated = any(np.all(b >= a) and np.any(b > a) for b in points if not np.isnan(b).any())
    assert front[i] == (not dominated)
  assert front.any()
