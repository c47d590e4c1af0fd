"""Preferences: validation, the learned scale r, Dirichlet sampling, and simplex grids.

A raw preference ``alpha`` has one non-negative entry per expert, not all zero. With the learned
positive scale ``r`` (stored as ``log r``) the effective preference is

    r_hat = (r * alpha) / sum(r * alpha),

so a vertex ``e_i`` is a fixed point: ``r_hat(e_i) = e_i`` whatever ``r``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt.errors import UserInputError

SAMPLING_MODES = ("vertex_dirichlet", "symmetric", "vertices")


def parse(value: str | Sequence[float] | np.ndarray, num_experts: int, field: str = "preference") -> np.ndarray:
  """Validates a raw preference and returns it as float32 [T], normalised to sum 1.

  Accepts "a,b,c", a sequence of numbers, or the path of a JSON file whose object has a "preference"
  list (as written by ``hyperlt adapt --out FILE`` or ``--json``). Raises UserInputError naming ``field``
  when the length is not ``num_experts``, or an entry is not a finite non-negative number, or all
  entries are zero, or the file is missing or holds no such list.
  """
  if isinstance(value, str) and _looks_like_file(value):
    value, field = _preference_from_json_file(value, field), f"{field} (from {value})"
  if isinstance(value, str):
    parts = [p.strip() for p in value.split(",")]
    try:
      numbers = [float(p) for p in parts]
    except ValueError:
      raise UserInputError(
          f"{field}: expected {num_experts} comma-separated numbers (one per expert), got {value!r}") from None
  else:
    try:
      numbers = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
      raise UserInputError(f"{field}: expected {num_experts} numbers, got {value!r}") from None
  if len(numbers) != num_experts:
    raise UserInputError(
        f"{field}: expected {num_experts} numbers (one per expert), got {len(numbers)}: {numbers}")
  if not all(math.isfinite(v) for v in numbers):
    raise UserInputError(f"{field}: every entry must be a finite number, got {numbers}")
  if any(v < 0 for v in numbers):
    raise UserInputError(f"{field}: entries must be non-negative, got {numbers}")
  total = sum(numbers)
  if total <= 0:
    raise UserInputError(f"{field}: at least one entry must be positive, got {numbers}")
  return np.asarray(numbers, np.float32) / np.float32(total)


def _looks_like_file(value: str) -> bool:
  # A preference string is numbers and commas; a .json name or an existing file means a path.
  return value.strip().lower().endswith(".json") or os.path.isfile(value)


def _preference_from_json_file(path: str, field: str) -> list:
  """The "preference" list of a JSON file such as ``hyperlt adapt --out`` writes."""
  expected = 'a JSON object with a "preference" list, as written by hyperlt adapt --out FILE'
  if not os.path.isfile(path):
    raise UserInputError(f"{field}: {path} is not a file; expected comma-separated numbers (one per expert) "
                         f"or {expected}")
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise UserInputError(f"{field}: {path} is not readable JSON ({e}); expected {expected}") from None
  if not isinstance(content, dict) or not isinstance(content.get("preference"), list):
    raise UserInputError(f"{field}: {path} has no \"preference\" list; expected {expected}")
  return content["preference"]


def effective(log_scale: jnp.ndarray, alpha: jnp.ndarray) -> jnp.ndarray:
  """r_hat [..., T] from raw preferences alpha [..., T] and the learned log-scale [T]."""
  weighted = jnp.exp(log_scale) * alpha
  return weighted / jnp.sum(weighted, axis=-1, keepdims=True)


def dirichlet_concentrations(num_experts: int, mode: str, beta0: float, kappa: float) -> np.ndarray:
  """The T Dirichlet concentration vectors [T, T] used for the T training samples.

  ``vertex_dirichlet``: beta_i = beta0 * 1 + kappa * e_i, so sample i lives near vertex i.
  ``symmetric``: every beta_i = beta0 * 1 (the published code uses beta0 = 1.2).
  """
  if mode == "vertex_dirichlet":
    return beta0 * np.ones((num_experts, num_experts)) + kappa * np.eye(num_experts)
  if mode == "symmetric":
    return beta0 * np.ones((num_experts, num_experts))
  raise ValueError(f"no concentrations for sampling mode {mode!r}")


def sample_training(key: jax.Array, num_experts: int, mode: str, beta0: float, kappa: float) -> jnp.ndarray:
  """The raw preferences [T, T] of one training step (row i = sample i)."""
  if mode == "vertices":
    return jnp.eye(num_experts, dtype=jnp.float32)
  concentrations = jnp.asarray(dirichlet_concentrations(num_experts, mode, beta0, kappa), jnp.float32)
  return jax.random.dirichlet(key, concentrations)


def simplex_grid(num_experts: int, step: float) -> np.ndarray:
  """Every point of the simplex whose coordinates are multiples of ``step``: [N, T], float32.

  For T = 3, step 0.1 gives 66 points and step 0.05 gives 231 (``C(1/step + T - 1, T - 1)``).
  """
  divisions = round(1.0 / step) if step > 0 else 0
  if divisions < 1 or not math.isclose(divisions * step, 1.0, rel_tol=0, abs_tol=1e-9):
    raise UserInputError(f"step: expected a positive number that divides 1 (e.g. 0.1, 0.05), got {step}")
  points = [c for c in itertools.product(range(divisions + 1), repeat=num_experts - 1) if sum(c) <= divisions]
  grid = np.array([list(c) + [divisions - sum(c)] for c in points], np.float32) / divisions
  return grid[np.lexsort(grid.T[::-1])][::-1].copy()
