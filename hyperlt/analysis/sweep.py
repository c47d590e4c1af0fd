"""Preference sweeps: every point of a simplex grid on every test set, in one pass.

A sweep is ``hyperlt evaluate`` with P preferences instead of one, on the same data path:

    test images --features, ONCE--> [T, N, d]
    grid alphas [P, T] --(hypernetwork, heads, combine; vmapped over P)--> classes [P, N], confidences [P, N]
    index subsets (11 test sets, shot groups, optional extra suites) --> metrics [P, S, ...]

The preferences are a batch axis of one compiled call (``Predictor.classes``); nothing loops over
them in Python, and the metrics are computed for all P at once per test set. The accuracy tables equal
``hyperlt evaluate --json`` for every grid point (tests/analysis/test_sweep.py checks this).

Metrics per preference p and test set S (indices into the balanced test set):

* accuracy of all images and of the many / medium / few-shot classes (as ``evaluate``);
* balanced accuracy: mean per-class recall over the classes present in S;
* expected calibration error of the confidences ``max_k softmax(z + shift)_k`` (hyperlt.analysis.metrics);
* per-class recall on the whole balanced test set ([P, K]).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from typing import Sequence

import numpy as np

from hyperlt import preference, progress
from hyperlt.analysis import evaluate
from hyperlt.analysis import format as fmt
from hyperlt.analysis import metrics
from hyperlt.data import suites as suites_lib
from hyperlt.errors import require
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir.run import Run

GROUP_NAMES = evaluate.GROUP_NAMES
STANDARD = "standard"
DEFAULT_STEP = 0.1
# Every file a sweep may write into its folder: write()'s tables, then hyperlt.analysis.plots' figures.
OUTPUT_FILES = ("sweep.json", "sweep.csv", "per_class_recall.csv", "simplex.png", "pareto.png", "anchors.png")


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """The metrics of P preferences on S test sets (the 11 standard sets first, then any extra suites)."""

  preferences: np.ndarray        # [P, T] raw preferences, each summing to 1
  anchors: tuple[str, ...]       # the anchor (vertex) name of each expert
  class_names: tuple[str, ...]
  set_names: tuple[str, ...]     # [S]
  set_suites: tuple[str, ...]    # [S] "standard", "partial" or "dirichlet"
  set_sizes: np.ndarray          # [S] images per test set
  accuracy: np.ndarray           # [P, S, 4] by GROUP_NAMES; NaN where a set has no image of that group
  balanced_accuracy: np.ndarray  # [P, S]
  ece: np.ndarray                # [P, S]
  recall: np.ndarray             # [P, K] per-class recall on the whole balanced test set
  ece_bins: int = metrics.DEFAULT_ECE_BINS

  @property
  def num_preferences(self) -> int:
    return len(self.preferences)

  def set_index(self, name: str) -> int:
    require(name in self.set_names, f"test set {name!r} is not in this sweep; it has: {', '.join(self.set_names)}")
    return self.set_names.index(name)

  def column(self, set_name: str, group: str = "all") -> np.ndarray:
    """Accuracy [P] of every preference on one test set and shot group."""
    require(group in GROUP_NAMES, f"group: expected one of {GROUP_NAMES}, got {group!r}")
    return self.accuracy[:, self.set_index(set_name), GROUP_NAMES.index(group)]

  def vertex_indices(self) -> list[int | None]:
    """For each expert j, the index of the preference e_j in the sweep (None if not on the grid)."""
    out = []
    for j in range(self.preferences.shape[1]):
      hit = np.flatnonzero(np.all(np.isclose(self.preferences, np.eye(self.preferences.shape[1])[j]), axis=1))
      out.append(int(hit[0]) if len(hit) else None)
    return out

  def _table(self, p: int, suite_filter) -> dict[str, dict[str, float | None]]:
    return {name: {g: _json_number(self.accuracy[p, s, k]) for k, g in enumerate(GROUP_NAMES)}
            for s, name in enumerate(self.set_names) if suite_filter(self.set_suites[s])}

  def items(self) -> list[dict]:
    """One object per preference: ``{"preference": [...], "results": {...}}``, "results" exactly as
    ``hyperlt evaluate --json`` prints it; plus ``"suites": {...}`` (same row format) when the sweep has
    extra suites."""
    extra = any(s != STANDARD for s in self.set_suites)
    out = []
    for p, alpha in enumerate(self.preferences):
      item = {"preference": [float(v) for v in alpha], "results": self._table(p, lambda s: s == STANDARD)}
      if extra:
        item["suites"] = self._table(p, lambda s: s != STANDARD)
      out.append(item)
    return out


def _json_number(v: float) -> float | None:
  return None if np.isnan(v) else float(v)


def _set_metrics(correct: np.ndarray, confidences: np.ndarray, classes: np.ndarray, labels: np.ndarray,
                 idx: np.ndarray, groups: dict[str, np.ndarray], num_classes: int, ece_bins: int):
  """Accuracy [P, 4], balanced accuracy [P] and ECE [P] of every preference on the images ``idx``."""
  p = correct.shape[0]
  acc = np.full((p, len(GROUP_NAMES)), np.nan)
  if len(idx) == 0:
    return acc, np.full(p, np.nan), np.full(p, np.nan)
  # Same reductions as evaluate.accuracy_table (mean of a boolean selection), so the numbers are equal.
  acc[:, 0] = correct[:, idx].mean(axis=1)
  for k, group in enumerate(GROUP_NAMES[1:], start=1):
    members = idx[groups[group][labels[idx]]]
    if len(members):
      acc[:, k] = correct[:, members].mean(axis=1)
  recall = metrics.per_class_recall(classes[:, idx], labels[idx], num_classes)
  ece = metrics.expected_calibration_error(confidences[:, idx], correct[:, idx], ece_bins)
  return acc, metrics.balanced_accuracy(recall), ece


def check_alphas(alphas: np.ndarray | Sequence[Sequence[float]], num_experts: int) -> np.ndarray:
  """Raw preferences [P, T] validated row by row (preference.parse), each normalised to sum 1."""
  rows = np.asarray(alphas, dtype=np.float64)
  require(rows.ndim == 2 and len(rows) >= 1,
          f"alphas: expected a [P, {num_experts}] array of preferences, got shape {rows.shape}")
  return np.stack([preference.parse(row, num_experts, f"alphas[{i}]") for i, row in enumerate(rows)])


def check_grid(run_model, num_classes: int, num_images: int, step: float, field: str = "step") -> int:
  """Points of the sweep grid of ``step`` (preference.check_grid), bounded by what scoring them on
  ``num_images`` images keeps in memory: per point, the classes, confidences and hits of every image
  (9 bytes each), a chunk of logits with two temporaries (Predictor's column chunks, float32) and the
  point's generated heads [T, d, K]."""
  from hyperlt.inference.predictor import DEFAULT_CHUNK  # pylint: disable=g-import-not-at-top
  t = run_model.num_experts
  per_point = (9 * num_images + 12 * min(num_images, DEFAULT_CHUNK) * num_classes
               + 4 * t * run_model.feature_dim * num_classes)
  return preference.check_grid(t, step, field, per_point)


def sweep(run: Run, step: float = DEFAULT_STEP, *, alphas: np.ndarray | None = None,
          suites: Sequence[str] = (), features=None, ece_bins: int = metrics.DEFAULT_ECE_BINS) -> SweepResult:
  """Scores every preference of ``preference.simplex_grid(T, step)`` (or the given ``alphas`` [P, T]).

  Args:
    run: a trained run with its data (``hyperlt.workdir.run.load(workdir)``).
    step: grid spacing; 0.1 gives 66 points and 0.05 gives 231 for T = 3.
    alphas: explicit raw preferences instead of the grid.
    suites: extra test suites from hyperlt.data.suites ("partial", "dirichlet"; a list or "a,b").
    features: test features [T, N, d] if already computed (``evaluate.test_features(run)``).
    ece_bins: bins of the expected calibration error.
  """
  data = run.data
  require(data is not None, "sweep: the run was loaded without its data; load it with with_data=True")
  if isinstance(suites, str):   # "partial,dirichlet", as on the command line
    suites = [s.strip() for s in suites.split(",") if s.strip()]
  num_experts = run.model.num_experts
  if alphas is None:
    check_grid(run.model, data.num_classes, len(data.test_y), step)
  alphas = preference.simplex_grid(num_experts, step) if alphas is None else check_alphas(alphas, num_experts)
  if features is None:
    features = evaluate.test_features(run)
  predictor = Predictor.for_run(run)
  classes = predictor.classes(features, alphas)
  confidences = predictor.confidences(features, alphas)
  labels = np.asarray(data.test_y)
  correct = classes == labels

  named = [(STANDARD, name, np.asarray(idx)) for name, idx in data.test_sets.items()]
  for suite, sets in suites_lib.build(tuple(suites), labels, data.test_sets,
                                      seed=run.config.data.test_seed).items():
    named += [(suite, name, idx) for name, idx in sets.items()]

  num_classes = data.num_classes
  per_set = [_set_metrics(correct, confidences, classes, labels, idx, data.groups, num_classes, ece_bins)
             for _, _, idx in progress.bar(named, desc="sweep metrics", unit="set")]
  return SweepResult(
      preferences=np.asarray(alphas, np.float32),
      anchors=tuple(run.config.loss.anchors),
      class_names=tuple(data.class_names),
      set_names=tuple(name for _, name, _ in named),
      set_suites=tuple(suite for suite, _, _ in named),
      set_sizes=np.array([len(idx) for _, _, idx in named], np.int64),
      accuracy=np.stack([a for a, _, _ in per_set], axis=1),
      balanced_accuracy=np.stack([b for _, b, _ in per_set], axis=1),
      ece=np.stack([e for _, _, e in per_set], axis=1),
      recall=metrics.per_class_recall(classes, labels, num_classes),
      ece_bins=ece_bins,
  )


def _preference_columns(anchors: Sequence[str]) -> list[str]:
  names = [f"pref_{a}" for a in anchors]
  return names if len(set(names)) == len(names) else [f"pref_{j}" for j in range(len(anchors))]


def write(result: SweepResult, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Writes ``sweep.json`` (the ``--json`` list), ``sweep.csv`` (one row per preference and test set, with
  every metric) and ``per_class_recall.csv`` (one row per preference) into ``out_dir``."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = [out / "sweep.json", out / "sweep.csv", out / "per_class_recall.csv"]
  paths[0].write_text(json.dumps(result.items()) + "\n")
  pref_cols = _preference_columns(result.anchors)
  with open(paths[1], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(pref_cols + ["suite", "test_set", "images"] + list(GROUP_NAMES)
                    + ["balanced_accuracy", f"ece_{result.ece_bins}bins"])
    for p, alpha in enumerate(result.preferences):
      prefs = [f"{v:.6g}" for v in alpha]
      for s, name in enumerate(result.set_names):
        values = list(result.accuracy[p, s]) + [result.balanced_accuracy[p, s], result.ece[p, s]]
        writer.writerow(prefs + [result.set_suites[s], name, int(result.set_sizes[s])]
                        + ["" if np.isnan(v) else f"{v:.6f}" for v in values])
  with open(paths[2], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(pref_cols + [f"recall_{c}" for c in result.class_names])
    for alpha, row in zip(result.preferences, result.recall):
      writer.writerow([f"{v:.6g}" for v in alpha] + ["" if np.isnan(v) else f"{v:.6f}" for v in row])
  return paths


def format_summary(result: SweepResult) -> str:
  """Per standard test set: the best preference and its accuracy, and the accuracy at each vertex (%)."""
  vertices = result.vertex_indices()
  head = f"{'test set':<11}  {'best preference':<17}{'acc':>7}" + "".join(f"{a[:10]:>11}" for a in result.anchors)
  lines = [head]
  for s, name in enumerate(result.set_names):
    if result.set_suites[s] != STANDARD:
      continue
    column = result.accuracy[:, s, 0]
    best = int(np.nanargmax(column))
    at_vertices = "".join(fmt.percent(None if v is None else column[v], width=11) for v in vertices)
    lines.append(f"{name:<11}  {fmt.preference(result.preferences[best]):<17}{fmt.percent(column[best], width=7)}"
                 + at_vertices)
  return "\n".join(lines)
