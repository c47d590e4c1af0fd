"""The expert model: one path from images to features, head weights and combined logits."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt.models import expert_model as model_lib


@pytest.mark.parametrize("head", ["hyper", "static"])
def test_expert_model_path(head):
  config = config_lib.load("digits")
  config_lib.override(config, ["model.widths=(4,8,16)", f"model.head={head}"])
  model = model_lib.build(config.model, num_classes=10)
  params, batch_stats = model.init(jax.random.PRNGKey(0), (8, 8, 1))
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 1))
  feats, new_stats = model.features(params, batch_stats, images, train=True)
  chex.assert_shape(feats, (3, 6, 16))
  assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
  alphas = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])
  logits = model.logits(params, feats, model.r_hat(params, alphas))
  chex.assert_shape(logits, (2, 6, 10))
  assert not np.allclose(logits[0], logits[1])
  weights = model.head_weights(params, model.r_hat(params, alphas))
  if head == "static":
    np.testing.assert_array_equal(weights[0], weights[1])
  else:
    assert not np.allclose(weights[0], weights[1])


@pytest.mark.parametrize("mode,form", [("vmap", "vmap"), ("unrolled", "unrolled"),
                                       ("auto", "unrolled" if jax.default_backend() == "cpu" else "vmap")])
def test_build_resolves_the_expert_form(mode, form):
  config = config_lib.load("digits")
  config_lib.override(config, [f"model.experts={mode}"])
  model = model_lib.build(config_lib.validate(config).model, num_classes=10)
  assert model.experts == form
