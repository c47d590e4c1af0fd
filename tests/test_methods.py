"""Method presets and the baseline switches of the update (margins, mixup, diversity, post-hoc shift)."""

from __future__ import annotations

import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperlt import losses
from hyperlt import configs as config_lib
from hyperlt.analysis import evaluate
from hyperlt.configs import presets as methods
from hyperlt.training import loop as train
from hyperlt.data import augment, pipeline
from hyperlt.errors import UserInputError
from hyperlt.models.expert_model import build
from hyperlt.training.step import StepConfig, init_state, make_optimizer, make_update

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(*overrides: str):
  config = config_lib.load("digits")
  # Two stages (one shared, one per expert) keep each method's compilation to a few seconds.
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(4,8)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)", "optim.warmup_epochs=0",
                               "optim.lr=0.002", "train.progress=False", *overrides])
  return config_lib.validate(config)


@pytest.fixture(scope="module")
def digits_data():
  return pipeline.prepare(_config().data)


@pytest.fixture(scope="module")
def fixed_batch(digits_data):
  images = augment.normalize(digits_data.train_x[:48], digits_data.mean, digits_data.std)
  return images, jnp.asarray(digits_data.train_y[:48], jnp.int32)


def _training_fields(config) -> dict:
  trained = config_lib.to_dict(config)
  trained["model"].pop("posthoc_tau")
  trained.pop("method")
  return trained


def test_logit_adjust_trains_exactly_like_ce():
  # Post-hoc logit adjustment changes prediction only, so ce's step test below covers its training.
  assert _training_fields(_config("method=logit_adjust")) == _training_fields(_config("method=ce"))
  assert _config("method=logit_adjust").model.posthoc_tau == 1.0


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "logit_adjust"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(method, digits_data, fixed_batch):
  config = _config(f"method={method}")
  model = build(config.model, digits_data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch=10)
  adjust = losses.adjustments(config.loss.anchors, digits_data.prior, config.loss.tau)
  # total_steps=0: a deferred re-weighting (ride) applies from the first step, so both steps see it.
  reweighting = train.deferred_reweighting(config.loss, digits_data.train_y, digits_data.num_classes, 0)
  update = jax.jit(make_update(model, tx, adjust, StepConfig.from_config(config), *reweighting))
  state = init_state(model, tx, seed=0, image_shape=digits_data.image_shape)
  images, labels = fixed_batch
  key = jax.random.PRNGKey(3)  # the same preference samples (and mixup pairs) before and after
  state, before = update(state, images, labels, key)
  _, after = update(state, images, labels, key)
  chex.assert_tree_all_finite((before["loss"], after["loss"]))
  assert float(after["loss"]) < float(before["loss"]), method


def test_presets_set_the_method_and_explicit_settings_win():
  sade = _config("method=sade")
  assert (sade.model.head, sade.preference.sampling, sade.loss.mode, sade.loss.objective) == (
      "static", "vertices", "paper", "sum")
  assert tuple(sade.preference.default) == (1.0, 1.0, 1.0)
  # Order does not matter: an explicit non-default value survives the preset.
  for order in (["method=balpoe", "loss.mixup_alpha=0.2"], ["loss.mixup_alpha=0.2", "method=balpoe"]):
    balpoe = _config(*order)
    assert balpoe.loss.mixup_alpha == 0.2
    assert balpoe.loss.anchors == ("logit_adjust:0", "logit_adjust:1", "logit_adjust:2")
  code = _config("method=prl_code")
  assert code.preference.learn_scale and code.model.combine == "mean" and code.preference.beta0 == 1.2
  ce = _config("method=ce")
  assert ce.model.num_experts == 1 and ce.loss.anchors == ("forward",)
  # Validation is idempotent: a saved config (preset already applied) reloads unchanged.
  assert config_lib.to_dict(config_lib.validate(config_lib.from_dict(config_lib.to_dict(ce)))) == \
      config_lib.to_dict(ce)


def test_unknown_method_names_the_field():
  with pytest.raises(UserInputError, match="method: unknown 'sadee'"):
    _config("method=sadee")


def test_ldam_margins_and_margin_loss():
  prior = np.array([0.5, 0.3, 0.15, 0.05])
  m = losses.ldam_margins(prior, 0.5)
  assert m.max() == pytest.approx(0.5) and m[-1] == pytest.approx(0.5)
  assert np.all(np.diff(m) > 0)                        # rarer class, larger margin
  assert m[0] / m[-1] == pytest.approx((0.05 / 0.5) ** 0.25)
  rows = losses.adjustments(("forward", "ldam:0.5"), prior, tau=1.0)
  additive, margins = losses.split_anchors(("forward", "ldam:0.5"), rows)
  chex.assert_trees_all_close(additive, np.zeros((2, 4), np.float32))
  chex.assert_trees_all_close(margins[1], m.astype(np.float32), rtol=1e-6)
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4))
  labels = jnp.array([0, 1, 2, 3, 3])
  got = losses.preference_losses(logits, jnp.eye(2), jnp.asarray(additive), labels, "paper",
                                 jnp.asarray(margins), scale=30.0)
  lowered = logits[1] - 30.0 * jnp.asarray(m, jnp.float32)[labels][:, None] * jax.nn.one_hot(labels, 4)
  chex.assert_trees_all_close(got[1], losses.cross_entropy(lowered, labels), rtol=1e-5)
  chex.assert_trees_all_close(got[0], losses.cross_entropy(logits[0], labels), rtol=1e-5)
  assert not losses.is_valid_anchor("ldam:0") and losses.is_valid_anchor("ldam:0.5")


def test_diversity_is_zero_for_identical_experts_and_positive_otherwise():
  same = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (1, 6, 5)), (3, 6, 5))
  assert float(losses.diversity(same, 1.0)) == pytest.approx(0.0, abs=1e-6)
  apart = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 5)) * 3
  assert float(losses.diversity(apart, 1.0)) > 0.1


def test_mixed_losses_interpolate():
  fn = lambda y: y.astype(jnp.float32)
  chex.assert_trees_all_close(losses.mixed_losses(fn, jnp.array([2]), jnp.array([6]), 0.25), jnp.array([5.0]))


def test_posthoc_shift_moves_predictions_to_rare_classes(digits_data):
  config = _config("method=logit_adjust")
  model = build(config.model, digits_data.num_classes)
  plain = build(_config("method=ce").model, digits_data.num_classes)
  prior = digits_data.prior
  shift = model.prediction_shift(prior)
  chex.assert_trees_all_close(shift, losses.posthoc_adjustment(prior, 1.0), rtol=1e-6)
  assert plain.prediction_shift(prior) is None
  params, _ = model.init(jax.random.PRNGKey(0), digits_data.image_shape)
  features = jax.random.normal(jax.random.PRNGKey(1), (1, 400, model.feature_dim))
  base = evaluate.predict_classes(model, params, features, np.ones((1, 1), np.float32))
  adjusted = evaluate.predict_classes(model, params, features, np.ones((1, 1), np.float32), shift=shift)
  rare = np.argsort(prior)[: len(prior) // 2]
  assert np.isin(adjusted, rare).mean() > np.isin(base, rare).mean()


def _load_compare():
  spec = importlib.util.spec_from_file_location("compare", REPO_ROOT / "experiments" / "compare.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_comparison_script_shares_training_between_prediction_variants():
  compare = _load_compare()
  key = lambda m: compare.config_key(compare.training_config(compare.method_config("digits", [], m, 0)))
  assert key("ce") == key("logit_adjust")
  assert len({key("ce"), key("balanced_softmax"), key("sade"), key("prl")}) == 4


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


def test_weighted_cross_entropy_is_the_weighted_mean():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4))
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  weights = jnp.array([0.5, 1.0, 2.0, 4.0, 0.5, 1.0])
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, weights),
                             (per_example * weights).sum(-1) / weights.sum(), rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, jnp.ones(6)), losses.cross_entropy(logits, labels),
                             rtol=1e-6)


def test_deferred_reweighting_starts_at_its_step(digits_data, fixed_batch):
  config = _config("method=ride")
  assert config.loss.reweight_start == 0.8
  weights, from_step = train.deferred_reweighting(config.loss, digits_data.train_y, digits_data.num_classes, 10)
  assert from_step == 8
  model = build(config.model, digits_data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch=10)
  adjust = losses.adjustments(config.loss.anchors, digits_data.prior, config.loss.tau)
  plain = jax.jit(make_update(model, tx, adjust, StepConfig.from_config(config)))
  deferred = jax.jit(make_update(model, tx, adjust, StepConfig.from_config(config), weights, reweight_from_step=1))
  state = init_state(model, tx, seed=0, image_shape=digits_data.image_shape)
  images, labels = fixed_batch
  key = jax.random.PRNGKey(5)
  plain_state, plain_first = plain(state, images, labels, key)
  deferred_state, deferred_first = deferred(state, images, labels, key)
  np.testing.assert_allclose(deferred_first["loss"], plain_first["loss"], rtol=1e-6)   # step 0: weights off
  _, plain_second = plain(plain_state, images, labels, key)
  _, deferred_second = deferred(deferred_state, images, labels, key)                      # step 1: on
  assert abs(float(deferred_second["loss"]) - float(plain_second["loss"])) > 1e-3


def test_deferred_reweighting_off_and_bad_values():
  config = _config()
  assert train.deferred_reweighting(config.loss, np.array([0, 1, 1]), 2, 100) == (None, 0)
  with pytest.raises(UserInputError, match="loss.reweight_start"):
    _config("loss.reweight_start=1.5")
  with pytest.raises(UserInputError, match="loss.reweight_beta"):
    _config("loss.reweight_beta=1.0")


def test_comparison_rows_for_test_time_adaptation(trained_run, tmp_path):
  compare = _load_compare()
  evaluated = compare.evaluate_method(trained_run, ("em",))
  adapted = evaluated["adapted_em"]
  assert set(adapted["results"]) == set(trained_run.data.test_sets)
  for name, preference in adapted["preference_per_test_set"].items():
    assert len(preference) == trained_run.model.num_experts and abs(sum(preference) - 1) < 1e-5, name
  # The forward50 adaptation leans away from the backward expert, the backward50 one towards it.
  backward = list(trained_run.config.loss.anchors).index("backward")
  assert (adapted["preference_per_test_set"]["backward50"][backward]
          > adapted["preference_per_test_set"]["forward50"][backward])
  record = {"method": "prl", "seed": 0, "uses_test_prior": False, "steps": 1, **evaluated}
  compare.write_tables([record], tmp_path / "table", "cmd", [0], ["prl"])
  table = (tmp_path / "table.md").read_text()
  row = next(line for line in table.splitlines() if "adapted to each test set (em)" in line)
  assert "unlabeled test images" in row
  mean = 100 * np.mean([adapted["results"][n]["all"] for n in trained_run.data.test_sets])
  assert f"{mean:.1f}" in row
