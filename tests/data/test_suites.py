"""Tests of the partial-class and Dirichlet-perturbed test suites (hyperlt.data.suites)."""

import numpy as np
import pytest

from hyperlt.data import longtail, suites
from hyperlt.errors import UserInputError

K, M = 10, 50


@pytest.fixture(scope="module")
def labels():
  return np.random.default_rng(0).permutation(np.repeat(np.arange(K), M))


@pytest.mark.parametrize("name", longtail.TEST_SET_NAMES)
def test_prior_matches_the_test_set_counts(name):
  prior = suites.test_set_prior(name, K)
  assert prior.sum() == pytest.approx(1.0)
  # The counts of METHOD.md section 5 are floor(m * prior / max prior); with a large m the floor is negligible.
  counts = longtail.test_set_counts(name, 10**6, K)
  np.testing.assert_allclose(prior / prior.max(), counts / counts.max(), atol=1e-6)


def test_prior_shapes():
  forward, backward = suites.test_set_prior("forward50", K), suites.test_set_prior("backward50", K)
  assert forward[0] / forward[-1] == pytest.approx(50)
  assert np.all(np.diff(forward) < 0)
  np.testing.assert_allclose(backward, forward[::-1])
  np.testing.assert_allclose(suites.test_set_prior("uniform", K), np.full(K, 0.1))
  with pytest.raises(UserInputError, match="forward50"):
    suites.test_set_prior("forward7", K)


@pytest.mark.parametrize("name", ["forward7", "backward", "sideways"])
def test_prior_and_counts_read_names_with_one_parser(name):
  with pytest.raises(UserInputError) as from_prior:
    suites.test_set_prior(name, K)
  with pytest.raises(UserInputError) as from_counts:
    longtail.test_set_counts(name, M, K)
  assert str(from_prior.value) == str(from_counts.value)


def test_partial_class_sets(labels):
  anchors = longtail.all_test_sets(labels)
  sets = suites.partial_class_sets(labels, anchors, draws=3, seed=1)
  assert len(sets) == 3 * 5
  for anchor in suites.ANCHOR_SETS:
    base = anchors[anchor]
    head = sets[f"partial_{anchor}_head"]
    assert set(np.unique(labels[head])) == set(range(5))
    assert set(np.unique(labels[sets[f"partial_{anchor}_tail"]])) == set(range(5, 10))
    for tag in ("head", "tail", "rand0", "rand1", "rand2"):
      idx = sets[f"partial_{anchor}_{tag}"]
      present = np.unique(labels[idx])
      assert len(present) == 5
      assert np.all(np.isin(idx, base))
      # Every image of a kept class in the anchor set is kept.
      np.testing.assert_array_equal(idx, base[np.isin(labels[base], present)])
  again = suites.partial_class_sets(labels, anchors, draws=3, seed=1)
  other = suites.partial_class_sets(labels, anchors, draws=3, seed=2)
  assert all(np.array_equal(sets[k], again[k]) for k in sets)
  assert any(not np.array_equal(sets[k], other[k]) for k in sets if "rand" in k)


def test_dirichlet_sets_follow_their_anchor(labels):
  sets = suites.dirichlet_sets(labels, draws=40, concentration=5.0, seed=0)
  assert len(sets) == 3 * 40
  mean_share = {}
  for anchor in suites.ANCHOR_SETS:
    shares = []
    for j in range(40):
      idx = sets[f"dirichlet_{anchor}_{j}"]
      assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
      counts = np.bincount(labels[idx], minlength=K)
      assert counts.max() == M          # the most likely class keeps all of its images
      shares.append(counts / counts.sum())
    mean_share[anchor] = np.mean(shares, axis=0)
  assert mean_share["forward50"][:3].sum() > 2 * mean_share["forward50"][-3:].sum()
  assert mean_share["backward50"][-3:].sum() > 2 * mean_share["backward50"][:3].sum()
  assert mean_share["uniform"].max() < 2 * mean_share["uniform"].min()


def test_dirichlet_concentration_controls_the_spread(labels):
  def spread(concentration):
    sets = suites.dirichlet_sets(labels, draws=30, concentration=concentration, seed=3)
    target = suites.test_set_prior("uniform", K)
    shares = [np.bincount(labels[sets[f"dirichlet_uniform_{j}"]], minlength=K) for j in range(30)]
    return np.mean([np.abs(s / s.sum() - target).sum() for s in shares])
  assert spread(50.0) < spread(5.0) < spread(0.5)


def test_dirichlet_sets_are_seeded(labels):
  a = suites.dirichlet_sets(labels, draws=2, seed=7)
  b = suites.dirichlet_sets(labels, draws=2, seed=7)
  c = suites.dirichlet_sets(labels, draws=2, seed=8)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_build_rejects_unknown_suites(labels):
  with pytest.raises(UserInputError, match="--suites: unknown"):
    suites.build(("partial", "bogus"), labels, longtail.all_test_sets(labels))
  built = suites.build(("dirichlet",), labels, longtail.all_test_sets(labels))
  assert list(built) == ["dirichlet"] and len(built["dirichlet"]) == 15
