"""hyperlt.losses: anchors, class weights and the loss functions' own properties (the preference losses, the
diversity and the scalarisations are checked against NumPy through the objective pieces, test_objectives.py)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperlt import losses


@pytest.fixture
def prior():
  counts = np.array([500, 200, 80, 30, 10, 5], np.float64)
  return counts / counts.sum()


def test_reversed_prior_is_rank_reversal(prior):
  pi_bar = losses.reversed_prior(prior)
  np.testing.assert_allclose(pi_bar, prior[::-1])
  shuffled = prior[[3, 0, 5, 1, 4, 2]]
  pi_bar = losses.reversed_prior(shuffled)
  # The class with the k-th largest prior gets the k-th smallest value.
  order = np.argsort(-shuffled)
  np.testing.assert_allclose(pi_bar[order], np.sort(shuffled))


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_anchor_rows(prior, tau):
  anchors = losses.Anchors.parse(("forward", "uniform", "backward", "logit_adjust:1.5", "ldam:0.5"), prior, tau)
  chex.assert_shape((anchors.additive, anchors.margins), (5, len(prior)))
  assert anchors.additive.dtype == anchors.margins.dtype == np.float32
  np.testing.assert_allclose(anchors.additive[0], 0.0)
  np.testing.assert_allclose(anchors.additive[1], np.log(prior), rtol=1e-6)
  np.testing.assert_allclose(anchors.additive[2], np.log(prior) - tau * np.log(prior[::-1]), rtol=1e-6)
  np.testing.assert_allclose(anchors.additive[3], 1.5 * np.log(prior), rtol=1e-6)
  np.testing.assert_allclose(anchors.additive[4], 0.0)        # a margin anchor does not move the target
  np.testing.assert_allclose(anchors.margins[:4], 0.0)
  np.testing.assert_allclose(anchors.margins[4], 0.5 * (prior.min() / prior) ** 0.25, rtol=1e-6)
  assert anchors.has_margins and not losses.Anchors.parse(("forward",), prior, tau).has_margins
  # The additive rows are what the adaptation code reads.
  np.testing.assert_array_equal(losses.adjustments(anchors.names, prior, tau), anchors.additive)


def test_ldam_margins_grow_towards_rare_classes():
  prior = np.array([0.5, 0.3, 0.15, 0.05])
  m = losses.ldam_margins(prior, 0.5)
  assert m.max() == pytest.approx(0.5) and m[-1] == pytest.approx(0.5)
  assert np.all(np.diff(m) > 0)
  assert m[0] / m[-1] == pytest.approx((0.05 / 0.5) ** 0.25)


def test_target_priors_of_anchors(prior):
  adjust = losses.adjustments(("forward", "uniform", "backward"), prior, 1.0)
  np.testing.assert_allclose(losses.target_prior(adjust[0], prior), prior, rtol=1e-6)
  np.testing.assert_allclose(losses.target_prior(adjust[1], prior), np.full(len(prior), 1 / len(prior)), rtol=1e-6)
  # tau = 1: the backward target is exactly the reversed prior.
  np.testing.assert_allclose(losses.target_prior(adjust[2], prior), prior[::-1], rtol=1e-5)


@pytest.mark.parametrize("name,parsed", [("forward", ("forward", None)), ("logit_adjust:2", ("logit_adjust", 2.0)),
                                         ("ldam:0.5", ("ldam", 0.5))])
def test_anchor_names_parse(name, parsed):
  assert losses.parse_anchor(name) == parsed and losses.is_valid_anchor(name)
  assert losses.is_margin_anchor(name) == (parsed[0] == "ldam")


@pytest.mark.parametrize("name", ["sideways", "logit_adjust:x", "ldam:0", "ldam:-1", "forward:1", "logit_adjust"])
def test_invalid_anchor_names(name):
  assert not losses.is_valid_anchor(name)
  with pytest.raises(ValueError, match="unknown anchor"):
    losses.Anchors.parse((name,), np.array([0.5, 0.5]), 1.0)


def test_adjustments_are_the_additive_rows_with_zero_rows_for_margin_anchors(prior):
  names = ("forward", "ldam:0.5", "uniform")
  rows = losses.adjustments(names, prior, 1.0)
  np.testing.assert_array_equal(rows, losses.Anchors.parse(names, prior, 1.0).additive)
  np.testing.assert_array_equal(rows[1], 0.0)
  assert np.all(rows[2] != 0.0)  # uniform: the log prior (forward is plain cross-entropy)


def test_continuous_loss_at_vertices_is_anchor_loss(prior):
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 8, len(prior))).astype(np.float32)
  labels = rng.integers(0, len(prior), size=8)
  anchors = losses.Anchors.parse(("forward", "uniform", "ldam:0.5"), prior, 2.0)
  continuous = losses.preference_losses(logits, jnp.eye(3), anchors, labels, "continuous", 30.0)
  paper = losses.preference_losses(logits, jnp.eye(3), anchors, labels, "paper", 30.0)
  np.testing.assert_allclose(continuous, paper, rtol=1e-6)


def test_paper_loss_needs_one_preference_per_expert(prior):
  anchors = losses.Anchors.parse(("forward", "uniform", "backward"), prior, 2.0)
  with pytest.raises(ValueError, match="one preference per expert"):
    losses.preference_losses(jnp.zeros((2, 8, 6)), jnp.ones((2, 3)) / 3, anchors, jnp.zeros(8, int), "paper")
  with pytest.raises(ValueError, match="loss mode"):
    losses.preference_losses(jnp.zeros((1, 2, 6)), jnp.ones((1, 3)), anchors, jnp.zeros(2, int), "x")


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_class_balanced_weights(beta):
  counts = np.array([500, 120, 30, 7, 1])
  weights = losses.class_balanced_weights(counts, beta)
  np.testing.assert_allclose(weights.sum(), len(counts), rtol=1e-6)
  expected = (1 - beta) / (1 - beta ** counts) if beta > 0 else np.ones(5)
  np.testing.assert_allclose(weights, expected / expected.sum() * 5, rtol=1e-5)
  if beta > 0:
    assert np.all(np.diff(weights) > 0), "rarer classes must weigh more"


def test_class_balanced_weights_approach_inverse_frequency():
  counts = np.array([100, 10, 1])
  weights = losses.class_balanced_weights(counts, 1 - 1e-9)
  np.testing.assert_allclose(weights / weights[-1], 1 / counts, rtol=1e-4)
  with pytest.raises(ValueError, match="at least one example"):
    losses.class_balanced_weights(np.array([3, 0]))


def test_weighted_cross_entropy_is_the_weighted_mean():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4))
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  weights = jnp.array([0.5, 1.0, 2.0, 4.0, 0.5, 1.0])
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, weights),
                             (per_example * weights).sum(-1) / weights.sum(), rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, jnp.ones(6)), losses.cross_entropy(logits, labels),
                             rtol=1e-6)


def test_stch_tends_to_max_as_mu_vanishes():
  values = jnp.array([0.5, 2.0, 1.0])
  extra = losses.objective(values, "stch", 1e-3) - values.sum()
  np.testing.assert_allclose(extra, values.max(), atol=1e-2)
  with pytest.raises(ValueError):
    losses.objective(jnp.ones(3), "max")
