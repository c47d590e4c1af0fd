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
import jax.numpy as jnp
import ml_collections
import tqdm
from jax.sharding import Mesh

from hyperlt import distributed, progress
from hyperlt.workdir import checkpoint, lock
from hyperlt.workdir import run as run_lib
from hyperlt import configs as config_lib
from hyperlt.data import pipeline
from hyperlt.data.dataset import StepInput
from hyperlt.errors import UserInputError, require
from hyperlt.models.expert_model import ExpertModel, build
from hyperlt.training import autotune, objectives
from hyperlt.training.step import TrainState, init_state, make_optimizer, make_update

Data = run_lib.Data

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


def make_multi_step(update: Callable, batches: StepInput, mesh: Mesh, steps: int) -> Callable:
  """Jitted ``(state, *args) -> (state, metrics)``: ``steps`` consecutive steps of :func:`make_step` in one
  call, as an unrolled :func:`jax.lax.scan`, for step arguments whose LAST entry is the batch index within
  the epoch (the resident input's ``(x_all, y_all, perm, index)``): step k of the call runs on index
  ``index + k``, so the caller passes the first step's arguments and keeps all ``steps`` indices inside
  the epoch.

  One dispatch instead of ``steps``: what a step costs the host (argument checks, launching, the
  in-flight bookkeeping) is paid once. The metrics are those of the last step, except the divergence
  guard's boolean flags (``finite``, ``finite_loss``, ...), which are true only if they held for every one
  of the steps. The state is the one ``steps`` single calls give, to float rounding: XLA fuses across the
  steps of the call (tests/training/test_multi_step.py).
  """
  if steps < 1:
    raise ValueError(f"make_multi_step: expected steps >= 1, got {steps}")
  whole = distributed.replicated(mesh)

  def multi(state, *args):
    *fixed, index = args

    def one(state, k):
      aug_key, sample_key = _step_key(state)
      images, labels = batches.prepare(aug_key, *fixed, index + k)
      return update(state, images, labels, sample_key)

    # Unrolled: XLA:CPU ran the rolled loop (a while loop around the step) at 4-5x the time per step, the
    # unrolled one at 0.85x (benchmarks/results/steps_per_call_*_cpu.json); compilation takes ~K times longer.
    state, stacked = jax.lax.scan(one, state, jnp.arange(steps, dtype=jnp.int32), unroll=steps)
    metrics = {name: jnp.all(values) if values.dtype == jnp.bool_ else values[-1]
               for name, values in stacked.items()}
    return state, metrics

  return jax.jit(multi, in_shardings=(whole, *batches.shardings), out_shardings=(whole, whole), donate_argnums=0)


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
  return record


class _Guard:
  """The host side of the divergence guard (hyperlt.training.step.guard): reads the ``finite`` flag of
  each finished step, in order, and stops the run at the first step that was not finite.

  Reading the flag of the oldest in-flight step is the wait the loop needs anyway (it keeps at most
  STEPS_IN_FLIGHT steps queued), so the check adds no host-device round trip per step.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path | None, last_saved: int | None):
    self.config, self.workdir, self.last_saved = config, workdir, last_saved
    self.in_flight: collections.deque = collections.deque()

  def dispatched(self, step: int, metrics: dict, steps: int = 1) -> None:
    """Queues the flags of the call that ran the ``steps`` steps ending with global step ``step``."""
    self.in_flight.append((step, steps, {k: v for k, v in metrics.items() if k.startswith("finite")}))
    self.finish(STEPS_IN_FLIGHT)

  def finish(self, keep: int = 0) -> None:
    """Waits until at most ``keep`` steps are in flight; UserInputError if a finished one diverged."""
    while len(self.in_flight) > keep:
      step, steps, flags = self.in_flight.popleft()
      if not bool(distributed.to_local(flags["finite"])):
        raise UserInputError(self._message(step, steps, jax.device_get(distributed.to_local(flags))))

  def _message(self, step: int, steps: int, flags: dict) -> str:
    what = [name for key, name in (("finite_loss", "the loss"), ("finite_grad_norm", "the gradient norm"),
                                   ("finite_state", "the updated parameters or optimiser state"))
            if not flags.get(key, True)]
    lr = f"{self.config.optim.lr / 10:g}"
    what = ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else (what or ["the step"])[0]
    # A multi-step call (train.steps_per_call) reports for all its steps together.
    where = f"at step {step}" if steps == 1 else f"in steps {step - steps + 1}..{step}"
    text = (f"training diverged {where}: {what} became non-finite (NaN "
            f"or inf); the update was not applied and nothing non-finite was saved. ")
    if self.workdir is None:
      return text + f"Lower optim.lr (now {self.config.optim.lr:g}), e.g. optim.lr={lr}"
    if self.last_saved is None:
      return text + (f"No checkpoint was saved yet: run your hyperlt train --workdir {self.workdir} command "
                     f"again with a lower learning rate, e.g. optim.lr={lr}")
    return text + (f"The last good checkpoint is step {self.last_saved}; restart from it with a lower learning "
                   f"rate: hyperlt train --workdir {self.workdir} --restart-from {self.last_saved} optim.lr={lr}")


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path | None = None, *,
          data: Data | None = None, log: Callable[[str], None] = print,
          restart_from: int | None = None) -> run_lib.Run:
  """Trains (or resumes) the run described by ``config``; checkpoints and metrics go to ``workdir``.

  With several devices (or processes, see ``config.parallel``) the global batch ``optim.batch_size`` is
  split over them; the result is the same computation as on one device. Only process 0 writes the
  metrics and the JSON files; every process takes part in saving checkpoints. The returned state is
  on this process's first device.

  A work dir has one writer: process 0 holds its lock (hyperlt.workdir.lock) for the whole run, and a
  second ``train`` on it raises UserInputError at once. A resume starts from the newest checkpoint that
  reads and verifies (damaged newer ones are moved to ``WORKDIR/damaged``) and cuts ``metrics.jsonl``
  back to it. ``restart_from=STEP`` (``hyperlt train --restart-from STEP``) resumes from that checkpoint
  with changed optimisation fields (hyperlt.workdir.run.RESTARTABLE_CHANGES, e.g. a lower ``optim.lr``
  after a divergence): the checkpoints after it move to ``WORKDIR/superseded`` and ``metrics.jsonl``
  records the restart as ``{"event": "restart", "at_step": STEP, "changed": {...}}``. A step whose loss,
  gradient norm or new state is not finite stops the run with UserInputError naming the restart command.
  """
  config_lib.validate(config)
  distributed.initialize_from_config(config.parallel)
  if workdir is None:
    require(restart_from is None, "--restart-from: needs a --workdir holding the checkpoint to restart from")
    return _train(config, None, data, log, None)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with lock.exclusive(workdir) if distributed.is_primary() else contextlib.nullcontext():
    return _train(config, workdir, data, log, restart_from)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path | None, data: Data | None,
           log: Callable[[str], None], restart_from: int | None) -> run_lib.Run:
  primary = distributed.is_primary()
  if workdir is not None:
    changed = run_lib.check_config(workdir, config, restart=restart_from is not None)
  data = pipeline.prepare(config.data) if data is None else data
  num_train = len(data.train_y)
  batch_size = config.optim.batch_size
  require(batch_size <= num_train, f"optim.batch_size: {batch_size} exceeds the {num_train} training images")
  mesh = distributed.data_mesh(config.parallel.num_devices)
  distributed.check_batch_divides(batch_size, mesh)
  steps_per_epoch = num_train // batch_size
  total_steps = steps_per_epoch * config.optim.epochs

  facts = run_lib.RunFacts.of(data)
  tx = make_optimizer(config.optim, steps_per_epoch, learn_scale=config.preference.learn_scale)
  objective = objectives.from_config(config, data.class_counts, total_steps)
  # model.experts / model.conv "auto": the fastest candidate on this backend, timed once (hyperlt.training.autotune).
  model = build(autotune.model_config(config, data.image_shape, data.num_classes, batch_size // mesh.size, workdir,
                                      make_update=lambda m: make_update(m, tx, objective), log=log,
                                      init_state=lambda m: init_state(m, tx, config.seed, data.image_shape)),
                data.num_classes)
  update = make_update(model, tx, objective)
  state = initial_state(model, tx, config.seed, data.image_shape, mesh)

  mngr, last_saved = None, None
  if workdir is not None:
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    try:
      restored, events = 0, ()
      if mngr.latest_step() is not None:
        damaged = workdir / checkpoint.DAMAGED_DIR if primary else None
        restored, state = checkpoint.restore(mngr, state, restart_from, log=log, set_aside=damaged)
        if primary:
          checkpoint.verify_older(mngr, state, restored, log=log, set_aside=damaged)
        last_saved = restored
        log(f"resumed from step {restored} in {workdir}")
      if restart_from is not None:
        moved = checkpoint.set_aside_after(workdir, restart_from, checkpoint.SUPERSEDED_DIR) if primary else []
        checkpoint.reload(mngr)
        events = ({"event": "restart", "at_step": restart_from, "changed": changed, "superseded": moved},)
        fields = ", ".join(f"{k}={v[1]}" for k, v in changed.items()) or "the same config"
        aside = f"; checkpoints {', '.join(map(str, moved))} moved to {workdir / checkpoint.SUPERSEDED_DIR}"
        log(f"restarted from step {restart_from} with {fields}{aside if moved else ''}")
      if primary:
        # Also after a run killed before its first checkpoint: its records would otherwise stay beside ours.
        run_lib.drop_metrics_after(workdir, restored, events)
    except BaseException:
      mngr.close()  # the loop's finally closes it from here on
      raise
    run_lib.write_run_files(workdir, config, facts)

  # The data's own training input (device-resident or streamed); the loop below is the same for both.
  inputs = data.train_input(config, distributed.to_local(state.rng), mesh)
  step_fn = make_step(update, inputs.step_input, mesh)
  # train.steps_per_call > 1: runs of K steps in one call where the input allows it (device-resident
  # batches) and no step inside the run is logged; epoch ends and logged steps fall back to single steps.
  per_call = config.train.steps_per_call if inputs.step_input.indexed else 1
  multi_fn = make_multi_step(update, inputs.step_input, mesh, per_call) if per_call > 1 else None
  log_every = config.train.log_every_steps

  def steps_in_call(i: int, step: int) -> int:
    """How many steps the call that starts with epoch batch ``i`` (global step ``step``) runs."""
    fits = multi_fn is not None and i + per_call <= steps_per_epoch
    return per_call if fits and not any((step + j) % log_every == 0 for j in range(per_call - 1)) else 1

  first_step = int(distributed.to_local(state.step))
  # The first step compiles (seconds to minutes): the bar says so, and its clock restarts once it is done.
  bar = tqdm.tqdm(total=total_steps, initial=first_step, desc="train (compiling the step)", unit="step",
                  disable=not (config.train.progress and primary and progress.enabled()), dynamic_ncols=True)
  compiling = True
  tick, images_since = time.perf_counter(), 0
  guard = _Guard(config, workdir, last_saved)
  try:
    for epoch in range(first_step // steps_per_epoch, config.optim.epochs):
      start = max(first_step - epoch * steps_per_epoch, 0)
      # closing(): an error in the step stops a streaming input's producer thread at once.
      with contextlib.closing(inputs.epoch(epoch, start)) as epoch_batches:
        batches = enumerate(epoch_batches, start=start)
        for i, args in batches:
          step = epoch * steps_per_epoch + i + 1
          calls = steps_in_call(i, step)
          if calls > 1:
            state, metrics = multi_fn(state, *args)
            for _ in range(calls - 1):  # the call ran these batches' steps already
              next(batches)
            step += calls - 1
          else:
            state, metrics = step_fn(state, *args)
          if compiling:  # the step is compiled now; the rate and ETA count only the steps after it
            compiling = False
            bar.unpause()
            bar.set_description("train")
          images_since += calls * batch_size
          guard.dispatched(step, metrics, calls)
          if step % config.train.log_every_steps == 0 or step == total_steps:
            guard.finish()  # the record fetches this step's metrics anyway; no diverged step is logged
            now = time.perf_counter()
            record = {**_record(step, epoch + 1, metrics, images_since, now - tick),
                      **inputs.interval_metrics(now - tick)}
            tick, images_since = now, 0
            if workdir is not None and primary:
              checkpoint.append_metrics(workdir, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", epoch=epoch + 1)
          bar.update(calls)
      if mngr is not None and ((epoch + 1) % config.train.checkpoint_every_epochs == 0
                               or epoch + 1 == config.optim.epochs):
        guard.finish()  # only a state reached by finite steps is saved
        checkpoint.save(mngr, (epoch + 1) * steps_per_epoch, state)
        guard.last_saved = (epoch + 1) * steps_per_epoch
    guard.finish()
  finally:
    bar.close()
    inputs.close()
    if mngr is not None:
      mngr.close()
  state = distributed.to_local(state)
  return run_lib.Run(config=config, model=model, params=state.params, batch_stats=state.batch_stats, facts=facts,
                     step=int(state.step), workdir=workdir, data=data, train_state=state)
