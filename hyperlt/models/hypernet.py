"""The hypernetwork: a preference on the simplex -> the T experts' head matrices.

``h_psi(r_hat) = reshape(Linear(ReLU(Linear(... ReLU(Linear(r_hat))))), [T, d, K])`` with hidden widths
(128, 128, 128) by default. It is a pure function of its parameters and one preference; a batch of
preferences is a :func:`jax.vmap` axis (``apply`` does that for a leading P axis).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class HyperNetwork(nn.Module):
  """MLP from one preference [T] to head matrices [T, d, K]."""

  num_experts: int
  feature_dim: int
  num_classes: int
  hidden: Sequence[int] = (128, 128, 128)

  @nn.compact
  def __call__(self, r_hat: jnp.ndarray) -> jnp.ndarray:
    h = r_hat
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    out = nn.Dense(self.num_experts * self.feature_dim * self.num_classes)(h)
    return out.reshape(self.num_experts, self.feature_dim, self.num_classes)


def init(key: jax.Array, module: HyperNetwork) -> dict:
  """Initial hypernetwork parameters."""
  return module.init(key, jnp.full((module.num_experts,), 1.0 / module.num_experts))["params"]


def apply(params: dict, module: HyperNetwork, r_hat: jnp.ndarray) -> jnp.ndarray:
  """Head matrices [P, T, d, K] for preferences r_hat [P, T]."""
  return jax.vmap(lambda r: module.apply({"params": params}, r))(r_hat)
