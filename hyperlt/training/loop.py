"""The training loop: the jitted step over a "data" mesh, the input paths, checkpoints and JSON-lines metrics.

The update itself (features once, T preference samples vmapped, STCH, optax) is in hyperlt.training.step. Two
input paths feed it:

* resident (CIFAR-sized data): the uint8 training set is copied to every device once; every epoch a
  device-side permutation is drawn and each step gathers, normalises and augments its batch on the
  device, so the loop moves no data from host to device;
* streaming (``data.source = "lists"``, ImageNet-sized data): worker threads decode and augment images
  on the host (hyperlt.data.streaming) and the loader transfers each batch ahead of the step.

Both steps are jitted with explicit shardings (hyperlt.distributed): state replicated, batch split
over the "data" axis. The same function runs on 1..N devices and on several hosts, and it is compiled
once: every argument keeps its shape, dtype and sharding from step to step.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import time
from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tqdm
from jax.sharding import Mesh

from hyperlt import distributed, losses
from hyperlt.workdir import checkpoint
from hyperlt import configs as config_lib
from hyperlt.data import augment, lists, pipeline, streaming
from hyperlt.errors import UserInputError, require
from hyperlt.models.expert_model import ExpertModel, build
from hyperlt.training.step import StepConfig, TrainState, init_state, make_optimizer, make_update

Data = pipeline.Prepared | lists.ListData

# A seed offset that keeps the epoch permutations apart from every other use of the state's key.
_PERMUTATION_STREAM = 1 << 20
# Steps dispatched but not finished, at most. Two keep the device fed (one runs while the next is
# queued) without letting the host run ahead unboundedly, so time spent waiting for input is time the
# device has run out of work.
STEPS_IN_FLIGHT = 2


def _step_key(state: TrainState) -> tuple[jax.Array, jax.Array]:
  """(augmentation key, preference-sampling key) of the state's current step."""
  aug_key, sample_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  return aug_key, sample_key


def make_resident_step(update: Callable, batch_size: int, mean, std, augmentation: augment.Augmentation,
                       mesh: Mesh | None = None) -> Callable:
  """Jitted ``(state, x_all, y_all, perm, index) -> (state, metrics)``: batch ``index`` of the epoch
  permutation ``perm`` over the device-resident uint8 images ``x_all``, augmented on device.

  ``x_all``, ``y_all`` and ``perm`` are replicated over ``mesh`` (default: every device); the gathered
  batch is constrained to the "data" sharding, so each device augments and runs only its own rows.
  """
  mesh = mesh if mesh is not None else distributed.data_mesh()
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  rows, whole = distributed.batch_sharding(mesh), distributed.replicated(mesh)

  def step(state, x_all, y_all, perm, index):
    idx = jax.lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
    images = jax.lax.with_sharding_constraint(x_all[idx], rows)
    labels = jax.lax.with_sharding_constraint(y_all[idx], rows)
    aug_key, sample_key = _step_key(state)
    images = augmentation(aug_key, augment.normalize(images, mean, std))
    return update(state, images, labels, sample_key)

  return jax.jit(step, in_shardings=(whole,) * 5, out_shardings=(whole, whole), donate_argnums=0)


def make_streaming_step(update: Callable, mean, std, mesh: Mesh | None = None) -> Callable:
  """Jitted ``(state, images_uint8, labels) -> (state, metrics)`` for batches augmented on the host.

  ``images_uint8`` [B, S, S, C] and ``labels`` [B] are split over the "data" axis of ``mesh``; the
  step only normalises them (on the device, so the host sends uint8).
  """
  mesh = mesh if mesh is not None else distributed.data_mesh()
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  rows, whole = distributed.batch_sharding(mesh), distributed.replicated(mesh)

  def step(state, images, labels):
    _, sample_key = _step_key(state)
    return update(state, augment.normalize(images, mean, std), labels, sample_key)

  return jax.jit(step, in_shardings=(whole, rows, rows), out_shardings=(whole, whole), donate_argnums=0)


def make_permutation(num_train: int, mesh: Mesh) -> Callable:
  """Jitted ``(rng, epoch) -> perm``: the epoch's shuffle of the training set, replicated over ``mesh``."""

  def permutation(rng, epoch):
    key = jax.random.fold_in(jax.random.fold_in(rng, _PERMUTATION_STREAM), epoch)
    return jax.random.permutation(key, num_train)

  whole = distributed.replicated(mesh)
  return jax.jit(permutation, in_shardings=(whole, whole), out_shardings=whole)


@dataclasses.dataclass
class Run:
  """What a finished (or restored) run holds: everything evaluation, sweeps and prediction need."""

  config: ml_collections.ConfigDict
  model: ExpertModel
  state: TrainState
  data: Data | None
  workdir: pathlib.Path | None


def deferred_reweighting(loss: ml_collections.ConfigDict, train_y: np.ndarray, num_classes: int,
                         total_steps: int) -> tuple[np.ndarray | None, int]:
  """``(class_weights, from_step)`` for ``make_update``: DRW per ``loss.reweight_*``, or ``(None, 0)``."""
  if loss.reweight_start <= 0:
    return None, 0
  counts = np.bincount(np.asarray(train_y), minlength=num_classes)
  require(np.all(counts > 0), "loss.reweight_start: deferred re-weighting needs every class in the training set")
  return losses.class_balanced_weights(counts, loss.reweight_beta), int(round(loss.reweight_start * total_steps))


def prepare_data(data: ml_collections.ConfigDict) -> Data:
  """The arrays (or, for list files, the lists) described by ``config.data``."""
  return lists.prepare(data) if data.source == lists.SOURCE else pipeline.prepare(data)


# Fields that may change between a run and its resumption: how the run is displayed, launched and fed,
# not what it computes.
_RESUMABLE_CHANGES = {("train", "progress"), ("data", "root"), ("data", "workers"), ("data", "prefetch")}
_RESUMABLE_SECTIONS = {"parallel"}


def _check_workdir_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """A work dir holds one run: resuming it with another config would mix two experiments.

  Only a run that reached a checkpoint counts; a work dir whose first attempt failed before that (a
  wrong data path, say) is started afresh.
  """
  path = workdir / checkpoint.CONFIG_FILE
  if checkpoint.latest_step(workdir) is None or not path.exists():
    return
  saved = checkpoint.read_json(path, "--workdir")
  current = config_lib.to_dict(config)
  differ = [f"{s}.{k}" for s in current if isinstance(current[s], dict) for k in current[s]
            if s not in _RESUMABLE_SECTIONS and (s, k) not in _RESUMABLE_CHANGES
            and saved.get(s, {}).get(k) != current[s][k]]
  differ += [k for k in current if not isinstance(current[k], dict) and saved.get(k) != current[k]]
  require(not differ, f"--workdir: {workdir} holds a run with a different config (differs in "
          f"{', '.join(differ)}); resume with the same config or choose a new --workdir")


def _write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, data: Data) -> None:
  """config.json and data.json, by process 0. After :func:`_check_workdir_config` a resumed run can only
  differ in the fields that may change (a moved ``data.root``), and later commands should see those."""
  if distributed.is_primary():
    checkpoint.write_json(workdir / checkpoint.CONFIG_FILE, config_lib.to_dict(config))
    checkpoint.write_json(workdir / checkpoint.DATA_FILE, data.describe())


def _drop_metrics_after(workdir: pathlib.Path, step: int) -> None:
  """Removes records of steps after the restored checkpoint: they were computed by a run that died
  before saving, and the resumed run logs those steps again."""
  path = workdir / checkpoint.METRICS_FILE
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # A line cut short by the kill.
    if not (isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step):
      kept.append(line)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text("".join(line + "\n" for line in kept))
  os.replace(tmp, path)


def initial_state(model: ExpertModel, tx, seed: int, image_shape: tuple[int, int, int], mesh: Mesh) -> TrainState:
  """``init_state`` as one compiled function, written straight into the replicated layout of the step.

  Eager initialisation compiles every operation on its own; one program compiled without backend
  optimisation (it runs once) is more than ten times faster to build on a CPU.
  """
  build_state = jax.jit(lambda: init_state(model, tx, seed, image_shape),
                        out_shardings=distributed.replicated(mesh),
                        compiler_options={"xla_backend_optimization_level": 0})
  return build_state()


def _record(step: int, epoch: int, metrics, images: int, seconds: float) -> dict:
  """The JSON-lines record of one logged step (metrics fetched from the devices)."""
  metrics = jax.device_get(distributed.to_local(metrics))
  record = {"step": step, "epoch": epoch, "loss": float(metrics["loss"]),
            "sample_losses": [float(v) for v in metrics["sample_losses"]],
            "sample_accuracy": [float(v) for v in metrics["sample_accuracy"]],
            "grad_norm": float(metrics["grad_norm"]), "images_per_s": images / seconds}
  require(np.isfinite(record["loss"]), f"training diverged at step {step} (loss {record['loss']}); "
          "lower optim.lr")
  return record


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path | None = None, *,
          data: Data | None = None, log: Callable[[str], None] = print) -> Run:
  """Trains (or resumes) the run described by ``config``; checkpoints and metrics go to ``workdir``.

  With several devices (or processes, see ``config.parallel``) the global batch ``optim.batch_size`` is
  split over them; the result is the same computation as on one device. Only process 0 writes the
  metrics and the JSON files; every process takes part in saving checkpoints. The returned state is
  on this process's first device.
  """
  config_lib.validate(config)
  distributed.initialize_from_config(config.parallel)
  primary = distributed.is_primary()
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir_config(workdir, config)
  data = prepare_data(config.data) if data is None else data
  num_train = len(data.train_y)
  batch_size = config.optim.batch_size
  require(batch_size <= num_train, f"optim.batch_size: {batch_size} exceeds the {num_train} training images")
  mesh = distributed.data_mesh(config.parallel.num_devices)
  distributed.check_batch_divides(batch_size, mesh)
  steps_per_epoch = num_train // batch_size
  total_steps = steps_per_epoch * config.optim.epochs

  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch)
  adjust = losses.adjustments(config.loss.anchors, data.prior, config.loss.tau)
  update = make_update(model, tx, adjust, StepConfig.from_config(config),
                       *deferred_reweighting(config.loss, data.train_y, data.num_classes, total_steps))
  state = initial_state(model, tx, config.seed, data.image_shape, mesh)

  mngr = None
  if workdir is not None:
    _write_run_files(workdir, config, data)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
      state = checkpoint.restore(mngr, state)
      restored = int(distributed.to_local(state.step))
      if primary:
        _drop_metrics_after(workdir, restored)
      log(f"resumed from step {restored} in {workdir}")

  loader = None
  if isinstance(data, lists.ListData):
    step_fn = make_streaming_step(update, data.mean, data.std, mesh)
    loader = streaming.Loader(
        data.train, batch_size, data.image_size, config.seed, min_scale=config.data.min_scale,
        flip=config.data.flip, color_jitter=config.data.color_jitter, workers=config.data.workers,
        prefetch=config.data.prefetch, rows=distributed.process_rows(batch_size),
        put=lambda x, y: (distributed.global_batch(x, mesh, batch_size),
                          distributed.global_batch(y.astype(np.int32), mesh, batch_size)))
    batches = loader.epoch
  else:
    step_fn = make_resident_step(update, batch_size, data.mean, data.std,
                                 augment.Augmentation.from_config(config.data), mesh)
    permutation = make_permutation(num_train, mesh)
    x_all = distributed.replicate(data.train_x, mesh)
    y_all = distributed.replicate(data.train_y.astype(np.int32), mesh)
    # A copy, because the step donates (and so invalidates) the state's own buffers.
    perm_rng = distributed.replicate(distributed.to_local(state.rng), mesh)

    def batches(epoch: int, start: int) -> Iterator[tuple]:
      perm = permutation(perm_rng, epoch)
      for i in range(start, steps_per_epoch):
        yield x_all, y_all, perm, i

  first_step = int(distributed.to_local(state.step))
  bar = tqdm.tqdm(total=total_steps, initial=first_step, disable=not (config.train.progress and primary),
                  desc="train", unit="step", dynamic_ncols=True)
  tick, images_since, waited = time.perf_counter(), 0, 0.0
  in_flight: collections.deque = collections.deque()
  try:
    for epoch in range(first_step // steps_per_epoch, config.optim.epochs):
      start = max(first_step - epoch * steps_per_epoch, 0)
      # closing(): an error in the step stops the loader's producer thread at once.
      with contextlib.closing(batches(epoch, start)) as epoch_batches:
        for i, args in enumerate(epoch_batches, start=start):
          state, metrics = step_fn(state, *args)
          in_flight.append(metrics["loss"])
          if len(in_flight) > STEPS_IN_FLIGHT:
            in_flight.popleft().block_until_ready()
          images_since += batch_size
          step = epoch * steps_per_epoch + i + 1
          if step % config.train.log_every_steps == 0 or step == total_steps:
            now = time.perf_counter()
            record = _record(step, epoch + 1, metrics, images_since, now - tick)
            if loader is not None:
              # Share of the interval the loop waited for a batch with at most STEPS_IN_FLIGHT steps
              # queued: about the share the device sat idle for want of input (0 = decoding keeps up).
              record["input_wait_fraction"] = (loader.wait_s - waited) / (now - tick)
              waited = loader.wait_s
            tick, images_since = now, 0
            if workdir is not None and primary:
              checkpoint.append_metrics(workdir, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", epoch=epoch + 1)
          bar.update(1)
      if mngr is not None and ((epoch + 1) % config.train.checkpoint_every_epochs == 0
                               or epoch + 1 == config.optim.epochs):
        checkpoint.save(mngr, (epoch + 1) * steps_per_epoch, state)
  finally:
    bar.close()
    if loader is not None:
      loader.close()
    if mngr is not None:
      mngr.close()
  return Run(config=config, model=model, state=distributed.to_local(state), data=data, workdir=workdir)


def load(workdir: str | pathlib.Path, *, with_data: bool = True, step: int | None = None) -> Run:
  """Restores a trained work dir: config, model and state (and, by default, its data)."""
  workdir = pathlib.Path(workdir)
  saved_config, facts = checkpoint.require_run(workdir)
  try:
    config = config_lib.validate(config_lib.from_dict(saved_config))
  except UserInputError as e:
    raise UserInputError(f"--workdir: {workdir}/{checkpoint.CONFIG_FILE} is not a valid config: {e}") from None
  num_classes = len(facts["class_counts"])
  model = build(config.model, num_classes)
  steps_per_epoch = max(facts["num_train"] // config.optim.batch_size, 1)
  tx = make_optimizer(config.optim, steps_per_epoch)
  abstract = jax.eval_shape(lambda: init_state(model, tx, config.seed, tuple(facts["image_shape"])))
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore(mngr, abstract, step)
  mngr.close()
  data = prepare_data(config.data) if with_data else None
  if data is not None:
    require(list(data.class_counts) == facts["class_counts"],
            f"--workdir: the data of {workdir} no longer matches its recorded class counts")
  return Run(config=config, model=model, state=state, data=data, workdir=workdir)
