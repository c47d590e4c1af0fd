"""Helpers shared by the tests that train a tiny synthetic model, in-process or in subprocesses.

The tiny model is a 2-stage, 8/16-channel ResNet with 3 experts on 92 synthetic long-tailed 8x8 images
(5 steps of 16 per epoch), so a run takes seconds and needs neither the digits source nor scikit-learn.
(At 4/8 channels some BatchNorm channels are nearly constant and amplify float rounding from step to
step, which would make 1e-5 comparisons between device layouts meaningless.)

Subprocess tests run the real scripts in ``tests/scripts/`` (which import this module), never Python
source held in strings.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from hyperlt import configs as config_lib
from hyperlt.data import longtail, resident
from hyperlt.workdir import checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "tests" / "scripts"
TINY_TRAIN_IMAGES, TINY_BATCH = 92, 16
TINY_STEPS_PER_EPOCH = TINY_TRAIN_IMAGES // TINY_BATCH


def tiny_digits_config(*overrides: str):
  """The embedded default (the digits) with a 1-block ResNet of narrow widths and 2 epochs, then
  ``overrides``: seconds to train, on real images."""
  config = config_lib.load("digits")
  config_lib.override(config, ["model.widths=(8,16,32)", "optim.epochs=2", "optim.warmup_epochs=0",
                               "train.progress=False", *overrides])
  return config_lib.validate(config)


def tiny_config(*overrides: str):
  """The tiny model's validated config (2 epochs, a record every step), then ``overrides``."""
  config = config_lib.load("digits")
  config_lib.override(config, [
      "model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1", "model.hyper_hidden=(16,)",
      f"optim.batch_size={TINY_BATCH}", "optim.epochs=2", "optim.warmup_epochs=0", "train.progress=False",
      "train.log_every_steps=1", "data.val_fraction=0.0", *overrides])
  return config_lib.validate(config)


def tiny_data() -> resident.ResidentData:
  """92 long-tailed 8x8 images of 5 classes (40/24/14/8/6), each class a brightness and a bright row."""
  rng = np.random.default_rng(0)
  counts = np.array([40, 24, 14, 8, 6])

  def images(labels):
    x = np.linspace(40, 215, 5)[labels][:, None, None, None] + rng.normal(0, 30, (len(labels), 8, 8, 1))
    x[np.arange(len(labels)), labels] = 255  # a class-specific bright row
    return np.clip(x, 0, 255).astype(np.uint8)

  train_y = np.repeat(np.arange(5), counts).astype(np.int32)
  test_y = np.repeat(np.arange(5), 6).astype(np.int32)
  return resident.ResidentData(
      name="tiny", class_names=tuple("abcde"), train_x=images(train_y), train_y=train_y,
      val_x=np.zeros((0, 8, 8, 1), np.uint8), val_y=np.zeros(0, np.int32), test_x=images(test_y),
      test_y=test_y, class_counts=counts, mean=(0.5,), std=(0.25,),
      test_sets=longtail.all_test_sets(test_y), groups=longtail.shot_groups(counts, 20, 10))


def param_lists(run) -> list:
  """The run's parameter leaves as nested lists (JSON-serialisable, exact float32 values)."""
  return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(run.params)]


def logged_losses(workdir) -> list[float]:
  """The losses of the step records in ``workdir``'s metrics file, in file order."""
  lines = (pathlib.Path(workdir) / checkpoint.METRICS_FILE).read_text().splitlines()
  return [record["loss"] for record in map(json.loads, lines) if "loss" in record]


def print_result(result: dict) -> None:
  """How a script hands its result to the test: one ``RESULT <json>`` line on stdout."""
  print("RESULT", json.dumps(result), flush=True)


def read_result(stdout: str) -> dict:
  return json.loads(stdout.split("RESULT", 1)[1])


def script_env(cache_dir: pathlib.Path | None = None, xla_flags: str = "") -> dict:
  """A CPU-only environment for a script subprocess that imports ``tests.helpers``.

  XLA's backend optimisation is off: these runs check what is computed, not how fast, and an
  unoptimised CPU compile is about five times faster. ``cache_dir`` shares compiled programs between
  processes that compile the same step (JAX's persistent compilation cache).
  """
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO_ROOT),
         "XLA_FLAGS": f"--xla_backend_optimization_level=0 {xla_flags}".strip()}
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def script_command(name: str, *args: str) -> list[str]:
  return [sys.executable, str(SCRIPTS / name), *args]


def run_script(name: str, *args: str, cache_dir: pathlib.Path | None = None, xla_flags: str = "",
               timeout: int = 120) -> subprocess.CompletedProcess:
  """Runs ``tests/scripts/<name>`` with ``args`` in a fresh CPU-only interpreter from the repository root."""
  return subprocess.run(script_command(name, *args), capture_output=True, text=True, timeout=timeout,
                        env=script_env(cache_dir, xla_flags), cwd=REPO_ROOT)


def xla_cache(tmp_path_factory) -> pathlib.Path:
  """One compilation cache for the whole test session."""
  return tmp_path_factory.getbasetemp() / "xla-cache"
