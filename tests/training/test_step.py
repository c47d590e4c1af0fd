"""The update (hyperlt.training.step): one method-agnostic step for every preset, equal to the loss and
gradient step written out directly; the frozen preference scale is the optimiser's."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperlt import configs as config_lib
from hyperlt import losses, preference
from hyperlt.configs import presets
from hyperlt.data import augment, pipeline
from hyperlt.models.expert_model import build
from hyperlt.optim import pytorch_sgd
from hyperlt.training import loop, objectives
from hyperlt.training.step import SCALE, init_state, learning_rate_schedule, make_optimizer, make_update


def _config(*overrides: str):
  config = config_lib.load("digits")
  # Two stages (one shared, one per expert) keep each method's compilation to a few seconds.
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(4,8)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)", "optim.warmup_epochs=0", "optim.lr=0.002",
                               "train.progress=False", *overrides])
  return config_lib.validate(config)


@pytest.fixture(scope="module")
def digits_data():
  return pipeline.prepare(_config().data)


@pytest.fixture(scope="module")
def fixed_batch(digits_data):
  images = augment.normalize(digits_data.train_x[:48], digits_data.mean, digits_data.std)
  return images, jnp.asarray(digits_data.train_y[:48], jnp.int32)


def _jit(fn):
  # These tests check what is computed, not how fast: an unoptimised CPU compile is several times faster.
  return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def _setup(config, data, total_steps=0):
  """(model, tx, jitted update, initial state) of a config, as hyperlt.training.loop builds them."""
  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch=10, learn_scale=config.preference.learn_scale)
  update = _jit(make_update(model, tx, objectives.from_config(config, data.class_counts, total_steps)))
  return model, tx, update, init_state(model, tx, seed=0, image_shape=data.image_shape)


# Configs whose update is compared with the direct gradient step below, one per path through the objective:
# Dirichlet samples with mixup (the mixing draws come first from the step's key), continuous loss, STCH and
# the frozen scale; ride's margins, DRW and diversity; balpoe's static experts with mixup; prl_code's learned
# scale, symmetric samples, stch_code and mean combination.
DIRECT = {"prl+mixup": ("loss.mixup_alpha=0.4",), "ride": ("method=ride",), "balpoe": ("method=balpoe",),
          "prl_code": ("method=prl_code",)}


@pytest.mark.parametrize("method", [m for m in presets.METHODS if m not in ("logit_adjust", *DIRECT)])
def test_one_step_lowers_the_loss_on_a_fixed_batch(method, digits_data, fixed_batch):
  # logit_adjust trains exactly like ce (tests/configs/test_presets.py).
  # total_steps=0: a deferred re-weighting (ride) applies from the first step, so both steps see it.
  _, _, update, state = _setup(_config(f"method={method}"), digits_data)
  images, labels = fixed_batch
  key = jax.random.PRNGKey(3)  # the same preference samples (and mixup pairs) before and after
  state, before = update(state, images, labels, key)
  _, after = update(state, images, labels, key)
  chex.assert_tree_all_finite((before["loss"], after["loss"]))
  assert float(after["loss"]) < float(before["loss"]), method


def _direct_loss(model, config, counts, params, batch_stats, images, labels, key, step, total_steps):
  """The step's objective written out from the config, without the objective's pieces."""
  l, p = config.loss, config.preference
  targets = [(labels, 1.0)]
  if l.mixup_alpha > 0:
    key, lam_key, perm_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, l.mixup_alpha, l.mixup_alpha)
    partner = jax.random.permutation(perm_key, labels.shape[0])
    images = lam * images + (1 - lam) * images[partner]
    targets = [(labels, lam), (labels[partner], 1 - lam)]
  features, _ = model.features(params, batch_stats, images, train=True)
  alpha = preference.sample_training(key, model.num_experts, p.sampling, p.beta0, p.kappa)
  r_hat = model.r_hat(params, alpha)
  logits = model.logits(params, features, r_hat)
  w = alpha / alpha.sum(-1, keepdims=True)
  anchors = losses.Anchors.parse(l.anchors, counts / counts.sum(), l.tau)
  rows = (lambda a: w @ a) if l.mode == "continuous" else jnp.asarray
  reweight = l.reweight_start > 0 and step >= round(l.reweight_start * total_steps)

  def loss_of(y):
    adjusted = (logits + rows(anchors.additive)[:, None]
                - config.model.scale * rows(anchors.margins)[:, None] * jax.nn.one_hot(y, logits.shape[-1]))
    per_example = optax.softmax_cross_entropy_with_integer_labels(adjusted, jnp.broadcast_to(y, adjusted.shape[:-1]))
    weights = losses.class_balanced_weights(counts, l.reweight_beta)[y] if reweight else jnp.ones(y.shape)
    return (per_example * weights).sum(-1) / weights.sum()

  per_sample = sum(share * loss_of(y) for y, share in targets)
  total = losses.objective(per_sample, l.objective, l.mu)
  if l.diversity > 0:
    spread = losses.diversity(model.expert_logits(params, features, r_hat), l.diversity_temperature)
    total -= l.diversity * spread.mean()
  return total, per_sample


@pytest.mark.parametrize("case", list(DIRECT))
def test_update_is_the_direct_gradient_step(case, digits_data, fixed_batch):
  config = _config(*DIRECT[case])
  counts = np.asarray(digits_data.class_counts)
  model, _, update, state = _setup(config, digits_data, total_steps=2)
  images, labels = fixed_batch
  key = jax.random.PRNGKey(7)
  state = state.replace(step=jnp.asarray(2, jnp.int32))   # past DRW's start (0.8 * 2 steps)
  after, metrics = update(state, images, labels, key)

  (total, per_sample), grads = _jit(jax.value_and_grad(
      lambda params: _direct_loss(model, config, counts, params, state.batch_stats, images, labels, key, 2, 2),
      has_aux=True))(state.params)
  np.testing.assert_allclose(metrics["loss"], total, rtol=1e-5)
  np.testing.assert_allclose(metrics["sample_losses"], per_sample, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-4)
  # One SGD step on the direct gradient; the frozen scale gets no gradient at all.
  if not config.preference.learn_scale:
    grads = {**grads, SCALE: jnp.zeros_like(grads[SCALE])}
  no_decay = lambda params: {k: jax.tree.map(lambda _: k != SCALE, v) for k, v in params.items()}
  sgd = pytorch_sgd(learning_rate_schedule(config.optim, 10), config.optim.momentum, config.optim.nesterov,
                    config.optim.weight_decay, no_decay)
  updates, _ = sgd.update(grads, sgd.init(state.params), state.params)
  chex.assert_trees_all_close(after.params, optax.apply_updates(state.params, updates), rtol=1e-4, atol=1e-6)
  state, second = update(after, images, labels, key)
  assert float(second["loss"]) < float(metrics["loss"])          # the same batch and samples: a descent step
  moved = not np.array_equal(after.params[SCALE], state.params[SCALE])
  assert moved == config.preference.learn_scale


def test_frozen_scale_keeps_the_optimiser_state_layout(digits_data):
  config = _config()
  params, _ = build(config.model, digits_data.num_classes).init(jax.random.PRNGKey(0), digits_data.image_shape)
  frozen = make_optimizer(config.optim, 10)
  learned = make_optimizer(config.optim, 10, learn_scale=True)
  # Same state tree either way, so checkpoints written before the scale was frozen in the optimiser restore.
  assert jax.tree.structure(frozen.init(params)) == jax.tree.structure(learned.init(params))
  grads = jax.tree.map(jnp.ones_like, params)
  frozen_updates, _ = frozen.update(grads, frozen.init(params), params)
  learned_updates, _ = learned.update(grads, learned.init(params), params)
  np.testing.assert_array_equal(frozen_updates[SCALE], 0.0)
  assert np.all(np.asarray(learned_updates[SCALE]) != 0)
  chex.assert_trees_all_equal({k: v for k, v in frozen_updates.items() if k != SCALE},
                              {k: v for k, v in learned_updates.items() if k != SCALE})


def test_deferred_reweighting_starts_at_its_step(digits_data, fixed_batch):
  # total_steps=1: ride's share 0.8 rounds to step 1; without re-weighting the objective is otherwise the same.
  _, _, deferred, state = _setup(_config("method=ride"), digits_data, total_steps=1)
  _, _, plain, _ = _setup(_config("method=ride", "loss.reweight_start=0.0"), digits_data, total_steps=1)
  images, labels = fixed_batch
  key = jax.random.PRNGKey(5)
  plain_state, plain_first = plain(state, images, labels, key)
  deferred_state, deferred_first = deferred(state, images, labels, key)
  np.testing.assert_allclose(deferred_first["loss"], plain_first["loss"], rtol=1e-6)   # step 0: weights off
  _, plain_second = plain(plain_state, images, labels, key)
  _, deferred_second = deferred(deferred_state, images, labels, key)                      # step 1: on
  assert abs(float(deferred_second["loss"]) - float(plain_second["loss"])) > 1e-3


def test_balanced_softmax_mixup_trains(digits_data):
  config = _config("method=balanced_softmax_mixup", "optim.epochs=1", "optim.batch_size=64")
  assert objectives.from_config(config, digits_data.class_counts, 4).mix == objectives.Mixup(0.4)
  run = loop.train(config, None, data=digits_data, log=lambda _: None)
  steps = len(digits_data.train_y) // 64
  assert run.step == steps >= 3
  chex.assert_tree_all_finite(run.params)
