"""The objective pieces against NumPy, one parametrised test per piece, and the composed objective of every
preset against a direct NumPy computation of the same loss (hyperlt.training.objectives)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt import losses, preference
from hyperlt.configs import presets
from hyperlt.errors import UserInputError
from hyperlt.training import objectives

COUNTS = np.array([120, 60, 30, 14, 6])   # sorted by frequency, so the reversed prior is prior[::-1]


def np_log_softmax(x):
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_cross_entropy(logits, labels, weights=None):
  per_example = -np_log_softmax(logits)[np.arange(len(labels)), labels]
  weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
  return (per_example * weights).sum() / weights.sum()


def np_anchor(name, prior, tau):
  """(additive row, margin row) of one anchor, from the formulas of hyperlt.losses."""
  kind, _, value = name.partition(":")
  zeros = np.zeros_like(prior)
  rows = {"forward": (zeros, zeros), "uniform": (np.log(prior), zeros),
          "backward": (np.log(prior) - tau * np.log(prior[::-1]), zeros)}
  if kind == "logit_adjust":
    return float(value) * np.log(prior), zeros
  if kind == "ldam":
    return zeros, float(value) * (prior.min() / prior) ** 0.25
  return rows[kind]


def np_preference_losses(logits, w, names, prior, tau, labels, mode, scale, weights=None):
  """L_p = CE(z_p + a_p - s m_{p,y} e_y, y), a_p and m_p mixed by w_p (continuous) or row p (paper)."""
  additive, margins = (np.stack(rows) for rows in zip(*(np_anchor(n, prior, tau) for n in names)))
  out = []
  for p in range(len(logits)):
    a, m = (w[p] @ additive, w[p] @ margins) if mode == "continuous" else (additive[p], margins[p])
    one_hot = np.eye(logits.shape[-1])[labels]
    out.append(np_cross_entropy(logits[p] + a - scale * m[labels][:, None] * one_hot, labels, weights))
  return np.array(out)


def np_scalarise(values, kind, mu):
  lse = lambda x: x.max() + np.log(np.exp(x - x.max()).sum())
  return values.sum() + {"sum": 0.0, "stch": mu * lse(values / mu), "stch_code": mu * lse(values)}[kind]


def np_diversity(v, temperature):
  """T_d^2 sum_t mean_b KL(softmax(mean_t v_t / T_d) || softmax(v_t / T_d)) of v [T, B, K]."""
  log_p, log_q = np_log_softmax(v / temperature), np_log_softmax(v.mean(0, keepdims=True) / temperature)
  return temperature ** 2 * (np.exp(log_q) * (log_q - log_p)).sum(-1).mean(-1).sum()


def np_class_weights(counts, beta):
  raw = (1 - beta) / (1 - beta ** counts.astype(np.float64))
  return raw / raw.sum() * len(counts)


def _prior():
  return COUNTS / COUNTS.sum()


def _forward(logits, alpha, expert_logits=None, step=0):
  return objectives.Forward(jnp.asarray(logits), jnp.asarray(alpha), lambda: jnp.asarray(expert_logits),
                            jnp.asarray(step, jnp.int32))


@pytest.mark.parametrize("mode", ["vertex_dirichlet", "symmetric", "vertices"])
def test_preference_sampler(mode):
  sampler = objectives.PreferenceSampler(3, mode, 1.0, 4.0)
  key = jax.random.PRNGKey(0)
  chex.assert_trees_all_equal(sampler(key), preference.sample_training(key, 3, mode, 1.0, 4.0))
  samples = np.asarray(jax.vmap(sampler)(jax.random.split(key, 4000)))        # [N, T, T]
  np.testing.assert_allclose(samples.sum(-1), 1.0, rtol=1e-5)
  expected = {"vertex_dirichlet": (np.ones((3, 3)) + 4 * np.eye(3)) / 7, "symmetric": np.full((3, 3), 1 / 3),
              "vertices": np.eye(3)}[mode]
  np.testing.assert_allclose(samples.mean(0), expected, atol=0.02)          # Dirichlet means beta / sum(beta)


def test_no_mixing_returns_the_batch_and_key():
  key, images, labels = jax.random.PRNGKey(1), jnp.ones((4, 2, 2, 1)), jnp.arange(4)
  out_key, out_images, targets = objectives.NoMixing()(key, images, labels)
  chex.assert_trees_all_equal((out_key, out_images), (key, images))
  assert len(targets) == 1 and targets[0].share == 1.0
  chex.assert_trees_all_equal(targets[0].labels, labels)


@pytest.mark.parametrize("alpha", [0.2, 0.4, 2.0])
def test_mixup_matches_numpy(alpha):
  key = jax.random.PRNGKey(int(alpha * 10))
  images = np.random.default_rng(0).normal(size=(8, 3, 3, 2)).astype(np.float32)
  labels = np.arange(8) % 5
  out_key, mixed, targets = objectives.Mixup(alpha)(key, jnp.asarray(images), jnp.asarray(labels))
  # The key order the step relies on: the mixing draws come first, the sampler gets the rest.
  rest, lam_key, perm_key = jax.random.split(key, 3)
  lam = float(jax.random.beta(lam_key, alpha, alpha))
  partner = np.asarray(jax.random.permutation(perm_key, 8))
  chex.assert_trees_all_equal(out_key, rest)
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[partner], rtol=1e-6, atol=1e-6)
  (y_a, share_a), (y_b, share_b) = targets
  np.testing.assert_array_equal(y_a, labels)
  np.testing.assert_array_equal(y_b, labels[partner])
  np.testing.assert_allclose((share_a, share_b), (lam, 1 - lam), rtol=1e-6)


@pytest.mark.parametrize("step", [0, 4, 5, 9])
def test_deferred_reweighting_switches_on_at_its_step(step):
  class_weights = np_class_weights(COUNTS, 0.999).astype(np.float32)
  piece = objectives.DeferredReweighting(class_weights, from_step=5)
  labels = np.array([0, 4, 4, 2, 1])
  got = piece(jnp.asarray(labels), jnp.asarray(step))
  np.testing.assert_allclose(got, class_weights[labels] if step >= 5 else np.ones(5), rtol=1e-6)


@pytest.mark.parametrize("mode", ["continuous", "paper"])
@pytest.mark.parametrize("names", [("forward", "uniform", "backward"), ("ldam:0.5", "logit_adjust:1", "backward")])
@pytest.mark.parametrize("step", [0, 3])
def test_preference_loss_matches_numpy(mode, names, step):
  prior, tau, scale = _prior(), 2.0, 30.0
  rng = np.random.default_rng(len(mode) + len(names[0]) + step)
  logits = rng.normal(size=(3, 16, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=16)
  w = rng.dirichlet(np.ones(3), size=3).astype(np.float32)
  class_weights = np_class_weights(COUNTS, 0.9999)
  piece = objectives.PreferenceLoss(losses.Anchors.parse(names, prior, tau), mode, scale,
                                    objectives.DeferredReweighting(class_weights.astype(np.float32), from_step=3))
  got = piece(jnp.asarray(logits), jnp.asarray(w), jnp.asarray(labels), jnp.asarray(step))
  weights = class_weights[labels] if step >= 3 else None
  want = np_preference_losses(logits, w, names, prior, tau, labels, mode, scale, weights)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["sum", "stch", "stch_code"])
@pytest.mark.parametrize("mu", [0.1, 0.3, 1.0])
def test_scalarisation_matches_numpy(kind, mu):
  values = np.array([0.7, 1.9, 1.2], np.float32)
  np.testing.assert_allclose(objectives.Scalarisation(kind, mu)(jnp.asarray(values)),
                             np_scalarise(values.astype(np.float64), kind, mu), rtol=1e-5)


@pytest.mark.parametrize("weight,temperature", [(0.2, 1.0), (0.5, 0.5), (1.0, 3.0)])
def test_diversity_matches_numpy(weight, temperature):
  v = np.random.default_rng(int(temperature * 10)).normal(size=(2, 3, 6, 5)) * 3     # [P, T, B, K]
  got = objectives.Diversity(weight, temperature)(_forward(np.zeros((2, 6, 5)), np.eye(3)[:2], v))
  np.testing.assert_allclose(got, -weight * np.mean([np_diversity(v[p], temperature) for p in range(2)]), rtol=1e-4)
  same = np.broadcast_to(v[:, :1], v.shape)
  spread = objectives.Diversity(weight, temperature)(_forward(np.zeros((2, 6, 5)), np.eye(3)[:2], same))
  assert abs(float(spread)) < 1e-5


def _config(*overrides):
  return config_lib.validate(config_lib.override(config_lib.load("digits"), list(overrides)))


# Every preset, and one config with every mechanism on at once.
CASES = {name: (f"method={name}",) for name in presets.METHODS}
CASES["everything"] = ("loss.anchors=ldam:0.5,uniform,logit_adjust:1.5", "loss.mixup_alpha=0.3", "loss.diversity=0.1",
                       "loss.diversity_temperature=2.0", "loss.reweight_start=0.5", "loss.objective=stch_code")


def _direct_objective(config, key, x, y, experts, step, total_steps):
  """The loss of one step written out in NumPy from the config: mixup, Dirichlet sample, weighted expert
  logits, anchor losses with class weights, scalarisation, diversity. Returns (J, L [P])."""
  l, p, t = config.loss, config.preference, config.model.num_experts
  targets = [(y, 1.0)]
  if l.mixup_alpha > 0:
    key, lam_key, perm_key = jax.random.split(key, 3)
    lam = float(jax.random.beta(lam_key, l.mixup_alpha, l.mixup_alpha))
    partner = np.asarray(jax.random.permutation(perm_key, len(y)))
    x, targets = lam * x + (1 - lam) * x[partner], [(y, lam), (y[partner], 1 - lam)]
  alpha = np.asarray(preference.sample_training(key, t, p.sampling, p.beta0, p.kappa), np.float64)
  w = alpha / alpha.sum(-1, keepdims=True)
  v = np.einsum("bd,tdk->tbk", x, experts)                  # the "model": linear experts [T, B, K]
  z = np.einsum("pt,tbk->pbk", w, v)
  on = l.reweight_start > 0 and step >= round(l.reweight_start * total_steps)
  weights = lambda labels: np_class_weights(COUNTS, l.reweight_beta)[labels] if on else None
  per_sample = sum(share * np_preference_losses(z, w, l.anchors, _prior(), l.tau, labels, l.mode, config.model.scale,
                                                weights(labels)) for labels, share in targets)
  total = np_scalarise(per_sample, l.objective, l.mu)
  if l.diversity > 0:
    total -= l.diversity * np_diversity(v, l.diversity_temperature)   # the same v for every sample
  return total, per_sample


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("step", [0, 9])
def test_composed_objective_equals_the_direct_computation(case, step):
  config = _config(*CASES[case])
  objective = objectives.from_config(config, COUNTS, total_steps=10)
  t, rng = config.model.num_experts, np.random.default_rng(step)
  x = rng.normal(size=(12, 7)).astype(np.float32)
  y = rng.integers(0, 5, size=12)
  experts = rng.normal(size=(t, 7, 5)).astype(np.float32) / 3
  key = jax.random.PRNGKey(11 + step)

  key_left, mixed, targets = objective.mix(key, jnp.asarray(x), jnp.asarray(y))
  alpha = objective.preferences(key_left)
  w = alpha / jnp.sum(alpha, -1, keepdims=True)
  v = jnp.einsum("bd,tdk->tbk", mixed, experts)
  forward = objectives.Forward(jnp.einsum("pt,tbk->pbk", w, v), alpha,
                               lambda: jnp.broadcast_to(v, (t,) + v.shape), jnp.asarray(step))
  total, per_sample = objective(forward, targets)

  want_total, want_per_sample = _direct_objective(config, key, x.astype(np.float64), y, experts, step, 10)
  np.testing.assert_allclose(per_sample, want_per_sample, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(total, want_total, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_from_config_adds_one_piece_per_enabled_mechanism(case):
  config = _config(*CASES[case])
  objective = objectives.from_config(config, COUNTS, total_steps=100)
  l = config.loss
  assert isinstance(objective.mix, objectives.Mixup if l.mixup_alpha > 0 else objectives.NoMixing)
  assert [type(r) for r in objective.regularisers] == ([objectives.Diversity] if l.diversity > 0 else [])
  assert (objective.loss.reweighting is not None) == (l.reweight_start > 0)
  assert objective.loss.anchors.has_margins == any(a.startswith("ldam:") for a in l.anchors)
  assert objective.loss.anchors.names == tuple(l.anchors)
  assert (objective.scalarise.kind, objective.loss.mode) == (l.objective, l.mode)
  assert objective.preferences == objectives.PreferenceSampler(config.model.num_experts, config.preference.sampling,
                                                               config.preference.beta0, config.preference.kappa)


def test_balanced_softmax_mixup_is_balanced_softmax_plus_the_mixup_piece():
  plain = objectives.from_config(_config("method=balanced_softmax"), COUNTS, 100)
  mixed = objectives.from_config(_config("method=balanced_softmax_mixup"), COUNTS, 100)
  assert mixed.mix == objectives.Mixup(0.4) and plain.mix == objectives.NoMixing()
  np.testing.assert_allclose(mixed.loss.anchors.additive, np.log(_prior())[None], rtol=1e-6)
  assert (mixed.preferences, mixed.scalarise, mixed.regularisers) == (plain.preferences, plain.scalarise,
                                                                      plain.regularisers)


def test_deferred_reweighting_from_the_config():
  ride = _config("method=ride")
  piece = objectives.deferred_reweighting(ride.loss, COUNTS, total_steps=10)
  assert piece.from_step == 8
  np.testing.assert_allclose(piece.class_weights, np_class_weights(COUNTS, 0.9999), rtol=1e-5)
  assert objectives.deferred_reweighting(_config().loss, COUNTS, 10) is None
  with pytest.raises(UserInputError, match="loss.reweight_start"):
    objectives.deferred_reweighting(ride.loss, np.array([3, 0, 2]), 10)
