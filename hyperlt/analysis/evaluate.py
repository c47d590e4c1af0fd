"""Evaluation on the 11 test-agnostic test sets, for one preference or many at once.

Features do not depend on the preference, and the 11 test sets are index subsets of one balanced test
set, so evaluation is: features of the balanced test set ONCE, then predictions for P preferences in one
compiled call (hypernetwork and heads vmapped over P), then accuracies by indexing. Evaluating 231
preferences costs little more than evaluating one. With several devices the feature pass is split over
them (the run's "data" mesh, :func:`evaluation_mesh`); the cheap prediction step runs on one.

Results follow ``hyperlt evaluate --json``: ``{"forward50": {"all": a, "many": a, "medium": a, "few": a},
...}``, accuracies as fractions, ``None`` for a group with no images in that test set.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import Mesh

from hyperlt import distributed
from hyperlt.data import augment, longtail, pipeline
from hyperlt.models.expert_model import ExpertModel
from hyperlt.training.loop import Run

GROUP_NAMES = ("all",) + longtail.SHOT_GROUPS


def _feature_fn(model: ExpertModel, params, batch_stats, images_uint8, mean, std):
  return model.features(params, batch_stats, augment.normalize(images_uint8, mean, std), train=False)[0]


_features = jax.jit(_feature_fn, static_argnums=0)


@functools.lru_cache(maxsize=8)
def _sharded_features(model: ExpertModel, mesh: Mesh):
  """``_features`` with the batch split over the mesh's "data" axis and the features gathered back
  onto every device (features are small next to the images)."""
  rows, whole = distributed.batch_sharding(mesh), distributed.replicated(mesh)
  return jax.jit(functools.partial(_feature_fn, model), in_shardings=(whole, whole, rows, whole, whole),
                 out_shardings=whole)


def extract_features(model: ExpertModel, params, batch_stats, images: np.ndarray, mean, std,
                     batch_size: int = 1000, mesh: Mesh | None = None) -> jnp.ndarray:
  """Features [T, N, d] of uint8 images [N, H, W, C], in fixed-size zero-padded batches.

  Sets smaller than ``batch_size`` are padded to the next power of two, so any number of images
  compiles at most ``log2(batch_size) + 1`` programs (not one per distinct set size). With a ``mesh``
  of several devices each batch is split over its "data" axis (batch sizes rounded up to a multiple
  of the device count); every process passes all the images and gets all the features back, on its
  first device.
  """
  n = len(images)
  batch_size = min(batch_size, _next_power_of_two(n))
  sharded = mesh is not None and mesh.size > 1
  if sharded:
    batch_size = -(-batch_size // mesh.size) * mesh.size
    params, batch_stats = distributed.replicate((params, batch_stats), mesh)
    mean, std = distributed.replicate((np.asarray(mean, np.float32), np.asarray(std, np.float32)), mesh)
  else:
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  chunks = []
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    if sharded:
      rows = distributed.global_batch(batch[distributed.process_rows(batch_size)], mesh, batch_size)
      feats = distributed.to_local(_sharded_features(model, mesh)(params, batch_stats, rows, mean, std))
    else:
      feats = _features(model, params, batch_stats, batch, mean, std)
    chunks.append(feats[:, :batch_size - pad])
  return jnp.concatenate(chunks, axis=1)


def _next_power_of_two(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


@functools.partial(jax.jit, static_argnums=0)
def _logits_for_alphas(model: ExpertModel, params, features, alphas):
  return model.logits(params, features, model.r_hat(params, alphas))


def logits(model: ExpertModel, params, features: jnp.ndarray, alphas: np.ndarray,
           chunk: int = 2048) -> jnp.ndarray:
  """Logits [P, N, K] for raw preferences alphas [P, T] over features [T, N, d]."""
  return jnp.concatenate([_logits_for_alphas(model, params, features[:, s:s + chunk], jnp.asarray(alphas))
                          for s in range(0, features.shape[1], chunk)], axis=1)


def _over_chunks(fn, model: ExpertModel, params, features: jnp.ndarray, alphas: np.ndarray, chunk: int,
                 shift: jnp.ndarray | None) -> np.ndarray:
  """``fn`` [P, n] over fixed-size chunks of the N feature columns, the last one zero-padded, so each
  ``fn`` compiles once per chunk size; returns [P, N]."""
  alphas = jnp.asarray(np.atleast_2d(alphas), jnp.float32)
  n = features.shape[1]
  chunk = min(chunk, n)
  out = []
  for start in range(0, n, chunk):
    part = features[:, start:start + chunk]
    pad = chunk - part.shape[1]
    if pad:
      part = jnp.pad(part, ((0, 0), (0, pad), (0, 0)))
    out.append(fn(model, params, part, alphas, shift)[:, :chunk - pad])
  return np.asarray(jnp.concatenate(out, axis=1))


@functools.partial(jax.jit, static_argnums=0)
def _predict(model: ExpertModel, params, features, alphas, shift):
  logits = _logits_for_alphas(model, params, features, alphas)
  return jnp.argmax(logits if shift is None else logits + shift, axis=-1)


def predict_classes(model: ExpertModel, params, features: jnp.ndarray, alphas: np.ndarray,
                    chunk: int = 1000, shift: jnp.ndarray | None = None) -> np.ndarray:
  """Predicted classes [P, N] for raw preferences alphas [P, T]; chunks over N bound the memory.

  ``shift`` [K] is added to the logits before the argmax (post-hoc logit adjustment, see
  ``ExpertModel.prediction_shift``)."""
  return _over_chunks(_predict, model, params, features, alphas, chunk, shift)


@functools.partial(jax.jit, static_argnums=0)
def _confidences(model: ExpertModel, params, features, alphas, shift):
  logits = _logits_for_alphas(model, params, features, alphas)
  return jnp.max(jax.nn.softmax(logits if shift is None else logits + shift, axis=-1), axis=-1)


def predict_confidences(model: ExpertModel, params, features: jnp.ndarray, alphas: np.ndarray,
                        chunk: int = 1000, shift: jnp.ndarray | None = None) -> np.ndarray:
  """Confidences [P, N], ``max_k softmax(z + shift)_k``, of the predictions of :func:`predict_classes`.

  The calibration hook: with the correctness of those predictions it gives the expected calibration
  error (hyperlt.analysis.metrics). Same preferences, chunking and ``shift`` as :func:`predict_classes`.
  """
  return _over_chunks(_confidences, model, params, features, alphas, chunk, shift)


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
  predictions = predict_classes(run.model, run.state.params, features, alphas,
                                shift=run.model.prediction_shift(data.prior))
  return [{"preference": [float(v) for v in alpha],
           "results": accuracy_table(pred, data.test_y, data.test_sets, data.groups)}
          for alpha, pred in zip(np.atleast_2d(alphas), predictions)]


def evaluation_mesh(run: Run) -> Mesh:
  """The run's "data" mesh (``parallel.num_devices``), or every device where fewer are present now
  (a run trained on 8 devices is evaluated on the devices this machine has)."""
  wanted = run.config.parallel.num_devices
  return distributed.data_mesh(wanted if wanted <= jax.device_count() else 0)


def test_features(run: Run) -> jnp.ndarray:
  """Features [T, N, d] of the balanced test set, split over the devices of :func:`evaluation_mesh`."""
  data: pipeline.Prepared = run.data
  return extract_features(run.model, run.state.params, run.state.batch_stats, data.test_x, data.mean, data.std,
                          run.config.train.eval_batch_size, mesh=evaluation_mesh(run))


def default_preference(run: Run) -> np.ndarray:
  """``preference.default`` if set; else the vertex of the "uniform" anchor; else equal weights."""
  from hyperlt import preference  # pylint: disable=g-import-not-at-top
  t = run.model.num_experts
  if run.config.preference.default:
    return preference.parse(run.config.preference.default, t, "preference.default")
  anchors = list(run.config.loss.anchors)
  if "uniform" in anchors:
    return np.eye(t, dtype=np.float32)[anchors.index("uniform")]
  return np.full((t,), 1.0 / t, np.float32)


def _fmt(v: float | None) -> str:
  return "   -  " if v is None else f"{100 * v:6.2f}"


def format_table(results: dict[str, dict[str, float | None]], title: str = "") -> str:
  """A fixed-width table of one preference's results, accuracies in percent."""
  lines = [title] if title else []
  lines.append(f"{'test set':<11}" + "".join(f"{g:>8}" for g in GROUP_NAMES))
  for name, row in results.items():
    lines.append(f"{name:<11}" + "".join(f"  {_fmt(row[g])}" for g in GROUP_NAMES))
  return "\n".join(lines)


def format_comparison(results: Sequence[dict], labels: Sequence[str]) -> str:
  """Overall accuracy (percent) of several preferences side by side, one row per test set."""
  names = list(results[0]["results"])
  lines = [f"{'test set':<11}" + "".join(f"{l:>12}" for l in labels)]
  for name in names:
    lines.append(f"{name:<11}" + "".join(f"      {_fmt(r['results'][name]['all'])}" for r in results))
  means = [np.mean([r["results"][n]["all"] for n in names]) for r in results]
  lines.append(f"{'mean':<11}" + "".join(f"      {_fmt(m)}" for m in means))
  return "\n".join(lines)
