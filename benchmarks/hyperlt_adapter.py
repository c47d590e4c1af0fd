"""hyperlt as the benchmarks in this folder drive it: the ONE module of bench_official.py, gpu_run.py and
make_subset.py that imports hyperlt.

Why one module: hyperlt's internals move (modules are regrouped under hyperlt/training, models, data,
inference, workdir), and a benchmark that reached into them from many places would break in many places.
Everything those scripts need from hyperlt goes through the few functions and classes below, so a move is
fixed here alone. Each of them runs what a user's run runs:

* :class:`TrainStep`: the jitted training step of ``hyperlt train`` on device-resident data (batch gather,
  normalisation and augmentation on the device, then the update: features once, T preference samples,
  STCH, SGD), built by the same calls ``hyperlt.training.loop.train`` makes;
* :class:`Inference`: the inference path of ``hyperlt evaluate`` / ``hyperlt sweep`` (features of uint8
  images once, then predicted classes for P preferences in one call);
* :func:`train`, :func:`evaluate_preference`, :func:`sweep`, :func:`test_features`: the library's own
  training loop, evaluation and sweep on a run;
* :func:`config`, :func:`prepare_data`, :func:`longtail_indices`, :func:`simplex_grid`: configs, data and
  the long-tailed selection.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np

from hyperlt import configs as config_lib
from hyperlt import distributed, preference
from hyperlt.analysis import evaluate as evaluate_lib
from hyperlt.analysis import sweep as sweep_lib
from hyperlt.data import augment, longtail, pipeline, resident
from hyperlt.inference.predictor import Predictor
from hyperlt.models import expert_split
from hyperlt.models.expert_model import build
from hyperlt.training import loop as loop_lib
from hyperlt.training import objectives
from hyperlt.training import step as step_lib

# What the step phase of a benchmark must not change: the recipe's own progress bar is off.
_QUIET = ("train.progress=False",)


def config(spec: str, overrides: Sequence[str] = ()):
  """The validated config ``spec`` (e.g. "cifar_lt:c100,ir100") with ``key=value`` overrides applied."""
  c = config_lib.load(spec)
  config_lib.override(c, [*_QUIET, *overrides])
  return config_lib.validate(c)


def expert_form(c) -> str:
  """How ``c.model.experts`` runs the stacked expert branches outside training on this backend, e.g. "vmap"
  or "unrolled" (training decides "auto" by measurement, see hyperlt.training.autotune)."""
  return expert_split.resolve(c.model.experts)


def simplex_grid(num_experts: int, step: float) -> np.ndarray:
  """The preference grid of ``hyperlt sweep --step``: [P, T] (T = 3: step 0.1 -> 66, 0.05 -> 231)."""
  return preference.simplex_grid(num_experts, step)


def longtail_indices(labels: np.ndarray, imbalance_ratio: float, n_max: int | None = None,
                     seed: int = 0) -> np.ndarray:
  """hyperlt's long-tailed selection (what ``data.imbalance_ratio`` / ``data.n_max`` /
  ``data.subset_seed`` pick from a balanced set): sorted indices into ``labels``."""
  return longtail.longtail_indices(labels, imbalance_ratio, n_max=n_max, seed=seed)


def prepare_data(c):
  """The run data ``c.data`` describes (long-tailed training set, balanced test set, test sets)."""
  return pipeline.prepare(c.data)


class TrainStep:
  """One compiled training step of config ``c`` over device-resident uint8 images, with its state.

  ``images`` [N, H, W, C] uint8 and ``labels`` [N] are the training set; the class prior the loss
  anchors use is their label frequency (``num_classes`` classes). The step is the one ``hyperlt train``
  runs (same update, same on-device batch preparation and augmentation, same state layout), built by the
  calls ``hyperlt.training.loop.train`` makes. ``steps_per_call`` K > 1 (default: ``train.steps_per_call``
  of ``c``) runs K steps per compiled call (``loop.make_multi_step``); :meth:`run` then takes steps in
  multiples of K.
  """

  def __init__(self, c, images: np.ndarray, labels: np.ndarray, num_classes: int, steps_per_call: int | None = None):
    self.config = c
    self.batch_size = c.optim.batch_size
    self.model = build(c.model, num_classes)
    mesh = distributed.data_mesh(1)
    steps_per_epoch = max(len(labels) // self.batch_size, 1)
    counts = np.maximum(np.bincount(labels, minlength=num_classes), 1)
    tx = step_lib.make_optimizer(c.optim, steps_per_epoch, learn_scale=c.preference.learn_scale)
    update = step_lib.make_update(self.model, tx, objectives.from_config(c, counts, steps_per_epoch * c.optim.epochs))
    self.mean, self.std = tuple(c.data.mean), tuple(c.data.std)
    batches = resident.step_input(self.batch_size, self.mean, self.std, augment.Augmentation.from_config(c.data),
                                  mesh)
    steps_per_call = self.steps_per_call = steps_per_call or c.train.steps_per_call
    self._step = (loop_lib.make_step(update, batches, mesh) if steps_per_call == 1
                  else loop_lib.make_multi_step(update, batches, mesh, steps_per_call))
    self.state = loop_lib.initial_state(self.model, tx, c.seed, tuple(images.shape[1:]), mesh)
    self._x = distributed.replicate(np.asarray(images, np.uint8), mesh)
    self._y = distributed.replicate(np.asarray(labels, np.int32), mesh)
    perm = np.random.default_rng(0).permutation(len(labels)).astype(np.int32)
    self._perm = distributed.replicate(perm, mesh)
    # Batch indices a call may start at: all of its K batches lie inside the epoch.
    self._starts = max(steps_per_epoch - steps_per_call + 1, 1)
    self._calls = 0

  def _call(self):
    self.state, metrics = self._step(self.state, self._x, self._y, self._perm,
                                     (self._calls * self.steps_per_call) % self._starts)
    self._calls += 1
    return metrics

  def run(self, steps: int) -> float:
    """Runs ``steps`` consecutive steps (rounded up to whole calls) and waits for the last; returns seconds
    per step."""
    calls = -(-steps // self.steps_per_call)
    start = time.perf_counter()
    for _ in range(calls):
      metrics = self._call()
    jax.block_until_ready(metrics["loss"])
    return (time.perf_counter() - start) / (calls * self.steps_per_call)

  def last_loss(self) -> float:
    """The loss of one more call (a finite number shows the step computes something sane)."""
    return float(self._call()["loss"])

  def lowered(self):
    """The call lowered for its current arguments (``.compile().as_text()`` gives the optimised HLO)."""
    return self._step.lower(self.state, self._x, self._y, self._perm, 0)

  def flops(self) -> float | None:
    """XLA's count of floating-point operations of one call (None where the backend gives none)."""
    try:
      cost = self.lowered().cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      return float(cost["flops"])
    except Exception:  # pylint: disable=broad-except
      return None

  def inference(self, batch_size: int) -> "Inference":
    """The inference path on this step's current parameters."""
    return Inference(self.model, self.state.params, self.state.batch_stats, self.mean, self.std, batch_size)


class Inference:
  """The inference path of ``hyperlt evaluate`` and ``hyperlt sweep``: features of uint8 images in
  batches of ``batch_size``, then predicted classes for P preferences at once (no post-hoc shift)."""

  def __init__(self, model, params, batch_stats, mean, std, batch_size: int):
    self.batch_size = batch_size
    self._predictor = Predictor(model, params, batch_stats, mean, std, batch_size=batch_size)

  def features(self, images: np.ndarray):
    """Features [T, N, d] of uint8 images [N, H, W, C] (on the device, computed)."""
    return jax.block_until_ready(self._predictor.features(images))

  def classes(self, features, alphas: np.ndarray) -> np.ndarray:
    """Predicted classes [P, N] for raw preferences alphas [P, T], on the host."""
    return np.asarray(self._predictor.classes(features, alphas))

  def predict(self, images: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Features once, then classes [P, N] for every preference: what a P-preference sweep computes."""
    return self.classes(self.features(images), alphas)


def train(c, workdir: str | pathlib.Path | None, data=None):
  """``hyperlt train``: trains config ``c`` (on ``data`` if given, else ``c.data``); returns the run."""
  return loop_lib.train(c, workdir, data=data, log=lambda _: None)


def epoch_seconds(workdir: str | pathlib.Path, images_per_epoch: int) -> list[float]:
  """Seconds of each logged interval of a run trained with ``train.log_every_steps`` = one epoch, from
  the images/s its metrics file records (the first interval includes compilation)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [images_per_epoch / r["images_per_s"] for r in records if r.get("images_per_s")]


def default_preference(run) -> np.ndarray:
  """The preference ``hyperlt evaluate`` uses without ``--preference``: [T]."""
  return evaluate_lib.default_preference(run)


def evaluate_preference(run, alpha: np.ndarray) -> dict:
  """``hyperlt evaluate --preference``: accuracy by test set and shot group for one preference [T]."""
  return evaluate_lib.evaluate_alphas(run, np.asarray(alpha, np.float32)[None])[0]["results"]


def sweep(run, step: float):
  """``hyperlt sweep --step`` without writing files: every grid preference scored on every test set."""
  return sweep_lib.sweep(run, step)


def test_features(run):
  """Features of the run's balanced test set, computed (the feature pass of ``hyperlt evaluate``)."""
  return jax.block_until_ready(evaluate_lib.test_features(run))


def num_test_images(run) -> int:
  return len(run.data.test_y)


def backend() -> str:
  """JAX's default backend: "cpu", "gpu" or "tpu"."""
  return jax.default_backend()


def backbone_parameter_count(step: TrainStep) -> int | None:
  """Parameters of the step's backbone (trunk and expert branches, no heads or hypernetwork): equal
  widths give the same count as another implementation of the same network."""
  backbone = step.state.params.get("backbone") if isinstance(step.state.params, dict) else None
  if backbone is None:
    return None
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(backbone)))


def versions() -> dict[str, Any]:
  """Versions of the libraries this side runs on."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for name in ("hyperlt", "jax", "jaxlib", "flax", "optax", "numpy", "ml_collections"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  out["hyperlt_commit"] = _commit()
  return out


def _commit() -> str | None:
  """The git commit of the hyperlt checkout (read only; the work tree may hold changes beyond it)."""
  import subprocess  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  root = pathlib.Path(hyperlt.__file__).resolve().parents[1]
  try:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None
