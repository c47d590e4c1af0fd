"""The divergence guard: a non-finite step keeps the old state bit for bit, the loop stops at the first such
step with one restart command, no non-finite checkpoint is written, and the restart recovers the run."""

from __future__ import annotations

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt.errors import UserInputError
from hyperlt.models.expert_model import build
from hyperlt.training import loop, objectives
from hyperlt.training.step import guard, init_state, make_optimizer, make_update
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib
from tests import helpers

STEPS_PER_EPOCH = helpers.TINY_STEPS_PER_EPOCH


def _leaves_equal(a, b) -> bool:
  """Bit-for-bit equality of two trees (NaN payloads included), not numerical closeness."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()
      for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def tiny_update():
  config = helpers.tiny_config()
  data = helpers.tiny_data()
  model = build(config.model, data.num_classes)
  tx = make_optimizer(config.optim, STEPS_PER_EPOCH)
  update = jax.jit(make_update(model, tx, objectives.from_config(config, data.class_counts, 10)),
                   compiler_options={"xla_backend_optimization_level": 0})
  state = init_state(model, tx, 0, data.image_shape)
  images = (jnp.asarray(data.train_x[:16], jnp.float32) / 255 - 0.5) / 0.25
  return update, state, images, jnp.asarray(data.train_y[:16])


def test_a_finite_step_is_applied_and_flagged_finite(tiny_update):
  update, state, images, labels = tiny_update
  new, metrics = update(state, images, labels, jax.random.PRNGKey(1))
  assert bool(metrics["finite"]) and bool(metrics["finite_loss"]) and bool(metrics["finite_grad_norm"])
  assert int(new.step) == 1 and not _leaves_equal(new.params, state.params)


def test_a_nan_batch_keeps_the_old_state_bit_for_bit(tiny_update):
  update, state, images, labels = tiny_update
  images = jnp.full_like(images, jnp.nan)
  new, metrics = update(state, images, labels, jax.random.PRNGKey(1))
  assert not bool(metrics["finite"])
  assert _leaves_equal(new, state)


@flax.struct.dataclass
class _State:
  """The fields of a TrainState that guard() reads."""
  params: object
  batch_stats: object
  opt_state: object
  step: object


def test_guard_selects_exactly_and_names_the_failed_check():
  old = {"w": jnp.array([1.0, 2.0]), "n": jnp.int32(3)}
  new = {"w": jnp.array([1.5, jnp.inf]), "n": jnp.int32(4)}
  as_state = lambda t: _State(params=t["w"], batch_stats={}, opt_state=(), step=t["n"])
  kept, flags = guard(as_state(old), as_state(new), jnp.float32(0.3), jnp.float32(1.0))
  assert not bool(flags["finite"]) and not bool(flags["finite_state"]) and bool(flags["finite_loss"])
  assert _leaves_equal(kept, as_state(old))
  finite_new = {"w": jnp.array([1.5, 2.5]), "n": jnp.int32(4)}
  kept, flags = guard(as_state(old), as_state(finite_new), jnp.float32(0.3), jnp.float32(1.0))
  assert bool(flags["finite"]) and _leaves_equal(kept, as_state(finite_new))
  _, flags = guard(as_state(old), as_state(finite_new), jnp.float32(0.3), jnp.float32(jnp.nan))
  assert not bool(flags["finite"]) and not bool(flags["finite_grad_norm"])


def _records(workdir):
  return [json.loads(line) for line in (workdir / checkpoint.METRICS_FILE).read_text().splitlines()]


def test_divergence_stops_saves_nothing_non_finite_and_restart_recovers(tmp_path):
  config = lambda *o: helpers.tiny_config("optim.epochs=3", "train.checkpoint_every_epochs=1", *o)
  workdir = tmp_path
  straight = loop.train(config(), workdir, data=helpers.tiny_data(), log=lambda _: None)

  # From step 5, a learning rate of 1e30 overflows within two steps.
  with pytest.raises(UserInputError) as raised:
    loop.train(config("optim.lr=1e30", "optim.epochs=4"), workdir, data=helpers.tiny_data(), log=lambda _: None,
               restart_from=STEPS_PER_EPOCH)
  message = str(raised.value)
  assert "training diverged at step" in message and "\n" not in message
  assert f"hyperlt train --workdir {workdir} --restart-from {STEPS_PER_EPOCH} optim.lr=1e+29" in message
  # The later checkpoints were set aside, not deleted; every checkpoint left is finite.
  assert sorted(p.name for p in (workdir / checkpoint.SUPERSEDED_DIR).iterdir()) == ["10", "15"]
  assert checkpoint.latest_step(workdir) == STEPS_PER_EPOCH
  loaded = run_lib.load(workdir, with_data=False)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(loaded.params))
  records = _records(workdir)
  restart = [r for r in records if r.get("event") == "restart"]
  assert restart == [{"event": "restart", "at_step": STEPS_PER_EPOCH, "superseded": [10, 15],
                      "changed": {"optim.lr": [0.05, 1e30], "optim.epochs": [3, 4]}}]
  assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)

  # Restarting from the last good step with the original optimisation reproduces the uninterrupted run.
  messages = []
  again = loop.train(config(), workdir, data=helpers.tiny_data(), log=messages.append, restart_from=STEPS_PER_EPOCH)
  assert any("restarted from step 5" in m for m in messages)
  assert _leaves_equal(again.params, straight.params) and again.step == straight.step
  steps = [r["step"] for r in _records(workdir) if "step" in r]
  assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))  # each step once, the diverged ones cut away
  # Only the optimisation may change on a restart, and a refused restart moves nothing.
  with pytest.raises(UserInputError, match=r"differs in optim\.batch_size.*only optim\."):
    loop.train(config("optim.batch_size=8"), workdir, data=helpers.tiny_data(), restart_from=STEPS_PER_EPOCH)
  with pytest.raises(UserInputError, match="optim.momentum: a restart cannot switch momentum"):
    loop.train(config("optim.momentum=0"), workdir, data=helpers.tiny_data(), restart_from=STEPS_PER_EPOCH)
  with pytest.raises(UserInputError, match="no checkpoint of step 3 "):
    loop.train(config(), workdir, data=helpers.tiny_data(), restart_from=3)
  assert checkpoint.latest_step(workdir) == 3 * STEPS_PER_EPOCH
  assert sorted(p.name for p in (workdir / checkpoint.SUPERSEDED_DIR).iterdir()) == ["10", "15"]
