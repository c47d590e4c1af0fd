"""K training steps in one compiled call (``loop.make_multi_step``) against K single calls of ``make_step``."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import distributed
from hyperlt.data import augment
from hyperlt.data import resident
from hyperlt.models.expert_model import build
from hyperlt.training import loop, objectives
from hyperlt.training.step import make_optimizer, make_update
from tests import helpers

K = 2


def _setup(lr: float = 0.05):
  config = helpers.tiny_config(f"optim.lr={lr}")
  data = helpers.tiny_data()
  mesh = distributed.data_mesh(1)
  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, helpers.TINY_STEPS_PER_EPOCH)
  update = make_update(model, tx, objectives.from_config(config, data.class_counts, 10))
  batches = resident.step_input(config.optim.batch_size, data.mean, data.std,
                                augment.Augmentation.from_config(config.data), mesh)
  state = lambda: loop.initial_state(model, tx, config.seed, data.image_shape, mesh)
  x, y = distributed.replicate(data.train_x, mesh), distributed.replicate(data.train_y, mesh)
  perm = distributed.replicate(np.random.default_rng(0).permutation(len(data.train_y)).astype(np.int32), mesh)
  return update, batches, mesh, state, (x, y, perm)


def test_k_steps_in_one_call_equal_k_single_steps():
  update, batches, mesh, state, args = _setup()
  single, multi = loop.make_step(update, batches, mesh), loop.make_multi_step(update, batches, mesh, K)
  a = state()
  for i in range(1, 1 + K):
    a, last = single(a, *args, i)
  b, metrics = multi(state(), *args, 1)
  assert int(b.step) == K
  # The same arithmetic, but XLA fuses the scan body on its own: equal to float32 rounding, not bit for bit
  # (2e-5 relative after 3 steps on CPU).
  chex.assert_trees_all_close(b.params, a.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(b.batch_stats, a.batch_stats, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(b.opt_state, a.opt_state, rtol=1e-4, atol=1e-5)
  assert set(metrics) == set(last)
  for name in ("loss", "sample_losses", "sample_accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics[name], last[name], rtol=1e-4, atol=1e-5, err_msg=name)
  assert bool(metrics["finite"])


def test_a_non_finite_step_inside_the_call_clears_the_flags():
  # NaN images for the first batch of the call only: the first step is not finite (the guard keeps the
  # state it was given), the last one is, and the call's flags (all over the K steps) still say a step failed.
  update, batches, mesh, state, args = _setup()
  x, y, perm = args
  first = jnp.asarray(np.asarray(y)[np.asarray(perm)[helpers.TINY_BATCH:2 * helpers.TINY_BATCH]])
  poisoned = lambda s, images, labels, key: update(s, jnp.where(jnp.all(labels == first), jnp.nan, images),
                                                   labels, key)
  b, metrics = loop.make_multi_step(poisoned, batches, mesh, K)(state(), *args, 1)
  assert not bool(metrics["finite"]) and not bool(metrics["finite_state"])
  assert int(b.step) == K - 1  # only the poisoned step left the state as it was
  assert all(bool(np.all(np.isfinite(leaf))) for leaf in jax.tree.leaves(b.params))


def test_steps_must_be_positive():
  update, batches, mesh, _, _ = _setup()
  with pytest.raises(ValueError, match="steps >= 1"):
    loop.make_multi_step(update, batches, mesh, 0)


def test_training_with_two_steps_per_call_follows_single_steps(tmp_path, monkeypatch):
  # 5 steps an epoch, a record every 2 steps: calls of 2 where no step inside is logged (steps 1-2, 3-4,
  # 7-8, 9-10), single steps at 5 and 6; every record and the final state match single-step training.
  multi_calls = []
  real = loop.make_multi_step

  def counting(*args):
    fn = real(*args)
    return lambda state, *step_args: (multi_calls.append(1), fn(state, *step_args))[1]

  monkeypatch.setattr(loop, "make_multi_step", counting)
  runs, records = {}, {}
  for per_call in (1, 2):
    workdir = tmp_path / f"per_call{per_call}"
    config = helpers.tiny_config("train.log_every_steps=2", f"train.steps_per_call={per_call}")
    runs[per_call] = loop.train(config, workdir, data=helpers.tiny_data(), log=lambda _: None)
    records[per_call] = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert runs[2].step == runs[1].step == 2 * helpers.TINY_STEPS_PER_EPOCH
  assert len(multi_calls) == 4
  assert [r["step"] for r in records[2]] == [r["step"] for r in records[1]] == [2, 4, 6, 8, 10]
  np.testing.assert_allclose([r["loss"] for r in records[2]], [r["loss"] for r in records[1]], rtol=1e-4)
  chex.assert_trees_all_close(runs[2].params, runs[1].params, rtol=1e-4, atol=1e-5)
