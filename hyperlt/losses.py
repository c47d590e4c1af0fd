r"""Logit adjustments, preference-conditioned losses and multi-objective scalarisations.

With training prior ``pi`` over K classes and its reversal ``pi_bar`` (the class with the k-th largest
prior gets the k-th smallest value), the anchor adjustments are

    forward:   a = 0                              (plain softmax cross-entropy)
    uniform:   a = log pi                          (Balanced Softmax)
    backward:  a = log pi - tau * log pi_bar
    logit_adjust:<t>   a = t * log pi              (BalPoE's expert with tau = t)
    ldam:<m>   margins m_c = m * (n_min / n_c)^(1/4)    (LDAM, Cao et al. 2019; RIDE's expert loss)

An adjusted loss is ``CE(z + a, y)``: training with it makes ``z`` fit the target prior
``pi * exp(-a)`` up to normalisation. A MARGIN anchor (``ldam:<m>``) is not additive: its row holds
per-class margins in cosine units, and its loss is ``CE(z - s * m_y * e_y, y)`` (only the true class's
logit is lowered, by the cosine scale s times its margin). :func:`split_anchors` separates the two kinds. Losses for P preferences r_hat [P, T] and logits z [P, B, K]:

    continuous:  L_p = CE(z_p + sum_j w_pj a_j, y)   (the geometric mixture of the anchors' targets)
    paper:       L_p = CE(z_p + a_p, y)                   (sample p always gets anchor p; needs P = T)

Here ``w_p = alpha_p / sum(alpha_p)`` is the SAMPLED preference, while the logits ``z_p`` are computed at
``r_hat_p`` (which includes the learned scale r). The sampled preference fixes the target; defining it by
``r_hat`` instead lets the model choose its own target, and the learned scale drifts until every sample
sits at the easiest (forward) vertex (observed: log r -> (5.5, -4.5, -1.0) on the digits default). At a
vertex ``w_p = r_hat_p = e_i``, so both readings give exactly SADE's anchor losses.

Regularisers and data mixing used by the baselines:

    mixup (BalPoE):  x = lam x_a + (1 - lam) x_b, lam ~ Beta(a, a);  L = lam L(y_a) + (1 - lam) L(y_b)
    diversity (RIDE): D = T_d^2 * sum_t KL(softmax(mean_t v_t / T_d) || softmax(v_t / T_d)), subtracted
                      with weight lambda_div, so experts are pushed apart from their ensemble mean
    post-hoc logit adjustment (Menon et al. 2021): predict argmax_k z_k - tau * log pi_k
    deferred re-weighting (DRW, Cao et al. 2019; RIDE): from a given step on, each example's loss is
                      weighted by its class's class-balanced weight w_y (Cui et al. 2019),
                      w_c = K (1 - beta) / (1 - beta^{n_c}) / sum_k [(1 - beta) / (1 - beta^{n_k})],
                      and the batch loss is sum_b w_{y_b} l_b / sum_b w_{y_b} (PyTorch's weighted mean)

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
ANCHOR_NAMES = ("forward", "uniform", "backward", "logit_adjust:<tau>", "ldam:<max_margin>")
_PARAMETRISED = ("logit_adjust:", "ldam:")


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
  if name.startswith(_PARAMETRISED):
    try:
      value = float(name.split(":", 1)[1])
    except ValueError:
      return False
    return not name.startswith("ldam:") or value > 0
  return False


def is_margin_anchor(name: str) -> bool:
  """Whether the anchor's row is a label-dependent margin rather than an additive adjustment."""
  return name.startswith("ldam:")


def ldam_margins(prior: np.ndarray, max_margin: float) -> np.ndarray:
  """LDAM's class margins [K] in cosine units: proportional to n_c^(-1/4), the largest = max_margin.

  Only ratios of counts matter, so the prior suffices.
  """
  inverse_fourth_root = np.asarray(prior, np.float64) ** -0.25
  return max_margin * inverse_fourth_root / inverse_fourth_root.max()


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
  if name.startswith("ldam:"):
    return ldam_margins(prior, float(name.split(":", 1)[1]))
  raise ValueError(f"unknown anchor {name!r}; expected one of {ANCHOR_NAMES}")


def adjustments(anchors: Sequence[str], prior: np.ndarray, tau: float) -> np.ndarray:
  """Stacked adjustments [T, K], float32, one row per expert's anchor (margin rows for margin anchors)."""
  return np.stack([anchor_adjustment(a, prior, tau) for a in anchors]).astype(np.float32)


def split_anchors(anchors: Sequence[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(additive [T, K], margins [T, K]) from the rows of :func:`adjustments`: each row goes to one of
  the two according to its anchor's kind, the other gets zeros."""
  is_margin = np.array([is_margin_anchor(a) for a in anchors])[:, None]
  rows = np.asarray(rows, np.float32)
  return np.where(is_margin, 0.0, rows).astype(np.float32), np.where(is_margin, rows, 0.0).astype(np.float32)


def posthoc_adjustment(prior: np.ndarray, tau: float) -> np.ndarray:
  """The evaluation-time logit shift [K] of post-hoc logit adjustment: ``-tau * log pi``."""
  return (-tau * np.log(np.asarray(prior, np.float64))).astype(np.float32)


def target_prior(adjustment: np.ndarray, prior: np.ndarray) -> np.ndarray:
  """The class prior that training with ``CE(z + adjustment, y)`` makes z fit: pi * exp(-a), normalised."""
  unnormalised = np.asarray(prior, np.float64) * np.exp(-np.asarray(adjustment, np.float64))
  return unnormalised / unnormalised.sum()


def class_balanced_weights(counts: np.ndarray, beta: float = 0.9999) -> np.ndarray:
  """Class-balanced loss weights [K] from training counts [K] (see the module docstring); they sum to K.

  ``beta -> 1`` approaches inverse-frequency weights, ``beta = 0`` gives equal weights.
  """
  counts = np.asarray(counts, np.float64)
  if np.any(counts < 1):
    raise ValueError(f"class-balanced weights need at least one example per class, got counts {counts}")
  effective = (1.0 - beta ** counts) / (1.0 - beta) if beta > 0 else np.ones_like(counts)
  weights = 1.0 / effective
  return (weights * len(counts) / weights.sum()).astype(np.float32)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """Softmax cross-entropy averaged over the batch axis; logits [..., B, K], labels [B] -> [...].

  With per-example ``weights`` [B] the average is ``sum_b w_b l_b / sum_b w_b``.
  """
  labels = jnp.broadcast_to(labels, logits.shape[:-1])
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  if weights is None:
    return jnp.mean(per_example, -1)
  weights = jnp.asarray(weights, jnp.float32)
  return jnp.sum(per_example * weights, -1) / jnp.sum(weights)


def _per_sample_rows(target_weights: jnp.ndarray, rows: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Each sample's [P, K] row of anchor quantities: the w-mixture (continuous) or row p (paper)."""
  if mode == "continuous":
    return target_weights @ rows
  if mode == "paper":
    if target_weights.shape[0] != rows.shape[0]:
      raise ValueError(f"paper loss mode needs one preference per expert, got {target_weights.shape[0]} for "
                       f"{rows.shape[0]} experts")
    return rows
  raise ValueError(f"loss mode must be one of {LOSS_MODES}, got {mode!r}")


def preference_losses(logits: jnp.ndarray, target_weights: jnp.ndarray, adjust: jnp.ndarray,
                      labels: jnp.ndarray, mode: str = "continuous", margins: jnp.ndarray | None = None,
                      scale: float = 1.0, example_weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """Per-preference losses [P] from logits [P, B, K], target weights w [P, T] (the sampled
  preferences, normalised), additive adjustments [T, K] and labels [B].

  ``margins`` [T, K] (cosine units, see :func:`split_anchors`) lower the true class's logit by
  ``scale * m_y``; like the additive rows they are mixed by w (continuous) or taken per sample (paper).
  ``example_weights`` [B] make each loss a weighted mean over the batch (deferred re-weighting).
  """
  shift = _per_sample_rows(target_weights, adjust, mode)
  adjusted = logits + shift[:, None, :]
  if margins is not None:
    margin = _per_sample_rows(target_weights, margins, mode)           # [P, K]
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)   # [B, K]
    adjusted = adjusted - scale * margin[:, None, :] * one_hot[None]
  return cross_entropy(adjusted, labels, example_weights)


def mixed_losses(loss_of_labels, labels: jnp.ndarray, partner_labels: jnp.ndarray,
                 lam: jnp.ndarray) -> jnp.ndarray:
  """Mixup's loss ``lam * L(y_a) + (1 - lam) * L(y_b)`` for a function ``labels -> losses``."""
  return lam * loss_of_labels(labels) + (1.0 - lam) * loss_of_labels(partner_labels)


def diversity(expert_logits: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """RIDE's diversity [...] of per-expert logits [..., T, B, K]: ``T_d^2 * sum_t mean_b KL(q || p_t)``,
  with ``q = softmax(mean_t v_t / T_d)`` and ``p_t = softmax(v_t / T_d)``.

  Gradients flow through both q and p_t, as in RIDE. Maximising D spreads the experts' predictions.
  """
  log_p = jax.nn.log_softmax(expert_logits.astype(jnp.float32) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(jnp.mean(expert_logits.astype(jnp.float32), axis=-3, keepdims=True) / temperature,
                             axis=-1)
  kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)             # [..., T, B]
  return temperature ** 2 * jnp.sum(jnp.mean(kl, axis=-1), axis=-1)


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
