"""The expert split: one variable layout, and every form of evaluating it (in every convolution formulation)
is the same function."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt.models import conv
from hyperlt.models import expert_split
from hyperlt.models.imagenet_resnet import ImageNetResNet
from hyperlt.models.resnet import CifarResNet

T = 3
# Each program runs once: compiling it without XLA's backend optimisation saves most of the test's time.
QUICK = {"xla_backend_optimization_level": 0}
# Tiny members of both backbone families, and the split without branch stages (broadcast features).
# ImageNet-style nets downsample 32x: 64x64 inputs keep the last BatchNorm's batch statistics over more
# than a handful of values, where train-mode normalisation would amplify float noise.
SPLITS = {
    "cifar": (CifarResNet(T, stage_sizes=(1, 1, 1), widths=(4, 8, 16), branch_stages=2), (8, 8, 1)),
    "resnext50": (ImageNetResNet(T, "resnext50_32x4d", branch_stages=2, width_multiplier=1 / 16,
                                 stage_sizes=(1, 1, 1, 1)), (64, 64, 3)),
    "broadcast": (CifarResNet(T, stage_sizes=(1, 1, 1), widths=(4, 8, 16), branch_stages=0), (8, 8, 1)),
}


def _distinct_running_means(variables):
  """Offsets expert t's running means by 0.1 t, so that mixing experts up in inference mode shows."""
  def offset(path, leaf):
    if "branches" in jax.tree_util.keystr(path) and path[-1].key == "mean":
      return leaf + 0.1 * jnp.arange(T, dtype=leaf.dtype).reshape((T,) + (1,) * (leaf.ndim - 1))
    return leaf
  return {**variables, "batch_stats": jax.tree_util.tree_map_with_path(offset, variables["batch_stats"])}


@pytest.mark.parametrize("impl", conv.IMPLS)
@pytest.mark.parametrize("name", list(SPLITS))
def test_every_form_gives_the_same_features_statistics_and_gradients(name, impl, monkeypatch):
  """Every form, in every convolution formulation, against the vmap form with XLA's convolutions."""
  # Chunk every layer's kernel gradient, 2 images a chunk (of 4): the test nets are far below the
  # production threshold.
  monkeypatch.setattr(conv, "MIN_ELEMENTS", 0)
  monkeypatch.setattr(conv, "CHUNK", 2)
  reference_split, shape = SPLITS[name]
  split = reference_split.clone(conv=impl)
  images = jax.random.normal(jax.random.PRNGKey(1), (4,) + shape)
  variables = jax.jit(lambda key: split.init(key, images, train=False), compiler_options=QUICK)(jax.random.PRNGKey(0))
  has_branches = split.stages_factory() is not None

  # The layout every form reads: a trunk, and (with branch stages) branches stacked over the experts.
  parts = {"trunk", "branches"} if has_branches else {"trunk"}
  assert set(variables["params"]) == set(variables["batch_stats"]) == parts
  if has_branches:
    assert all(leaf.shape[0] == T for leaf in jax.tree.leaves(variables["params"]["branches"]))
    kernels = [leaf for leaf in jax.tree.leaves(variables["params"]["branches"]) if leaf.ndim == 5]
    assert not np.allclose(kernels[0][0], kernels[0][1])  # experts are initialised independently
    variables = _distinct_running_means(variables)

  def train_loss(params, form, net):
    feats, stats = expert_split.features(net, {**variables, "params": params}, images, True, form)
    return jnp.sum(feats ** 2), (feats, stats)

  def one_form(params, form, net):
    return (jax.grad(train_loss, has_aux=True)(params, form, net),
            expert_split.features(net, {**variables, "params": params}, images, False, form))

  @functools.partial(jax.jit, compiler_options=QUICK)
  def every_form(params):
    # One program for all forms: (features, statistics, gradients) in training, and in inference.
    return (one_form(params, "vmap", reference_split),
            {form: one_form(params, form, split) for form in expert_split.FORMS})

  reference, results = every_form(variables["params"])
  (grads, (feats, stats)), (eval_feats, eval_stats) = reference
  # The formulation under test is the one traced (chunked convolutions are custom-VJP calls).
  traced = str(jax.make_jaxpr(lambda p: one_form(p, "unrolled", split))(variables["params"]))
  assert ("custom_vjp_call" in traced) == (impl == "chunked")
  chex.assert_shape([feats, eval_feats], (T, 4, split.feature_dim))
  assert feats.dtype == eval_feats.dtype == jnp.float32
  chex.assert_trees_all_equal_structs(stats, variables["batch_stats"])
  chex.assert_trees_all_equal(eval_stats, variables["batch_stats"])  # inference leaves them alone
  # Training moved the statistics compared below.
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, stats, variables["batch_stats"])))
  for f in (feats, eval_feats):
    if has_branches:
      assert float(jnp.max(jnp.abs(f[0] - f[1]))) > 1e-4
    else:
      chex.assert_trees_all_equal(f[0], f[T - 1])
  for form, ((other_grads, (other_feats, other_stats)), (other_eval_feats, other_eval_stats)) in results.items():
    message = f"form {form}, convolutions {impl}"
    chex.assert_trees_all_close(other_feats, feats, rtol=1e-4, atol=1e-5, custom_message=message)
    chex.assert_trees_all_close(other_stats, stats, rtol=1e-4, atol=1e-5, custom_message=message)
    chex.assert_trees_all_close(other_grads, grads, rtol=1e-3, atol=1e-4, custom_message=message)
    chex.assert_trees_all_close(other_eval_feats, eval_feats, rtol=1e-4, atol=1e-5, custom_message=message)
    chex.assert_trees_all_equal(other_eval_stats, eval_stats, custom_message=message)


def test_resolve_names_a_form():
  assert [expert_split.resolve(form) for form in expert_split.FORMS] == list(expert_split.FORMS)
  with pytest.raises(ValueError, match="expert form"):
    expert_split.resolve("loop")
