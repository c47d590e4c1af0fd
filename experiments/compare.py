"""Train a list of methods on one recipe and write one comparison table (markdown and CSV).

    python experiments/compare.py --config digits --out experiments/results/digits
    python experiments/compare.py --config cifar_lt:c10,ir100,reduced --seeds 0 \\
        --out experiments/results/cifar10_ir100_reduced data.path=../shared/data/cifar10-jpeg75.npz

Every method is the same config plus ``method=<name>`` (hyperlt.configs.presets). The table is the usual
long-tailed comparison (docs/METHOD-NOTES.md): top-1 accuracy (%) on the 11 test-agnostic test sets, their
mean, and many/medium/few on the uniform set, with a "prior used?" column. Extra rows: hypernetwork models
also at the simplex centre (1,1,1), which, like SADE's mean of logits, weights every expert equally and reads
nothing about the test set; "oracle" rows that evaluate experts at the vertex matching each test set's
direction (forward/uniform/backward), which uses knowledge of the test prior and is marked so; and, with
``--adapt stability,em``, test-time adaptation rows: each multi-expert model adapted separately to each test
set's unlabeled images (hyperlt.analysis.adapt; ``stability`` is SADE's test-time self-supervised
aggregation), marked as reading the unlabeled test images.

Resumable: each (method, seed) result is a JSON file under ``<out>/runs``; methods whose file exists
are not retrained, and an interrupted training resumes from its last checkpoint in ``--workroot``.
Methods whose training configs coincide (``ce`` and ``logit_adjust`` differ only at prediction time)
share one training run. A finished (method, seed) that lacks an adaptation the command asks for is
re-evaluated from its final checkpoint (no training), keeping its recorded training time.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import json
import pathlib
import shlex
import sys
import time

import numpy as np

from hyperlt import configs as config_lib
from hyperlt.analysis import evaluate
from hyperlt.analysis.adapt import core as adapt_core, report as adapt_report
from hyperlt.configs import presets as methods
from hyperlt.data import longtail, pipeline
from hyperlt.models.expert_model import build
from hyperlt.training import loop as train
from hyperlt.workdir.run import Run

DEFAULT_METHODS = ("ce", "balanced_softmax", "logit_adjust", "sade", "balpoe", "ride", "prl", "prl_paper",
                   "prl_code")
# Fields read only at prediction time; runs that differ only here share their training.
PREDICTION_ONLY = (("model", "posthoc_tau"), ("preference", "default"))
ANCHOR_DIRECTIONS = {"forward": "forward", "uniform": "uniform", "backward": "backward"}


def method_config(spec: str, overrides: list[str], method: str, seed: int):
  config = config_lib.load(spec)
  config_lib.override(config, [*overrides, f"method={method}", f"seed={seed}", "train.progress=False"])
  return config_lib.validate(config)


def training_config(config):
  """The config with prediction-only fields reset: what the trained weights depend on."""
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  defaults = base.get_config()
  trained = config_lib.from_dict(config_lib.to_dict(config))
  trained.unlock()
  trained.method = ""
  for section, key in PREDICTION_ONLY:
    trained[section][key] = defaults[section][key]
  trained.train.progress = False
  trained.lock()
  return config_lib.validate(trained)


def config_key(config) -> str:
  return hashlib.sha256(json.dumps(config_lib.to_dict(config), sort_keys=True).encode()).hexdigest()[:12]


def oracle_alphas(run: Run, test_set_names) -> np.ndarray | None:
  """Per test set, the vertex whose anchor matches the set's direction; None if the anchors lack one."""
  anchors = list(run.config.loss.anchors)
  if not all(a in anchors for a in ANCHOR_DIRECTIONS):
    return None
  eye = np.eye(len(anchors), dtype=np.float32)
  return np.stack([eye[anchors.index(next(a for a in ANCHOR_DIRECTIONS if name.startswith(a)))]
                   for name in test_set_names])


def evaluate_method(run: Run, adapt_methods=()) -> dict:
  """Accuracy tables at the default preference and, where defined, at the oracle-matched vertices and
  after test-time adaptation to each test set (``adapt_methods``, for models with several experts)."""
  features = evaluate.test_features(run)
  default = evaluate.evaluate_alphas(run, evaluate.default_preference(run)[None], features)[0]
  out = {"default": default}
  t = run.model.num_experts
  if run.config.model.head == "hyper" and t > 1:
    # The simplex centre: every expert weighted equally, the analogue of SADE's mean of logits.
    out["center"] = evaluate.evaluate_alphas(run, np.full((1, t), 1.0 / t, np.float32), features)[0]
  names = list(run.data.test_sets)
  alphas = oracle_alphas(run, names)
  if alphas is not None:
    per_vertex = evaluate.evaluate_alphas(run, np.unique(alphas, axis=0), features)
    by_pref = {tuple(r["preference"]): r["results"] for r in per_vertex}
    out["oracle"] = {"preference_per_test_set": {n: [float(v) for v in a] for n, a in zip(names, alphas)},
                     "results": {n: by_pref[tuple(float(v) for v in a)][n] for n, a in zip(names, alphas)}}
  if t > 1:
    for method in adapt_methods:
      start = time.perf_counter()
      report = adapt_report.adapt_all_test_sets(run, method, features)
      out[f"adapted_{method}"] = {
          "seconds": time.perf_counter() - start,
          "preference_per_test_set": {n: row["preference"] for n, row in report["test_sets"].items()},
          "results": {n: row["adapted"] for n, row in report["test_sets"].items()}}
  return out


def run_one(spec, overrides, method, seed, workroot: pathlib.Path, data_cache: dict, log,
            adapt_methods=()) -> dict:
  config = method_config(spec, overrides, method, seed)
  trained = training_config(config)
  data_key = json.dumps(config_lib.to_dict(config)["data"], sort_keys=True)
  if data_key not in data_cache:
    data_cache[data_key] = pipeline.prepare(config.data)
  data = data_cache[data_key]
  workdir = workroot / config_key(trained)
  start = time.perf_counter()
  run = train.train(trained, workdir, data=data, log=log)
  seconds = time.perf_counter() - start
  run = dataclasses.replace(run, config=config, model=build(config.model, data.num_classes))
  return {"method": method, "seed": seed, "summary": methods.METHODS[method].summary,
          "uses_test_prior": methods.METHODS[method].uses_test_prior, "workdir": str(workdir),
          "steps": run.step, "train_seconds_this_call": seconds,
          "config": config_lib.to_dict(config), **evaluate_method(run, adapt_methods)}


def _row(results: list[dict], names: list[str]) -> list[float | None]:
  """Mean over seeds: the 11 sets' overall accuracy, their mean, and uniform many/medium/few (percent)."""
  def mean(values):
    values = [v for v in values if v is not None]
    return 100 * float(np.mean(values)) if values else None
  cells = [mean([r[n]["all"] for r in results]) for n in names]
  cells.append(float(np.mean(cells)))
  cells += [mean([r["uniform"][g] for r in results]) for g in longtail.SHOT_GROUPS]
  return cells


def write_tables(records: list[dict], out: pathlib.Path, command: str, seeds: list[int], methods_order):
  names = list(records[0]["default"]["results"])
  header = ["method", "prior used?", "seeds", *names, "mean", *[f"uniform {g}" for g in longtail.SHOT_GROUPS]]
  rows = []
  for method in methods_order:
    mine = [r for r in records if r["method"] == method]
    if not mine:
      continue
    prior = "yes" if mine[0]["uses_test_prior"] else "no"
    rows.append([method, prior, len(mine), *_row([r["default"]["results"] for r in mine], names)])
  for method in methods_order:
    mine = [r for r in records if r["method"] == method and "center" in r]
    if mine:
      rows.append([f"{method}, preference 1,1,1", "no", len(mine),
                   *_row([r["center"]["results"] for r in mine], names)])
  for adapt_method in adapt_core.METHODS:
    for method in methods_order:
      mine = [r for r in records if r["method"] == method and f"adapted_{adapt_method}" in r]
      if mine:
        rows.append([f"{method}, adapted to each test set ({adapt_method})", "unlabeled test images", len(mine),
                     *_row([r[f"adapted_{adapt_method}"]["results"] for r in mine], names)])
  for method in methods_order:
    mine = [r for r in records if r["method"] == method and "oracle" in r]
    if mine:
      rows.append([f"{method}, vertex matched to test set", "direction (oracle)", len(mine),
                   *_row([r["oracle"]["results"] for r in mine], names)])
  with open(out.with_suffix(".csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for row in rows:
      writer.writerow([f"{v:.2f}" if isinstance(v, float) else ("" if v is None else v) for v in row])
  fmt = lambda v: "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
  steps = sorted({r["steps"] for r in records})
  lines = [f"# Comparison: {out.name}", "",
           f"Command (seeds {', '.join(map(str, seeds))}; generated {datetime.date.today().isoformat()}):", "",
           "```", command, "```", "",
           f"Top-1 accuracy (%), mean over the seeds run (column \"seeds\"); {steps} training steps per run. "
           "Columns: the 11 test-agnostic test sets (hyperlt.data.longtail), their mean, and many/medium/few-shot "
           "accuracy on the uniform set. \"prior used?\": whether prediction reads anything about the test set's "
           "class prior (post-hoc logit adjustment uses only the training prior). Each method is evaluated "
           "at its default preference (single models: their one head; static experts: the mean of logits; "
           "PRL: the uniform anchor's vertex). \"adapted to each test set\" rows choose a preference per test "
           "set from its unlabeled images (hyperlt.analysis.adapt; stability = SADE's test-time aggregation, em = "
           "EM estimate of the test prior); labels only score the result.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  lines += ["", "Per-run JSON (full tables, configs, work dirs): `runs/` beside this file.", ""]
  out.with_suffix(".md").write_text("\n".join(lines))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="digits", help="config spec, as for `hyperlt train --config`")
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated preset names")
  parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
  parser.add_argument("--out", required=True, help="table path without suffix (writes .md, .csv, runs/)")
  parser.add_argument("--workroot", default=None, help="training work dirs (default: runs/compare/<out name>)")
  parser.add_argument("--adapt", default="", help="comma-separated test-time adaptation methods "
                      f"({', '.join(adapt_core.METHODS)}) to add as rows for multi-expert models")
  parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every method")
  args = parser.parse_args(argv)
  method_names = [m for m in args.methods.split(",") if m]
  unknown = [m for m in method_names if m not in methods.METHODS]
  if unknown:
    parser.error(f"--methods: unknown {unknown}; expected names from {', '.join(methods.METHODS)}")
  adapt_methods = [m for m in args.adapt.split(",") if m]
  if any(m not in adapt_core.METHODS for m in adapt_methods):
    parser.error(f"--adapt: expected names from {', '.join(adapt_core.METHODS)}, got {args.adapt!r}")
  seeds = [int(s) for s in args.seeds.split(",") if s]
  out = pathlib.Path(args.out)
  runs_dir = out.parent / "runs" / out.name
  runs_dir.mkdir(parents=True, exist_ok=True)
  workroot = pathlib.Path(args.workroot or f"runs/compare/{out.name}")
  command = "python experiments/compare.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
  log = lambda msg: print(msg, flush=True)
  data_cache: dict = {}
  records = []
  for method in method_names:
    for seed in seeds:
      path = runs_dir / f"{method}_seed{seed}.json"
      earlier = json.loads(path.read_text()) if path.exists() else None
      missing = [m for m in adapt_methods if earlier is not None and earlier["config"]["model"]["num_experts"] > 1
                 and f"adapted_{m}" not in earlier]
      if earlier is not None and not missing:
        log(f"[{method} seed {seed}] done before: {path}")
      else:
        log(f"[{method} seed {seed}] " + ("training ..." if earlier is None else f"adding {missing} ..."))
        record = run_one(args.config, args.overrides, method, seed, workroot, data_cache, log, adapt_methods)
        if earlier is not None:
          record["train_seconds_this_call"] = earlier["train_seconds_this_call"]
        path.write_text(json.dumps(record, indent=1))
        uniform = record["default"]["results"]["uniform"]["all"]
        log(f"[{method} seed {seed}] {record['train_seconds_this_call']:.0f} s, uniform {100 * uniform:.2f}%")
      records.append(json.loads(path.read_text()))
      write_tables(records, out, command, seeds, method_names)
  log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
