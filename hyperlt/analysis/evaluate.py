"""Evaluation on the 11 test-agnostic test sets, for one preference or many at once.

Features do not depend on the preference, and the 11 test sets are index subsets of one balanced test
set, so evaluation is: features of the balanced test set ONCE, then predictions for P preferences in one
compiled call (hypernetwork and heads vmapped over P), then accuracies by indexing. Evaluating 231
preferences costs little more than evaluating one. Both passes are the run's
:class:`~hyperlt.inference.predictor.Predictor` (padding, the post-hoc shift, the "data" mesh).

Results follow ``hyperlt evaluate --json``: ``{"forward50": {"all": a, "many": a, "medium": a, "few": a},
...}``, accuracies as fractions, ``None`` for a group with no images in that test set; the command adds
``"counts"`` in the same layout (:func:`image_counts`, the images behind each cell), and the text tables mark
cells of fewer than FEW_IMAGES images.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from hyperlt import preference
from hyperlt.analysis import format as fmt
from hyperlt.data import longtail
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir.run import Run

GROUP_NAMES = ("all",) + longtail.SHOT_GROUPS


# A table cell resting on fewer images than this is marked (its accuracy moves in steps of 20% or more).
FEW_IMAGES = 5
FEW_IMAGES_NOTE = f"* fewer than {FEW_IMAGES} images"


def _cells(labels: np.ndarray, test_sets: dict[str, np.ndarray], groups: dict[str, np.ndarray]):
  """(test set, group, indices into the balanced set) of every table cell, groups in GROUP_NAMES order."""
  for name, idx in test_sets.items():
    yield name, "all", idx
    for group, mask in groups.items():
      yield name, group, idx[mask[labels[idx]]]


def accuracy_table(predictions: np.ndarray, labels: np.ndarray, test_sets: dict[str, np.ndarray],
                   groups: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
  """Accuracy by test set and shot group for one preference's predictions [N] on the balanced set."""
  correct = predictions == labels
  table = {name: {} for name in test_sets}
  for name, group, members in _cells(labels, test_sets, groups):
    table[name][group] = float(correct[members].mean()) if len(members) else None
  return table


def image_counts(run: Run) -> dict[str, dict[str, int]]:
  """Images behind each cell of :func:`accuracy_table`: ``{"forward50": {"all": n, "many": n, ...}, ...}``."""
  data = run.data
  table = {name: {} for name in data.test_sets}
  for name, group, members in _cells(data.test_y, data.test_sets, data.groups):
    table[name][group] = int(len(members))
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


def _row(name: str, cells: Sequence[tuple[float | None, int | None]], gap: int) -> str:
  """A table row: ``name``, then each accuracy in percent after ``gap`` spaces; an accuracy backed by fewer
  than FEW_IMAGES images (but some) gets a "*" that takes one space of the next gap, so the numbers stay
  in their columns and a table without such cells reads as before."""
  text, marked = f"{name:<11}", False
  for value, count in cells:
    text += " " * (gap - marked) + fmt.percent(value)
    marked = count is not None and 0 < count < FEW_IMAGES
    text += "*" if marked else ""
  return text


def _with_note(lines: list[str]) -> str:
  if any(line.endswith("*") or "* " in line for line in lines):
    lines.append(FEW_IMAGES_NOTE)
  return "\n".join(lines)


def format_table(results: dict[str, dict[str, float | None]], title: str = "",
                 counts: dict[str, dict[str, int]] | None = None) -> str:
  """A fixed-width table of one preference's results, accuracies in percent; with ``counts``
  (:func:`image_counts`) a cell backed by fewer than FEW_IMAGES images is marked "*", with a footnote."""
  lines = [title] if title else []
  lines.append(f"{'test set':<11}" + "".join(f"{g:>8}" for g in GROUP_NAMES))
  for name, row in results.items():
    lines.append(_row(name, [(row[g], (counts or {}).get(name, {}).get(g)) for g in GROUP_NAMES], gap=2))
  return _with_note(lines)


def format_comparison(results: Sequence[dict], labels: Sequence[str],
                      counts: dict[str, dict[str, int]] | None = None) -> str:
  """Overall accuracy (percent) of several preferences side by side, one row per test set; with ``counts``
  a test set of fewer than FEW_IMAGES images is marked "*"."""
  names = list(results[0]["results"])
  lines = [f"{'test set':<11}" + "".join(f"{l:>12}" for l in labels)]
  for name in names:
    count = (counts or {}).get(name, {}).get("all")
    lines.append(_row(name, [(r["results"][name]["all"], count) for r in results], gap=6))
  means = [np.mean([r["results"][n]["all"] for n in names]) for r in results]
  lines.append(_row("mean", [(m, None) for m in means], gap=6))
  return _with_note(lines)
