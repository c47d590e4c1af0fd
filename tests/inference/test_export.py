"""Tests of ``hyperlt export`` (hyperlt.inference.export): the artifact, loaded in a fresh Python process
that never imports hyperlt, gives ``hyperlt predict``'s probabilities for a batch size it was not traced with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperlt import cli, version
from hyperlt.inference import export
from hyperlt.training import loop as train
from tests import helpers

PREFERENCE = "0.2,0.3,0.5"


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  """A digits run of one epoch with a narrow backbone (seconds to train) and a post-hoc shift, so the
  artifact must carry the shift too."""
  workdir = tmp_path_factory.mktemp("export_run")
  train.train(helpers.tiny_digits_config("optim.epochs=1", "model.posthoc_tau=1.0"), workdir, log=lambda _: None)
  return workdir


def test_artifact_loaded_without_hyperlt_matches_predict(tiny_workdir, tmp_path, capsys):
  fixed, with_input = tmp_path / "fixed.jax", tmp_path / "input.jax"
  assert cli.main(["export", "--workdir", str(tiny_workdir), "--out", str(fixed), "--preference", PREFERENCE]) == 0
  assert cli.main(["export", "--workdir", str(tiny_workdir), "--out", str(with_input)]) == 0
  printed = capsys.readouterr().out
  assert f"Wrote {with_input}" in printed and "input  preference   float32 [3]" in printed
  assert "output probabilities float32 [batch, 10]" in printed
  # Random pixels over the whole 0..255 range: every normalisation mistake shows; 7 images, a size no
  # program was traced for (the batch is symbolic).
  images = np.random.default_rng(1).integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  assert cli.main(["predict", "--workdir", str(tiny_workdir), "--images", str(tmp_path / "images.npy"),
                   "--preference", PREFERENCE, "--out", str(tmp_path / "predicted.npy")]) == 0
  # A fresh interpreter that loads both files with jax alone (tests/scripts/load_exported.py).
  done = helpers.run_script("load_exported.py", str(fixed), str(with_input), str(tmp_path / "images.npy"),
                            str(tmp_path / "served.npz"), timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "loaded without hyperlt" in done.stdout
  served = np.load(tmp_path / "served.npz")
  predicted = np.load(tmp_path / "predicted.npy")
  assert served["fixed"].shape == (7, 10) and served["fixed"].dtype == np.float32
  np.testing.assert_allclose(served["fixed"], predicted, atol=1e-5)
  np.testing.assert_allclose(served["with_input"], predicted, atol=1e-5)
  assert list(served["input_shapes"]) == ["(batch, 8, 8, 1)", "(3,)"]
  # Another preference through the input gives that preference's probabilities: the input is used.
  assert cli.main(["predict", "--workdir", str(tiny_workdir), "--images", str(tmp_path / "images.npy"),
                   "--preference", "1,0,0", "--out", str(tmp_path / "vertex.npy")]) == 0
  np.testing.assert_allclose(served["vertex"], np.load(tmp_path / "vertex.npy"), atol=1e-5)
  assert np.abs(served["vertex"] - predicted).max() > 1e-3


def test_sidecar_describes_the_artifact(tiny_workdir, tmp_path):
  written = export.write(tiny_workdir, tmp_path / "m.jax", "1,1,2", ("cpu", "cuda"))
  meta = json.loads((tmp_path / "m.jax.json").read_text())
  assert written.sidecar == tmp_path / "m.jax.json" and meta == written.metadata
  assert meta["num_classes"] == 10 and meta["image_shape"] == [8, 8, 1] and meta["dtype"] == "uint8"
  assert meta["preference"] == pytest.approx([0.25, 0.25, 0.5])
  assert meta["platforms"] == ["cpu", "cuda"] and meta["step"] > 0
  assert meta["hyperlt_version"] == version.installed()
  assert meta["inputs"] == [{"name": "images", "shape": ["batch", 8, 8, 1], "dtype": "uint8"}]


@pytest.mark.parametrize("out, extra, message", [
    ("{w}/config.json", [], "--out: {w}/config.json is part of the work dir {w} (config.json)"),
    ("{w}/config", [], "--out (its sidecar FILE.json): {w}/config.json is part of the work dir"),
    ("{w}/checkpoints/model.jax", [], "is part of the work dir {w} (checkpoints)"),
    ("{w}", [], "is a folder"),
    ("{t}/missing/model.jax", [], "the folder {t}/missing does not exist"),
    ("{t}/model.jax", ["--platforms", "cpu,gpu"], "--platforms: unknown platform(s) ['gpu']"),
    ("{t}/model.jax", ["--preference", "1,0"], "--preference: expected 3 numbers"),
])
def test_bad_export_arguments_exit_2_with_one_line(tiny_workdir, tmp_path, capsys, out, extra, message):
  before = sorted(p.name for p in tiny_workdir.iterdir())
  out = out.format(w=tiny_workdir, t=tmp_path)
  assert cli.main(["export", "--workdir", str(tiny_workdir), "--out", out, *extra]) == 2
  err = capsys.readouterr().err
  assert err.startswith("hyperlt: error: ") and err.count("\n") == 1
  assert message.format(w=tiny_workdir, t=tmp_path) in err
  assert sorted(p.name for p in tiny_workdir.iterdir()) == before
