"""The hypernetwork: preferences [P, T] -> head matrices [P, T, d, K]."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hyperlt.models import hypernet


def test_hypernetwork_shapes_and_preference_dependence():
  module = hypernet.HyperNetwork(num_experts=3, feature_dim=16, num_classes=7)
  params = hypernet.init(jax.random.PRNGKey(0), module)
  r_hat = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
  weights = hypernet.apply(params, module, r_hat)
  chex.assert_shape(weights, (4, 3, 16, 7))
  assert not np.allclose(weights[0], weights[1])  # different preferences -> different heads
  np.testing.assert_array_equal(weights[2], weights[3])  # a pure function of the preference
  # vmap over preferences equals applying one preference at a time
  single = module.apply({"params": params}, r_hat[2])
  np.testing.assert_allclose(weights[2], single, rtol=1e-5, atol=1e-6)
