"""Tests of hyperlt.data.longtail against the numbers of METHOD.md section 5."""

import numpy as np
import pytest

from hyperlt.data import longtail as lt
from hyperlt.errors import UserInputError


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
  """Labels of a balanced set in a shuffled order, like a real dataset file."""
  labels = np.repeat(np.arange(num_classes), per_class)
  return np.random.default_rng(seed).permutation(labels)


# --- long-tailed training sets ------------------------------------------------------------------

@pytest.mark.parametrize("n_max, num_classes, ir, total", [
    (500, 100, 100, 10_847),
    (500, 100, 50, 12_608),
    (500, 100, 10, 19_573),
    (5000, 10, 100, 12_406),
    (5000, 10, 50, 13_996),
    (5000, 10, 10, 20_431),
])
def test_longtail_totals(n_max, num_classes, ir, total):
  counts = lt.longtail_counts(n_max, num_classes, ir)
  assert counts.dtype == np.int64
  assert counts.shape == (num_classes,)
  assert counts.sum() == total
  assert counts[0] == n_max
  assert counts[-1] == n_max // ir  # the tail is exactly n_max / IR, not one less from float error
  assert np.all(np.diff(counts) <= 0)


def test_longtail_counts_ir1_and_one_class():
  np.testing.assert_array_equal(lt.longtail_counts(7, 5, 1), np.full(5, 7))
  np.testing.assert_array_equal(lt.longtail_counts(7, 1, 10), [7])


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_max=0, num_classes=10, imbalance_ratio=10), "n_max"),
    (dict(n_max=10, num_classes=0, imbalance_ratio=10), "num_classes"),
    (dict(n_max=10, num_classes=10, imbalance_ratio=0.5), "imbalance_ratio"),
    (dict(n_max=10, num_classes=10, imbalance_ratio=float("nan")), "imbalance_ratio"),
    (dict(n_max=10, num_classes=10, imbalance_ratio=20), "too large"),
])
def test_longtail_counts_rejects_bad_input(kwargs, field):
  with pytest.raises(UserInputError, match=field):
    lt.longtail_counts(**kwargs)


@pytest.mark.parametrize("ir, total", [(100, 12_406), (10, 20_431)])
def test_longtail_indices_cifar10_shape(ir, total):
  labels = balanced_labels(10, 5000)
  idx = lt.longtail_indices(labels, ir)
  assert len(idx) == total
  assert np.all(np.diff(idx) > 0)  # sorted, unique
  np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), lt.longtail_counts(5000, 10, ir))


def test_longtail_indices_seeded_and_nested():
  labels = balanced_labels(10, 60)
  a = lt.longtail_indices(labels, 10, seed=3)
  np.testing.assert_array_equal(a, lt.longtail_indices(labels, 10, seed=3))
  assert not np.array_equal(a, lt.longtail_indices(labels, 10, seed=4))
  # A milder imbalance keeps a superset of the images: every class keeps a prefix of one shuffle.
  b = lt.longtail_indices(labels, 5, seed=3)
  assert set(a) <= set(b)


def test_longtail_indices_n_max_default_and_errors():
  labels = np.concatenate([np.repeat(np.arange(4), 30), np.zeros(10, dtype=int)])  # class 0 has 40
  idx = lt.longtail_indices(labels, 3)
  np.testing.assert_array_equal(np.bincount(labels[idx]), lt.longtail_counts(30, 4, 3))
  with pytest.raises(UserInputError, match="class 1 has 30 images but 35"):
    lt.longtail_indices(labels, 1, n_max=35)
  with pytest.raises(UserInputError, match="no image of class 2"):
    lt.longtail_indices(np.array([0, 1, 3, 3]), 1)
  with pytest.raises(UserInputError, match="1-D"):
    lt.longtail_indices(np.zeros((2, 2), dtype=int), 1)
  with pytest.raises(UserInputError, match="integer"):
    lt.longtail_indices(np.zeros(4), 1)


# --- test-agnostic test sets --------------------------------------------------------------------

SIZES = {  # (m, K): sizes for rho 50, 25, 10, 5, 2, uniform
    (100, 100): (2_486, 2_956, 3_876, 4_932, 7_166, 10_000),
    (1000, 10): (2_795, 3_229, 4_084, 5_081, 7_241, 10_000),
    (50, 1000): (12_058, 14_437, 19_059, 24_365, 35_574, 50_000),
}
SIZE_CASES = [
    (m, k, name, size)
    for (m, k), sizes in SIZES.items()
    for rho, size in zip((50, 25, 10, 5, 2), sizes[:5])
    for name in (f"forward{rho}", f"backward{rho}")
] + [(m, k, "uniform", sizes[5]) for (m, k), sizes in SIZES.items()]


@pytest.mark.parametrize("m, num_classes, name, size", SIZE_CASES)
def test_test_set_sizes(m, num_classes, name, size):
  counts = lt.test_set_counts(name, m, num_classes)
  assert counts.shape == (num_classes,)
  assert counts.sum() == size


def test_test_set_shapes():
  fwd = lt.test_set_counts("forward50", 100, 100)
  bwd = lt.test_set_counts("backward50", 100, 100)
  np.testing.assert_array_equal(bwd, fwd[::-1])
  assert fwd[0] == 100 and fwd[-1] == 2  # head keeps m, tail gets m / rho
  np.testing.assert_array_equal(lt.test_set_counts("uniform", 100, 100), np.full(100, 100))


def test_test_set_names_and_unknown_name():
  assert lt.TEST_SET_NAMES == ("forward50", "forward25", "forward10", "forward5", "forward2", "uniform",
                               "backward2", "backward5", "backward10", "backward25", "backward50")
  with pytest.raises(UserInputError, match="forward3.*forward50.*backward50"):
    lt.test_set_counts("forward3", 100, 10)
  with pytest.raises(UserInputError, match="expected one of"):
    lt.test_set_indices(np.arange(10), "sideways")


@pytest.mark.parametrize("name, parsed", [("forward50", ("forward", 50.0)), ("forward2", ("forward", 2.0)),
                                          ("backward25", ("backward", 25.0)), ("uniform", ("uniform", 1.0))])
def test_parse_test_set(name, parsed):
  assert lt.parse_test_set(name) == parsed


@pytest.mark.parametrize("name", ["forward7", "Forward50", "forward50x", "backward", "sideways", ""])
def test_parse_test_set_rejects_other_names(name):
  with pytest.raises(UserInputError, match="expected one of: forward50"):
    lt.parse_test_set(name)


def test_decay_exponents():
  np.testing.assert_allclose(lt.decay_exponents("forward", 5), [0, 0.25, 0.5, 0.75, 1])
  np.testing.assert_allclose(lt.decay_exponents("backward", 5), [1, 0.75, 0.5, 0.25, 0])
  np.testing.assert_array_equal(lt.decay_exponents("uniform", 5), np.zeros(5))


def test_test_set_indices_cifar10():
  labels = balanced_labels(10, 1000, seed=1)
  sets = lt.all_test_sets(labels)
  assert tuple(sets) == lt.TEST_SET_NAMES
  for name, size in zip(("forward50", "forward25", "forward10", "forward5", "forward2", "uniform"),
                        SIZES[(1000, 10)]):
    assert len(sets[name]) == size
    assert len(sets[name.replace("forward", "backward")]) == size
  for name, idx in sets.items():
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), lt.test_set_counts(name, 1000, 10))
  np.testing.assert_array_equal(sets["uniform"], np.arange(10_000))
  assert set(sets["forward50"]) <= set(sets["forward2"])
  np.testing.assert_array_equal(lt.test_set_indices(labels, "forward10", seed=0), sets["forward10"])
  assert not np.array_equal(lt.test_set_indices(labels, "forward10", seed=1), sets["forward10"])


def test_test_set_indices_unequal_classes():
  labels = np.concatenate([np.repeat(np.arange(5), 20), np.zeros(7, dtype=int)])
  np.testing.assert_array_equal(lt.test_set_indices(labels, "uniform"), np.arange(len(labels)))
  idx = lt.test_set_indices(labels, "backward2")  # m = 20, the smallest class
  np.testing.assert_array_equal(np.bincount(labels[idx]), lt.test_set_counts("backward2", 20, 5))


# --- shot groups, validation split, prior -------------------------------------------------------

def test_shot_groups_cifar100_ir100():
  groups = lt.shot_groups(lt.longtail_counts(500, 100, 100))
  assert tuple(groups) == lt.SHOT_GROUPS
  assert [int(groups[g].sum()) for g in lt.SHOT_GROUPS] == [35, 35, 30]
  total = groups["many"].astype(int) + groups["medium"] + groups["few"]
  np.testing.assert_array_equal(total, np.ones(100))  # a partition


def test_shot_groups_boundaries():
  groups = lt.shot_groups(np.array([101, 100, 20, 19]))
  np.testing.assert_array_equal(groups["many"], [True, False, False, False])
  np.testing.assert_array_equal(groups["medium"], [False, True, True, False])
  np.testing.assert_array_equal(groups["few"], [False, False, False, True])


def test_validation_split():
  counts = np.array([100, 10, 3, 2, 1])
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), counts))
  train, val = lt.validation_split(labels, 0.1, seed=0)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
  # round(0.1 n) = 10, 1, 0 -> 1 (at least one), 0 -> 1, and a single image stays in training.
  np.testing.assert_array_equal(np.bincount(labels[val], minlength=5), [10, 1, 1, 1, 0])
  np.testing.assert_array_equal(np.bincount(labels[train], minlength=5), [90, 9, 2, 1, 1])
  again = lt.validation_split(labels, 0.1, seed=0)
  np.testing.assert_array_equal(again[1], val)
  assert not np.array_equal(lt.validation_split(labels, 0.1, seed=1)[1], val)
  # A large fraction still leaves one training image per class.
  _, val9 = lt.validation_split(labels, 0.99)
  np.testing.assert_array_equal(np.bincount(labels[val9], minlength=5), [99, 9, 2, 1, 0])


def test_validation_split_zero_and_bad_fraction():
  labels = np.array([0, 0, 1, 1, 1])
  train, val = lt.validation_split(labels, 0.0)
  np.testing.assert_array_equal(train, np.arange(5))
  assert val.shape == (0,) and val.dtype == np.int64
  for bad in (-0.1, 1.0):
    with pytest.raises(UserInputError, match="fraction"):
      lt.validation_split(labels, bad)


def test_prior_from_counts():
  prior = lt.prior_from_counts([3, 1, 0])
  assert prior.dtype == np.float64
  np.testing.assert_allclose(prior, [0.75, 0.25, 0.0])
  with pytest.raises(UserInputError, match="zero"):
    lt.prior_from_counts([0, 0])
  with pytest.raises(UserInputError, match="non-negative"):
    lt.prior_from_counts([1, -1])
