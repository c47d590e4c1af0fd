"""One training step as a pure function: the train state, the optimiser, and the update.

For a batch of B normalised images and T experts, ``update`` reads the same for every method:

1. lets the objective mix the batch (mixup, or the batch as it is);
2. computes the features [T, B, d] ONCE;
3. draws T raw preferences alpha (sample i near vertex i by default) and forms r_hat [T, T];
4. computes the logits [T, B, K] of the T samples (hypernetwork -> heads -> logits);
5. evaluates the objective (per-sample preference losses, STCH or sum, regularisers) and its gradient;
6. takes one optax step (PyTorch-style SGD; a frozen preference scale is the optimiser's business).

What differs between methods (anchors, margins, mixup, deferred re-weighting, RIDE's diversity) is
composed once in hyperlt.training.objectives. Everything here is traceable; ``hyperlt.training.loop``
jits it together with on-device batching and augmentation.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hyperlt.optim import pytorch_sgd
from hyperlt.models.expert_model import ExpertModel
from hyperlt.training import objectives

# The parameter group of the learned preference scale log r [T] (see hyperlt.preference.effective).
SCALE = "log_scale"


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


def frozen(inner: optax.GradientTransformation, groups: Iterable[str]) -> optax.GradientTransformation:
  """``inner`` with the top-level parameter groups ``groups`` frozen: their gradient is set to zero before
  ``inner`` sees it.

  For an SGD whose weight decay skips those groups this is ``optax.multi_transform`` of ``inner`` and
  ``optax.set_to_zero()``: momentum of a zero gradient stays zero, so the frozen update is exactly 0.
  Unlike ``multi_transform`` it keeps ``inner``'s state layout, so the checkpoints of earlier runs
  (whose optimiser state is ``inner``'s) still restore and resume.
  """
  groups = frozenset(groups)

  def update(grads, state, params=None):
    grads = {k: jax.tree.map(jnp.zeros_like, v) if k in groups else v for k, v in grads.items()}
    return inner.update(grads, state, params)

  return optax.GradientTransformation(inner.init, update)


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int, *,
                   learn_scale: bool = False) -> optax.GradientTransformation:
  """SGD (PyTorch semantics: weight decay added to the gradient before momentum) per ``config.optim``.

  The preference scale log r is never decayed (shrinking it towards 0 would bias r_hat to uniform) and,
  unless ``learn_scale`` (``config.preference.learn_scale``), never updated: r stays 1.
  """
  decay_mask = lambda params: {k: jax.tree.map(lambda _: k != SCALE, v) for k, v in params.items()}
  sgd = pytorch_sgd(learning_rate_schedule(optim, steps_per_epoch), optim.momentum, optim.nesterov,
                    optim.weight_decay, decay_mask)
  return sgd if learn_scale else frozen(sgd, (SCALE,))


def init_state(model: ExpertModel, tx: optax.GradientTransformation, seed: int,
               image_shape: tuple[int, int, int]) -> TrainState:
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  params, batch_stats = model.init(init_key, image_shape)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=train_key)


def make_update(model: ExpertModel, tx: optax.GradientTransformation, objective: objectives.Objective) -> Callable:
  """The pure update ``(state, images, labels, key) -> (state, metrics)`` on normalised images.

  ``objective`` (hyperlt.training.objectives.from_config) holds everything method-specific; the update
  is the same for every method. Metrics: ``loss`` (the objective J), ``sample_losses`` [T],
  ``sample_accuracy`` [T] (on the unmixed labels), ``grad_norm`` (of the gradient of J) and the
  divergence guard's flags (:func:`guard`): ``finite`` and which of ``finite_loss``, ``finite_grad_norm``
  and ``finite_state`` failed. A step that is not finite returns the state it was given, unchanged.
  """

  def loss_fn(params, batch_stats, images, labels, key, step):
    key, images, targets = objective.mix(key, images, labels)
    features, new_batch_stats = model.features(params, batch_stats, images, train=True)
    alpha = objective.preferences(key)
    r_hat = model.r_hat(params, alpha)
    logits = model.logits(params, features, r_hat)
    forward = objectives.Forward(logits, alpha, lambda: model.expert_logits(params, features, r_hat), step)
    total, per_sample = objective(forward, targets)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels[None], axis=-1)
    return total, (new_batch_stats, per_sample, accuracy)

  def update(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (batch_stats, per_sample, accuracy)), grads = grad_fn(state.params, state.batch_stats, images,
                                                                  labels, key, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    new_state, flags = guard(state, new_state, total, grad_norm)
    metrics = {"loss": total, "sample_losses": per_sample, "sample_accuracy": accuracy, "grad_norm": grad_norm,
               **flags}
    return new_state, metrics

  return update


def _all_finite(tree: Any) -> jnp.ndarray:
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def guard(old: TrainState, new: TrainState, loss: jnp.ndarray, grad_norm: jnp.ndarray) -> tuple[TrainState, dict]:
  """(state, flags): ``new`` if the step was finite, else ``old``; the flags say which check failed.

  The check runs on the device inside the step, so a diverged step never produces a non-finite state
  that could be checkpointed or used, and the host learns of it from a scalar it fetches anyway (the
  training loop reads ``finite`` of each finished step instead of waiting on it). The select copies
  values exactly, so a finite run computes bit for bit what it computed without the guard.
  """
  flags = {"finite_loss": jnp.isfinite(loss), "finite_grad_norm": jnp.isfinite(grad_norm),
           # An overflowing update can make parameters, statistics or momentum non-finite from finite inputs.
           "finite_state": _all_finite((new.params, new.batch_stats, new.opt_state))}
  finite = flags["finite_loss"] & flags["finite_grad_norm"] & flags["finite_state"]
  kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  return kept, {"finite": finite, **flags}
