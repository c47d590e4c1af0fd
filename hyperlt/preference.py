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
  with np.errstate(over="ignore"):
    total32 = np.float32(total)
  if not (np.isfinite(total32) and total32 > 0):
    # Beyond float32's range (1e40,1,1 or 1e-50,0,0): scale by the largest entry first, in float64, so the
    # result is the preference it denotes rather than NaN. Ordinary preferences keep the float32 path.
    largest = max(numbers)
    numbers = [v / largest for v in numbers]
    total32 = np.float32(sum(numbers))
  return np.asarray(numbers, np.float32) / total32


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


# Grids are bounded by an estimate of the memory scoring them needs, so a typo such as step 0.0001
# (50 million points for 3 experts) is refused at once instead of filling the memory.
MAX_GRID_BYTES = 2 * 2**30
MAX_GRID_POINTS = 1_000_000
# What one grid point costs before anything is scored: its float32 row and the enumeration's bookkeeping.
GRID_POINT_BYTES = 64


def _divisions(step: float, field: str) -> int:
  divisions = round(1.0 / step) if isinstance(step, (int, float)) and math.isfinite(step) and step > 0 else 0
  if divisions < 1 or not math.isclose(divisions * step, 1.0, rel_tol=0, abs_tol=1e-9):
    raise UserInputError(f"{field}: expected a positive number that divides 1 (e.g. 0.1, 0.05), got {step}")
  return divisions


def grid_size(num_experts: int, divisions: int) -> int:
  """Points of the simplex grid with spacing 1/divisions over num_experts coordinates: C(d + T - 1, T - 1)."""
  return math.comb(divisions + num_experts - 1, num_experts - 1)


def check_grid(num_experts: int, step: float, field: str = "step", bytes_per_point: int = 0) -> int:
  """The point count of ``simplex_grid(num_experts, step)``, computed without building it; UserInputError
  naming ``field`` when ``step`` does not divide 1 or the grid exceeds MAX_GRID_POINTS or its estimated memory
  (points x (``bytes_per_point``, what the caller needs per scored point, + GRID_POINT_BYTES)) exceeds
  MAX_GRID_BYTES. The message gives the count, the estimate and the smallest step allowed."""
  divisions = _divisions(step, field)
  per_point = int(bytes_per_point) + GRID_POINT_BYTES
  fits = lambda d: grid_size(num_experts, d) <= MAX_GRID_POINTS and grid_size(num_experts, d) * per_point <= MAX_GRID_BYTES
  points = grid_size(num_experts, divisions)
  if fits(divisions):
    return points
  largest = 1  # the grid size grows with the divisions, so the largest that fits is found by bisection
  low, high = 1, divisions
  while low <= high:
    middle = (low + high) // 2
    if fits(middle):
      largest, low = middle, middle + 1
    else:
      high = middle - 1
  raise UserInputError(
      f"{field}: a grid of step {step:g} over {num_experts} experts has {points:,} points, needing about "
      f"{_gib(points * per_point)} of memory; the limit is {MAX_GRID_POINTS:,} points and {_gib(MAX_GRID_BYTES)}, "
      f"so the smallest allowed step here is 1/{largest} = {1 / largest:.6g}")


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / 2**30:.3g} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.3g} MiB"


def simplex_grid(num_experts: int, step: float) -> np.ndarray:
  """Every point of the simplex whose coordinates are multiples of ``step``: [N, T], float32.

  For T = 3, step 0.1 gives 66 points and step 0.05 gives 231 (``C(1/step + T - 1, T - 1)``). Grids beyond
  :func:`check_grid`'s bound raise UserInputError before anything is built.
  """
  check_grid(num_experts, step)
  divisions = _divisions(step, "step")
  # Stars and bars: T - 1 bar positions among d + T - 1 slots give each composition of d exactly once, so
  # the enumeration is as long as the grid (a product over (d + 1)^(T - 1) tuples is far longer).
  points = []
  for bars in itertools.combinations(range(divisions + num_experts - 1), num_experts - 1):
    edges = (-1, *bars, divisions + num_experts - 1)
    points.append([edges[i + 1] - edges[i] - 1 for i in range(num_experts)])
  grid = np.array(points, np.float32).reshape(-1, num_experts) / divisions
  return grid[np.lexsort(grid.T[::-1])][::-1].copy()
