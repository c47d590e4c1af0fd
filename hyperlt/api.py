"""The Python API for applications: load a trained work dir, predict at any preference, sweep, choose.

    from hyperlt import api

    model = api.load("runs/digits")
    probs = model.predict(images, preference="0,0,1")       # [N, K] class probabilities of uint8 images
    result = api.sweep("runs/digits", step=0.05)           # every grid preference on the 11 test sets
    choice = api.choose("runs/digits", maximize="many", subject_to=["few>=0.5"])
    probs = model.predict(images, choice.preference)

``predict`` is the evaluation path with P = 1 followed by a softmax (hyperlt.inference.predictor): features
of the images, the hypernetwork's heads at the preference, the preference-weighted cosine logits ``z`` (plus
the run's post-hoc shift, if any), ``softmax(z)``. Its argmax is the class ``hyperlt evaluate`` scores.
Images go through the feature pass in fixed-size batches (the last one padded; fewer images than a batch
are padded to the next power of two), so calls with any number of images and any preference reuse a
handful of compiled programs.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Sequence

import numpy as np

from hyperlt import preference as preference_lib
from hyperlt.analysis import choose as choose_lib
from hyperlt.analysis import evaluate
from hyperlt.analysis import sweep as sweep_lib
from hyperlt.data import images as image_input
from hyperlt.errors import require
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir import run as run_lib

DEFAULT_BATCH_SIZE = 128
RANGE_CHECKS = ("warn", "error", "off")
# Below this many images a batch's mean pixel says little about its scale (one dark photo is fine).
MIN_IMAGES_FOR_MEAN_CHECK = 16


class ImageRangeWarning(UserWarning):
  """Images whose pixel values do not look like the training images' (e.g. digits left at 0..16)."""


def value_range_problem(images: np.ndarray, facts: run_lib.RunFacts) -> str | None:
  """Why uint8 images [N, H, W, C] look differently scaled from the run's training images, or None.

  Training images are uint8 0..255 normalised with the run's per-channel ``mean`` / ``std`` (0..1 scale,
  data.json). A batch is suspicious when its brightest pixel stays below half of ``mean + std`` (most
  training images have pixels far brighter: e.g. scikit-learn's digits fed as 0..16, or [0, 1] floats
  cast to uint8), or, for 16 or more images, when a channel's mean pixel is more than one training std
  away from the training mean (e.g. inverted images).
  """
  if images.size == 0:
    return None
  mean, std = np.asarray(facts.mean), np.asarray(facts.std)
  peak = int(images.max())
  scale = (f"this run's training images are uint8 0..255 with mean pixel "
           f"{', '.join(f'{v * 255:.0f}' for v in mean)} (std {', '.join(f'{v * 255:.0f}' for v in std)})")
  if peak / 255 < 0.5 * float(np.min(mean + std)):
    hint = (" (scikit-learn's digits are 0..16: use np.round(x * 255 / 16).astype(np.uint8))" if peak <= 16
            else "")
    return (f"images: the brightest pixel is {peak} of 255, while {scale}; scale the images to 0..255 as in "
            f"training{hint}")
  batch_mean = images.reshape(-1, images.shape[-1]).mean(0) / 255
  if len(images) >= MIN_IMAGES_FOR_MEAN_CHECK and np.any(np.abs(batch_mean - mean) > std):
    return (f"images: their mean pixel is {', '.join(f'{v * 255:.0f}' for v in batch_mean)}, more than one std "
            f"from training's: {scale}; check their scale (and polarity) against the training data")
  return None


class Model:
  """A trained run ready for prediction. Create with :func:`load`."""

  def __init__(self, run: run_lib.Run, batch_size: int = DEFAULT_BATCH_SIZE):
    require(isinstance(batch_size, int) and batch_size >= 1, f"batch_size: expected a positive integer, got "
            f"{batch_size!r}")
    self.run = run
    self.batch_size = batch_size
    self.class_names: tuple[str, ...] = run.facts.class_names
    self.image_shape: tuple[int, int, int] = run.facts.image_shape
    self.predictor = Predictor.for_run(run, batch_size=batch_size)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_experts(self) -> int:
    return self.run.model.num_experts

  @property
  def anchors(self) -> tuple[str, ...]:
    """The anchor of each expert, i.e. what the vertex preference e_j means (forward, uniform, ...)."""
    return tuple(self.run.config.loss.anchors)

  @property
  def default_preference(self) -> np.ndarray:
    """What ``predict`` uses without a preference (the uniform anchor's vertex unless configured)."""
    return evaluate.default_preference(self.run)

  def check_images(self, images, check_range: str = "warn") -> np.ndarray:
    """``images`` as uint8 [N, H, W, C] after the checks of :meth:`predict` (dtype and shape refused with
    UserInputError; a value range unlike training's warned about, refused or ignored per ``check_range``)."""
    require(check_range in RANGE_CHECKS, f"check_range: expected one of {', '.join(RANGE_CHECKS)}, got "
            f"{check_range!r}")
    images = image_input.check_images(images, self.image_shape, allow_empty=True)
    problem = None if check_range == "off" else value_range_problem(images, self.run.facts)
    if problem is not None:
      require(check_range != "error", problem)
      warnings.warn(problem, ImageRangeWarning, stacklevel=3)
    return images

  def predict(self, images, preference: str | Sequence[float] | np.ndarray | None = None, *,
              check_range: str = "warn") -> np.ndarray:
    """Class probabilities float32 [N, K] of uint8 images [N, H, W, C] (or [N, H, W] for one channel).

    ``preference`` is a raw preference, one non-negative number per expert ("0,0,1", [0, 0, 1]),
    validated like ``hyperlt evaluate --preference`` (same rules and messages, field "preference");
    None uses :attr:`default_preference`. Images that are not uint8 of the run's image shape are refused
    (UserInputError). Images whose pixel values look scaled unlike the training images
    (:func:`value_range_problem`, e.g. scikit-learn's digits at 0..16 instead of 0..255) raise an
    :class:`ImageRangeWarning` with ``check_range="warn"``, a UserInputError with ``"error"``, nothing
    with ``"off"``.
    """
    images = self.check_images(images, check_range)
    alpha = (self.default_preference if preference is None
             else preference_lib.parse(preference, self.num_experts, "preference"))
    if len(images) == 0:
      return np.zeros((0, self.num_classes), np.float32)
    return self.predictor.probabilities(self.predictor.features(images), alpha[None])[0]

  def __repr__(self) -> str:
    return (f"Model(workdir={str(self.run.workdir)!r}, experts={self.anchors}, classes={self.num_classes}, "
            f"image_shape={self.image_shape})")


def load(workdir: str | pathlib.Path, *, step: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Model:
  """Loads a trained work dir for prediction (the checkpoint at ``step``, default the latest).

  The training data is not loaded; image shape, normalisation and class names come from its data.json.
  """
  return Model(run_lib.load(workdir, step, with_data=False), batch_size)


def _run_with_data(source: str | pathlib.Path | run_lib.Run | Model) -> run_lib.Run:
  if isinstance(source, Model):
    source = source.run.workdir
  if isinstance(source, run_lib.Run):
    return source if source.data is not None else run_lib.load(source.workdir)
  return run_lib.load(source)


def sweep(source: str | pathlib.Path | run_lib.Run | Model, step: float = sweep_lib.DEFAULT_STEP, *,
          alphas: np.ndarray | None = None, suites: Sequence[str] = (), out: str | pathlib.Path | None = None,
          figures: bool = True) -> sweep_lib.SweepResult:
  """Every preference of a simplex grid on the 11 test sets (and extra ``suites``); see hyperlt.analysis.sweep.

  With ``out``, also writes sweep.json, sweep.csv, per_class_recall.csv and (``figures``) the PNGs there.
  """
  result = sweep_lib.sweep(_run_with_data(source), step, alphas=alphas, suites=suites)
  if out is not None:
    sweep_lib.write(result, out)
    if figures:
      from hyperlt.analysis import plots  # pylint: disable=g-import-not-at-top
      plots.plot_all(result, out)
  return result


def choose(source: str | pathlib.Path | run_lib.Run | Model, *, maximize: str | None = None,
           minimize: str | None = None, subject_to: Sequence[str] = (), target: str = choose_lib.DEFAULT_TARGET,
           step: float = choose_lib.DEFAULT_STEP) -> choose_lib.Choice:
  """The preference that best meets a goal on the validation split; see hyperlt.analysis.choose."""
  return choose_lib.choose(_run_with_data(source), maximize=maximize, minimize=minimize,
                           subject_to=subject_to, target=target, step=step)
