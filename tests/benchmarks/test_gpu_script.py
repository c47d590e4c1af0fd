"""The one-command GPU run (benchmarks/gpu.sh -> benchmarks/gpu_run.py) in its CPU mode, end to end.

GPU time comes in short windows, so the GPU command must work the first time it meets a GPU. Its CPU mode
walks the same phases with tiny sizes (every expert form in float32 and bfloat16, T = 1, training,
evaluation and the sweep; the official-code phase is skipped without checkouts), through the same shell
wrapper; here it runs in a subprocess and its JSON is checked: every phase finished, every figure there,
every speed finite and positive, accuracies fractions.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
GPU_SH = REPO_ROOT / "benchmarks" / "gpu.sh"

FORM_VARIANTS = ("vmap_float32", "unrolled_float32", "vmap_bfloat16", "unrolled_bfloat16", "t1")
SPEEDS = ("t3_over_t1", "t3_over_t1_flops", "eval_images_per_s", "evaluate_images_per_s", "sweep231_over_single",
          "train_epoch_seconds", "train_200_epochs_minutes_extrapolated", "train_wall_seconds")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
  out = tmp_path_factory.mktemp("gpu_run_cpu")
  env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_RUN_TIMEOUT": "600"}
  proc = subprocess.run(["bash", str(GPU_SH), "--cpu"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=660, check=False)
  assert proc.returncode == 0, f"gpu.sh --cpu failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
  return json.loads((out / "gpu_run_cpu.json").read_text())


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_phase_finishes(report):
  assert report["mode"] == "cpu" and report["status"] == "complete"
  phases = report["phases"]
  assert {name: phases[name]["status"] for name in ("steps", "train", "eval_sweep")} == {
      "steps": "done", "train": "done", "eval_sweep": "done"}
  assert phases["official"]["status"] == "skipped"
  assert all(phases["steps"]["losses_finite"].values())
  for key in ("device", "versions", "host", "data", "command", "elapsed_s"):
    assert key in report


def test_speed_figures_are_finite_and_positive(report):
  figures = report["figures"]
  for table in ("step_seconds", "train_images_per_s"):
    assert set(figures[table]) == set(FORM_VARIANTS)
    assert all(_positive(v) for v in figures[table].values()), figures[table]
  assert set(figures["bf16_speedup"]) == {"vmap", "unrolled"}
  assert set(figures["vmap_speedup_over_unrolled"]) == {"float32", "bfloat16"}
  for value in [*figures["bf16_speedup"].values(), *figures["vmap_speedup_over_unrolled"].values()]:
    assert _positive(value)
  for key in SPEEDS:
    assert _positive(figures[key]), (key, figures.get(key))


def test_training_reports_epochs_and_accuracy(report):
  figures, train = report["figures"], report["phases"]["train"]
  assert figures["train_epochs"] == 2 == len(train["epoch_seconds"])
  for key in ("train_accuracy_uniform", "train_mean_accuracy_11"):
    assert 0.0 <= figures[key] <= 1.0
  assert set(train["accuracy"]) >= {"uniform", "forward50", "backward50"}
