"""Choosing the preference from unlabeled images: the ``adapt`` entry point and its result.

    from hyperlt.analysis import adapt
    from hyperlt.workdir import run as run_lib

    run = run_lib.load("runs/digits")
    result = adapt.adapt(run, images_uint8, method="stability")   # or "em"
    result.preference                                             # [T], pass it to evaluate / predict

Both methods look only at the images. ``stability`` learns the preference by maximising the agreement
of predictions on two views of each image (hyperlt.analysis.adapt.stability). ``em`` estimates the test class
prior by EM at a reference preference and takes the grid preference whose target prior is closest
(hyperlt.analysis.adapt.label_shift); with ``adjust_logits=True`` it instead keeps the reference preference and
adds ``log q_hat - log c`` to its logits (c: the prior the reference is calibrated to).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import losses, preference as preference_lib
from hyperlt.analysis import evaluate
from hyperlt.analysis.adapt import label_shift, stability
from hyperlt.data.images import check_images
from hyperlt.errors import UserInputError, require
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir import run as run_lib

METHODS = ("stability", "em")
DEFAULT_GRID_STEP = 0.05
# Decimals of the reported preference: the accuracy table is computed at exactly the written numbers,
# so `hyperlt evaluate --preference result.json` reproduces it.
PREFERENCE_DECIMALS = 4


@dataclasses.dataclass(frozen=True)
class AdaptResult:
  """What adaptation chose, and how.

  Attributes:
    preference: the chosen raw preference [T] (sums to 1); pass it to evaluate, sweep or predict.
    method: "stability" or "em".
    num_images: how many unlabeled images it was chosen from.
    stop_reason: stability: "budget", "min_weight" or "guard"; em: "converged" or "max_iterations".
    reference: em: the preference whose probabilities EM started from (and the guard's, for stability).
    estimated_prior: the EM estimate q_hat of the test class prior [K] (both methods compute it).
    logit_adjustment: em with adjust_logits: the shift [K] added to the logits at ``preference``;
      None otherwise. evaluate, sweep and predict use the preference only, not this shift.
    trace: stability: one record per epoch (preference, stability, prior_mismatch); em: the fit.
  """

  preference: np.ndarray
  method: str
  num_images: int
  stop_reason: str
  reference: np.ndarray
  estimated_prior: np.ndarray
  logit_adjustment: np.ndarray | None = None
  trace: tuple[dict, ...] = ()

  def to_json(self) -> dict:
    """JSON-ready dict; its "preference" is what ``preference.parse`` reads back from a file."""
    return {"preference": [round(float(v), PREFERENCE_DECIMALS) for v in self.preference], "method": self.method,
            "num_images": self.num_images, "stop_reason": self.stop_reason,
            "reference": [float(v) for v in self.reference],
            "estimated_prior": [float(v) for v in self.estimated_prior],
            "logit_adjustment": None if self.logit_adjustment is None else [float(v) for v in self.logit_adjustment],
            "trace": list(self.trace)}


@dataclasses.dataclass(frozen=True)
class _Context:
  """What both methods need from a run: its predictor (normalisation, post-hoc shift), the training prior
  and the anchors' additive adjustments."""

  run: run_lib.Run
  predictor: Predictor
  prior: np.ndarray           # training prior pi [K]
  adjust: np.ndarray          # additive anchor adjustments [T, K]

  @classmethod
  def of(cls, run: run_lib.Run) -> "_Context":
    prior = run.facts.prior
    # Margin anchors (ldam) do not move the target prior: their additive rows are zero.
    additive = losses.adjustments(run.config.loss.anchors, prior, run.config.loss.tau)
    return cls(run=run, predictor=Predictor.for_run(run), prior=prior, adjust=np.asarray(additive))

  @property
  def shift(self) -> np.ndarray | None:
    """The run's post-hoc logit shift [K] on the host, or None."""
    return None if self.predictor.shift is None else np.asarray(self.predictor.shift)

  def calibrated_prior(self, alpha: np.ndarray) -> np.ndarray:
    """The prior the model's probabilities at raw preference alpha [T] are calibrated to [K]."""
    return label_shift.target_priors(alpha[None], self.adjust, self.prior, self.shift)[0]

  def log_probs(self, features: jnp.ndarray, alpha: np.ndarray) -> jnp.ndarray:
    """Log-probabilities [N, K] at raw preference alpha [T] (with the run's post-hoc shift)."""
    return jax.nn.log_softmax(self.predictor.logits(features, alpha[None])[0], axis=-1)


def reference_preference(run: run_lib.Run, reference: Any = None) -> np.ndarray:
  """EM's reference: ``reference`` if given (validated), else the run's default evaluation preference
  (the uniform anchor's vertex, whose predictions target a uniform prior)."""
  if reference is None:
    return np.asarray(evaluate.default_preference(run), np.float32)
  return preference_lib.parse(reference, run.model.num_experts, "reference")


def adapt(run: run_lib.Run | str | pathlib.Path, images: Any, method: str = "stability", *,
          features: jnp.ndarray | None = None, options: stability.StabilityOptions | None = None,
          reference: Any = None, grid_step: float = DEFAULT_GRID_STEP, adjust_logits: bool = False,
          em_tolerance: float = 1e-6, em_max_iterations: int = 1000) -> AdaptResult:
  """Chooses a preference for unlabeled uint8 images [N, H, W, C] (labels are never used).

  Args:
    run: a trained run (``hyperlt.workdir.run.load(workdir)``) or its work dir.
    images: the unlabeled images, uint8 [N, H, W, C] ([N, H, W] for one channel).
    method: "stability" (SADE's self-supervised aggregation on the simplex, with the collapse guard) or
      "em" (Saerens EM label-shift estimate, then the closest target prior on the grid).
    features: optional precomputed features [T, N, d] of the un-augmented images (saves one pass).
    options: settings of the stability method (defaults: hyperlt.analysis.adapt.stability.StabilityOptions()).
    reference: EM's reference preference (default: the uniform anchor's vertex). The stability guard
      uses the same EM estimate.
    grid_step: spacing of the simplex grid the em method chooses from.
    adjust_logits: em only: keep the reference preference and add ``log q_hat - log c`` to its logits.
    em_tolerance, em_max_iterations: EM's stopping rule (L1 change of the estimate, update count).

  Returns:
    AdaptResult.
  """
  if not isinstance(run, run_lib.Run):
    run = run_lib.load(run, with_data=False)
  require(method in METHODS, f"method: expected one of {', '.join(METHODS)}, got {method!r}")
  require(not adjust_logits or method == "em", "adjust_logits: only the em method adjusts logits; use "
          "method='em'")
  options = (options or stability.StabilityOptions()).validate()
  if method == "em" and not adjust_logits:
    check_grid_step(run.model.num_experts, run.facts.num_classes, grid_step)
  context = _Context.of(run)
  images = check_images(images, run.facts.image_shape)
  if features is None:
    features = context.predictor.features(images)
  require(features.shape[:2] == (run.model.num_experts, len(images)),
          f"features: expected shape [{run.model.num_experts}, {len(images)}, d] for {len(images)} images, got "
          f"{tuple(features.shape)}")
  ref = reference_preference(run, reference)
  calibrated = context.calibrated_prior(ref)
  q_hat, em_steps = label_shift.estimate_prior(context.log_probs(features, ref), calibrated, em_tolerance,
                                               em_max_iterations)

  if method == "em":
    em_reason = "converged" if em_steps < em_max_iterations else "max_iterations"
    trace = ({"em_iterations": em_steps},)
    if adjust_logits:
      adjustment = np.log(np.maximum(q_hat, 1e-8)) - np.log(calibrated)
      return AdaptResult(preference=_rounded(ref), method=method, num_images=len(images), stop_reason=em_reason,
                         reference=ref, estimated_prior=q_hat, logit_adjustment=adjustment.astype(np.float32),
                         trace=trace)
    alpha, divergence = label_shift.closest_preference(q_hat, context.adjust, context.prior, grid_step,
                                                       context.shift)
    return AdaptResult(preference=_rounded(alpha), method=method, num_images=len(images), stop_reason=em_reason,
                       reference=ref, estimated_prior=q_hat,
                       trace=({"em_iterations": em_steps, "kl_to_target_prior": divergence},))

  config = run.config
  padding = 2 * config.data.crop_padding if options.view_padding is None else options.view_padding
  flip = config.data.flip if options.flip is None else options.flip
  require(padding > 0 or flip, "view_padding: the stability method needs views that differ, but this run "
          "neither crops (data.crop_padding=0) nor flips; pass a positive view_padding")
  sgd = stability._Sgd(  # pylint: disable=protected-access
      learning_rate=float(options.learning_rate or config.optim.lr), momentum=float(config.optim.momentum),
      nesterov=bool(config.optim.nesterov), weight_decay=float(config.optim.weight_decay),
      batch_size=int(options.batch_size))
  w, reason, records = stability.learn_preference(
      context.predictor, images, features, q_hat, sgd, epochs=options.epochs, min_steps=options.min_steps,
      min_weight=options.min_weight, view_padding=padding, flip=flip, guard_tolerance=options.guard_tolerance,
      seed=options.seed)
  return AdaptResult(preference=_rounded(w), method=method, num_images=len(images), stop_reason=reason,
                     reference=ref, estimated_prior=q_hat, trace=tuple(records))


def check_grid_step(num_experts: int, num_classes: int, grid_step: float, field: str = "grid_step") -> int:
  """Points of the em method's candidate grid (preference.check_grid); per point it keeps the target prior
  [K] and its two float64 temporaries, and the row itself."""
  return preference_lib.check_grid(num_experts, grid_step, field, 8 * (num_experts + 3 * num_classes))


def _rounded(alpha: np.ndarray) -> np.ndarray:
  """The preference as it is reported: rounded to PREFERENCE_DECIMALS. Everything evaluated with it goes
  through ``preference.parse``, as ``hyperlt evaluate --preference`` does, so the numbers match."""
  rounded = np.round(np.asarray(alpha, np.float64), PREFERENCE_DECIMALS)
  if rounded.sum() <= 0:  # cannot happen for a softmax or a grid point; kept for a clear message
    raise UserInputError(f"adaptation produced an all-zero preference {alpha}")
  return rounded


def predict_classes(run: run_lib.Run, result: AdaptResult, features: jnp.ndarray) -> np.ndarray:
  """Predicted classes [N] for features [T, N, d] with an adapted result (its logit adjustment included)."""
  alpha = preference_lib.parse(result.preference, run.model.num_experts, "preference")
  return Predictor.for_run(run).classes(features, alpha[None], extra_shift=result.logit_adjustment)[0]
