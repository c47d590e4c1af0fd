"""The whole GPU measurement of hyperlt in one call, each phase within its own time budget.

Made for one short window on an H100/H200 (``benchmarks/gpu.sh`` wraps it: carried wheels, environment,
an overall timeout). Phases, in order; after each one the JSON is rewritten, so a run cut short still
returns every finished phase:

1. ``steps``: the training step of the published CIFAR-10-LT IR100 recipe (``cifar_lt:c10,ir100``:
   ResNet-32, 3 experts on SADE's split, batch 128, crop/flip/rotation in the step) on the carried
   subset, for each expert form (``model.experts=vmap`` and ``unrolled``) in float32 and bfloat16
   (``model.dtype=bfloat16``), and with 1 expert (T = 1, the default form); compiled first, then timed
   in alternating rounds. Figures: step times, images/s, bf16 and vmap speed-ups, T=3 over T=1; on the
   GPU also the ``map`` form, ``model.conv=chunked`` and 2 steps per compiled call (:data:`GPU_EXTRAS`).
2. ``train``: the recipe, in the fastest expert form (and convolution formulation) phase 1 measured,
   trained on the subset for as many epochs as fit the phase's budget (estimated
   from the measured step; the 200-epoch schedule compressed to E epochs when E < 200: warm-up 5/200 and
   milestones at 160/200 and 180/200 of E), then its accuracy, its epoch time and the 200-epoch time
   extrapolated from the steady epochs.
3. ``eval_sweep``: on the trained run: evaluation images/s (the feature pass of ``hyperlt evaluate``)
   and a 231-preference ``hyperlt sweep`` over a single-preference ``hyperlt evaluate``.
4. ``official``: the official SADE/PRL PyTorch code's step, inference and sweeps against hyperlt's on
   the same GPU (bench_official.measure, augmentation excluded on both sides), when their checkouts
   were carried (benchmarks/.official/SADE-AgnosticLT, benchmarks/.official/PRL) and PyTorch is there.
   Last, so that PyTorch starting beside JAX in the same process cannot cost the other phases.

``--cpu``: the same phases with tiny sizes (1-block ResNet, batch 32, a synthetic long-tailed .npz,
2 epochs, 1 round, XLA backend optimisation off) in under a minute on 2 cores; the test suite runs it
(tests/benchmarks/test_gpu_script.py), so the GPU command cannot rot between GPU sessions.

    bash benchmarks/gpu.sh                       # on the GPU machine; JSON to $OUT (or benchmarks/results)
    python benchmarks/gpu_run.py --cpu --out /tmp/gpu_cpu
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RECIPE = "cifar_lt:c10,ir100"
DEFAULT_SUBSET = HERE / ".carry" / "cifar10_lt_ir100.npz"
OFFICIAL_DIRS = {"sade": HERE / ".official" / "SADE-AgnosticLT", "prl": HERE / ".official" / "PRL"}
FORMS = ("vmap", "unrolled")
DTYPES = ("float32", "bfloat16")
# On the GPU also: the lax.map form, the chunked convolution gradients (model.conv=chunked, built for
# XLA:CPU, not yet measured on a GPU) and 2 steps per compiled call (loop.make_multi_step), each in the
# default form, float32; last in the order, so that a tight budget drops them first.
GPU_EXTRAS = {"map_float32": ("model.experts=map",), "default_chunked": ("model.conv=chunked",),
              "default_k2": ()}
STEPS_PER_CALL = {"default_k2": 2}
PUBLISHED_EPOCHS = 200

# Sizes and budgets (seconds) per mode. The GPU budgets add up to about 7 minutes with start-up.
MODES = {
    "gpu": {"rounds": 5, "steps": 20, "budget": {"steps": 180, "official": 75, "train": 300, "eval_sweep": 45},
            "total": 430, "overrides": (), "max_epochs": PUBLISHED_EPOCHS, "eval_repeats": 3,
            "official": {"rounds": 5, "steps": 20, "eval_batch": 1000, "sweep_images": 1000, "sweep_rounds": 2}},
    "cpu": {"rounds": 1, "steps": 2, "budget": {"steps": 120, "official": 120, "train": 120, "eval_sweep": 60},
            "total": 600, "overrides": ("model.stage_sizes=(1,1,1)", "model.widths=(16,16,16)",
                                        "model.hyper_hidden=(32,)", "optim.batch_size=32",
                                        "train.eval_batch_size=64"),
            "max_epochs": 2, "eval_repeats": 1,
            "official": {"rounds": 1, "steps": 1, "eval_batch": 64, "sweep_images": 16, "sweep_rounds": 1}},
}


class Interrupted(Exception):
  """SIGTERM (the wrapper's timeout): the phase in progress stops and the JSON is written."""


def _on_sigterm(signum, frame):  # pylint: disable=unused-argument
  raise Interrupted("terminated (SIGTERM, most likely the overall timeout)")


# ------------------------------------------------------------------------------------------ report


class Report:
  """The one JSON file of the run, rewritten (atomically) after every phase."""

  def __init__(self, path: pathlib.Path, mode: str):
    self.path = path
    self.start = time.perf_counter()
    self.data = {"mode": mode, "status": "running", "command": " ".join(shlex.quote(a) for a in sys.argv),
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "phases": {}, "figures": {}}

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def write(self) -> None:
    self.data["elapsed_s"] = round(self.elapsed(), 2)
    self.data["host"]["load_average_now"] = list(os.getloadavg())
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(self.data), indent=2) + "\n")
    os.replace(tmp, self.path)

  def phase(self, name: str, budget: float, fn, *args) -> dict:
    """Runs ``fn(deadline, *args) -> dict`` as phase ``name``; records its status, seconds and result."""
    started = time.perf_counter()
    entry = {"status": "running", "budget_s": budget}
    self.data["phases"][name] = entry
    print(f"[{self.elapsed():6.1f}s] phase {name} (budget {budget:.0f}s)", flush=True)
    try:
      entry.update(fn(started + budget, *args) or {})
      if entry["status"] == "running":
        entry["status"] = "done"
    except Interrupted as e:
      entry.update(status="interrupted", error=str(e))
      self._finish(entry, started)
      raise
    except Exception as e:  # pylint: disable=broad-except
      entry.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
      print(entry["traceback"], file=sys.stderr, flush=True)
    self._finish(entry, started)
    return entry

  def _finish(self, entry: dict, started: float) -> None:
    entry["seconds"] = round(time.perf_counter() - started, 2)
    print(f"[{self.elapsed():6.1f}s]   -> {entry['status']} in {entry['seconds']}s", flush=True)
    self.write()


def _clean(value):
  """JSON-safe: numpy scalars to Python, non-finite floats to None."""
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(float(value)) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def interleave(fns: dict, rounds: int, deadline: float) -> dict:
  """Each callable once per round, order rotated per round; no round starts after ``deadline`` (one
  always runs)."""
  names = list(fns)
  samples = {n: [] for n in names}
  for r in range(rounds):
    if r and time.perf_counter() > deadline:
      break
    for n in names[r % len(names):] + names[:r % len(names)]:
      samples[n].append(fns[n]())
  return samples


def paired(numerator: list, denominator: list) -> float:
  """Median over rounds of numerator / denominator measured in the same round."""
  return statistics.median(a / b for a, b in zip(numerator, denominator))


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


# ---------------------------------------------------------------------------------------- environment


def gpu_info() -> list[dict]:
  """nvidia-smi's view of the GPUs (empty where there is none)."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  keys = ("name", "memory_total", "driver", "max_sm_clock")
  return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines() if line]


def environment(hyperlt) -> dict:
  import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import importlib.metadata  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  versions = hyperlt.versions()
  versions["python"] = platform.python_version()
  try:  # not imported here: PyTorch starts only in the official phase, after JAX has the GPU
    versions["torch"] = importlib.metadata.version("torch")
  except importlib.metadata.PackageNotFoundError:
    versions["torch"] = None
  devices = jax.devices()
  return {"device": {"platform": jax.default_backend(), "kind": devices[0].device_kind, "count": len(devices),
                     "nvidia_smi": gpu_info()},
          "versions": versions}


def tiny_npz(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """A balanced random 10-class 32x32 .npz (100 training, 10 test images per class) for --cpu."""
  rng = np.random.default_rng(seed)
  y_train, y_test = np.repeat(np.arange(10), 100), np.repeat(np.arange(10), 10)
  np.savez(path, x_train=rng.integers(0, 256, (len(y_train), 32, 32, 3), dtype=np.uint8), y_train=y_train,
           x_test=rng.integers(0, 256, (len(y_test), 32, 32, 3), dtype=np.uint8), y_test=y_test)
  return path


# -------------------------------------------------------------------------------------------- phases


class Context:
  """What the phases share: the adapter, the mode, the data and the step of the default form."""

  def __init__(self, hyperlt, mode: str, settings: dict, data_overrides: list[str], report: Report):
    self.hyperlt, self.mode, self.settings, self.report = hyperlt, mode, settings, report
    self.overrides = [*settings["overrides"], *data_overrides]
    self.data = hyperlt.prepare_data(hyperlt.config(RECIPE, self.overrides))
    self.default_step = None      # the TrainStep of the default form, float32, T = 3
    self.default_step_s = None    # its median step time
    self.default_compile_s = None
    self.run = None               # the trained run of phase "train"
    self.train_overrides = ()     # the fastest form phase "steps" measured, for phase "train"

  def config(self, *extra: str):
    return self.hyperlt.config(RECIPE, [*self.overrides, *extra])


def phase_steps(deadline: float, ctx: Context) -> dict:
  """Step time of each expert form and dtype, and of 1 expert, in alternating rounds."""
  h, s = ctx.hyperlt, ctx.settings
  default_form = h.expert_form(ctx.config())
  # The default form in float32 first (what training uses), then T = 1 (for T=3 over T=1), then the rest:
  # if compilation eats the budget, the variants left out are the least needed.
  forms = {f"{form}_{dtype}": (f"model.experts={form}", f"model.dtype={dtype}") for dtype in DTYPES for form in FORMS}
  default = f"{default_form}_float32"
  variants = {default: forms.pop(default), "t1": ("model.num_experts=1", "loss.anchors=uniform"),
              **dict(sorted(forms.items(), key=lambda kv: (not kv[0].startswith(default_form), kv[0])))}
  if ctx.mode == "gpu":
    # The default form first: map_float32's own model.experts=map overrides it.
    variants.update({n: (f"model.experts={default_form}", *v) for n, v in GPU_EXTRAS.items()})
  data = ctx.data
  steps, compile_s, skipped = {}, {}, []
  for name, extra in variants.items():
    if steps and time.perf_counter() > deadline:
      skipped.append(name)
      continue
    start = time.perf_counter()
    step = h.TrainStep(ctx.config(*extra), data.train_x, data.train_y, data.num_classes,
                       steps_per_call=STEPS_PER_CALL.get(name, 1))
    step.run(1)
    compile_s[name] = time.perf_counter() - start
    step.run(1)
    steps[name] = step
    print(f"    compiled {name} in {compile_s[name]:.1f}s", flush=True)
  samples = interleave({n: (lambda st=st: st.run(s["steps"])) for n, st in steps.items()}, s["rounds"], deadline)
  median = {n: statistics.median(v) for n, v in samples.items()}
  batch = ctx.config().optim.batch_size
  figures = {"step_seconds": median, "train_images_per_s": {n: batch / t for n, t in median.items()}}
  figures["bf16_speedup"] = {f: paired(samples[f"{f}_float32"], samples[f"{f}_bfloat16"])
                             for f in FORMS if f"{f}_float32" in samples and f"{f}_bfloat16" in samples}
  figures["vmap_speedup_over_unrolled"] = {d: paired(samples[f"unrolled_{d}"], samples[f"vmap_{d}"])
                                           for d in DTYPES if f"unrolled_{d}" in samples and f"vmap_{d}" in samples}
  if default in samples and "t1" in samples:
    figures["t3_over_t1"] = paired(samples[default], samples["t1"])
  for name, figure in (("map_float32", "map_speedup_over_default"), ("default_chunked", "chunked_speedup"),
                       ("default_k2", "steps_per_call_2_speedup")):
    if name in samples and default in samples:
      figures[figure] = paired(samples[default], samples[name])
  # What training then runs: the fastest T = 3 float32 variant of one step per call.
  trainable = {n: t for n, t in median.items() if n.endswith("_float32") or n == "default_chunked"}
  fastest = min(trainable, key=trainable.get) if trainable else default
  conv_impl = "chunked" if fastest == "default_chunked" else ("xla" if ctx.mode == "gpu" else "auto")
  ctx.train_overrides = (f"model.experts={default_form if fastest.startswith('default') else fastest.split('_')[0]}",
                         f"model.conv={conv_impl}")
  figures["train_form"] = " ".join(ctx.train_overrides)
  flops = {}
  if default in steps and "t1" in steps and time.perf_counter() < deadline:
    flops = {n: steps[n].flops() for n in (default, "t1")}
    if flops[default] and flops["t1"]:
      figures["t3_over_t1_flops"] = flops[default] / flops["t1"]
  if default in steps:
    ctx.default_step, ctx.default_step_s, ctx.default_compile_s = steps[default], median[default], compile_s[default]
  ctx.report.data["figures"].update(figures)
  return {"default_form": default_form, "compile_seconds": compile_s, "samples_seconds": samples,
          "losses_finite": {n: bool(np.isfinite(st.last_loss())) for n, st in steps.items()},
          "step_flops": flops, "skipped_for_budget": skipped, "rounds_run": len(next(iter(samples.values()), [])),
          "steps_per_sample": s["steps"], "batch": batch, **({"status": "partial"} if skipped else {})}


def phase_official(deadline: float, ctx: Context, dirs: dict) -> dict:
  """bench_official.measure on this machine's accelerator (augmentation excluded on both sides)."""
  present = {k: d for k, d in dirs.items() if (pathlib.Path(d) / "model").is_dir()}
  if not present:
    return {"status": "skipped", "reason": f"no official checkout among {[str(d) for d in dirs.values()]}"}
  if importlib.util.find_spec("torch") is None:
    return {"status": "skipped", "reason": "PyTorch is not installed here"}
  import bench_official  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  o = ctx.settings["official"]
  data = ctx.data
  setup = bench_official.Setup(recipe=RECIPE, overrides=tuple(ctx.overrides), rounds=o["rounds"], steps=o["steps"],
                               eval_images=len(data.test_y), eval_batch=o["eval_batch"],
                               sweep_images=o["sweep_images"], sweep_rounds=o["sweep_rounds"])
  result = bench_official.measure(setup, present, images=data.train_x, labels=np.asarray(data.train_y),
                                  test_images=data.test_x, deadline=deadline,
                                  log=lambda m: print(f"    {m}", flush=True))
  ctx.report.data["figures"].update({f"official_{k}": r["median"] for k, r in result["ratios"].items()})
  ctx.report.data["figures"]["official_images_per_s"] = result["images_per_s"]
  return result


def compressed_schedule(epochs: int) -> list[str]:
  """The recipe's 200-epoch schedule for ``epochs`` epochs: warm-up 5/200 of them, milestones at
  160/200 and 180/200 (none below 3 epochs)."""
  if epochs >= PUBLISHED_EPOCHS:
    return [f"optim.epochs={epochs}"]
  warmup = int(round(5 * epochs / PUBLISHED_EPOCHS))
  milestones = sorted({m for m in (int(0.8 * epochs), int(0.9 * epochs)) if 0 < m < epochs}) if epochs >= 3 else []
  return [f"optim.epochs={epochs}", f"optim.warmup_epochs={warmup}", f"optim.milestones={tuple(milestones)}"]


def phase_train(deadline: float, ctx: Context) -> dict:
  """Trains the recipe for as many epochs as fit before ``deadline``; accuracy and epoch times."""
  h, s = ctx.hyperlt, ctx.settings
  batch = ctx.config().optim.batch_size
  steps_per_epoch = len(ctx.data.train_y) // batch
  budget = deadline - time.perf_counter()
  if ctx.default_step_s:
    epoch_estimate = 1.15 * ctx.default_step_s * steps_per_epoch
    fixed = 1.3 * (ctx.default_compile_s or 0.0) + 10.0   # compilation, initialisation, the final checkpoint
    epochs = int(min(s["max_epochs"], (budget - fixed) // epoch_estimate))
    if epochs < 1:
      return {"status": "skipped", "reason": f"one epoch (about {epoch_estimate + fixed:.0f}s with compilation) "
                                             f"does not fit the {budget:.0f}s left"}
  else:
    epoch_estimate, epochs = None, 1
  schedule = compressed_schedule(epochs)
  # The form is named, so that training does not time the candidates again (hyperlt.training.autotune).
  extra = [*ctx.train_overrides, *schedule, f"train.log_every_steps={steps_per_epoch}",
           f"train.checkpoint_every_epochs={epochs}"]
  c = ctx.config(*extra)
  print(f"    {epochs} epoch(s) of {steps_per_epoch} steps (estimated {epoch_estimate or float('nan'):.2f}s each)",
        flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    ctx.run = h.train(c, workdir, data=ctx.data)
    wall = time.perf_counter() - start
    epoch_s = h.epoch_seconds(workdir, steps_per_epoch * batch)
  steady = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else (epoch_s[0] if epoch_s else wall)
  results = h.evaluate_preference(ctx.run, h.default_preference(ctx.run))
  accuracies = [r["all"] for r in results.values() if r["all"] is not None]
  figures = {"train_epochs": epochs, "train_accuracy_uniform": results["uniform"]["all"],
             "train_mean_accuracy_11": float(np.mean(accuracies)), "train_epoch_seconds": steady,
             "train_200_epochs_minutes_extrapolated": PUBLISHED_EPOCHS * steady / 60,
             "train_wall_seconds": wall}
  ctx.report.data["figures"].update(figures)
  return {"recipe": RECIPE, "overrides": [*ctx.overrides, *extra], "epochs": epochs,
          "schedule": "published (200 epochs)" if epochs >= PUBLISHED_EPOCHS else
                      f"200-epoch schedule compressed to {epochs} epochs", "steps_per_epoch": steps_per_epoch,
          "epoch_seconds": epoch_s, "epoch_seconds_estimated": epoch_estimate,
          "first_epoch_includes_compile": True, "accuracy": results,
          "preference": [float(v) for v in h.default_preference(ctx.run)], **figures}


def phase_eval_sweep(deadline: float, ctx: Context) -> dict:
  """Evaluation images/s and a 231-preference sweep over a single-preference evaluation, on the run."""
  h, s = ctx.hyperlt, ctx.settings
  if ctx.run is None:
    return {"status": "skipped", "reason": "no trained run (phase train did not finish)"}
  run, alpha = ctx.run, h.default_preference(ctx.run)
  n = h.num_test_images(run)
  fns = {"features": lambda: timed(lambda: h.test_features(run)),
         "evaluate": lambda: timed(lambda: h.evaluate_preference(run, alpha)),
         "sweep231": lambda: timed(lambda: h.sweep(run, 0.05))}
  first = {k: fn() for k, fn in fns.items()}   # compilation included
  for fn in fns.values():
    fn()
  samples = interleave(fns, s["eval_repeats"], deadline)
  median = {k: statistics.median(v) for k, v in samples.items()}
  figures = {"eval_images_per_s": n / median["features"],
             "evaluate_images_per_s": n / median["evaluate"],
             "sweep231_over_single": paired(samples["sweep231"], samples["evaluate"])}
  ctx.report.data["figures"].update(figures)
  return {"test_images": n, "first_call_seconds": first, "samples_seconds": samples, "median_seconds": median,
          **figures}


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (the test suite's mode)")
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results", help="directory of the JSON")
  parser.add_argument("--name", default=None, help="JSON file name without .json (default gpu_run_<mode>)")
  parser.add_argument("--data", type=pathlib.Path, default=None,
                      help=f"CIFAR-10-LT subset from make_subset.py (default {DEFAULT_SUBSET.relative_to(REPO_ROOT)}; "
                           "--cpu: a synthetic one)")
  parser.add_argument("--sade-dir", type=pathlib.Path, default=None, help="official SADE checkout")
  parser.add_argument("--prl-dir", type=pathlib.Path, default=None, help="official PRL checkout")
  parser.add_argument("--total-budget", type=float, default=None, help="seconds for all phases")
  parser.add_argument("--compile-cache", default="", help="JAX persistent compilation cache directory")
  args = parser.parse_args(argv)
  mode = "cpu" if args.cpu else "gpu"
  settings = MODES[mode]
  if mode == "cpu":
    # The CPU mode only walks the phases: compile without backend optimisation (a third faster to build).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  signal.signal(signal.SIGTERM, _on_sigterm)
  sys.path.insert(0, str(HERE))
  import hyperlt_adapter as hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  if args.compile_cache:
    import jax  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    jax.config.update("jax_compilation_cache_dir", args.compile_cache)

  report = Report(args.out / f"{args.name or 'gpu_run_' + mode}.json", mode)
  report.data["host"] = {"cpus": os.cpu_count(), "machine": platform.machine(),
                         "load_average_at_start": list(os.getloadavg())}
  report.data["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  total = args.total_budget or settings["total"]
  deadline = time.perf_counter() + total
  tmp = tempfile.TemporaryDirectory()
  status = "complete"
  try:
    report.data.update(environment(hyperlt))
    if args.data is not None:
      data_path, data_overrides = args.data, []
    elif mode == "cpu":
      data_path, data_overrides = tiny_npz(pathlib.Path(tmp.name) / "tiny.npz"), ["data.imbalance_ratio=10"]
    else:
      data_path = DEFAULT_SUBSET
    if mode == "gpu" or args.data is not None:
      if not data_path.exists():
        raise SystemExit(f"gpu_run: {data_path} not found; make it with python benchmarks/make_subset.py")
      with np.load(data_path) as z:
        head = int(np.bincount(z["y_train"]).max())
      # The subset holds exactly the recipe's long-tailed training set: keep all of it.
      data_overrides = [f"data.n_max={head}"]
    report.data["data"] = {"path": str(data_path), "overrides": data_overrides}
    ctx = Context(hyperlt, mode, settings, [f"data.path={data_path}", *data_overrides], report)
    report.data["data"].update({"train_images": len(ctx.data.train_y), "test_images": len(ctx.data.test_y),
                                "classes": ctx.data.num_classes})
    report.write()
    budget = settings["budget"]
    left = lambda reserve=0.0: max(deadline - time.perf_counter() - reserve, 1.0)
    dirs = {k: d for k, d in (("sade", args.sade_dir), ("prl", args.prl_dir)) if d}
    if not dirs and mode == "gpu":   # the carried checkouts, where they are
      dirs = {k: d for k, d in OFFICIAL_DIRS.items() if (d / "model").is_dir()}
    # PyTorch comes last: it shares the process (and the GPU) with JAX, and whatever goes wrong there
    # cannot cost the phases before it.
    official_reserve = budget["official"] if dirs else 0.0
    report.phase("steps", min(budget["steps"], left()), phase_steps, ctx)
    report.phase("train", min(budget["train"], left(budget["eval_sweep"] + official_reserve)), phase_train, ctx)
    report.phase("eval_sweep", min(budget["eval_sweep"], left(official_reserve)), phase_eval_sweep, ctx)
    if dirs:
      report.phase("official", min(budget["official"], left()), phase_official, ctx, dirs)
    else:
      where = "--sade-dir/--prl-dir" if mode == "cpu" else "benchmarks/.official (setup_official.sh, then carry it)"
      report.data["phases"]["official"] = {"status": "skipped", "reason": f"no official checkout: {where}"}
  except Interrupted:
    status = "interrupted"
  except BaseException:
    status = "failed"
    report.data["error"] = traceback.format_exc(limit=8)
    raise
  finally:
    report.data["status"] = status
    report.data["host"]["load_average_at_end"] = list(os.getloadavg())
    report.write()
    tmp.cleanup()
    print(f"wrote {report.path} ({status})", flush=True)
  print(json.dumps(_clean(report.data["figures"]), indent=2))
  return 0 if status == "complete" else 1


if __name__ == "__main__":
  sys.exit(main())
