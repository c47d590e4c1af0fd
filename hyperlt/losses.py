r"""Logit adjustments, preference-conditioned losses and multi-objective scalarisations.

With training prior ``pi`` over K classes and its reversal ``pi_bar`` (the class with the k-th largest
prior gets the k-th smallest value), the anchor adjustments are

    forward:   a = 0                              (plain softmax cross-entropy)
    uniform:   a = log pi                          (Balanced Softmax)
    backward:  a = log pi - tau * log pi_bar
    logit_adjust:<t>   a = t * log pi              (BalPoE's expert with tau = t)

An adjusted loss is ``CE(z + a, y)``: training with it makes ``z`` fit the target prior
``pi * exp(-a)`` up to normalisation. Losses for P preferences r_hat [P, T] and logits z [P, B, K]:

    continuous:  L_p = CE(z_p + sum_j w_pj a_j, y)   (the geometric mixture of the anchors' targets)
    paper:       L_p = CE(z_p + a_p, y)                   (sample p always gets anchor p; needs P = T)

Here ``w_p = alpha_p / sum(alpha_p)`` is the SAMPLED preference, while the logits ``z_p`` are computed at
``r_hat_p`` (which includes the learned scale r). The sampled preference fixes the target; defining it by
``r_hat`` instead lets the model choose its own target, and the learned scale drifts until every sample
sits at the easiest (forward) vertex (observed: log r -> (5.5, -4.5, -1.0) on the digits default). At a
vertex ``w_p = r_hat_p = e_i``, so both readings give exactly SADE's anchor losses.

Objectives over the P losses ``L``:

    sum:        sum_p L_p
    stch:       sum_p L_p + mu * log sum_p exp(L_p / mu)   (smooth Tchebycheff)
    stch_code:  sum_p L_p + mu * log sum_p exp(L_p)        (the published code's formula)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOSS_MODES = ("continuous", "paper")
OBJECTIVES = ("stch", "stch_code", "sum")
ANCHOR_NAMES = ("forward", "uniform", "backward", "logit_adjust:<tau>")


def reversed_prior(prior: np.ndarray) -> np.ndarray:
  """pi_bar: the prior's values reassigned in reverse rank order (a permutation of pi, not 1/pi)."""
  prior = np.asarray(prior, np.float64)
  order = np.argsort(-prior, kind="stable")
  out = np.empty_like(prior)
  out[order] = prior[order][::-1]
  return out


def is_valid_anchor(name: str) -> bool:
  if name in ("forward", "uniform", "backward"):
    return True
  if name.startswith("logit_adjust:"):
    try:
      float(name.split(":", 1)[1])
    except ValueError:
      return False
    return True
  return False


def anchor_adjustment(name: str, prior: np.ndarray, tau: float) -> np.ndarray:
  """The additive logit adjustment [K] of one named anchor loss (see the module docstring)."""
  log_prior = np.log(np.asarray(prior, np.float64))
  if name == "forward":
    return np.zeros_like(log_prior)
  if name == "uniform":
    return log_prior
  if name == "backward":
    return log_prior - tau * np.log(reversed_prior(prior))
  if name.startswith("logit_adjust:"):
    return float(name.split(":", 1)[1]) * log_prior
  raise ValueError(f"unknown anchor {name!r}; expected one of {ANCHOR_NAMES}")


def adjustments(anchors: Sequence[str], prior: np.ndarray, tau: float) -> np.ndarray:
  """Stacked adjustments [T, K], float32, one row per expert's anchor."""
  return np.stack([anchor_adjustment(a, prior, tau) for a in anchors]).astype(np.float32)


def target_prior(adjustment: np.ndarray, prior: np.ndarray) -> np.ndarray:
  """The class prior that training with ``CE(z + adjustment, y)`` makes z fit: pi * exp(-a), normalised."""
  unnormalised = np.asarray(prior, np.float64) * np.exp(-np.asarray(adjustment, np.float64))
  return unnormalised / unnormalised.sum()


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Mean softmax cross-entropy over the batch axis; logits [..., B, K], labels [B] -> [...]."""
  labels = jnp.broadcast_to(labels, logits.shape[:-1])
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels), -1)


def preference_losses(logits: jnp.ndarray, target_weights: jnp.ndarray, adjust: jnp.ndarray,
                      labels: jnp.ndarray, mode: str = "continuous") -> jnp.ndarray:
  """Per-preference losses [P] from logits [P, B, K], target weights w [P, T] (the sampled
  preferences, normalised), adjustments [T, K] and labels [B]."""
  if mode == "continuous":
    shift = target_weights @ adjust
  elif mode == "paper":
    if target_weights.shape[0] != adjust.shape[0]:
      raise ValueError(f"paper loss mode needs one preference per expert, got {target_weights.shape[0]} for "
                       f"{adjust.shape[0]} experts")
    shift = adjust
  else:
    raise ValueError(f"loss mode must be one of {LOSS_MODES}, got {mode!r}")
  return cross_entropy(logits + shift[:, None, :], labels)


def objective(losses: jnp.ndarray, kind: str = "stch", mu: float = 0.3) -> jnp.ndarray:
  """Scalarises per-preference losses [P] (see the module docstring)."""
  total = jnp.sum(losses)
  if kind == "sum":
    return total
  if kind == "stch":
    return total + mu * jax.nn.logsumexp(losses / mu)
  if kind == "stch_code":
    return total + mu * jax.nn.logsumexp(losses)
  raise ValueError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
