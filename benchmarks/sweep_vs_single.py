"""Wall time of a 231-preference sweep against evaluating one preference, on the same 11 test sets.

Both start from the test images: features of the balanced test set, predictions, metric tables.
``evaluate`` = ``evaluate.evaluate_alphas(run, [alpha])`` (what ``hyperlt evaluate`` computes);
``sweep`` = ``sweep.sweep(run, 0.05)`` (what ``hyperlt sweep --step 0.05`` computes, without writing files or
figures: 231 preferences, accuracy tables, balanced accuracy, ECE, per-class recall).

Compilation is excluded from the measured times and reported separately: every call is first made on a
warm-up copy of the run whose test set is one feature batch (the same array shapes), twice; the first
call's extra time is the compile estimate. Then the two are timed on the full test set, alternating,
``--repeats`` times each; the ratio of the medians is the result (target: at most 2).

Cases:
* ``digits_default``: the trained embedded default (``--workdir``, trained there first if it holds no run);
* ``cifar10_resnet32_random``: the CIFAR-10-LT ResNet-32 recipe (3 experts, SADE split) with random weights
  on the 10,000-image CIFAR-10 test set, when ../shared/data/cifar10-jpeg75.npz exists (skipped otherwise).

    python benchmarks/sweep_vs_single.py                      # both cases, writes results/sweep_vs_single.json
    python benchmarks/sweep_vs_single.py --cifar skip         # digits only (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax

from hyperlt import configs as config_lib
from hyperlt import preference
from hyperlt.analysis import evaluate
from hyperlt.analysis import sweep
from hyperlt.data import pipeline
from hyperlt.models.expert_model import build
from hyperlt.training import loop as train
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg75.npz"
STEP = 0.05


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _warmup_copy(run: run_lib.Run, size: int) -> run_lib.Run:
  """The run with its test set cut to the first ``size`` images (same batch shapes as the full set)."""
  data = run.data
  keep = {name: idx[idx < size] for name, idx in data.test_sets.items()}
  small = dataclasses.replace(data, test_x=data.test_x[:size], test_y=data.test_y[:size], test_sets=keep)
  return dataclasses.replace(run, data=small)


def measure(run: run_lib.Run, repeats: int) -> dict:
  """Times of one-preference evaluation and of the 231-point sweep on ``run``'s test sets."""
  num_experts = run.model.num_experts
  grid = preference.simplex_grid(num_experts, STEP)
  alpha = evaluate.default_preference(run)[None]
  single = lambda r: evaluate.evaluate_alphas(r, alpha)
  swept = lambda r: sweep.sweep(r, STEP)

  n = len(run.data.test_y)
  warm = _warmup_copy(run, min(n, run.config.train.eval_batch_size))
  first = {"evaluate": _timed(lambda: single(warm)), "sweep": _timed(lambda: swept(warm))}
  second = {"evaluate": _timed(lambda: single(warm)), "sweep": _timed(lambda: swept(warm))}

  times = {"evaluate": [], "sweep": []}
  for _ in range(repeats):
    times["evaluate"].append(_timed(lambda: single(run)))
    times["sweep"].append(_timed(lambda: swept(run)))
  median = {k: statistics.median(v) for k, v in times.items()}
  return {
      "preferences": {"evaluate": 1, "sweep": len(grid)},
      "test_images": n,
      "test_sets": len(run.data.test_sets),
      # First warm-up call minus the second: compilation plus noise (the feature extractor is compiled
      # during the evaluate warm-up, which runs first).
      "compile_s_estimate": {k: round(max(first[k] - second[k], 0.0), 3) for k in first},
      "warmup_first_call_s": {k: round(v, 3) for k, v in first.items()},
      "warmup_second_call_s": {k: round(v, 3) for k, v in second.items()},
      "warmup_images": len(warm.data.test_y),
      "repeats": repeats,
      "evaluate_s": [round(t, 4) for t in times["evaluate"]],
      "sweep_s": [round(t, 4) for t in times["sweep"]],
      "evaluate_median_s": round(median["evaluate"], 4),
      "sweep_median_s": round(median["sweep"], 4),
      "ratio_sweep_over_evaluate": round(median["sweep"] / median["evaluate"], 3),
  }


def digits_run(workdir: pathlib.Path) -> run_lib.Run:
  if checkpoint.latest_step(workdir) is None:
    print(f"training the embedded default into {workdir} (about a minute)", flush=True)
    config = config_lib.load("digits")
    config.train.progress = False
    train.train(config, workdir, log=lambda _: None)
  return run_lib.load(workdir)


def cifar_random_run(limit: int | None) -> run_lib.Run:
  """ResNet-32 of the CIFAR-10-LT recipe with random weights, on the CIFAR-10 test set."""
  config = config_lib.load("cifar_lt:c10,ir100")
  config_lib.override(config, [f"data.path={SHARED_CIFAR10}"])
  data = pipeline.prepare(config.data)
  if limit:
    keep = {name: idx[idx < limit] for name, idx in data.test_sets.items()}
    data = dataclasses.replace(data, test_x=data.test_x[:limit], test_y=data.test_y[:limit], test_sets=keep)
  model = build(config.model, data.num_classes)
  params, batch_stats = jax.jit(lambda: model.init(jax.random.PRNGKey(config.seed), data.image_shape))()
  return run_lib.Run(config=config, model=model, params=params, batch_stats=batch_stats,
                     facts=run_lib.RunFacts.of(data), step=0, data=data)


def _versions() -> dict:
  out = {"python": platform.python_version()}
  for package in ("jax", "jaxlib", "flax", "numpy", "hyperlt"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = None
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=str(REPO_ROOT / "runs" / "digits"),
                      help="work dir of the trained embedded default (trained there if empty)")
  parser.add_argument("--repeats", type=int, default=7, help="timed calls of each, digits case")
  parser.add_argument("--cifar", choices=("auto", "skip", "only"), default="auto")
  parser.add_argument("--cifar-repeats", type=int, default=1, help="timed calls of each, CIFAR case")
  parser.add_argument("--cifar-images", type=int, default=0, help="use the first N CIFAR test images (0 = all)")
  parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "sweep_vs_single.json"))
  args = parser.parse_args()

  device = jax.devices()[0]
  report = {
      "command": "python " + " ".join([os.path.relpath(__file__, REPO_ROOT)] + sys.argv[1:]),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count(),
                 "cpu_cores": os.cpu_count(), "machine": platform.machine()},
      "versions": _versions(),
      "grid_step": STEP,
      "target": "ratio_sweep_over_evaluate <= 2",
      "cases": {},
  }
  if args.cifar != "only":
    run = digits_run(pathlib.Path(args.workdir))
    report["cases"]["digits_default"] = measure(run, args.repeats)
    _print_case("digits_default", report["cases"]["digits_default"])
  if args.cifar != "skip":
    if SHARED_CIFAR10.exists():
      run = cifar_random_run(args.cifar_images or None)
      report["cases"]["cifar10_resnet32_random"] = measure(run, args.cifar_repeats)
      _print_case("cifar10_resnet32_random", report["cases"]["cifar10_resnet32_random"])
    else:
      report["cases"]["cifar10_resnet32_random"] = {"skipped": f"{SHARED_CIFAR10} not found"}
      print(f"cifar10_resnet32_random: skipped ({SHARED_CIFAR10} not found)")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {out}")
  return 0


def _print_case(name: str, case: dict) -> None:
  print(f"{name}: {case['test_images']} test images, 11 test sets | evaluate 1 preference "
        f"{case['evaluate_median_s']:.3f} s | sweep {case['preferences']['sweep']} preferences "
        f"{case['sweep_median_s']:.3f} s | ratio {case['ratio_sweep_over_evaluate']:.2f} (target <= 2) | "
        f"compile excluded: {case['compile_s_estimate']}", flush=True)


if __name__ == "__main__":
  sys.exit(main())
