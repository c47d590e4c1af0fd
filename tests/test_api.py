"""Tests of the Python API (hyperlt.api) and ``hyperlt predict``."""

import json

import jax
import numpy as np
import pytest

from hyperlt import api, cli, preference
from hyperlt.errors import UserInputError
from hyperlt.inference import predictor as predictor_lib
from hyperlt.inference.predictor import Predictor


@pytest.fixture(scope="module")
def model(trained_workdir):
  return api.load(trained_workdir, batch_size=64)


def test_predict_is_the_evaluation_path(model, trained_run):
  data = trained_run.data
  images = data.test_x[:150]                    # three batches of 64, the last one padded
  alpha = np.array([0.2, 0.3, 0.5], np.float32)
  probs = model.predict(images, alpha)
  assert probs.shape == (150, data.num_classes) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  evaluation = Predictor.for_run(trained_run)               # what hyperlt evaluate uses
  feats = evaluation.features(data.test_x)[:, :150]
  logits = np.asarray(evaluation.logits(feats, alpha[None]))[0]   # with the run's post-hoc shift
  np.testing.assert_allclose(probs, np.asarray(jax.nn.softmax(logits, axis=-1)), atol=1e-5)
  np.testing.assert_array_equal(probs.argmax(-1), evaluation.classes(feats, alpha[None])[0])


def test_preference_changes_the_prediction_and_defaults_to_uniform(model, trained_run):
  images = trained_run.data.test_x
  forward, backward = model.predict(images, "1,0,0"), model.predict(images, [0, 0, 1])
  # The backward expert moves probability mass to the tail classes (higher class index = rarer).
  tail = np.asarray(trained_run.data.groups["few"])
  assert backward[:, tail].sum() > forward[:, tail].sum()
  np.testing.assert_array_equal(model.predict(images[:5]), model.predict(images[:5], "0,1,0"))
  assert model.anchors == ("forward", "uniform", "backward")


def test_single_channel_images_may_omit_the_channel_axis(model, trained_run):
  images = trained_run.data.test_x[:10]
  np.testing.assert_array_equal(model.predict(images[..., 0], "0,1,0"), model.predict(images, "0,1,0"))
  assert model.predict(images[:0]).shape == (0, 10)


def test_no_recompilation_across_calls(model, trained_run):
  """One compilation per size bucket (a power of two up to the batch size), none per preference."""
  images = trained_run.data.test_x
  for n in (1, 7, 64, 130):                       # buckets 1, 8, 64 and 64 (130 = 64 + 64 + 2)
    model.predict(images[:n], "1,0,0")
  compiled = (predictor_lib._features._cache_size(), predictor_lib._predict._cache_size())
  for n, pref in ((1, "0,1,0"), (5, "0.2,0.2,0.6"), (33, [3, 1, 0]), (200, "0,0,1"), (8, [1, 1, 1])):
    model.predict(images[:n], pref)
  assert (predictor_lib._features._cache_size(), predictor_lib._predict._cache_size()) == compiled


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 8, 8, 1), np.float32), "images: expected dtype uint8"),
    (np.zeros((2, 8, 8, 3), np.uint8), "images: expected shape [N, 8, 8, 1] or [N, 8, 8]"),
    (np.zeros((8, 8), np.uint8), "got (8, 8)"),
    (np.zeros((2, 16, 16), np.uint8), "this run's images are 8x8 with 1 channel"),
    ([[1, 2]], "got a list"),
])
def test_bad_images_are_rejected(model, images, message):
  with pytest.raises(UserInputError) as info:
    model.predict(images, "1,0,0")
  assert message in str(info.value)


@pytest.mark.parametrize("pref", ["1,0", "1,-1,0", "a,b,c", "0,0,0", [1, float("nan"), 0]])
def test_preference_rules_and_messages_are_the_clis(model, pref):
  with pytest.raises(UserInputError) as info:
    model.predict(np.zeros((1, 8, 8, 1), np.uint8), pref)
  with pytest.raises(UserInputError) as cli_rules:
    preference.parse(pref, 3, "preference")
  assert str(info.value) == str(cli_rules.value)


def test_sweep_and_choose_from_python(trained_run, tmp_path):
  result = api.sweep(trained_run, step=0.25, out=tmp_path, figures=False)
  assert result.num_preferences == 15
  assert (tmp_path / "sweep.csv").exists() and not (tmp_path / "simplex.png").exists()
  choice = api.choose(trained_run, maximize="forward50:all", subject_to=["backward50:all>=0.3"], step=0.25)
  assert choice.validation["backward50:all"] >= 0.3
  assert choice.preference.shape == (3,)


def test_cli_predict(capsys, model, trained_run, trained_workdir, tmp_path):
  images = trained_run.data.test_x[:25]
  np.save(tmp_path / "images.npy", images)
  assert cli.main(["predict", "--workdir", str(trained_workdir), "--images", str(tmp_path / "images.npy"),
                   "--preference", "0,0,1", "--json", "--out", str(tmp_path / "probs.npy")]) == 0
  out = json.loads(capsys.readouterr().out)
  expected = model.predict(images, "0,0,1")
  np.testing.assert_allclose(np.array(out["probabilities"]), expected, atol=1e-6)
  assert out["classes"] == expected.argmax(-1).tolist()
  np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), expected, atol=1e-6)
  np.savez(tmp_path / "two.npz", a=images, b=images)
  assert cli.main(["predict", "--workdir", str(trained_workdir), "--images", str(tmp_path / "two.npz")]) == 2
  assert "holds arrays ['a', 'b']" in capsys.readouterr().err
  assert cli.main(["predict", "--workdir", str(trained_workdir), "--images", str(tmp_path / "images.npy"),
                   "--preference", "1,1"]) == 2
  assert "--preference: expected 3 numbers" in capsys.readouterr().err
