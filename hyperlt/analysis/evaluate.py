"""Evaluation on the 11 test-agnostic test sets, for one preference or many at once.

Features do not depend on the preference, and the 11 test sets are index subsets of one balanced test
set, so evaluation is: features of the balanced test set ONCE, then predictions for P preferences in one
compiled call (hypernetwork and heads vmapped over P), then accuracies by indexing. Evaluating 231
preferences costs little more than evaluating one. Both passes are the run's
:class:`~hyperlt.inference.predictor.Predictor` (padding, the post-hoc shift, the "data" mesh).

Results follow ``hyperlt evaluate --json``: ``{"forward50": {"all": a, "many": a, "medium": a, "few": a},
...}``, accuracies as fractions, ``None`` for a group with no images in that test set.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from hyperlt import preference
from hyperlt.analysis import format as fmt
from hyperlt.data import longtail
from hyperlt.inference import predictor as predictor_lib
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir.run import Run

GROUP_NAMES = ("all",) + longtail.SHOT_GROUPS


def accuracy_table(predictions: np.ndarray, labels: np.ndarray, test_sets: dict[str, np.ndarray],
                   groups: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
  """Accuracy by test set and shot group for one preference's predictions [N] on the balanced set."""
  correct = predictions == labels
  table = {}
  for name, idx in test_sets.items():
    row = {"all": float(correct[idx].mean()) if len(idx) else None}
    for group, mask in groups.items():
      members = idx[mask[labels[idx]]]
      row[group] = float(correct[members].mean()) if len(members) else None
    table[name] = row
  return table


def evaluate_alphas(run: Run, alphas: np.ndarray, features: jnp.ndarray | None = None) -> list[dict]:
  """Results for each raw preference in alphas [P, T]: [{"preference": [...], "results": {...}}]."""
  data = run.data
  if features is None:
    features = test_features(run)
  predictions = Predictor.for_run(run).classes(features, alphas)
  return [{"preference": [float(v) for v in alpha],
           "results": accuracy_table(pred, data.test_y, data.test_sets, data.groups)}
          for alpha, pred in zip(np.atleast_2d(alphas), predictions)]


def test_features(run: Run) -> jnp.ndarray:
  """Features [T, N, d] of the balanced test set (split over the run's devices)."""
  return Predictor.for_run(run).features(run.data.test_x)


def default_preference(run: Run) -> np.ndarray:
  """``preference.default`` if set; else the vertex of the "uniform" anchor; else equal weights."""
  t = run.model.num_experts
  if run.config.preference.default:
    return preference.parse(run.config.preference.default, t, "preference.default")
  anchors = list(run.config.loss.anchors)
  if "uniform" in anchors:
    return np.eye(t, dtype=np.float32)[anchors.index("uniform")]
  return np.full((t,), 1.0 / t, np.float32)


def format_table(results: dict[str, dict[str, float | None]], title: str = "") -> str:
  """A fixed-width table of one preference's results, accuracies in percent."""
  lines = [title] if title else []
  lines.append(f"{'test set':<11}" + "".join(f"{g:>8}" for g in GROUP_NAMES))
  for name, row in results.items():
    lines.append(f"{name:<11}" + "".join(f"  {fmt.percent(row[g])}" for g in GROUP_NAMES))
  return "\n".join(lines)


def format_comparison(results: Sequence[dict], labels: Sequence[str]) -> str:
  """Overall accuracy (percent) of several preferences side by side, one row per test set."""
  names = list(results[0]["results"])
  lines = [f"{'test set':<11}" + "".join(f"{l:>12}" for l in labels)]
  for name in names:
    lines.append(f"{name:<11}" + "".join(f"      {fmt.percent(r['results'][name]['all'])}" for r in results))
  means = [np.mean([r["results"][n]["all"] for n in names]) for r in results]
  lines.append(f"{'mean':<11}" + "".join(f"      {fmt.percent(m)}" for m in means))
  return "\n".join(lines)


# Earlier names of the inference path, kept for callers outside the analysis layer (model and method
# tests); new code uses hyperlt.inference.predictor.
_features = predictor_lib._features  # pylint: disable=protected-access


def extract_features(model, params, batch_stats, images, mean, std, batch_size: int = predictor_lib.DEFAULT_BATCH_SIZE,
                     mesh=None) -> jnp.ndarray:
  """Alias of ``Predictor(...).features(images)``."""
  return Predictor(model, params, batch_stats, mean, std, mesh=mesh, batch_size=batch_size).features(images)


def predict_classes(model, params, features: jnp.ndarray, alphas, chunk: int = predictor_lib.DEFAULT_CHUNK,
                    shift: jnp.ndarray | None = None) -> np.ndarray:
  """Alias of ``predictor.predict(..., output="classes")``: predicted classes [P, N]."""
  return np.asarray(predictor_lib.predict(model, params, features, alphas, shift, output="classes", chunk=chunk))
