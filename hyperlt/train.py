"""The training loop: device-resident data, the jitted step, checkpoints and JSON-lines metrics.

The update itself (features once, T preference samples vmapped, STCH, optax) is in hyperlt.step. The
training set lives on the device; every epoch a device-side permutation is drawn and each step
slices its batch from it, so the loop moves no data from host to device.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
import tqdm

from hyperlt import checkpoint, config as config_lib, losses
from hyperlt.data import augment, pipeline
from hyperlt.errors import UserInputError, require
from hyperlt.model import ExpertModel, build
from hyperlt.step import StepConfig, TrainState, init_state, make_optimizer, make_update


def make_resident_step(update: Callable, batch_size: int, mean, std, crop_padding: int, flip: bool) -> Callable:
  """Jitted ``(state, x_all, y_all, perm, index) -> (state, metrics)``: batch ``index`` of the epoch
  permutation ``perm`` over the device-resident uint8 images ``x_all``, augmented on device."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x_all, y_all, perm, index):
    idx = jax.lax.dynamic_slice(perm, (index * batch_size,), (batch_size,))
    aug_key, sample_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
    images = augment.random_crop_flip(aug_key, augment.normalize(x_all[idx], mean, std), crop_padding, flip)
    return update(state, images, y_all[idx], sample_key)

  return step


@functools.partial(jax.jit, static_argnums=1)
def epoch_permutation(key: jax.Array, n: int, epoch: jnp.ndarray) -> jnp.ndarray:
  return jax.random.permutation(jax.random.fold_in(key, epoch), n)


@dataclasses.dataclass
class Run:
  """What a finished (or restored) run holds: everything evaluation, sweeps and prediction need."""

  config: ml_collections.ConfigDict
  model: ExpertModel
  state: TrainState
  data: pipeline.Prepared | None
  workdir: pathlib.Path | None


def _check_workdir_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """A work dir holds one run: resuming with another config would mix two experiments."""
  path = workdir / checkpoint.CONFIG_FILE
  if not path.exists():
    checkpoint.write_json(path, config_lib.to_dict(config))
    return
  saved = checkpoint.read_json(path, "--workdir")
  current = config_lib.to_dict(config)
  ignore = {("train", "progress")}
  differ = [f"{s}.{k}" for s in current for k in current[s] if isinstance(current[s], dict)
            and (s, k) not in ignore and saved.get(s, {}).get(k) != current[s][k]]
  differ += [k for k in current if not isinstance(current[k], dict) and saved.get(k) != current[k]]
  require(not differ, f"--workdir: {workdir} holds a run with a different config (differs in "
          f"{', '.join(differ)}); resume with the same config or choose a new --workdir")


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path | None = None, *,
          data: pipeline.Prepared | None = None, log: Callable[[str], None] = print) -> Run:
  """Trains (or resumes) the run described by ``config``; checkpoints and metrics go to ``workdir``."""
  config_lib.validate(config)
  data = pipeline.prepare(config.data) if data is None else data
  num_train = len(data.train_y)
  batch_size = config.optim.batch_size
  require(batch_size <= num_train, f"optim.batch_size: {batch_size} exceeds the {num_train} training images")
  steps_per_epoch = num_train // batch_size
  total_steps = steps_per_epoch * config.optim.epochs

  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, steps_per_epoch)
  adjust = losses.adjustments(config.loss.anchors, data.prior, config.loss.tau)
  update = make_update(model, tx, adjust, StepConfig.from_config(config))
  step_fn = make_resident_step(update, batch_size, data.mean, data.std, config.data.crop_padding,
                               config.data.flip)
  state = init_state(model, tx, config.seed, data.image_shape)

  mngr = None
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir_config(workdir, config)
    checkpoint.write_json(workdir / checkpoint.DATA_FILE, data.describe())
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
      state = checkpoint.restore(mngr, state)
      log(f"resumed from step {int(state.step)} in {workdir}")

  x_all, y_all = jax.device_put(data.train_x), jax.device_put(data.train_y.astype(np.int32))
  perm_key = jax.random.fold_in(state.rng, 1 << 20)
  start_epoch = int(state.step) // steps_per_epoch
  bar = tqdm.tqdm(total=total_steps, initial=int(state.step), disable=not config.train.progress,
                  desc="train", unit="step", dynamic_ncols=True)
  tick, images_since = time.perf_counter(), 0
  for epoch in range(start_epoch, config.optim.epochs):
    perm = epoch_permutation(perm_key, num_train, epoch)
    for i in range(steps_per_epoch):
      state, metrics = step_fn(state, x_all, y_all, perm, i)
      images_since += batch_size
      step = epoch * steps_per_epoch + i + 1
      if step % config.train.log_every_steps == 0 or step == total_steps:
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        record = {"step": step, "epoch": epoch + 1, "loss": float(metrics["loss"]),
                  "sample_losses": [float(v) for v in metrics["sample_losses"]],
                  "sample_accuracy": [float(v) for v in metrics["sample_accuracy"]],
                  "grad_norm": float(metrics["grad_norm"]),
                  "images_per_s": images_since / (now - tick)}
        tick, images_since = now, 0
        require(np.isfinite(record["loss"]), f"training diverged at step {step} (loss {record['loss']}); "
                "lower optim.lr")
        if workdir is not None:
          checkpoint.append_metrics(workdir, record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", epoch=epoch + 1)
      bar.update(1)
    if mngr is not None and ((epoch + 1) % config.train.checkpoint_every_epochs == 0
                             or epoch + 1 == config.optim.epochs):
      checkpoint.save(mngr, int(state.step), state)
  bar.close()
  if mngr is not None:
    mngr.close()
  return Run(config=config, model=model, state=state, data=data, workdir=workdir)


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
  data = pipeline.prepare(config.data) if with_data else None
  if data is not None:
    require(list(data.class_counts) == facts["class_counts"],
            f"--workdir: the data of {workdir} no longer matches its recorded class counts")
  return Run(config=config, model=model, state=state, data=data, workdir=workdir)
