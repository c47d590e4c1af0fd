r"""Label-shift estimation (EM of Saerens et al., 2002) and the preference whose target prior is closest.

A classifier whose probabilities ``p(y|x)`` are calibrated to a class prior ``c`` (the prior it was
trained to fit) can be re-targeted to another prior ``q`` by Bayes' rule, because under label shift
``p(x|y)`` does not change:

    p_q(y|x) = p(y|x) q(y) / c(y)  /  sum_k p(k|x) q(k) / c(k).

EM finds the test prior ``q`` that is consistent with its own re-targeted predictions on N unlabeled
images (a maximum-likelihood estimate of the mixing proportions):

    start  q_0 = c
    E-step p_s(y|x_i) = p(y|x_i) q_s(y) / c(y), normalised over y
    M-step q_{s+1}(y) = (1/N) sum_i p_s(y|x_i)

until ``sum_y |q_{s+1}(y) - q_s(y)| < tol``. Dividing by ``c`` is what makes the update exact for a model
that is not calibrated to the training prior: hyperlt's probabilities at a preference are calibrated to
that preference's TARGET prior (uniform at the uniform anchor's vertex), not to the training prior.

Every preference ``alpha`` has a target prior (hyperlt.losses): with ``w = alpha / sum(alpha)`` and the
anchors' adjustments ``a_j``, training makes the logits fit

    q_w  proportional to  pi * exp(-(w @ A)),        A = [a_1; ...; a_T]   ([T, K]),

the normalised geometric mixture of the anchors' targets. A constant post-hoc logit shift ``s`` (the
run's ``posthoc_tau``) multiplies every target by ``exp(s)``. :func:`closest_preference` picks the grid
preference minimising ``KL(q_hat || q_w)``; that divergence is ``q_hat . (w @ A) + log Z(w) + const``, a
convex function of ``w``, so the grid minimiser is within one grid step of the exact one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import preference

# Probabilities below this are treated as this, so logs and KL divergences stay finite.
_FLOOR = 1e-12


def target_priors(alphas: np.ndarray, adjust: np.ndarray, prior: np.ndarray,
                  shift: np.ndarray | None = None) -> np.ndarray:
  """Target priors [P, K] (float64) of raw preferences ``alphas`` [P, T]: ``pi * exp(-(w @ A) + s)``,
  normalised, with ``w = alpha / sum(alpha)``, adjustments ``adjust`` [T, K], training prior ``prior``
  [K] and an optional post-hoc logit shift ``shift`` [K]."""
  alphas = np.atleast_2d(np.asarray(alphas, np.float64))
  weights = alphas / alphas.sum(-1, keepdims=True)
  log_q = np.log(np.asarray(prior, np.float64))[None] - weights @ np.asarray(adjust, np.float64)
  if shift is not None:
    log_q = log_q + np.asarray(shift, np.float64)[None]
  log_q -= log_q.max(-1, keepdims=True)
  q = np.exp(log_q)
  return q / q.sum(-1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """``KL(p || q) = sum_k p_k log(p_k / q_k)`` over the last axis (float64; broadcasts)."""
  p = np.clip(np.asarray(p, np.float64), _FLOOR, None)
  q = np.clip(np.asarray(q, np.float64), _FLOOR, None)
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _em(log_probs: jnp.ndarray, calibrated: jnp.ndarray, tol: float, max_iterations: int):
  log_calibrated = jnp.log(jnp.maximum(calibrated, _FLOOR))

  def retargeted_mean(q):
    return jnp.mean(jax.nn.softmax(log_probs + jnp.log(jnp.maximum(q, _FLOOR)) - log_calibrated, axis=-1), 0)

  def cond(state):
    _, change, step = state
    return (change >= tol) & (step < max_iterations)

  def body(state):
    q, _, step = state
    new_q = retargeted_mean(q)
    return new_q, jnp.sum(jnp.abs(new_q - q)), step + 1

  return jax.lax.while_loop(cond, body, (calibrated, jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(0)))


def estimate_prior(log_probs: jnp.ndarray, calibrated: np.ndarray, tol: float = 1e-6,
                   max_iterations: int = 1000) -> tuple[np.ndarray, int]:
  """EM estimate of the test class prior (see the module docstring).

  Args:
    log_probs: [N, K] log-probabilities of N unlabeled images (log-softmax of the logits).
    calibrated: [K] the prior those probabilities are calibrated to (EM's starting point).
    tol: stop when an update changes the estimate by less than this (L1).
    max_iterations: stop after this many updates at the latest.

  Returns:
    (q_hat [K] float64 summing to 1, number of EM updates run).
  """
  calibrated = np.asarray(calibrated, np.float64)
  q, _, steps = _em(jnp.asarray(log_probs, jnp.float32), jnp.asarray(calibrated / calibrated.sum(), jnp.float32),
                    tol, max_iterations)
  q = np.asarray(q, np.float64)
  return q / q.sum(), int(steps)


def closest_preference(q_hat: np.ndarray, adjust: np.ndarray, prior: np.ndarray, step: float,
                       shift: np.ndarray | None = None) -> tuple[np.ndarray, float]:
  """The preference of ``preference.simplex_grid(T, step)`` whose target prior is closest to ``q_hat``.

  Closest means smallest ``KL(q_hat || q_w)``: the expected extra log-loss of predicting with the prior
  ``q_w`` when classes occur with ``q_hat``. Returns (alpha [T] float32, that KL divergence).
  """
  grid = preference.simplex_grid(np.asarray(adjust).shape[0], step)
  divergences = kl_divergence(np.asarray(q_hat)[None], target_priors(grid, adjust, prior, shift))
  best = int(np.argmin(divergences))
  return grid[best], float(divergences[best])
