"""Cosine expert heads and the preference-weighted combination of their logits."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt.models import heads


def test_cosine_logits_are_bounded_and_scale_invariant():
  key1, key2 = jax.random.split(jax.random.PRNGKey(0))
  feats = jax.random.normal(key1, (3, 4, 8))
  weights = jax.random.normal(key2, (2, 3, 8, 5))
  logits = heads.expert_logits(feats, weights, scale=30.0)
  chex.assert_shape(logits, (2, 3, 4, 5))
  assert float(jnp.max(jnp.abs(logits))) <= 30.0 + 1e-4
  np.testing.assert_allclose(heads.expert_logits(7 * feats, 0.1 * weights, 30.0), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["weighted", "mean"])
def test_combined_logits_equal_weighted_sum_of_expert_logits(mode):
  key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
  feats = jax.random.normal(key1, (3, 4, 8))
  weights = jax.random.normal(key2, (2, 3, 8, 5))
  r_hat = jax.random.dirichlet(key3, jnp.ones(3), (2,))
  per_expert = heads.expert_logits(feats, weights, 30.0)
  mix = r_hat if mode == "weighted" else jnp.full_like(r_hat, 1 / 3)
  want = jnp.einsum("ptbk,pt->pbk", per_expert, mix)
  np.testing.assert_allclose(heads.combined_logits(feats, weights, r_hat, 30.0, mode), want, rtol=1e-5, atol=1e-4)
