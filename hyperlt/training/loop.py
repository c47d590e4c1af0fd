"""The training loop: the jitted step over a "data" mesh, the input paths, checkpoints and JSON-lines metrics.

The update itself (features once, T preference samples vmapped, STCH, optax) is in hyperlt.training.step. The
run's data supplies its training input (hyperlt.data.dataset.TrainInput), and the loop is the same for both
kinds:

* resident (CIFAR-sized data, hyperlt.data.resident): the uint8 training set is copied to every device
  once; every epoch a device-side permutation is drawn and each step gathers, normalises and augments
  its batch on the device, so the loop moves no data from host to device;
* streamed (``data.source = "lists"``, ImageNet-sized data, hyperlt.data.streamed): worker threads decode
  and augment images on the host and the loader transfers each batch ahead of the step.

The step (:func:`make_step`) is jitted with explicit shardings (hyperlt.distributed): state replicated,
batch split over the "data" axis. The same function runs on 1..N devices and on several hosts, and it is compiled
once: every argument keeps its shape, dtype and sharding from step to step.
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
import tqdm
from jax.sharding import Mesh

from hyperlt import distributed
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib
from hyperlt import configs as config_lib
from hyperlt.data import augment, pipeline, resident, streamed
from hyperlt.data.dataset import StepInput
from hyperlt.errors import require
from hyperlt.models.expert_model import ExpertModel, build
from hyperlt.training import objectives
from hyperlt.training.step import TrainState, init_state, make_optimizer, make_update

Data = run_lib.Data
# The run record and the work-dir files live in hyperlt.workdir.run; these names stay importable from
# here for callers written against the earlier training module.
Run, load = run_lib.Run, run_lib.load
_check_workdir_config, _drop_metrics_after = run_lib.check_config, run_lib.drop_metrics_after

# Steps dispatched but not finished, at most. Two keep the device fed (one runs while the next is
# queued) without letting the host run ahead unboundedly, so time spent waiting for input is time the
# device has run out of work.
STEPS_IN_FLIGHT = 2


def _step_key(state: TrainState) -> tuple[jax.Array, jax.Array]:
  """(augmentation key, preference-sampling key) of the state's current step."""
  aug_key, sample_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  return aug_key, sample_key


def make_step(update: Callable, batches: StepInput, mesh: Mesh) -> Callable:
  """Jitted ``(state, *args) -> (state, metrics)``: the update on the batch that ``batches.prepare`` makes
  of the step arguments ``args`` (what a :class:`~hyperlt.data.dataset.TrainInput` yields for one step).

  The state is replicated over ``mesh`` and donated; ``args`` keep the shardings ``batches`` declares. The
  step's key gives the augmentation key to the input and the preference-sampling key to the update.
  """
  whole = distributed.replicated(mesh)

  def step(state, *args):
    aug_key, sample_key = _step_key(state)
    images, labels = batches.prepare(aug_key, *args)
    return update(state, images, labels, sample_key)

  return jax.jit(step, in_shardings=(whole, *batches.shardings), out_shardings=(whole, whole), donate_argnums=0)


def make_resident_step(update: Callable, batch_size: int, mean, std, augmentation: augment.Augmentation,
                       mesh: Mesh | None = None) -> Callable:
  """:func:`make_step` for device-resident data: ``(state, x_all, y_all, perm, index)`` (see
  :func:`hyperlt.data.resident.step_input`)."""
  mesh = mesh if mesh is not None else distributed.data_mesh()
  return make_step(update, resident.step_input(batch_size, mean, std, augmentation, mesh), mesh)


def make_streaming_step(update: Callable, mean, std, mesh: Mesh | None = None) -> Callable:
  """:func:`make_step` for host-decoded batches: ``(state, images_uint8, labels)`` (see
  :func:`hyperlt.data.streamed.step_input`)."""
  mesh = mesh if mesh is not None else distributed.data_mesh()
  return make_step(update, streamed.step_input(mean, std, mesh), mesh)


# The data layer prepares a run's data, in memory or streamed; this name stays for older callers.
prepare_data = pipeline.prepare


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
    run_lib.check_config(workdir, config)
  data = prepare_data(config.data) if data is None else data
  num_train = len(data.train_y)
  batch_size = config.optim.batch_size
  require(batch_size <= num_train, f"optim.batch_size: {batch_size} exceeds the {num_train} training images")
  mesh = distributed.data_mesh(config.parallel.num_devices)
  distributed.check_batch_divides(batch_size, mesh)
  steps_per_epoch = num_train // batch_size
  total_steps = steps_per_epoch * config.optim.epochs

  facts = run_lib.RunFacts.of(data)
  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch, learn_scale=config.preference.learn_scale)
  update = make_update(model, tx, objectives.from_config(config, data.class_counts, total_steps))
  state = initial_state(model, tx, config.seed, data.image_shape, mesh)

  mngr = None
  if workdir is not None:
    run_lib.write_run_files(workdir, config, facts)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
      state = checkpoint.restore(mngr, state)
      restored = int(distributed.to_local(state.step))
      if primary:
        run_lib.drop_metrics_after(workdir, restored)
      log(f"resumed from step {restored} in {workdir}")

  # The data's own training input (device-resident or streamed); the loop below is the same for both.
  inputs = data.train_input(config, distributed.to_local(state.rng), mesh)
  step_fn = make_step(update, inputs.step_input, mesh)

  first_step = int(distributed.to_local(state.step))
  bar = tqdm.tqdm(total=total_steps, initial=first_step, disable=not (config.train.progress and primary),
                  desc="train", unit="step", dynamic_ncols=True)
  tick, images_since = time.perf_counter(), 0
  in_flight: collections.deque = collections.deque()
  try:
    for epoch in range(first_step // steps_per_epoch, config.optim.epochs):
      start = max(first_step - epoch * steps_per_epoch, 0)
      # closing(): an error in the step stops a streaming input's producer thread at once.
      with contextlib.closing(inputs.epoch(epoch, start)) as epoch_batches:
        for i, args in enumerate(epoch_batches, start=start):
          state, metrics = step_fn(state, *args)
          in_flight.append(metrics["loss"])
          if len(in_flight) > STEPS_IN_FLIGHT:
            in_flight.popleft().block_until_ready()
          images_since += batch_size
          step = epoch * steps_per_epoch + i + 1
          if step % config.train.log_every_steps == 0 or step == total_steps:
            now = time.perf_counter()
            record = {**_record(step, epoch + 1, metrics, images_since, now - tick),
                      **inputs.interval_metrics(now - tick)}
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
    inputs.close()
    if mngr is not None:
      mngr.close()
  state = distributed.to_local(state)
  return run_lib.Run(config=config, model=model, params=state.params, batch_stats=state.batch_stats, facts=facts,
                     step=int(state.step), workdir=workdir, data=data, train_state=state)
