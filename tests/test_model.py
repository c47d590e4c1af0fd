"""The model path: stacked vmapped experts, cosine heads, the hypernetwork, preferences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperlt import configs as config_lib
from hyperlt.models import hypernet
from hyperlt.models import expert_model as model_lib
from hyperlt.models import heads
from hyperlt.models.resnet import Branch, CifarResNet, Trunk


def small_backbone(num_experts=3, branch_stages=2):
  return CifarResNet(num_experts=num_experts, stage_sizes=(1, 1, 1), widths=(4, 8, 16), branch_stages=branch_stages)


@pytest.mark.parametrize("train", [False, True])
def test_vmapped_branches_equal_a_loop_over_experts(train):
  net = small_backbone()
  images = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 8, 3))
  variables = net.init(jax.random.PRNGKey(0), images, train=False)
  # Distinct running statistics per expert, so that mixing experts up in inference mode would show.
  variables = jax.tree_util.tree_map_with_path(
      lambda path, x: x + jnp.arange(3.0).reshape((3,) + (1,) * (x.ndim - 1)) * 0.1
      if "branches" in str(path) and "batch_stats" in str(path) and "mean" in str(path) else x, variables)
  if train:
    feats, _ = net.apply(variables, images, train=True, mutable=["batch_stats"])
  else:
    feats = net.apply(variables, images, train=False)
  chex.assert_shape(feats, (3, 5, 16))

  trunk = Trunk(stage_sizes=(1,), widths=(4,))
  trunk_vars = {"params": variables["params"]["trunk"], "batch_stats": variables["batch_stats"]["trunk"]}
  h = trunk.apply(trunk_vars, images, train=train, mutable=["batch_stats"])[0] if train else trunk.apply(
      trunk_vars, images, train=False)
  branch = Branch(stage_sizes=(1, 1), widths=(8, 16), first_stage_index=1)
  for j in range(3):
    expert_vars = jax.tree.map(lambda x: x[j], {"params": variables["params"]["branches"],
                                                "batch_stats": variables["batch_stats"]["branches"]})
    if train:
      single, _ = branch.apply(expert_vars, h, train=True, mutable=["batch_stats"])
    else:
      single = branch.apply(expert_vars, h, train=False)
    np.testing.assert_allclose(feats[j], single, rtol=1e-5, atol=1e-5)


def test_experts_have_distinct_parameters():
  net = small_backbone()
  variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  kernel = variables["params"]["branches"]["Stages_0"]["BasicBlock_0"]["Conv_0"]["kernel"]
  assert kernel.shape[0] == 3
  assert not np.allclose(kernel[0], kernel[1])


def test_shared_features_when_no_branch_stages():
  net = small_backbone(branch_stages=0)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  variables = net.init(jax.random.PRNGKey(0), images, train=False)
  feats = net.apply(variables, images, train=False)
  chex.assert_shape(feats, (3, 2, 16))
  np.testing.assert_array_equal(feats[0], feats[2])
  assert "branches" not in variables["params"]


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


@pytest.mark.parametrize("backbone_overrides", [
    ["model.widths=(4,8,16)"],
    ["model.backbone=resnet50", "model.width_multiplier=0.0625"],
])
def test_unrolled_experts_equal_vmapped_experts(backbone_overrides):
  """model.experts=unrolled is the same function (values, gradients, batch statistics) on the same params."""
  config = config_lib.load("digits")
  config_lib.override(config, backbone_overrides)
  config.model.experts = "vmap"
  vmapped = model_lib.build(config.model, num_classes=10)
  config.model.experts = "unrolled"
  unrolled = model_lib.build(config.model, num_classes=10)
  assert unrolled.unrolled_experts and not vmapped.unrolled_experts
  # ImageNet-style nets downsample 32x: 64x64 inputs keep the last BatchNorm's batch statistics well
  # conditioned (at 1x1 spatial and batch 4 they amplify float noise).
  shape = (64, 64, 3) if "resnet50" in str(backbone_overrides) else (8, 8, 1)
  params, stats = vmapped.init(jax.random.PRNGKey(0), shape)
  images = jax.random.normal(jax.random.PRNGKey(1), (8,) + shape)

  def loss(model, p):
    feats, new_stats = model.features(p, stats, images, train=True)
    return jnp.sum(feats ** 2), (feats, new_stats)

  (lv, (fv, sv)), gv = jax.value_and_grad(lambda p: loss(vmapped, p), has_aux=True)(params)
  (lu, (fu, su)), gu = jax.value_and_grad(lambda p: loss(unrolled, p), has_aux=True)(params)
  chex.assert_trees_all_close(fu, fv, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(su, sv, rtol=1e-4, atol=1e-5)
  # Summation order differs, and train-mode BatchNorm in a deep net amplifies that for a few entries,
  # so gradients are compared by relative norm.
  diff = optax.tree.norm(jax.tree.map(jnp.subtract, gu, gv))
  assert float(diff) <= 1e-3 * float(optax.tree.norm(gv))
  eval_v = vmapped.features(params, stats, images, train=False)[0]
  eval_u = unrolled.features(params, stats, images, train=False)[0]
  chex.assert_trees_all_close(eval_u, eval_v, rtol=1e-4, atol=1e-5)


def test_feature_extraction_pads_small_sets_to_few_shapes():
  from hyperlt.analysis import evaluate  # pylint: disable=g-import-not-at-top
  config = config_lib.load("digits")
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(4,8)", "model.branch_stages=1"])
  model = model_lib.build(config_lib.validate(config).model, num_classes=10)
  params, batch_stats = model.init(jax.random.PRNGKey(0), (8, 8, 1))
  images = np.random.default_rng(0).integers(0, 256, (70, 8, 8, 1), dtype=np.uint8)
  reference = evaluate.extract_features(model, params, batch_stats, images, 0.5, 0.25, batch_size=1000)
  chex.assert_shape(reference, (3, 70, model.feature_dim))
  before = evaluate._features._cache_size()
  for n in (33, 47, 61, 64):  # all pad to 64: one new program at most
    feats = evaluate.extract_features(model, params, batch_stats, images[:n], 0.5, 0.25, batch_size=1000)
    np.testing.assert_allclose(feats, reference[:, :n], rtol=1e-5, atol=1e-5)
  assert evaluate._features._cache_size() - before <= 1
  chunked = evaluate.extract_features(model, params, batch_stats, images, 0.5, 0.25, batch_size=32)
  np.testing.assert_allclose(chunked, reference, rtol=1e-5, atol=1e-5)
