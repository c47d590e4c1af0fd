"""Preference validation, the effective preference r_hat, training samples and simplex grids."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import preference
from hyperlt.errors import UserInputError


@pytest.mark.parametrize("value,expected", [
    ("1,0,0", [1, 0, 0]),
    ("2, 1, 1", [0.5, 0.25, 0.25]),
    ([0, 0, 3], [0, 0, 1]),
    (np.array([1.0, 1.0, 2.0]), [0.25, 0.25, 0.5]),
])
def test_parse_normalises(value, expected):
  np.testing.assert_allclose(preference.parse(value, 3), expected, rtol=1e-6)


@pytest.mark.parametrize("value,message", [
    ("1,0", "expected 3 numbers"),
    ("1,0,0,0", "expected 3 numbers"),
    ("1,-1,1", "non-negative"),
    ("1,nan,1", "finite"),
    ("inf,0,0", "finite"),
    ("0,0,0", "at least one entry must be positive"),
    ("a,b,c", "comma-separated numbers"),
    ("", "comma-separated numbers"),
])
def test_parse_rejects_bad_preferences(value, message):
  with pytest.raises(UserInputError, match=message) as info:
    preference.parse(value, 3, field="--preference")
  assert str(info.value).startswith("--preference")


def test_vertices_are_fixed_points_of_the_scale():
  log_scale = jnp.array([1.5, -0.7, 0.3])
  np.testing.assert_allclose(preference.effective(log_scale, jnp.eye(3)), np.eye(3), atol=1e-7)
  alpha = jnp.array([[1.0, 1.0, 1.0]])
  r = np.exp(np.asarray(log_scale))
  np.testing.assert_allclose(preference.effective(log_scale, alpha)[0], r / r.sum(), rtol=1e-6)


def test_vertex_dirichlet_samples_live_near_their_vertex():
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  samples = jax.vmap(lambda k: preference.sample_training(k, 3, "vertex_dirichlet", 1.0, 4.0))(keys)
  chex.assert_shape(samples, (2000, 3, 3))
  np.testing.assert_allclose(samples.sum(-1), 1.0, atol=1e-5)
  mean = np.asarray(samples.mean(0))
  # Dir(1 + 4 e_i) has mean (1 + 4 e_i) / 7.
  np.testing.assert_allclose(mean, (np.ones((3, 3)) + 4 * np.eye(3)) / 7, atol=0.02)


def test_symmetric_and_vertex_sampling():
  sym = preference.sample_training(jax.random.PRNGKey(0), 3, "symmetric", 1.2, 0.0)
  chex.assert_shape(sym, (3, 3))
  np.testing.assert_array_equal(preference.sample_training(jax.random.PRNGKey(0), 3, "vertices", 1, 1), np.eye(3))


@pytest.mark.parametrize("t,step", [(3, 0.1), (3, 0.05), (2, 0.25), (4, 0.5)])
def test_simplex_grid(t, step):
  grid = preference.simplex_grid(t, step)
  n = round(1 / step)
  assert len(grid) == math.comb(n + t - 1, t - 1)
  np.testing.assert_allclose(grid.sum(1), 1.0, atol=1e-6)
  assert (grid >= 0).all()
  assert len(np.unique(np.round(grid * n).astype(int), axis=0)) == len(grid)


def test_simplex_grid_sizes_of_the_issue():
  assert len(preference.simplex_grid(3, 0.1)) == 66
  assert len(preference.simplex_grid(3, 0.05)) == 231


@pytest.mark.parametrize("step", [0.3, 0, -0.1, 1.5])
def test_simplex_grid_rejects_steps_that_do_not_divide_one(step):
  with pytest.raises(UserInputError, match="step"):
    preference.simplex_grid(3, step)
