r"""Anchor losses, preference-conditioned losses and multi-objective scalarisations.

With training prior ``pi`` over K classes and its reversal ``pi_bar`` (the class with the k-th largest
prior gets the k-th smallest value), each expert's anchor is named in the config and parsed ONCE into
:class:`Anchors`: an additive row ``a`` [K] and a margin row ``m`` [K] per expert,

    forward:           a = 0                               m = 0   (plain softmax cross-entropy)
    uniform:           a = log pi                          m = 0   (Balanced Softmax)
    backward:          a = log pi - tau * log pi_bar       m = 0
    logit_adjust:<t>   a = t * log pi                      m = 0   (BalPoE's expert with tau = t)
    ldam:<M>           a = 0    m_c = M * (n_min / n_c)^(1/4)      (LDAM, Cao et al. 2019; RIDE's expert loss)

and the anchor loss of logits z [B, K] (cosine logits scaled by s) is

    CE(z + a - s * m_y * e_y, y)

An additive row moves the target: training with ``CE(z + a, y)`` makes ``z`` fit the prior
``pi * exp(-a)`` up to normalisation (:func:`target_prior`). A margin row does not move the target: it
only lowers the true class's logit, by the cosine scale s times its margin.

Losses for P preferences with logits z [P, B, K] and target weights w [P, T]:

    continuous:  L_p = CE(z_p + sum_j w_pj a_j - s * (sum_j w_pj m_j)_y e_y, y)   (the w-mixture of anchors)
    paper:       L_p = CE(z_p + a_p - s * m_{p,y} e_y, y)                          (sample p gets anchor p; P = T)

Here ``w_p = alpha_p / sum(alpha_p)`` is the SAMPLED preference, while the logits ``z_p`` are computed at
``r_hat_p`` (which includes the learned scale r). The sampled preference fixes the target; defining it by
``r_hat`` instead lets the model choose its own target, and the learned scale drifts until every sample
sits at the easiest (forward) vertex (observed: log r -> (5.5, -4.5, -1.0) on the digits default). At a
vertex ``w_p = r_hat_p = e_i``, so both readings give exactly SADE's anchor losses.

Per-example weights (deferred re-weighting, DRW: Cao et al. 2019; RIDE) make each L_p a weighted mean
``sum_b w_{y_b} l_b / sum_b w_{y_b}`` (PyTorch's weighted mean) with class-balanced weights (Cui et al. 2019)

    w_c = K (1 - beta) / (1 - beta^{n_c}) / sum_k [(1 - beta) / (1 - beta^{n_k})]

RIDE's diversity of per-expert logits v_t: ``D = T_d^2 * sum_t KL(softmax(mean_t v_t / T_d) || softmax(v_t / T_d))``.

Objectives over the P losses ``L``:

    sum:        sum_p L_p
    stch:       sum_p L_p + mu * log sum_p exp(L_p / mu)   (smooth Tchebycheff)
    stch_code:  sum_p L_p + mu * log sum_p exp(L_p)        (the published code's formula)

How a run composes these (mixup, DRW's start step, the diversity weight) is hyperlt.training.objectives.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOSS_MODES = ("continuous", "paper")
OBJECTIVES = ("stch", "stch_code", "sum")
ANCHOR_NAMES = ("forward", "uniform", "backward", "logit_adjust:<tau>", "ldam:<max_margin>")
_FIXED = ("forward", "uniform", "backward")
_PARAMETRISED = ("logit_adjust", "ldam")


def reversed_prior(prior: np.ndarray) -> np.ndarray:
  """pi_bar: the prior's values reassigned in reverse rank order (a permutation of pi, not 1/pi)."""
  prior = np.asarray(prior, np.float64)
  order = np.argsort(-prior, kind="stable")
  out = np.empty_like(prior)
  out[order] = prior[order][::-1]
  return out


def parse_anchor(name: str) -> tuple[str, float | None]:
  """``(kind, parameter)`` of an anchor name: ``"ldam:0.5"`` -> ``("ldam", 0.5)``, ``"uniform"`` ->
  ``("uniform", None)``. ValueError for an unknown name, a non-numeric parameter or an LDAM margin <= 0."""
  kind, sep, text = name.partition(":")
  if not sep and kind in _FIXED:
    return kind, None
  if sep and kind in _PARAMETRISED:
    try:
      value = float(text)
    except ValueError:
      value = None
    if value is not None and (kind != "ldam" or value > 0):
      return kind, value
  raise ValueError(f"unknown anchor {name!r}; expected one of {ANCHOR_NAMES} (ldam's margin > 0)")


def is_valid_anchor(name: str) -> bool:
  try:
    parse_anchor(name)
  except ValueError:
    return False
  return True


def is_margin_anchor(name: str) -> bool:
  """Whether the anchor is a label-dependent margin rather than an additive adjustment."""
  return parse_anchor(name)[0] == "ldam"


def ldam_margins(prior: np.ndarray, max_margin: float) -> np.ndarray:
  """LDAM's class margins [K] in cosine units: proportional to n_c^(-1/4), the largest = max_margin.

  Only ratios of counts matter, so the prior suffices.
  """
  inverse_fourth_root = np.asarray(prior, np.float64) ** -0.25
  return max_margin * inverse_fourth_root / inverse_fourth_root.max()


def _anchor_rows(name: str, prior: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
  """(additive row [K], margin row [K]) of one anchor, float64 (see the module docstring)."""
  kind, value = parse_anchor(name)
  log_prior = np.log(np.asarray(prior, np.float64))
  zeros = np.zeros_like(log_prior)
  if kind == "ldam":
    return zeros, ldam_margins(prior, value)
  if kind == "uniform":
    return log_prior, zeros
  if kind == "backward":
    return log_prior - tau * np.log(reversed_prior(prior)), zeros
  if kind == "logit_adjust":
    return value * log_prior, zeros
  return zeros, zeros


@dataclasses.dataclass(frozen=True, eq=False)
class Anchors:
  """The T experts' anchor losses ``CE(z + a_t - s * m_{t,y} e_y, y)`` as two float32 rows per expert.

  Attributes:
    names: the config's anchor names, one per expert (``loss.anchors``).
    additive: the additive adjustments a [T, K] (zero rows for margin anchors).
    margins: the margins m [T, K] in cosine units (zero rows for additive anchors).
  """

  names: tuple[str, ...]
  additive: np.ndarray
  margins: np.ndarray

  @classmethod
  def parse(cls, names: Sequence[str], prior: np.ndarray, tau: float) -> "Anchors":
    """The anchors named in the config (``loss.anchors``) for training prior ``prior`` [K] and the
    backward anchor's strength ``tau``; ValueError for an unknown name."""
    additive, margins = zip(*(_anchor_rows(name, prior, tau) for name in names))
    return cls(tuple(names), np.stack(additive).astype(np.float32), np.stack(margins).astype(np.float32))

  @property
  def has_margins(self) -> bool:
    """Whether any anchor has a margin row (otherwise the margin term is skipped altogether)."""
    return bool(np.any(self.margins != 0))


def adjustments(anchors: Sequence[str], prior: np.ndarray, tau: float) -> np.ndarray:
  """The additive rows a [T, K], float32, of the named anchors (zero rows for margin anchors): what
  moves each expert's target prior. Shorthand for ``Anchors.parse(anchors, prior, tau).additive``."""
  return Anchors.parse(anchors, prior, tau).additive


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


def _per_sample_rows(target_weights: jnp.ndarray, rows: np.ndarray, mode: str) -> jnp.ndarray:
  """Each sample's [P, K] row of anchor quantities: the w-mixture (continuous) or row p (paper)."""
  if mode == "continuous":
    return target_weights @ rows
  if mode == "paper":
    if target_weights.shape[0] != rows.shape[0]:
      raise ValueError(f"paper loss mode needs one preference per expert, got {target_weights.shape[0]} for "
                       f"{rows.shape[0]} experts")
    return jnp.asarray(rows)
  raise ValueError(f"loss mode must be one of {LOSS_MODES}, got {mode!r}")


def preference_losses(logits: jnp.ndarray, target_weights: jnp.ndarray, anchors: Anchors, labels: jnp.ndarray,
                      mode: str = "continuous", scale: float = 1.0,
                      example_weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """Per-preference losses [P] from logits [P, B, K], target weights w [P, T] (the sampled preferences,
  normalised), the T experts' anchors and labels [B] (see the module docstring).

  Margins lower the true class's logit by ``scale * m_y``; like the additive rows they are mixed by w
  (continuous) or taken per sample (paper). ``example_weights`` [B] make each loss a weighted mean over
  the batch (deferred re-weighting).
  """
  adjusted = logits + _per_sample_rows(target_weights, anchors.additive, mode)[:, None, :]
  if anchors.has_margins:
    margin = _per_sample_rows(target_weights, anchors.margins, mode)              # [P, K]
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)        # [B, K]
    adjusted = adjusted - scale * margin[:, None, :] * one_hot[None]
  return cross_entropy(adjusted, labels, example_weights)


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
