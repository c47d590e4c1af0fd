"""Choosing a preference from a goal, on the validation split (never on a test set).

A goal is one metric to maximise (or minimise) subject to bounds on others, e.g. "maximise many-shot
accuracy with few-shot accuracy >= 0.5". ``choose`` scores every point of a simplex grid on the
validation split in one pass (features once, preferences vmapped, as a sweep) and returns the best
point that meets every bound.

The validation split is ``data.val_fraction`` of the long-tailed training set, held out per class before
training (hyperlt.data.longtail.validation_split; ``RunData.val_x`` / ``val_y``), so it is long-tailed
like the training set. Metrics for a test set drawn from another class prior ``q`` are estimated from the
per-class recall ``r_c`` on it, which a label shift does not change (hyperlt.analysis.metrics):

    all                  sum_c q_c r_c                        (accuracy on a test set drawn from q)
    many / medium / few  sum_{c in G} q_c r_c / sum_{c in G} q_c
    balanced_accuracy    mean_c r_c                           (q-free; equals uniform:all)
    ece                  ECE with image weights w_i = q_{y_i} / n_{y_i}

``q`` is the prior of one of the 11 test-agnostic test sets (hyperlt.data.suites.test_set_prior), named as
a prefix: ``backward50:few``; without a prefix the ``target`` (default "uniform") applies.

Ties are common (validation sets are small, so a metric takes few distinct values); among preferences
tied on the objective, the one with the smallest total distance to the other tied ones (the medoid) is
chosen, which keeps away from the edges of the tied region.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from hyperlt import preference
from hyperlt.analysis import format as fmt
from hyperlt.analysis import metrics
from hyperlt.analysis.sweep import check_alphas, check_grid
from hyperlt.data import longtail, suites
from hyperlt.errors import UserInputError, require
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir.run import Run

METRICS: tuple[str, ...] = ("all", "many", "medium", "few", "balanced_accuracy", "ece")
LOWER_IS_BETTER = frozenset({"ece"})
DEFAULT_TARGET = "uniform"
DEFAULT_STEP = 0.05

_BOUND_RE = re.compile(r"^\s*([A-Za-z0-9_:]+)\s*(>=|<=)\s*([^\s]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Metric:
  """A validation estimate of ``name`` for a test set drawn from the prior of test set ``target``."""

  name: str
  target: str

  def __str__(self) -> str:
    return f"{self.target}:{self.name}"


@dataclasses.dataclass(frozen=True)
class Bound:
  metric: Metric
  op: str        # ">=" or "<="
  value: float

  def __str__(self) -> str:
    return f"{self.metric}{self.op}{self.value:g}"

  def holds(self, values: np.ndarray) -> np.ndarray:
    """Where the bound holds; NaN (undefined) never does."""
    with np.errstate(invalid="ignore"):
      return values >= self.value if self.op == ">=" else values <= self.value


def parse_metric(text: str, target: str = DEFAULT_TARGET, field: str = "--maximize") -> Metric:
  """``[test set:]metric`` -> Metric; raises UserInputError naming ``field``."""
  _check_target(target, "--target")
  spec = str(text).strip()
  where, sep, name = spec.rpartition(":")
  if not sep:
    where = target
  require(name in METRICS, f"{field}: unknown metric {name!r} in {spec!r}; expected one of "
          f"{', '.join(METRICS)}, optionally prefixed by a test set as in backward50:few")
  _check_target(where, field)
  return Metric(name=name, target=where)


def _check_target(name: str, field: str) -> None:
  require(name in longtail.TEST_SET_NAMES, f"{field}: unknown test set {name!r}; expected one of "
          f"{', '.join(longtail.TEST_SET_NAMES)}")


def parse_bound(text: str, target: str = DEFAULT_TARGET, field: str = "--subject-to") -> Bound:
  """``[test set:]metric>=value`` or ``...<=value`` -> Bound (values are fractions, as in evaluate)."""
  match = _BOUND_RE.match(str(text))
  require(match is not None, f"{field}: expected [test set:]metric>=value or metric<=value, e.g. few>=0.5 "
          f"or backward50:all>=0.8, got {text!r}")
  metric = parse_metric(match.group(1), target, field)
  try:
    value = float(match.group(3))
  except ValueError:
    raise UserInputError(f"{field}: {match.group(3)!r} in {text!r} is not a number") from None
  require(math.isfinite(value), f"{field}: the bound in {text!r} must be finite")
  if 1 < value <= 100:
    raise UserInputError(f"{field}: metrics are fractions in [0, 1] (as in evaluate --json), got {value:g} "
                         f"in {text!r}; did you mean {value / 100:g}?")
  require(0 <= value <= 1, f"{field}: metrics are fractions in [0, 1], got {value:g} in {text!r}")
  return Bound(metric=metric, op=match.group(2), value=value)


@dataclasses.dataclass(frozen=True)
class Choice:
  """The chosen preference and the validation estimates behind the choice."""

  preference: np.ndarray               # [T] raw preference (sums to 1)
  objective: Metric
  direction: str                       # "maximize" or "minimize"
  bounds: tuple[Bound, ...]
  validation: dict[str, float | None]  # every metric involved, plus the target's headline metrics
  feasible: int                        # grid points that meet every bound
  grid_size: int
  num_val: int
  anchors: tuple[str, ...]
  warnings: tuple[str, ...] = ()

  @property
  def value(self) -> float | None:
    return self.validation[str(self.objective)]

  def to_json(self) -> dict:
    return {"preference": [float(v) for v in self.preference],
            "objective": {"metric": str(self.objective), "direction": self.direction, "value": self.value},
            "subject_to": [{"bound": str(b), "value": self.validation[str(b.metric)]} for b in self.bounds],
            "validation": dict(self.validation), "feasible": self.feasible, "grid_size": self.grid_size,
            "num_val": self.num_val, "estimated_on": "validation", "warnings": list(self.warnings)}


def _require_validation(run: Run) -> None:
  require(run.data is not None, "choose: the run was loaded without its data; load it with with_data=True")
  fraction = run.config.data.val_fraction
  # List-file sources may bring their own validation list, so the images decide, not the fraction alone.
  require(len(run.data.val_y) > 0,
          f"choose decides on a validation split held out from the training data, but this run has no "
          f"validation images (data.val_fraction = {fraction:g}). Retrain with a held-out share, e.g. "
          f"hyperlt train --workdir NEW_DIR data.val_fraction=0.15; test sets are never used for choosing")


def validation_estimates(run: Run, alphas: np.ndarray, wanted: Sequence[Metric],
                         features=None) -> dict[str, np.ndarray]:
  """``{str(metric): values [P]}`` estimated on the validation split for raw preferences alphas [P, T]."""
  _require_validation(run)
  data = run.data
  predictor = Predictor.for_run(run)
  if features is None:
    features = predictor.features(data.val_x)
  classes = predictor.classes(features, alphas)
  labels = np.asarray(data.val_y)
  num_classes = data.num_classes
  recall = metrics.per_class_recall(classes, labels, num_classes)
  confidences = None
  out = {}
  for metric in wanted:
    prior = suites.test_set_prior(metric.target, num_classes)
    if metric.name == "all":
      values = metrics.prior_weighted_accuracy(recall, prior)
    elif metric.name == "balanced_accuracy":
      values = metrics.balanced_accuracy(recall)
    elif metric.name == "ece":
      if confidences is None:
        confidences = predictor.confidences(features, alphas)
      values = metrics.expected_calibration_error(confidences, classes == labels,
                                                  weights=metrics.prior_weights(labels, prior))
    else:
      mask = np.asarray(data.groups[metric.name])
      require(bool(mask.any()), f"{metric}: this run has no {metric.name}-shot class (shot groups: many > "
              f"data.many_above = {run.config.data.many_above}, few < data.few_below = "
              f"{run.config.data.few_below} training images)")
      values = metrics.prior_weighted_accuracy(recall, prior, mask)
    out[str(metric)] = values
  return out


def _medoid(points: np.ndarray) -> int:
  distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1).sum(1)
  return int(np.argmin(distances))


def choose(run: Run, *, maximize: str | None = None, minimize: str | None = None,
           subject_to: Sequence[str] = (), target: str = DEFAULT_TARGET, step: float = DEFAULT_STEP,
           alphas: np.ndarray | None = None) -> Choice:
  """The grid preference that best meets a goal on the validation split.

  Args:
    run: a trained run with its data and a validation split (``data.val_fraction > 0``).
    maximize / minimize: exactly one objective metric, ``[test set:]metric`` (see the module docstring).
    subject_to: bounds such as ``"few>=0.5"`` or ``"backward50:all>=0.8"`` (fractions, as in evaluate).
    target: the test set whose prior un-prefixed metrics refer to (default "uniform").
    step: grid spacing of ``preference.simplex_grid`` (0.05 gives 231 points for T = 3).
    alphas: explicit candidate preferences [P, T] instead of the grid.

  Raises:
    UserInputError: on a malformed goal, a run without validation split, or when no candidate meets
      every bound (the message gives the best reachable value of each bound).
  """
  require((maximize is None) != (minimize is None), "choose: give exactly one of --maximize or --minimize")
  direction = "maximize" if maximize is not None else "minimize"
  objective = parse_metric(maximize if maximize is not None else minimize, target, f"--{direction}")
  if isinstance(subject_to, str):   # one bound given as a plain string
    subject_to = [subject_to]
  bounds = tuple(parse_bound(b, target) for b in subject_to)
  _require_validation(run)
  num_experts = run.model.num_experts
  if alphas is None:
    check_grid(run.model, run.data.num_classes, len(run.data.val_y), step)
    alphas = preference.simplex_grid(num_experts, step)
  else:
    alphas = check_alphas(alphas, num_experts)

  headline = [Metric(name, target) for name in ("all", "many", "medium", "few", "ece")
              if name in ("all", "ece") or bool(np.asarray(run.data.groups[name]).any())]
  wanted = list(dict.fromkeys([objective, *(b.metric for b in bounds), *headline]))
  values = validation_estimates(run, alphas, wanted)

  feasible = np.ones(len(alphas), bool)
  for bound in bounds:
    feasible &= bound.holds(values[str(bound.metric)])
  if not feasible.any():
    raise UserInputError(_infeasible_message(bounds, values, alphas, len(run.data.val_y)))
  score = values[str(objective)]
  score = -score if direction == "minimize" else score
  candidates = np.flatnonzero(feasible & ~np.isnan(score))
  require(len(candidates) > 0, f"--{direction}: {objective} is undefined on the validation split")
  best = np.max(score[candidates])
  tied = candidates[np.isclose(score[candidates], best, rtol=0, atol=1e-12)]
  chosen = int(tied[_medoid(alphas[tied].astype(np.float64))])
  return Choice(
      preference=np.asarray(alphas[chosen], np.float32), objective=objective, direction=direction,
      bounds=bounds, validation={k: (None if np.isnan(v[chosen]) else float(v[chosen])) for k, v in values.items()},
      feasible=int(feasible.sum()), grid_size=len(alphas), num_val=int(len(run.data.val_y)),
      anchors=tuple(run.config.loss.anchors), warnings=_small_class_warnings(run))


# Below this many validation images a class's recall moves in steps of 20 points or more.
_FEW_VAL_IMAGES = 5


def _small_class_warnings(run: Run) -> tuple[str, ...]:
  counts = metrics.class_counts(run.data.val_y, run.data.num_classes)
  small = np.flatnonzero(counts < _FEW_VAL_IMAGES)
  if not len(small):
    return ()
  return (f"{len(small)} of {len(counts)} classes have fewer than {_FEW_VAL_IMAGES} validation images (as few as "
          f"{int(counts.min())}), so their recall moves in large steps and estimates weighted towards them are "
          f"coarse; a larger data.val_fraction or dataset gives firmer choices",)


def _infeasible_message(bounds: Sequence[Bound], values: dict[str, np.ndarray], alphas: np.ndarray,
                        num_val: int) -> str:
  parts = []
  for bound in bounds:
    v = values[str(bound.metric)]
    if np.isnan(v).all():
      parts.append(f"{bound.metric} is undefined")
      continue
    i = int(np.nanargmax(v) if bound.op == ">=" else np.nanargmin(v))
    reach = "largest" if bound.op == ">=" else "smallest"
    pref = fmt.preference(alphas[i], digits=3)
    met = "met alone" if bound.holds(v).any() else "cannot be met"
    parts.append(f"{bound}: {met}; {reach} {bound.metric} is {v[i]:.3f} at {pref}")
  return (f"--subject-to: no preference of the {len(alphas)} candidates meets every bound on the validation "
          f"split ({num_val} images): " + "; ".join(parts) + ". Loosen a bound")


def format_choice(choice: Choice, workdir: str | None = None) -> str:
  """A human-readable report of a choice."""
  pref = fmt.preference(choice.preference)
  fraction = lambda v: "-" if v is None else f"{v:.4f}"
  lines = [f"Chosen preference: {pref}  ({', '.join(choice.anchors)})",
           f"  {choice.direction} {choice.objective}: {fraction(choice.value)}"]
  for b in choice.bounds:
    lines.append(f"  subject to {b}: {fraction(choice.validation[str(b.metric)])}")
  lines.append(f"  {choice.feasible} of {choice.grid_size} candidate preferences meet every bound")
  lines.append(f"Validation estimates at this preference ({choice.num_val} held-out training images):")
  lines.append("  " + "  ".join(f"{k} {fraction(v)}" for k, v in choice.validation.items()))
  lines.append("Estimated on the validation split only; no test image was used.")
  lines += [f"Note: {w}" for w in choice.warnings]
  if workdir is not None:
    lines.append(f"Test results: hyperlt evaluate --workdir {workdir} --preference {pref}")
  return "\n".join(lines)
