"""What the quick start relies on: per-variant default work dirs, and predict's check of the images' scale."""

from __future__ import annotations

import types

import numpy as np
import pytest
from sklearn import datasets

from hyperlt import api, cli
from hyperlt.errors import UserInputError

# The embedded default's normalisation (data.json of a digits run, 0..1 pixel scale).
DIGITS_FACTS = types.SimpleNamespace(mean=(0.307,), std=(0.377,))


@pytest.mark.parametrize("spec, workdir", [("digits", "runs/digits"), ("digits:local", "runs/digits-local"),
                                           ("cifar_lt:c10,ir100", "runs/cifar_lt-c10-ir100"),
                                           ("cifar_lt:c100,ir100", "runs/cifar_lt-c100-ir100"),
                                           ("configs/my_config.py:small", "runs/my_config-small")])
def test_default_workdir_differs_per_config_and_variant(spec, workdir):
  assert cli.default_workdir(spec) == workdir


def _digits(n: int, scale: float = 255 / 16) -> np.ndarray:
  return np.round(datasets.load_digits().images[:n] * scale).astype(np.uint8)[..., None]


def test_digits_scaled_as_in_training_pass_the_range_check():
  assert api.value_range_problem(_digits(40), DIGITS_FACTS) is None
  assert api.value_range_problem(_digits(1), DIGITS_FACTS) is None


def test_digits_left_at_0_to_16_are_named_with_the_fix():
  problem = api.value_range_problem(_digits(5, scale=1), DIGITS_FACTS)
  assert problem.startswith("images:") and "brightest pixel is 16 of 255" in problem
  assert "np.round(x * 255 / 16).astype(np.uint8)" in problem


def test_an_inverted_batch_is_flagged_but_a_few_odd_images_are_not():
  inverted = 255 - _digits(40)
  assert "mean pixel" in api.value_range_problem(inverted, DIGITS_FACTS)
  assert api.value_range_problem(inverted[:api.MIN_IMAGES_FOR_MEAN_CHECK - 1], DIGITS_FACTS) is None


@pytest.mark.slow
def test_predict_warns_refuses_or_ignores_as_asked(trained_workdir, tmp_path, capsys):
  model = api.load(trained_workdir)
  raw = _digits(10, scale=1)
  with pytest.warns(api.ImageRangeWarning, match="brightest pixel is 16"):
    model.predict(raw)
  with pytest.raises(UserInputError, match="brightest pixel is 16"):
    model.predict(raw, check_range="error")
  with pytest.raises(UserInputError, match="check_range"):
    model.predict(raw, check_range="loud")
  np.testing.assert_array_equal(model.predict(raw, check_range="off"), model.predict(raw, check_range="off"))

  np.save(tmp_path / "raw.npy", raw[..., 0])
  assert cli.main(["predict", "--workdir", str(trained_workdir), "--images", str(tmp_path / "raw.npy")]) == 0
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("hyperlt: warning: images: the brightest pixel is 16 of 255")
