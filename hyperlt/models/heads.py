"""Cosine classifier heads and the preference-weighted combination of experts.

Expert j's logits are ``v_j = s * cos(f_j, W_j)``: the features ``f_j`` [B, d] and every class column of
``W_j`` [d, K] are L2-normalised, so ``v_j`` lies in ``[-s, s]``. With preferences on a leading axis P,
the combined logits are

    z_p = sum_j w_pj * v_pj,   w_p = r_hat_p ("weighted")  or  w_p = 1/T ("mean"),

computed in one contraction so the [P, T, B, K] tensor of per-expert logits is never materialised.
"""

from __future__ import annotations

import jax.numpy as jnp

COMBINE_MODES = ("weighted", "mean")
_EPS = 1e-12


def l2_normalize(x: jnp.ndarray, axis: int) -> jnp.ndarray:
  return x * jnp.reciprocal(jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + _EPS))


def expert_logits(features: jnp.ndarray, weights: jnp.ndarray, scale: float) -> jnp.ndarray:
  """Per-expert cosine logits.

  Args:
    features: [T, B, d] expert features.
    weights: [P, T, d, K] head matrices, one set per preference.
    scale: the cosine scale s.

  Returns:
    [P, T, B, K] logits ``s * cos(f_tb, W_pt[:, k])``.
  """
  return scale * jnp.einsum("tbd,ptdk->ptbk", l2_normalize(features, -1), l2_normalize(weights, -2))


def combined_logits(features: jnp.ndarray, weights: jnp.ndarray, r_hat: jnp.ndarray, scale: float,
                    mode: str = "weighted") -> jnp.ndarray:
  """Preference-combined logits z [P, B, K] from features [T, B, d], weights [P, T, d, K], r_hat [P, T]."""
  if mode == "weighted":
    mix = r_hat
  elif mode == "mean":
    mix = jnp.full_like(r_hat, 1.0 / r_hat.shape[-1])
  else:
    raise ValueError(f"combine mode must be one of {COMBINE_MODES}, got {mode!r}")
  return scale * jnp.einsum("tbd,ptdk,pt->pbk", l2_normalize(features, -1), l2_normalize(weights, -2), mix)
