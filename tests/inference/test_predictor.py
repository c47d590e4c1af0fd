"""The inference path (hyperlt.inference.predictor) on a small randomly initialised model: padding, one
compilation per shape, the post-hoc shift, and P preferences in one call."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt.inference import predictor as predictor_lib
from hyperlt.inference.predictor import Predictor
from hyperlt.models.expert_model import build

NUM_CLASSES = 6
MEAN, STD = (0.4,), (0.3,)
BATCH = 16


@pytest.fixture(scope="module")
def parts():
  """(model, params, batch_stats) of a 2-stage, 8/16-channel model with 3 experts."""
  config = config_lib.load("digits")
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)"])
  model = build(config_lib.validate(config).model, NUM_CLASSES)
  # Compiled without backend optimisation: it runs once.
  init = jax.jit(lambda: model.init(jax.random.PRNGKey(0), (8, 8, 1)),
                 compiler_options={"xla_backend_optimization_level": 0})
  params, batch_stats = init()
  # Non-trivial BatchNorm statistics and preference scale, so padding mistakes would show.
  batch_stats = jax.tree.map(lambda a: a + 0.1, batch_stats)
  params = {**params, "log_scale": jnp.array([0.3, -0.2, 0.1])}
  return model, params, batch_stats


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)


def _unpadded_features(model, params, batch_stats, images):
  """Features of exactly these images in one call: no padding, no slicing."""
  return jax.jit(predictor_lib.image_features, static_argnums=0)(model, params, batch_stats, images,
                                                                  jnp.asarray(MEAN), jnp.asarray(STD))


@pytest.mark.parametrize("n", [1, 7, BATCH + 1])
def test_padding_gives_the_features_of_the_unpadded_images(parts, images, n):
  model, params, batch_stats = parts
  predictor = Predictor(model, params, batch_stats, MEAN, STD, batch_size=BATCH)
  features = predictor.features(images[:n])
  chex.assert_shape(features, (3, n, model.feature_dim))
  np.testing.assert_allclose(np.asarray(features), np.asarray(_unpadded_features(model, params, batch_stats,
                                                                                 images[:n])),
                             rtol=1e-5, atol=1e-5)


def test_one_compilation_per_shape(parts, images, monkeypatch):
  model, params, batch_stats = parts
  # A model of its own (another logit scale), so no earlier test has compiled these programs.
  model = dataclasses.replace(model, scale=29.0)
  traced = {"features": [], "logits": []}
  real_features, real_logits = predictor_lib.image_features, predictor_lib.preference_logits

  def count_features(model, params, batch_stats, batch, mean, std):
    traced["features"].append(batch.shape[0])
    return real_features(model, params, batch_stats, batch, mean, std)

  def count_logits(model, params, features, alphas, shift):
    traced["logits"].append((alphas.shape[0], features.shape[1]))
    return real_logits(model, params, features, alphas, shift)

  monkeypatch.setattr(predictor_lib, "image_features", count_features)
  monkeypatch.setattr(predictor_lib, "preference_logits", count_logits)
  predictor = Predictor(model, params, batch_stats, MEAN, STD, batch_size=BATCH, chunk=BATCH)
  for n in (9, 12, 16, 17, 33, 40):     # every slice is a batch of 16
    predictor.features(images[:n])
  assert traced["features"] == [BATCH]
  predictor.features(images[:3])        # a smaller set: the next power of two, 4
  predictor.features(images[:4])
  assert traced["features"] == [BATCH, 4]
  features = predictor.features(images)
  for alphas in (np.eye(3), np.eye(3)[::-1], np.full((3, 3), 1 / 3)):
    predictor.classes(features, alphas)
  predictor.classes(features, [0.2, 0.3, 0.5])
  assert traced["logits"] == [(3, BATCH), (1, BATCH)]   # per preference count, not per preference value


def test_post_hoc_shift_uses_the_training_prior(parts, images):
  model, params, batch_stats = parts
  prior = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
  adjusted = dataclasses.replace(model, posthoc_tau=1.5)
  shifted = Predictor(adjusted, params, batch_stats, MEAN, STD, prior, batch_size=BATCH)
  plain = Predictor(adjusted, params, batch_stats, MEAN, STD, batch_size=BATCH)
  features = plain.features(images)
  alphas = np.array([[1.0, 0, 0], [0.2, 0.3, 0.5]], np.float32)
  expected = np.asarray(plain.logits(features, alphas)) - 1.5 * np.log(prior)
  np.testing.assert_allclose(np.asarray(shifted.logits(features, alphas)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(shifted.classes(features, alphas), expected.argmax(-1))
  np.testing.assert_allclose(shifted.probabilities(features, alphas), jax.nn.softmax(expected, -1), atol=1e-6)
  np.testing.assert_allclose(shifted.confidences(features, alphas), jax.nn.softmax(expected, -1).max(-1), atol=1e-6)
  # The shift lowers the head classes' logits: the tail is predicted more often.
  assert (shifted.classes(features, alphas) >= 3).sum() > (plain.classes(features, alphas) >= 3).sum()
  # A model without post-hoc adjustment ignores the prior.
  assert model.posthoc_tau == 0 and Predictor(model, params, batch_stats, MEAN, STD, prior).shift is None


def test_preferences_in_one_call_equal_single_calls(parts, images):
  model, params, batch_stats = parts
  predictor = Predictor(model, params, batch_stats, MEAN, STD, batch_size=BATCH, chunk=BATCH)
  features = predictor.features(images)
  alphas = np.array([[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.5], [2, 0, 2]], np.float32)
  together = predictor.probabilities(features, alphas)
  chex.assert_shape(together, (4, len(images), NUM_CLASSES))
  for p, alpha in enumerate(alphas):
    np.testing.assert_allclose(together[p], predictor.probabilities(features, alpha)[0], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(predictor.classes(features, alphas), together.argmax(-1))
  # An extra shift (an adapted logit adjustment) adds to the logits.
  extra = np.linspace(-1, 1, NUM_CLASSES).astype(np.float32)
  np.testing.assert_allclose(np.asarray(predictor.logits(features, alphas, extra)),
                             np.asarray(predictor.logits(features, alphas)) + extra, rtol=1e-6, atol=1e-6)


class _LazyImages:
  """An array-like image list (as streamed data's views are): ``len()`` and slices that are uint8 arrays."""

  def __init__(self, images):
    self._images, self.sliced = images, []

  def __len__(self):
    return len(self._images)

  def __getitem__(self, key):
    assert isinstance(key, slice), "the predictor reads contiguous slices"
    self.sliced.append(key)
    return self._images[key].copy()


def test_array_like_images_and_empty_sets(parts, images):
  model, params, batch_stats = parts
  predictor = Predictor(model, params, batch_stats, MEAN, STD, batch_size=BATCH)
  lazy = _LazyImages(images[:20])
  np.testing.assert_array_equal(np.asarray(predictor.features(lazy)), np.asarray(predictor.features(images[:20])))
  assert [(s.start, s.stop) for s in lazy.sliced] == [(0, 16), (16, 32)]
  chex.assert_shape(predictor.features(images[:0]), (3, 0, model.feature_dim))


def test_probability_function_is_the_served_path_in_one_pure_function(parts, images):
  """What export serialises: uint8 images to probabilities, shift included, for any batch size."""
  model, params, batch_stats = parts
  adjusted = dataclasses.replace(model, posthoc_tau=1.0)
  prior = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
  predictor = Predictor(adjusted, params, batch_stats, MEAN, STD, prior, batch_size=BATCH)
  alphas = np.array([[0.2, 0.3, 0.5], [0, 0, 1]], np.float32)
  served = predictor.probabilities(predictor.features(images[:11]), alphas)
  pure = jax.jit(predictor.probability_function())(images[:11], alphas)
  chex.assert_shape(pure, (2, 11, NUM_CLASSES))
  np.testing.assert_allclose(np.asarray(pure), served, rtol=1e-5, atol=1e-6)
