"""The Python API for applications: load a trained work dir, predict at any preference, sweep, choose.

    from hyperlt import api

    model = api.load("runs/digits")
    probs = model.predict(images, preference="0,0,1")       # [N, K] class probabilities
    result = api.sweep("runs/digits", step=0.05)           # every grid preference on the 11 test sets
    choice = api.choose("runs/digits", maximize="many", subject_to=["few>=0.5"])
    probs = model.predict(images, choice.preference)

``predict`` is the evaluation path with P = 1 followed by a softmax: features of the images, the
hypernetwork's heads at the preference, the preference-weighted cosine logits ``z`` (plus the run's
post-hoc shift, if any), ``softmax(z)``. Its argmax is the class ``hyperlt evaluate`` scores. Images go
through one jitted function in fixed-size batches (the last one padded), so calls with any number of
images and any preference reuse one compilation.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import preference as preference_lib
from hyperlt.workdir import checkpoint
from hyperlt.analysis import choose as choose_lib
from hyperlt.analysis import evaluate
from hyperlt.analysis import sweep as sweep_lib
from hyperlt.training import loop as train
from hyperlt.data import augment, longtail
from hyperlt.data import images as image_input
from hyperlt.errors import require
from hyperlt.models.expert_model import ExpertModel

DEFAULT_BATCH_SIZE = 128


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(model: ExpertModel, params, batch_stats, images_uint8, mean, std, alphas, shift):
  """Class probabilities [B, K] of uint8 images [B, H, W, C] at one raw preference alphas [1, T]."""
  features = model.features(params, batch_stats, augment.normalize(images_uint8, mean, std), train=False)[0]
  logits = model.logits(params, features, model.r_hat(params, alphas))[0]
  return jax.nn.softmax(logits if shift is None else logits + shift, axis=-1)


class Model:
  """A trained run ready for prediction. Create with :func:`load`."""

  def __init__(self, run: train.Run, facts: dict, batch_size: int = DEFAULT_BATCH_SIZE):
    require(isinstance(batch_size, int) and batch_size >= 1, f"batch_size: expected a positive integer, got "
            f"{batch_size!r}")
    self.run = run
    self.batch_size = batch_size
    self.class_names: tuple[str, ...] = tuple(facts["class_names"])
    self.image_shape: tuple[int, int, int] = tuple(int(v) for v in facts["image_shape"])
    self._mean = jnp.asarray(facts["mean"], jnp.float32)
    self._std = jnp.asarray(facts["std"], jnp.float32)
    self._shift = run.model.prediction_shift(longtail.prior_from_counts(facts["class_counts"]))

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

  def predict(self, images, preference: str | Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Class probabilities float32 [N, K] of uint8 images [N, H, W, C] (or [N, H, W] for one channel).

    ``preference`` is a raw preference, one non-negative number per expert ("0,0,1", [0, 0, 1]),
    validated like ``hyperlt evaluate --preference`` (same rules and messages, field "preference");
    None uses :attr:`default_preference`.
    """
    images = image_input.check_images(images, self.image_shape, allow_empty=True)
    alpha = (self.default_preference if preference is None
             else preference_lib.parse(preference, self.num_experts, "preference"))
    if len(images) == 0:
      return np.zeros((0, self.num_classes), np.float32)
    alphas = jnp.asarray(alpha[None], jnp.float32)
    state = self.run.state
    outputs = []
    for start in range(0, len(images), self.batch_size):
      batch = images[start:start + self.batch_size]
      pad = self.batch_size - len(batch)
      if pad:
        batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], np.uint8)])
      probs = _probabilities(self.run.model, state.params, state.batch_stats, batch, self._mean, self._std,
                             alphas, self._shift)
      outputs.append(probs[:self.batch_size - pad] if pad else probs)
    return np.asarray(jnp.concatenate(outputs, axis=0))

  def __repr__(self) -> str:
    return (f"Model(workdir={str(self.run.workdir)!r}, experts={self.anchors}, classes={self.num_classes}, "
            f"image_shape={self.image_shape})")


def load(workdir: str | pathlib.Path, *, step: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Model:
  """Loads a trained work dir for prediction (the checkpoint at ``step``, default the latest).

  The training data is not loaded; image shape, normalisation and class names come from its data.json.
  """
  workdir = pathlib.Path(workdir)
  _, facts = checkpoint.require_run(workdir)
  run = train.load(workdir, with_data=False, step=step)
  return Model(run, facts, batch_size)


def _run_with_data(source: str | pathlib.Path | train.Run | Model) -> train.Run:
  if isinstance(source, Model):
    source = source.run.workdir
  if isinstance(source, train.Run):
    return source if source.data is not None else train.load(source.workdir)
  return train.load(source)


def sweep(source: str | pathlib.Path | train.Run | Model, step: float = sweep_lib.DEFAULT_STEP, *,
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


def choose(source: str | pathlib.Path | train.Run | Model, *, maximize: str | None = None,
           minimize: str | None = None, subject_to: Sequence[str] = (), target: str = choose_lib.DEFAULT_TARGET,
           step: float = choose_lib.DEFAULT_STEP) -> choose_lib.Choice:
  """The preference that best meets a goal on the validation split; see hyperlt.analysis.choose."""
  return choose_lib.choose(_run_with_data(source), maximize=maximize, minimize=minimize,
                           subject_to=subject_to, target=target, step=step)
