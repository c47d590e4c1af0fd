"""Adaptation on the labeled test-agnostic test sets, with accuracies: what ``hyperlt adapt`` prints.

The images of the chosen test set are adapted to WITHOUT their labels; labels only score the result.
Each adapted preference is compared with two fixed "uniform" preferences:

* ``default``: the run's default evaluation preference, the vertex of the uniform (Balanced Softmax)
  anchor, (0, 1, 0) for the standard anchors: the expert trained for a uniform test prior;
* ``equal_weights``: (1/T, ..., 1/T), the centre of the simplex, where the stability method starts.

JSON of one test set (``hyperlt adapt --json``) has the keys of ``hyperlt evaluate --json``
("preference", "results": the 11 test sets by shot group at the adapted preference) plus "method",
"test_set", "baselines" (each baseline's preference and its row on the test set) and "adaptation"
(AdaptResult.to_json without the repeated keys).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from hyperlt import progress
from hyperlt.analysis import evaluate
from hyperlt.analysis import format as fmt
from hyperlt.analysis.adapt import core
from hyperlt.data import longtail
from hyperlt.errors import require
from hyperlt.workdir.run import Run

ALL = "all"
BASELINE_NAMES = ("default", "equal_weights")


def baselines(run: Run) -> dict[str, np.ndarray]:
  t = run.model.num_experts
  return {"default": np.asarray(evaluate.default_preference(run), np.float32),
          "equal_weights": np.full((t,), 1.0 / t, np.float32)}


def baseline_label(run: Run, name: str) -> str:
  """Human-readable name of a baseline (the default is named after its anchor when it is a vertex)."""
  if name == "equal_weights":
    return "equal weights"
  alpha = baselines(run)["default"]
  if np.count_nonzero(alpha) == 1:
    return f"{run.config.loss.anchors[int(np.argmax(alpha))]} vertex"
  return "default preference"


def check_test_set(name: str, allow_all: bool = False) -> str:
  names = longtail.TEST_SET_NAMES + ((ALL,) if allow_all else ())
  require(name in names, f"--test-set: expected one of {', '.join(names)}, got {name!r}")
  return name


def _tables(run: Run, features: jnp.ndarray, result: core.AdaptResult) -> dict:
  data = run.data
  predictions = core.predict_classes(run, result, features)
  return evaluate.accuracy_table(predictions, data.test_y, data.test_sets, data.groups)


def _baseline_tables(run: Run, features: jnp.ndarray) -> dict[str, dict]:
  named = baselines(run)
  results = evaluate.evaluate_alphas(run, np.stack(list(named.values())), features)
  return {name: r["results"] for name, r in zip(named, results)}


def adapt_test_set(run: Run, test_set: str, method: str = "stability",
                   features: jnp.ndarray | None = None, **adapt_kwargs: Any) -> dict:
  """Adapts to the images of one test set (labels unused) and scores the result; the CLI's JSON."""
  check_test_set(test_set)
  require(run.data is not None, "run: adapting to a test set needs the run's data (load it with with_data=True)")
  if features is None:
    features = evaluate.test_features(run)
  idx = run.data.test_sets[test_set]
  result = core.adapt(run, run.data.test_x[idx], method, features=features[:, idx], **adapt_kwargs)
  named = baselines(run)
  base_tables = _baseline_tables(run, features)
  details = {k: v for k, v in result.to_json().items() if k not in ("preference", "method")}
  return {"preference": result.to_json()["preference"], "method": method, "test_set": test_set,
          "results": _tables(run, features, result),
          "baselines": {name: {"preference": [float(v) for v in named[name]],
                               "results": {test_set: base_tables[name][test_set]}} for name in named},
          "adaptation": details}


def _max_mismatch_rise(result: core.AdaptResult) -> float | None:
  """stability: the largest rise of the guard's prior mismatch over the accepted epochs (how close the
  guard came to stopping); None for em."""
  mismatches = [r["prior_mismatch"] for r in result.trace
                if r.get("prior_mismatch") is not None and not r.get("rejected")]
  return max(m - mismatches[0] for m in mismatches) if mismatches else None


def adapt_all_test_sets(run: Run, method: str = "stability", features: jnp.ndarray | None = None,
                        **adapt_kwargs: Any) -> dict:
  """Adapts separately to each of the 11 test sets and compares with the baselines on that set.

  Returns ``{"method", "baseline_preferences", "test_sets": {name: {"preference", "stop_reason",
  "max_mismatch_rise", "adapted": row, "<baseline>": row}}, "mean": {"adapted": a, "<baseline>": a}}``
  with rows ``{"all", "many", "medium", "few"}``.
  """
  require(run.data is not None, "run: adapting to the test sets needs the run's data (load it with with_data=True)")
  if features is None:
    features = evaluate.test_features(run)
  base_tables = _baseline_tables(run, features)
  out = {}
  for name, idx in progress.bar(run.data.test_sets.items(), total=len(run.data.test_sets),
                                desc=f"adapt ({method}) per test set", unit="set", leave=True):
    result = core.adapt(run, run.data.test_x[idx], method, features=features[:, idx], **adapt_kwargs)
    out[name] = {"preference": result.to_json()["preference"], "stop_reason": result.stop_reason,
                 "max_mismatch_rise": _max_mismatch_rise(result),
                 "adapted": _tables(run, features, result)[name],
                 **{b: base_tables[b][name] for b in BASELINE_NAMES}}
  means = {key: float(np.mean([row[key]["all"] for row in out.values()])) for key in ("adapted",) + BASELINE_NAMES}
  return {"method": method, "baseline_preferences": {k: [float(v) for v in a] for k, a in baselines(run).items()},
          "test_sets": out, "mean": means}


def format_test_set(run: Run, report: dict, workdir: str) -> str:
  """Text of one test set's adaptation (the default output of ``hyperlt adapt``)."""
  info = report["adaptation"]
  name = report["test_set"]
  anchors = ", ".join(run.config.loss.anchors)
  lines = [f"Adapted preference ({report['method']}, {info['num_images']} unlabeled images of {name}; experts "
           f"{anchors}): {fmt.preference(report['preference'])}",
           f"  stopped by: {info['stop_reason']}; estimated test prior (EM): "
           f"{' '.join(f'{v:.3f}' for v in info['estimated_prior'])}"]
  if info["logit_adjustment"] is not None:
    lines.append("  logits adjusted by log(estimated prior / reference prior); evaluate, sweep and predict use "
                 "the preference only")
  rows = [(f"adapted {fmt.preference(report['preference'])}", report["results"][name])]
  for base, entry in report["baselines"].items():
    rows.append((f"{baseline_label(run, base)} {fmt.preference(entry['preference'])}", entry["results"][name]))
  width = max(len(label) for label, _ in rows) + 2
  lines += ["", f"Accuracy (%) on {name} (labels used only for this table):",
            f"{'':<{width}}" + "".join(f"{g:>8}" for g in evaluate.GROUP_NAMES)]
  for label, row in rows:
    lines.append(f"{label:<{width}}" + "".join(f"  {fmt.percent(row[g])}" for g in evaluate.GROUP_NAMES))
  lines.append(f"\nAll 11 test sets at this preference: hyperlt evaluate --workdir {workdir} --preference "
               f"{fmt.preference(report['preference'])}")
  return "\n".join(lines)


def format_all(run: Run, report: dict) -> str:
  """Text of ``hyperlt adapt --test-set all``: one adaptation per test set, against the baselines."""
  labels = [baseline_label(run, b) for b in BASELINE_NAMES]
  lines = [f"Overall accuracy (%) after adapting ({report['method']}) to each test set's unlabeled images:",
           f"{'test set':<11}{'adapted preference':>24}{'adapted':>10}" + "".join(f"{l:>16}" for l in labels)]
  for name, row in report["test_sets"].items():
    lines.append(f"{name:<11}{fmt.preference(row['preference']):>24}    {fmt.percent(row['adapted']['all'])}"
                 + "".join(f"          {fmt.percent(row[b]['all'])}" for b in BASELINE_NAMES))
  mean = report["mean"]
  lines.append(f"{'mean':<11}{'':>24}    {fmt.percent(mean['adapted'])}"
               + "".join(f"          {fmt.percent(mean[b])}" for b in BASELINE_NAMES))
  return "\n".join(lines)
