r"""Self-supervised preference learning: SADE's test-time aggregation on the preference simplex.

The model is frozen (BatchNorm in inference mode). The learned variable is a preference
``w = softmax(theta)``, ``theta`` in R^T starting at 0 (so ``w`` starts at 1/T each). For two random
views ``x', x''`` of each unlabeled image (random crop, and flip where the run flips), with
``p(x) = softmax(z(x; r_hat(w)) + s)`` the model's prediction at ``w`` (``s`` the run's post-hoc shift):

    maximise  S(w) = mean_i cos(p(x_i'), p(x_i''))

by SGD on ``theta`` with SADE's settings: the run's training learning rate, momentum, Nesterov and weight
decay, batches of 128, shuffled every epoch, and a stop after the first epoch in which some weight is
below 0.05 (that epoch's preference is kept, as in SADE).

Two things differ from a literal port, both measured in docs/adaptation.md:

* Budget: SADE runs 5 epochs; on its smallest CIFAR-100 test set (2,486 images) that is 100 updates. On
  a test set of 135 images 5 epochs are 10 updates and the preference hardly leaves its start, so the
  budget is ``max(epochs, ceil(min_steps / batches_per_epoch))`` epochs with ``min_steps = 100``.
  ``min_steps=0`` restores SADE's 5 epochs exactly.
* Views: SADE's test-time views add colour jitter, grayscale and blur to the training crop; hyperlt's
  augmentation has only crop and flip, whose views agree so well (mean cosine 0.98 on the digits
  default's forward50) that S(w) is almost flat. The views shift by twice the training crop padding by default.

Collapse guard. The stability objective is maximised by constant predictions, so on small or few-class
data the preference can run to where one class absorbs the others (reported for SADE's published
code: 87% -> 38% in 5 epochs on a 3-class set). Under label shift, a good preference makes the predicted class
frequencies MATCH the test class frequencies; collapse moves them away. The guard measures that with
the label-shift estimate ``q_hat`` of hyperlt.analysis.adapt.label_shift (EM at the reference preference, from
the same unlabeled images) and the mean prediction on the un-augmented images at ``w``,
``p_bar(w) = mean_i p(x_i)``:

    mismatch(w) = KL(q_hat || p_bar(w)).

After each epoch, if ``mismatch(w_t) > mismatch(w_0) + tolerance`` the epoch is undone and adaptation
stops: adaptation may never leave the predicted class distribution a worse match to the estimated test
prior than it found it. The tolerance (0.02 nats) only absorbs SGD jitter: on the digits default the
mismatch rises by at most 0.0061 along any of the 11 test sets' trajectories, while a collapse raises
it by 0.73 to 1.93 (docs/adaptation.md). Where the test set really is skewed the way adaptation moves (a
forward test set and a preference moving to the forward vertex), the mismatch falls and the guard
stays silent.

Everything per epoch happens on the device: the two views' features are computed once per epoch (the
backbone is frozen, so they do not depend on the preference), and one jitted function scans the
epoch's SGD steps and returns the new preference, the epoch's mean stability and ``p_bar``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperlt import progress
from hyperlt.analysis.adapt import label_shift
from hyperlt.data import augment
from hyperlt.errors import require
from hyperlt.inference import batching, predictor as predictor_lib
from hyperlt.models.expert_model import ExpertModel
from hyperlt.optim import pytorch_sgd

# Stop reasons, as reported in AdaptResult.stop_reason.
BUDGET = "budget"
MIN_WEIGHT = "min_weight"
GUARD = "guard"


@dataclasses.dataclass(frozen=True)
class StabilityOptions:
  """Settings of the stability method; None means "from the run" (see the module docstring).

  Attributes:
    epochs: epochs over the images (SADE: 5).
    min_steps: at least this many SGD updates; more epochs are run on small sets (0 = SADE exactly).
    batch_size: images per update (SADE: 128).
    min_weight: stop after an epoch ending with a weight below this (SADE: 0.05; 0 disables).
    learning_rate: SGD learning rate; None = the run's ``optim.lr``.
    view_padding: crop padding of the two views; None = 2 x the run's ``data.crop_padding``.
    flip: random horizontal flips in the views; None = the run's ``data.flip``.
    guard_tolerance: nats of extra prior mismatch allowed; None disables the collapse guard.
    seed: seed of the views and the batch order.
  """

  epochs: int = 5
  min_steps: int = 100
  batch_size: int = 128
  min_weight: float = 0.05
  learning_rate: float | None = None
  view_padding: int | None = None
  flip: bool | None = None
  guard_tolerance: float | None = 0.02
  seed: int = 0

  def validate(self) -> "StabilityOptions":
    def is_int(v):
      return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    require(is_int(self.epochs) and self.epochs >= 1, f"epochs: expected a positive integer, got {self.epochs!r}")
    require(is_int(self.min_steps) and self.min_steps >= 0,
            f"min_steps: expected a non-negative integer, got {self.min_steps!r}")
    require(is_int(self.batch_size) and self.batch_size >= 1,
            f"batch_size: expected a positive integer, got {self.batch_size!r}")
    require(isinstance(self.min_weight, (int, float)) and 0 <= self.min_weight < 1,
            f"min_weight: expected a number in [0, 1), got {self.min_weight!r}")
    require(self.learning_rate is None or (isinstance(self.learning_rate, (int, float))
                                           and math.isfinite(self.learning_rate) and self.learning_rate > 0),
            f"learning_rate: expected a positive number (or None for the run's optim.lr), got {self.learning_rate!r}")
    require(self.view_padding is None or (is_int(self.view_padding) and self.view_padding >= 0),
            f"view_padding: expected a non-negative integer (or None), got {self.view_padding!r}")
    require(self.flip is None or isinstance(self.flip, bool), f"flip: expected True, False or None, got {self.flip!r}")
    require(self.guard_tolerance is None or (isinstance(self.guard_tolerance, (int, float))
                                             and math.isfinite(self.guard_tolerance) and self.guard_tolerance >= 0),
            f"guard_tolerance: expected a non-negative number (or None to disable the guard), got "
            f"{self.guard_tolerance!r}")
    require(is_int(self.seed), f"seed: expected an integer, got {self.seed!r}")
    return self


@dataclasses.dataclass(frozen=True)
class _Sgd:
  """The optimiser's static settings (hashable, so jitted functions are cached across calls)."""

  learning_rate: float
  momentum: float
  nesterov: bool
  weight_decay: float
  batch_size: int

  def transform(self) -> optax.GradientTransformation:
    return pytorch_sgd(self.learning_rate, self.momentum, self.nesterov, self.weight_decay)


def _predictions(model: ExpertModel, params: Any, features: jnp.ndarray, theta: jnp.ndarray,
                 shift: jnp.ndarray | None) -> jnp.ndarray:
  """Class probabilities [B, K] at the preference softmax(theta) for features [T, B, d] (the inference
  path's logits, differentiable in theta)."""
  w = jax.nn.softmax(theta)
  return jax.nn.softmax(predictor_lib.preference_logits(model, params, features, w[None], shift)[0], axis=-1)


def _masked_mean_prediction(model, params, features, n, theta, shift) -> jnp.ndarray:
  """p_bar [K]: mean prediction over the first n of the (padded) features [T, N_pad, d]."""
  probs = _predictions(model, params, features, theta, shift)
  valid = (jnp.arange(features.shape[1]) < n)[:, None]
  return jnp.sum(jnp.where(valid, probs, 0.0), axis=0) / n


mean_prediction = jax.jit(_masked_mean_prediction, static_argnums=0)


@functools.partial(jax.jit, static_argnames=("model", "padding", "flip"))
def view_features(model: ExpertModel, padding: int, flip: bool, params, batch_stats, images: jnp.ndarray,
                  key: jax.Array, mean, std) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Features [T, B, d] of two random views of each of the uint8 images [B, H, W, C].

  Both views go through the backbone as one batch of 2B; the model is in inference mode.
  """
  x = augment.normalize(images, mean, std)
  first_key, second_key = jax.random.split(key)
  views = jnp.concatenate([augment.random_crop_flip(first_key, x, padding, flip),
                           augment.random_crop_flip(second_key, x, padding, flip)])
  features = predictor_lib.normalized_features(model, params, batch_stats, views)
  return features[:, :len(images)], features[:, len(images):]


@functools.partial(jax.jit, static_argnames=("model", "sgd"))
def epoch(model: ExpertModel, sgd: _Sgd, params, theta, opt_state, first, second, clean, n, key, shift):
  """One epoch of SGD on theta over the n valid images of padded view features [T, N_pad, d].

  Images are visited in a random order, ``ceil(n / batch)`` batches, the last one partial (masked), as a
  shuffled PyTorch loader without drop_last would. Returns (theta, opt_state, mean stability over the
  epoch's images, p_bar [K] on the clean features at the new theta).
  """
  batch = sgd.batch_size
  n_pad = first.shape[1]
  tx = sgd.transform()
  # A random order of the n valid images, then the padding slots (index >= n), so every batch but the
  # last is full.
  order = jnp.argsort(jnp.where(jnp.arange(n_pad) < n, jax.random.uniform(key, (n_pad,)), 2.0))

  def negative_stability(theta, f1, f2, valid):
    both = _predictions(model, params, jnp.concatenate([f1, f2], axis=1), theta, shift)
    p1, p2 = both[:batch], both[batch:]
    norms = jnp.maximum(jnp.linalg.norm(p1, axis=-1) * jnp.linalg.norm(p2, axis=-1), 1e-12)
    cosine = jnp.sum(p1 * p2, axis=-1) / norms
    count = jnp.sum(valid)
    return -jnp.sum(jnp.where(valid, cosine, 0.0)) / count, count

  def step(carry, index):
    theta, opt_state = carry
    idx = jax.lax.dynamic_slice_in_dim(order, index * batch, batch)
    valid = idx < n
    (loss, count), grads = jax.value_and_grad(negative_stability, has_aux=True)(
        theta, jnp.take(first, idx, axis=1), jnp.take(second, idx, axis=1), valid)
    updates, opt_state = tx.update(grads, opt_state, theta)
    return (optax.apply_updates(theta, updates), opt_state), -loss * count

  (theta, opt_state), stability_sums = jax.lax.scan(step, (theta, opt_state), jnp.arange(n_pad // batch))
  p_bar = _masked_mean_prediction(model, params, clean, n, theta, shift)
  return theta, opt_state, jnp.sum(stability_sums) / n, p_bar


def learn_preference(predictor: predictor_lib.Predictor, images: np.ndarray, clean_features: jnp.ndarray,
                     q_hat: np.ndarray | None, sgd: _Sgd, *, epochs: int, min_steps: int, min_weight: float,
                     view_padding: int, flip: bool, guard_tolerance: float | None,
                     seed: int) -> tuple[np.ndarray, str, list[dict]]:
  """Runs the stability method (module docstring) on uint8 images [N, H, W, C] with the run's predictor
  (model, parameters, normalisation and post-hoc shift).

  ``clean_features`` [T, N, d] are the features of the un-augmented images (for p_bar); ``q_hat`` is the
  label-shift estimate the guard compares p_bar with (None, or guard_tolerance None, disables it).
  Returns (preference [T] float64, stop reason, one record per epoch).
  """
  model, params, batch_stats, shift = predictor.model, predictor.params, predictor.batch_stats, predictor.shift
  n = len(images)
  batch = sgd.batch_size
  steps_per_epoch = -(-n // batch)
  total_epochs = max(epochs, -(-min_steps // steps_per_epoch))
  # Whole batches (the last zero-padded, masked by n), so the backbone and the epoch compile once per
  # number of batches, whatever the number of images.
  padded_size = batching.round_up(n, batch)
  padded = batching.pad_axis(np.asarray(images), padded_size, 0)
  image_chunks = [jax.device_put(padded[start:start + batch]) for start in range(0, padded_size, batch)]
  clean = batching.pad_axis(jnp.asarray(clean_features), padded_size, 1)
  mean, std = jnp.asarray(predictor.mean, jnp.float32), jnp.asarray(predictor.std, jnp.float32)
  n_device = jnp.asarray(n, jnp.int32)
  # The mismatch is recorded whenever q_hat is known (a cheap diagnostic); it stops adaptation only
  # when the guard is on.
  track = q_hat is not None
  guard_on = track and guard_tolerance is not None

  theta = jnp.zeros((model.num_experts,), jnp.float32)
  opt_state = sgd.transform().init(theta)
  start_mismatch = None
  if track:
    start_mismatch = float(label_shift.kl_divergence(q_hat, np.asarray(mean_prediction(
        model, params, clean, n_device, theta, shift))))
  key = jax.random.PRNGKey(seed)
  records = [{"epoch": 0, "preference": [1.0 / model.num_experts] * model.num_experts, "stability": None,
              "prior_mismatch": start_mismatch}]
  reason = BUDGET
  epochs_bar = progress.bar(total=total_epochs, desc="adapt (stability)", unit="epoch")
  for epoch_index in range(1, total_epochs + 1):
    key, view_key, order_key = jax.random.split(key, 3)
    firsts, seconds = [], []
    for chunk_index, chunk in enumerate(image_chunks):
      f1, f2 = view_features(model, view_padding, flip, params, batch_stats, chunk,
                             jax.random.fold_in(view_key, chunk_index), mean, std)
      firsts.append(f1)
      seconds.append(f2)
    new_theta, new_opt_state, stability, p_bar = epoch(
        model, sgd, params, theta, opt_state, jnp.concatenate(firsts, 1), jnp.concatenate(seconds, 1), clean,
        n_device, order_key, shift)
    w, stability, p_bar = jax.device_get((jax.nn.softmax(new_theta), stability, p_bar))
    epochs_bar.update(1)
    mismatch = float(label_shift.kl_divergence(q_hat, p_bar)) if track else None
    record = {"epoch": epoch_index, "preference": [float(v) for v in w], "stability": float(stability),
              "prior_mismatch": mismatch}
    if guard_on and mismatch > start_mismatch + guard_tolerance:
      records.append({**record, "rejected": True})
      reason = GUARD
      break
    records.append(record)
    theta, opt_state = new_theta, new_opt_state
    if min_weight > 0 and float(np.min(w)) < min_weight:
      reason = MIN_WEIGHT
      break
  epochs_bar.close()
  return np.asarray(jax.nn.softmax(theta), np.float64), reason, records
