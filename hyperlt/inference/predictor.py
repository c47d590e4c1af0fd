"""The inference path: features of uint8 images, then logits, probabilities, classes or confidences for P
preferences at once.

Every command that serves a trained model (evaluate, sweep, choose, adapt, predict) goes through one
:class:`Predictor`::

    uint8 images [N, H, W, C] --normalise, backbone (train=False)--> features f [T, N, d]      (once)
    preferences alpha [P, T] --r_hat, hypernetwork, heads--> z [P, N, K] = combined cosine logits
    z + s   (s = -posthoc_tau * log pi: the post-hoc shift with the TRAINING prior, or none)
        --> softmax (probabilities), argmax (classes), max softmax (confidences)

Features do not depend on the preference, so they are computed once per image set and every preference
reuses them. Both passes run in fixed-shape slices (hyperlt.inference.batching): images in batches of
``batch_size`` (a power of two for smaller sets), feature columns in chunks of ``chunk``; each jitted
function therefore compiles once per slice shape, whatever the number of images or preferences. With a
"data" mesh of several devices each image batch is split over its devices and the features are gathered
back (every process passes all images and gets all features).

The pure functions (:func:`image_features`, :func:`normalized_features`, :func:`preference_logits`) are
what the jitted ones trace; code that differentiates through the model (the stability method of
hyperlt.analysis.adapt) builds on them instead of re-deriving the path, and :func:`image_probabilities`
chains them from uint8 images to probabilities for export (hyperlt.inference.export).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from hyperlt import distributed
from hyperlt.data import augment
from hyperlt.inference import batching
from hyperlt.models.expert_model import ExpertModel
from hyperlt.workdir.run import Run

DEFAULT_BATCH_SIZE = 1000
DEFAULT_CHUNK = 1000


def normalized_features(model: ExpertModel, params: Any, batch_stats: Any, x: jnp.ndarray) -> jnp.ndarray:
  """Features [T, B, d] of normalised images x [B, H, W, C], BatchNorm in inference mode."""
  return model.features(params, batch_stats, x, train=False)[0]


def image_features(model: ExpertModel, params: Any, batch_stats: Any, images: jnp.ndarray, mean, std) -> jnp.ndarray:
  """Features [T, B, d] of uint8 images [B, H, W, C], normalised with the run's ``mean`` and ``std``."""
  return normalized_features(model, params, batch_stats, augment.normalize(images, mean, std))


def preference_logits(model: ExpertModel, params: Any, features: jnp.ndarray, alphas: jnp.ndarray,
                      shift: jnp.ndarray | None) -> jnp.ndarray:
  """Logits [P, B, K] for raw preferences alphas [P, T] over features [T, B, d], plus ``shift`` [K] if any."""
  logits = model.logits(params, features, model.r_hat(params, alphas))
  return logits if shift is None else logits + shift


# What a prediction call returns, from the shifted logits z [P, B, K].
_OUTPUTS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "logits": lambda z: z,
    "probabilities": lambda z: jax.nn.softmax(z, axis=-1),
    "classes": lambda z: jnp.argmax(z, axis=-1),
    "confidences": lambda z: jnp.max(jax.nn.softmax(z, axis=-1), axis=-1),
}


def image_probabilities(model: ExpertModel, params: Any, batch_stats: Any, images: jnp.ndarray, alphas: jnp.ndarray,
                        mean, std, shift: jnp.ndarray | None) -> jnp.ndarray:
  """Class probabilities [P, B, K] of uint8 images [B, H, W, C] at raw preferences alphas [P, T]: the whole
  path (normalisation, features, heads, ``shift``, softmax) in one pure function of any batch size B, the
  function hyperlt.inference.export serialises."""
  features = image_features(model, params, batch_stats, images, mean, std)
  return _OUTPUTS["probabilities"](preference_logits(model, params, features, alphas, shift))


@functools.partial(jax.jit, static_argnames=("model", "mesh"))
def _features(model: ExpertModel, mesh: Mesh | None, params, batch_stats, images, mean, std):
  features = image_features(model, params, batch_stats, images, mean, std)
  if mesh is None:
    return features
  # Gathered onto every device: features are small next to the images, and every process needs them all.
  return jax.lax.with_sharding_constraint(features, distributed.replicated(mesh))


@functools.partial(jax.jit, static_argnames=("model", "output"))
def _predict(model: ExpertModel, output: str, params, features, alphas, shift):
  return _OUTPUTS[output](preference_logits(model, params, features, alphas, shift))


def predict(model: ExpertModel, params: Any, features: jnp.ndarray, alphas, shift: jnp.ndarray | None = None, *,
            output: str = "classes", chunk: int = DEFAULT_CHUNK) -> jnp.ndarray:
  """``output`` ("logits", "probabilities", "classes" or "confidences") for raw preferences alphas [P, T]
  over features [T, N, d], in fixed-size chunks of the N columns: [P, N, K] or [P, N].

  All P preferences go through one call (hypernetwork and heads vmapped over P); ``shift`` [K] is added to
  the logits first.
  """
  alphas = jnp.asarray(np.atleast_2d(alphas), jnp.float32)
  call = lambda part: _predict(model, output, params, part, alphas, shift)
  return batching.map_padded(call, features, batching.bucket(features.shape[1], chunk), axis=1, out_axis=1,
                             desc=output)


class Predictor:
  """A trained model ready to serve: parameters, normalisation, post-hoc shift and device layout.

  Args:
    model, params, batch_stats: the trained model.
    mean, std: per-channel normalisation of the uint8 images (0..1 scale).
    prior: the training prior [K]; with the model's ``posthoc_tau`` it fixes the shift
      ``ExpertModel.prediction_shift(prior)`` added to every logit (None: no shift).
    mesh: a "data" mesh to split image batches over; None or a one-device mesh runs on one device.
    batch_size: images per feature batch (smaller sets: the next power of two).
    chunk: feature columns per prediction call.
  """

  def __init__(self, model: ExpertModel, params: Any, batch_stats: Any, mean, std, prior=None, *,
               mesh: Mesh | None = None, batch_size: int = DEFAULT_BATCH_SIZE, chunk: int = DEFAULT_CHUNK):
    self.model, self.params, self.batch_stats = model, params, batch_stats
    self.mean = tuple(float(v) for v in mean)
    self.std = tuple(float(v) for v in std)
    self.shift = None if prior is None else model.prediction_shift(prior)
    self.mesh = mesh if mesh is not None and mesh.size > 1 else None
    self.batch_size, self.chunk = batch_size, chunk

  @classmethod
  def for_run(cls, run: Run, *, batch_size: int | None = None) -> "Predictor":
    """The predictor of a run: its facts' normalisation and prior, ``train.eval_batch_size`` images per
    batch, and the run's "data" mesh (``parallel.num_devices``, or every device where fewer are present:
    a run trained on 8 devices is served by the devices this machine has)."""
    wanted = run.config.parallel.num_devices
    mesh = distributed.data_mesh(wanted if wanted <= jax.device_count() else 0)
    facts = run.facts
    return cls(run.model, run.params, run.batch_stats, facts.mean, facts.std, facts.prior, mesh=mesh,
               batch_size=batch_size or run.config.train.eval_batch_size)

  @property
  def num_experts(self) -> int:
    return self.model.num_experts

  def probability_function(self) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """``f(images, alphas)``: :func:`image_probabilities` with this predictor's parameters, normalisation
    and shift bound, unjitted and on one device (for tracing and export, not for serving large sets)."""
    mean, std = jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.std, jnp.float32)
    return functools.partial(image_probabilities, self.model, self.params, self.batch_stats, mean=mean, std=std,
                             shift=self.shift)

  @functools.cached_property
  def _placed(self) -> tuple:
    """(params, batch_stats, mean, std) where the feature pass reads them: replicated over the mesh, or
    on the default device."""
    mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
    if self.mesh is None:
      return self.params, self.batch_stats, jnp.asarray(mean), jnp.asarray(std)
    return distributed.replicate((self.params, self.batch_stats, mean, std), self.mesh)

  def features(self, images: Any, batch_size: int | None = None) -> jnp.ndarray:
    """Features [T, N, d] of uint8 images [N, H, W, C] (an array, or anything with ``len()`` whose slices
    are uint8 arrays), on this process's first device."""
    params, batch_stats, mean, std = self._placed
    mesh = self.mesh
    size = batching.bucket(len(images), batch_size or self.batch_size, 1 if mesh is None else mesh.size)
    if mesh is None:
      call = lambda batch: _features(self.model, None, params, batch_stats, batch, mean, std)
    else:
      rows = distributed.process_rows(size)

      def call(batch):
        sharded = distributed.global_batch(batch[rows], mesh, size)
        return distributed.to_local(_features(self.model, mesh, params, batch_stats, sharded, mean, std))
    return batching.map_padded(call, images, size, axis=0, out_axis=1, desc="features")

  def _predict(self, output: str, features: jnp.ndarray, alphas, extra_shift) -> jnp.ndarray:
    shift = self.shift
    if extra_shift is not None:
      extra = jnp.asarray(extra_shift, jnp.float32)
      shift = extra if shift is None else shift + extra
    return predict(self.model, self.params, features, alphas, shift, output=output, chunk=self.chunk)

  def logits(self, features: jnp.ndarray, alphas, extra_shift=None) -> jnp.ndarray:
    """Shifted logits [P, N, K] (on the device) for raw preferences alphas [P, T] (or one [T]);
    ``extra_shift`` [K] is added on top of the run's shift (an adapted logit adjustment)."""
    return self._predict("logits", features, alphas, extra_shift)

  def probabilities(self, features: jnp.ndarray, alphas, extra_shift=None) -> np.ndarray:
    """Class probabilities [P, N, K], ``softmax(z + s)``."""
    return np.asarray(self._predict("probabilities", features, alphas, extra_shift))

  def classes(self, features: jnp.ndarray, alphas, extra_shift=None) -> np.ndarray:
    """Predicted classes [P, N], ``argmax_k (z + s)_k``."""
    return np.asarray(self._predict("classes", features, alphas, extra_shift))

  def confidences(self, features: jnp.ndarray, alphas, extra_shift=None) -> np.ndarray:
    """Confidences [P, N], ``max_k softmax(z + s)_k``: with the correctness of :meth:`classes` they give the
    expected calibration error (hyperlt.analysis.metrics)."""
    return np.asarray(self._predict("confidences", features, alphas, extra_shift))
