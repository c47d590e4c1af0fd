"""Property tests of the input boundary: whatever a user hands over (a preference, a config override, an
.npz data file, an image array) either works, with the documented result, or raises UserInputError whose
message names the field. Any other exception (a TypeError from comparing "abc" with 1, a numpy error) is a
traceback on the command line, and a result outside the documented one is a silent wrong answer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from hyperlt import configs as config_lib
from hyperlt import preference
from hyperlt.configs import base
from hyperlt.data import images, sources
from hyperlt.errors import UserInputError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, 1.0, -0.0, 1e-30, 1e30]))
words = st.text(alphabet="abc,-.0123456789e ()[]'\"", max_size=12)


# ------------------------------------------------------------------------------------------------
# Preferences


@SETTINGS
@given(st.one_of(st.lists(numbers, max_size=5).map(lambda v: ",".join(str(x) for x in v)), words,
                 st.lists(numbers, max_size=5)),
       st.integers(1, 4))
@example("1e100", 1)        # beyond float32: once normalised to NaN
@example("1e-50,0,0", 3)    # below float32: once 0 / 0
def test_preference_parses_or_names_the_field(value, num_experts):
  try:
    alpha = preference.parse(value, num_experts, "--preference")
  except UserInputError as e:
    assert str(e).startswith("--preference"), str(e)
    event("refused")
    return
  event("parsed")
  assert alpha.dtype == np.float32 and alpha.shape == (num_experts,)
  assert np.all(alpha >= 0) and math.isclose(float(alpha.sum()), 1.0, rel_tol=1e-5)


@SETTINGS
@given(st.integers(1, 6), st.floats(1e-4, 2.0))
def test_grid_bound_holds_before_anything_is_built(num_experts, step):
  """check_grid either refuses or returns the exact size of the grid simplex_grid then builds."""
  try:
    points = preference.check_grid(num_experts, step, "--step")
  except UserInputError as e:
    assert str(e).startswith("--step:"), str(e)
    return
  assert points <= preference.MAX_GRID_POINTS
  if points <= 5000:  # build only small grids: the bound is what keeps the large ones from being built
    grid = preference.simplex_grid(num_experts, step)
    assert len(grid) == points and np.allclose(grid.sum(1), 1)


# ------------------------------------------------------------------------------------------------
# Config overrides


def _leaves(config, prefix=""):
  for key in config.keys():
    if hasattr(config[key], "keys"):
      yield from _leaves(config[key], f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


KEYS = sorted(k for k in _leaves(base.get_config()) if k != "method")  # method applies presets; tested elsewhere
value_texts = st.one_of(numbers.map(str), words, st.sampled_from(["True", "False", "()", "(1,2,3)", "(0,)",
                                                                   "forward,uniform,backward", "step", "cosine",
                                                                   "npz", "tfds:x", "1e400", "-1"]))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS + ["optim.nosuch", "nosection.x"]), value_texts), min_size=1,
                max_size=3))
def test_overrides_validate_or_name_a_field(assignments):
  config = config_lib.load("digits")
  texts = [f"{key}={value}" for key, value in assignments]
  try:
    config_lib.validate(config_lib.override(config, texts))
  except UserInputError as e:
    message = str(e)
    # The assigned key, or (for a cross-field check such as warmup_epochs <= epochs) another field.
    assert any(key in message for key, _ in assignments) or any(k in message for k in KEYS), message
    event("refused")
    return
  event("valid")
  for key, _ in assignments:  # a valid assignment really is in the config
    section, leaf = key.rsplit(".", 1) if "." in key else (None, key)
    assert leaf in (config[section] if section else config)


# ------------------------------------------------------------------------------------------------
# .npz data files

DTYPES = st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_])


@st.composite
def npz_arrays(draw):
  # Half the draws keep to well-formed shapes, dtypes and labels, so the loading branch is reached too.
  plain = draw(st.booleans())
  n_train, n_test = draw(st.integers(4 if plain else 0, 8)), draw(st.integers(4 if plain else 0, 8))
  h = draw(st.integers(1, 3))
  ndim = 4 if plain else draw(st.sampled_from([2, 3, 4]))
  def image_array(n):
    shape = (n, h, h, 1)[:ndim]
    dtype = draw(st.sampled_from([np.uint8, np.float32]) if plain else DTYPES)
    # Mostly [0, 1] (the accepted float range), with some values beyond it, negatives and NaN.
    elements = (st.floats(0, 1, width=32) if plain else
                st.one_of(st.floats(0, 1, width=32), st.floats(-1, 300, width=32), st.just(math.nan)))
    elements = elements if np.issubdtype(dtype, np.floating) else None
    return draw(hnp.arrays(dtype, shape, elements=elements))
  labels = lambda n: draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32] + ([] if plain else [np.float32]))),
                                     (n,), elements=st.integers(0 if plain else -1, 3)))
  arrays = {"x_train": image_array(n_train), "y_train": labels(n_train), "x_test": image_array(n_test),
            "y_test": labels(n_test)}
  if draw(st.booleans()):
    arrays["class_names"] = np.array([f"c{i}" for i in range(draw(st.integers(4 if plain else 0, 5)))])
  drop = None if plain else draw(st.sampled_from([None, None, None, "x_test", "y_train"]))
  return {k: v for k, v in arrays.items() if k != drop}


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("npz_properties")


_counter = itertools.count()


@SETTINGS
@given(arrays=npz_arrays())
def test_npz_loads_as_documented_or_names_the_field(arrays, npz_dir):
  path = npz_dir / f"data{next(_counter)}.npz"
  np.savez(path, **arrays)
  try:
    ds = sources.load_npz(path)
  except UserInputError as e:
    event("refused")
    message = str(e)
    assert str(path) in message or path.stem in message, message
    assert any(f in message for f in ("x_train", "y_train", "x_test", "y_test", "class_names", "lacks")), message
    return
  event("loaded")
  for split in ("train", "test"):
    x, y, raw = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}"), arrays[f"x_{split}"]
    assert x.dtype == np.uint8 and x.ndim == 4 and len(x) == len(y)
    assert len(np.unique(y)) >= 2 and y.min() >= 0 and y.max() < ds.num_classes
    # The documented scaling, and nothing else: floats in [0, 1] times 255, integers as pixel values.
    expected = np.round(raw.astype(np.float64) * 255) if np.issubdtype(raw.dtype, np.floating) else raw
    np.testing.assert_array_equal(x.reshape(raw.shape), expected.astype(np.uint8))


# ------------------------------------------------------------------------------------------------
# Image arrays (predict, adapt)


@SETTINGS
@given(st.one_of(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9)),
                 hnp.arrays(st.sampled_from([np.uint8, np.float32]),
                            st.tuples(st.integers(0, 3), st.just(8), st.just(8)).flatmap(
                                lambda s: st.sampled_from([s, s + (1,), s + (3,)])))))
def test_image_arrays_are_checked_or_name_the_field(array):
  try:
    checked = images.check_images(array, (8, 8, 1), field="--images")
  except UserInputError as e:
    assert str(e).startswith("--images:"), str(e)
    event("refused")
    return
  event("accepted")
  assert checked.dtype == np.uint8 and checked.shape[1:] == (8, 8, 1) and len(checked) >= 1
  np.testing.assert_array_equal(checked.reshape(array.shape), array)
