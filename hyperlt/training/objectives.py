r"""Training objectives composed from small pieces, built ONCE per run from the config.

A named optimiser in optax is a chain of single-purpose transforms (``adamw`` = scale by Adam's moments,
add decayed weights, scale by the learning rate). A method here is the same kind of composition: the
builder :func:`from_config` reads the config and the training class counts and assembles a core (the
preference sampler, the per-sample preference loss and its scalarisation) plus one piece for each
mechanism the config switches on. A method (hyperlt.configs.presets) is only a choice of config fields,
so a new method made of existing pieces is one preset entry.

One step's objective, for a batch (x, y) with B examples, T experts and P = T preference samples:

    alpha ~ p(alpha)                              preference sampler: raw preferences [P, T]
    x~, {(y_m, s_m)} = mix(x, y)                  batch mixing: x itself with {(y, 1)}, or mixup
    z_p = f(x~; r_hat(alpha_p))                   the model (hyperlt.training.step)
    w_p = alpha_p / sum_j alpha_pj                the target weights (the sampled preference)
    L_p = sum_m s_m * l(z_p, w_p, y_m; t)         per-sample preference loss at optimiser step t
    J = R(L_1, ..., L_P) + sum_r Omega_r          scalarisation plus regularisers

The pieces:

    PreferenceSampler    alpha_i ~ Dir(beta0 1 + kappa e_i) (vertex_dirichlet), Dir(beta0 1) (symmetric),
                         or alpha_i = e_i (vertices)
    NoMixing             x~ = x, targets {(y, 1)}
    Mixup(a)             lam ~ Beta(a, a), pi a random permutation of the batch:
                         x~ = lam x + (1 - lam) x[pi], targets {(y, lam), (y[pi], 1 - lam)} (BalPoE)
    PreferenceLoss       l = hyperlt.losses.preference_losses: the anchors' additive rows and margins,
                         mixed by w (continuous) or taken per sample (paper), optional example weights
    DeferredReweighting  example weights c_{y_b} (class-balanced, hyperlt.losses.class_balanced_weights)
                         for t >= t0 and 1 before (DRW), so l is a weighted mean over the batch
    Scalarisation        R = sum_p L_p, or STCH: sum_p L_p + mu log sum_p exp(L_p / mu) (hyperlt.losses.objective)
    Diversity(lam, T_d)  Omega = -lam * mean_p D(v_p), D RIDE's diversity of the per-expert logits v_p
                         (hyperlt.losses.diversity): subtracting it pushes the experts apart

Random keys: mixing splits the step's key first (``key, lam_key, perm_key = split(key, 3)``) and the
sampler draws from what remains, so a seed reproduces the same mixup pairs and preferences.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hyperlt import losses, preference
from hyperlt.data import longtail
from hyperlt.errors import require


class Target(NamedTuple):
  """One label set of a (possibly mixed) batch and its share of the loss."""

  labels: jnp.ndarray      # [B]
  share: jnp.ndarray | float


class Forward(NamedTuple):
  """What the step computed on one batch, as the objective's pieces read it."""

  logits: jnp.ndarray                        # z [P, B, K] at r_hat(alpha)
  alpha: jnp.ndarray                         # the raw sampled preferences [P, T]
  expert_logits: Callable[[], jnp.ndarray]   # per-expert logits v [P, T, B, K], traced only if a piece asks
  step: jnp.ndarray                          # the optimiser step t (scalar int)


@dataclasses.dataclass(frozen=True)
class PreferenceSampler:
  """The T training preferences of one step: ``key -> alpha [T, T]`` (row i = sample i)."""

  num_experts: int
  mode: str
  beta0: float
  kappa: float

  def __call__(self, key: jax.Array) -> jnp.ndarray:
    return preference.sample_training(key, self.num_experts, self.mode, self.beta0, self.kappa)


@dataclasses.dataclass(frozen=True)
class NoMixing:
  """The batch as it is: ``(key, x, y) -> (key, x, ((y, 1),))``; the key is left for the sampler."""

  def __call__(self, key: jax.Array, images: jnp.ndarray, labels: jnp.ndarray):
    return key, images, (Target(labels, 1.0),)


@dataclasses.dataclass(frozen=True)
class Mixup:
  """Mixup of the batch with a random permutation of itself, ``lam ~ Beta(alpha, alpha)``; the loss is
  ``lam * L(y) + (1 - lam) * L(y[pi])``."""

  alpha: float

  def __call__(self, key: jax.Array, images: jnp.ndarray, labels: jnp.ndarray):
    key, lam_key, perm_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, self.alpha, self.alpha)
    partner = jax.random.permutation(perm_key, labels.shape[0])
    images = lam * images + (1.0 - lam) * images[partner]
    return key, images, (Target(labels, lam), Target(labels[partner], 1.0 - lam))


@dataclasses.dataclass(frozen=True, eq=False)
class DeferredReweighting:
  """Per-example weights ``(labels [B], step) -> [B]``: the class weights from ``from_step`` on, 1 before."""

  class_weights: np.ndarray   # [K], float32
  from_step: int

  def __call__(self, labels: jnp.ndarray, step: jnp.ndarray) -> jnp.ndarray:
    weights = jnp.asarray(self.class_weights, jnp.float32)[labels]
    return jnp.where(step >= self.from_step, weights, jnp.ones_like(weights))


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
  """The per-sample losses [P] of logits [P, B, K] for target weights w [P, T] and labels [B] at step t."""

  anchors: losses.Anchors
  mode: str                                   # "continuous" or "paper"
  scale: float                                # the cosine scale s that margins are multiplied by
  reweighting: DeferredReweighting | None = None

  def __call__(self, logits: jnp.ndarray, weights: jnp.ndarray, labels: jnp.ndarray,
               step: jnp.ndarray) -> jnp.ndarray:
    example_weights = None if self.reweighting is None else self.reweighting(labels, step)
    return losses.preference_losses(logits, weights, self.anchors, labels, self.mode, self.scale, example_weights)


@dataclasses.dataclass(frozen=True)
class Scalarisation:
  """``losses [P] -> scalar``: sum, stch or stch_code with temperature mu."""

  kind: str
  mu: float

  def __call__(self, per_sample: jnp.ndarray) -> jnp.ndarray:
    return losses.objective(per_sample, self.kind, self.mu)


@dataclasses.dataclass(frozen=True)
class Diversity:
  """RIDE's diversity as a term of the objective: ``-weight * mean_p D(v_p)`` at temperature T_d."""

  weight: float
  temperature: float

  def __call__(self, forward: Forward) -> jnp.ndarray:
    return -self.weight * jnp.mean(losses.diversity(forward.expert_logits(), self.temperature))


@dataclasses.dataclass(frozen=True)
class Objective:
  """A run's training objective (see the module docstring): the step calls ``mix`` on the batch,
  ``preferences`` for alpha, and the objective itself on what the model computed."""

  preferences: PreferenceSampler
  loss: PreferenceLoss
  scalarise: Scalarisation
  mix: NoMixing | Mixup = NoMixing()
  regularisers: tuple[Callable[[Forward], jnp.ndarray], ...] = ()

  def __call__(self, forward: Forward, targets: Sequence[Target]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(J, L [P])`` for the step's forward pass and the mixed batch's targets."""
    weights = forward.alpha / jnp.sum(forward.alpha, axis=-1, keepdims=True)
    per_sample = sum(t.share * self.loss(forward.logits, weights, t.labels, forward.step) for t in targets)
    total = self.scalarise(per_sample)
    for regulariser in self.regularisers:
      total = total + regulariser(forward)
    return total, per_sample


def deferred_reweighting(loss: ml_collections.ConfigDict, class_counts: np.ndarray,
                         total_steps: int) -> DeferredReweighting | None:
  """DRW per ``loss.reweight_start`` (a share of ``total_steps``) and ``loss.reweight_beta``; None when off."""
  if loss.reweight_start <= 0:
    return None
  counts = np.asarray(class_counts)
  require(bool(np.all(counts > 0)),
          "loss.reweight_start: deferred re-weighting needs every class in the training set")
  return DeferredReweighting(losses.class_balanced_weights(counts, loss.reweight_beta),
                             int(round(loss.reweight_start * total_steps)))


def from_config(config: ml_collections.ConfigDict, class_counts: np.ndarray, total_steps: int) -> Objective:
  """The objective of a validated config for training class counts [K] over ``total_steps`` steps.

  The core reads ``preference.{sampling,beta0,kappa}``, ``loss.{anchors,tau,mode,objective,mu}`` and
  ``model.scale``; mixup, deferred re-weighting and the diversity term are added when their fields
  (``loss.mixup_alpha``, ``loss.reweight_start``, ``loss.diversity``) switch them on.
  """
  loss, sampling = config.loss, config.preference
  anchors = losses.Anchors.parse(loss.anchors, longtail.prior_from_counts(class_counts), loss.tau)
  return Objective(
      preferences=PreferenceSampler(config.model.num_experts, sampling.sampling, sampling.beta0, sampling.kappa),
      loss=PreferenceLoss(anchors, loss.mode, config.model.scale,
                          deferred_reweighting(loss, class_counts, total_steps)),
      scalarise=Scalarisation(loss.objective, loss.mu),
      mix=Mixup(loss.mixup_alpha) if loss.mixup_alpha > 0 else NoMixing(),
      regularisers=(Diversity(loss.diversity, loss.diversity_temperature),) if loss.diversity > 0 else ())
