"""Losses against a plain NumPy reference implementation of METHOD.md section 3."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import losses


def np_cross_entropy(logits, labels):
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels].mean()


def np_logsumexp(x):
  return x.max() + np.log(np.exp(x - x.max()).sum())


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
def test_anchor_adjustments(prior, tau):
  adjust = losses.adjustments(("forward", "uniform", "backward", "logit_adjust:1.5"), prior, tau)
  chex.assert_shape(adjust, (4, len(prior)))
  np.testing.assert_allclose(adjust[0], 0.0)
  np.testing.assert_allclose(adjust[1], np.log(prior), rtol=1e-6)
  np.testing.assert_allclose(adjust[2], np.log(prior) - tau * np.log(prior[::-1]), rtol=1e-6)
  np.testing.assert_allclose(adjust[3], 1.5 * np.log(prior), rtol=1e-6)


def test_target_priors_of_anchors(prior):
  adjust = losses.adjustments(("forward", "uniform", "backward"), prior, 1.0)
  np.testing.assert_allclose(losses.target_prior(adjust[0], prior), prior, rtol=1e-6)
  np.testing.assert_allclose(losses.target_prior(adjust[1], prior), np.full(len(prior), 1 / len(prior)), rtol=1e-6)
  # tau = 1: the backward target is exactly the reversed prior.
  np.testing.assert_allclose(losses.target_prior(adjust[2], prior), prior[::-1], rtol=1e-5)


def test_invalid_anchor_names():
  assert losses.is_valid_anchor("logit_adjust:2")
  assert not losses.is_valid_anchor("logit_adjust:x")
  assert not losses.is_valid_anchor("sideways")
  with pytest.raises(ValueError):
    losses.anchor_adjustment("sideways", np.array([0.5, 0.5]), 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuous_loss_matches_numpy(prior, seed):
  rng = np.random.default_rng(seed)
  p, b, k = 4, 16, len(prior)
  logits = rng.normal(size=(p, b, k)).astype(np.float32) * 3
  labels = rng.integers(0, k, size=b)
  weights = rng.dirichlet(np.ones(3), size=p).astype(np.float32)
  adjust = losses.adjustments(("forward", "uniform", "backward"), prior, 2.0)
  got = losses.preference_losses(jnp.asarray(logits), jnp.asarray(weights), jnp.asarray(adjust),
                                 jnp.asarray(labels), "continuous")
  want = [np_cross_entropy(logits[i] + weights[i] @ adjust, labels) for i in range(p)]
  chex.assert_shape(got, (p,))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_continuous_loss_at_vertices_is_anchor_loss(prior):
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 8, len(prior))).astype(np.float32)
  labels = rng.integers(0, len(prior), size=8)
  adjust = losses.adjustments(("forward", "uniform", "backward"), prior, 2.0)
  continuous = losses.preference_losses(logits, jnp.eye(3), adjust, labels, "continuous")
  paper = losses.preference_losses(logits, jnp.eye(3), adjust, labels, "paper")
  np.testing.assert_allclose(continuous, paper, rtol=1e-6)


def test_paper_loss_ignores_preference_interior(prior):
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(3, 8, len(prior))).astype(np.float32)
  labels = rng.integers(0, len(prior), size=8)
  adjust = losses.adjustments(("forward", "uniform", "backward"), prior, 2.0)
  weights = rng.dirichlet(np.ones(3), size=3).astype(np.float32)
  got = losses.preference_losses(logits, weights, adjust, labels, "paper")
  want = [np_cross_entropy(logits[i] + adjust[i], labels) for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="one preference per expert"):
    losses.preference_losses(logits[:2], weights[:2], adjust, labels, "paper")


@pytest.mark.parametrize("mu", [0.1, 0.3, 1.0])
def test_objectives_match_numpy(mu):
  values = np.array([0.7, 1.9, 1.2], np.float32)
  np.testing.assert_allclose(losses.objective(values, "sum"), values.sum(), rtol=1e-6)
  np.testing.assert_allclose(losses.objective(values, "stch", mu),
                             values.sum() + mu * np_logsumexp(values / mu), rtol=1e-5)
  np.testing.assert_allclose(losses.objective(values, "stch_code", mu),
                             values.sum() + mu * np_logsumexp(values), rtol=1e-5)


def test_stch_tends_to_max_as_mu_vanishes():
  values = jnp.array([0.5, 2.0, 1.0])
  extra = losses.objective(values, "stch", 1e-3) - values.sum()
  np.testing.assert_allclose(extra, values.max(), atol=1e-2)


def test_unknown_modes_raise(prior):
  with pytest.raises(ValueError):
    losses.objective(jnp.ones(3), "max")
  with pytest.raises(ValueError):
    losses.preference_losses(jnp.zeros((1, 2, 6)), jnp.ones((1, 3)), jnp.zeros((3, 6)), jnp.zeros(2, int), "x")
