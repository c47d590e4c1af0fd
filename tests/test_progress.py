"""Progress bars: on stderr when switched on, nothing when off or when stderr is not a terminal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hyperlt import cli, progress
from hyperlt.analysis.adapt import StabilityOptions, adapt
from hyperlt.inference import batching
from hyperlt.training import loop


@pytest.fixture(autouse=True)
def _restore_switch():
  yield
  progress.set_enabled(None)


def _batches(desc="features"):
  return batching.map_padded(lambda x: x * 2, np.arange(10), 4, desc=desc)


def test_feature_batches_show_a_bar_on_stderr_when_switched_on(capsys):
  progress.set_enabled(True)
  np.testing.assert_array_equal(_batches(), np.arange(10) * 2)
  out, err = capsys.readouterr()
  assert out == "" and "features" in err and "batch" in err


@pytest.mark.parametrize("switch", [False, None])  # None: auto, and captured stderr is not a terminal
def test_no_bar_when_switched_off_or_not_a_terminal(capsys, switch):
  progress.set_enabled(switch)
  assert not sys.stderr.isatty()
  np.testing.assert_array_equal(_batches(), np.arange(10) * 2)
  assert capsys.readouterr() == ("", "")


def test_every_long_subcommand_takes_no_progress():
  parser = cli.build_parser()
  sub = next(a for a in parser._actions if a.dest == "command").choices  # pylint: disable=protected-access
  for name in ("train", "evaluate", "sweep", "choose", "predict", "adapt"):
    options = {o for action in sub[name]._actions for o in action.option_strings}  # pylint: disable=protected-access
    assert "--no-progress" in options, name


def test_cli_no_progress_switches_bars_off(tmp_path):
  progress.set_enabled(True)
  cli.main(["evaluate", "--workdir", str(tmp_path / "missing"), "--no-progress"])  # fails fast: no run there
  assert not progress.enabled()


def test_training_shows_the_compile_phase_and_adaptation_its_epochs(tiny_config, capsys):
  progress.set_enabled(True)
  run = loop.train(tiny_config("train.progress=True"), None, log=lambda _: None)
  err = capsys.readouterr().err
  # The bar names the compile phase before the first step, then counts steps as plain "train".
  assert err.index("train (compiling the step)") < err.rindex("train: 100%")
  images = run.data.test_x[:20]
  adapt(run, images, "stability", options=StabilityOptions(min_steps=2, epochs=2))
  assert "adapt (stability)" in capsys.readouterr().err

  progress.set_enabled(False)  # what --no-progress sets (training without a terminal: the test below)
  adapt(run, images, "stability", options=StabilityOptions(min_steps=2, epochs=2))
  assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_cli_train_writes_no_bar_when_stderr_is_not_a_terminal(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "hyperlt.cli", "train", "--workdir", str(tmp_path / "w"),
                         "model.widths=8,16,32", "optim.epochs=1", "optim.warmup_epochs=0"],
                        capture_output=True, text=True, check=True)
  assert "compiling" not in proc.stderr and "step/s" not in proc.stderr and "it/s" not in proc.stderr
  assert "Accuracy (%) of each expert vertex preference" in proc.stdout
