"""One training step as a pure function: the train state, the optimiser, and the update.

For a batch of B normalised images and T experts, ``update``:

1. computes the features [T, B, d] ONCE;
2. draws T raw preferences alpha (Dirichlet sample i near vertex i) and forms r_hat [T, T];
3. vmaps over the T samples: hypernetwork -> heads -> logits [T, B, K] -> losses [T]
   (sample i's target is fixed by its sampled preference; see hyperlt.losses);
4. scalarises the T losses (STCH by default) and takes one optax step (SGD, Nesterov, weight decay).

The baselines are switches on the same step (see hyperlt.configs.presets): margin anchors (LDAM) in the
per-sample loss, mixup of the batch before step 1 (BalPoE), RIDE's diversity term subtracted from
the scalarised objective, and deferred class-balanced re-weighting of the examples (DRW). Each is off unless its config field enables it, so the default path is unchanged.

Everything here is traceable; ``hyperlt.training.loop`` jits it together with on-device batching and augmentation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hyperlt import losses, preference
from hyperlt.optim import pytorch_sgd
from hyperlt.models.expert_model import ExpertModel


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray


def learning_rate_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up from lr / warmup_steps to lr, then step decay at the milestones or cosine to 0."""
  warmup = optim.warmup_epochs * steps_per_epoch
  total = optim.epochs * steps_per_epoch
  if optim.schedule == "cosine":
    main = optax.cosine_decay_schedule(optim.lr, max(total - warmup, 1))
  else:
    main = optax.piecewise_constant_schedule(
        optim.lr, {max(m * steps_per_epoch - warmup, 1): optim.decay for m in optim.milestones})
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(optim.lr / warmup, optim.lr, warmup), main], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD (PyTorch semantics: weight decay added to the gradient before momentum).

  The learned preference scale is not decayed: shrinking log r towards 0 would bias r_hat to uniform.
  """
  decay_mask = lambda params: {k: jax.tree.map(lambda _: k != "log_scale", v) for k, v in params.items()}
  return pytorch_sgd(learning_rate_schedule(optim, steps_per_epoch), optim.momentum, optim.nesterov,
                     optim.weight_decay, decay_mask)


def init_state(model: ExpertModel, tx: optax.GradientTransformation, seed: int,
               image_shape: tuple[int, int, int]) -> TrainState:
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  params, batch_stats = model.init(init_key, image_shape)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=train_key)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static settings one step needs, read from a validated config."""

  loss_mode: str
  objective: str
  mu: float
  sampling: str
  learn_scale: bool
  beta0: float
  kappa: float
  crop_padding: int
  flip: bool
  anchors: tuple[str, ...] = ()
  scale: float = 30.0
  mixup_alpha: float = 0.0
  diversity: float = 0.0
  diversity_temperature: float = 1.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "StepConfig":
    return cls(config.loss.mode, config.loss.objective, config.loss.mu, config.preference.sampling,
               config.preference.learn_scale, config.preference.beta0, config.preference.kappa,
               config.data.crop_padding, config.data.flip, anchors=tuple(config.loss.anchors),
               scale=config.model.scale, mixup_alpha=config.loss.mixup_alpha,
               diversity=config.loss.diversity, diversity_temperature=config.loss.diversity_temperature)


def make_update(model: ExpertModel, tx: optax.GradientTransformation, adjust: np.ndarray,
                step_config: StepConfig, class_weights: np.ndarray | None = None,
                reweight_from_step: int = 0) -> Callable:
  """The pure update ``(state, images, labels, key) -> (state, metrics)`` on normalised images.

  ``adjust`` [T, K] holds one row per anchor of ``step_config.anchors`` (see losses.adjustments); rows
  of margin anchors are applied as margins. Without anchors in the step config every row is additive.
  With ``class_weights`` [K] (see losses.class_balanced_weights), steps from ``reweight_from_step`` on
  weight each example's loss by its class's weight (deferred re-weighting); before it every weight is 1.
  """
  if step_config.anchors and any(losses.is_margin_anchor(a) for a in step_config.anchors):
    additive, margins = (jnp.asarray(a) for a in losses.split_anchors(step_config.anchors, adjust))
  else:
    additive, margins = jnp.asarray(adjust), None
  num_experts = model.num_experts
  use_mixup = step_config.mixup_alpha > 0
  class_weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

  def example_weights(labels, step):
    if class_weights is None:
      return None
    return jnp.where(step >= reweight_from_step, class_weights[labels], jnp.ones_like(class_weights[labels]))

  def loss_fn(params, batch_stats, images, labels, key, step):
    partner_labels = lam = None
    if use_mixup:
      key, lam_key, perm_key = jax.random.split(key, 3)
      lam = jax.random.beta(lam_key, step_config.mixup_alpha, step_config.mixup_alpha)
      partner = jax.random.permutation(perm_key, labels.shape[0])
      images = lam * images + (1.0 - lam) * images[partner]
      partner_labels = labels[partner]
    features, new_batch_stats = model.features(params, batch_stats, images, train=True)
    alpha = preference.sample_training(key, num_experts, step_config.sampling, step_config.beta0,
                                       step_config.kappa)
    r_hat = model.r_hat(params, alpha)
    logits = model.logits(params, features, r_hat)
    targets = alpha / jnp.sum(alpha, axis=-1, keepdims=True)
    loss_of_labels = lambda y: losses.preference_losses(logits, targets, additive, y, step_config.loss_mode,
                                                        margins, step_config.scale, example_weights(y, step))
    if use_mixup:
      per_sample = losses.mixed_losses(loss_of_labels, labels, partner_labels, lam)
    else:
      per_sample = loss_of_labels(labels)
    total = losses.objective(per_sample, step_config.objective, step_config.mu)
    if step_config.diversity > 0:
      spread = losses.diversity(model.expert_logits(params, features, r_hat), step_config.diversity_temperature)
      total = total - step_config.diversity * jnp.mean(spread)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels[None], axis=-1)
    return total, (new_batch_stats, per_sample, accuracy)

  def update(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (batch_stats, per_sample, accuracy)), grads = grad_fn(state.params, state.batch_stats, images,
                                                                  labels, key, state.step)
    if not step_config.learn_scale:
      grads = {**grads, "log_scale": jnp.zeros_like(grads["log_scale"])}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": total, "sample_losses": per_sample, "sample_accuracy": accuracy,
               "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics

  return update
