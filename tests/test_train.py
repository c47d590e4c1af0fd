"""The training loop: resuming, a kill in the middle of a checkpoint save, metrics JSON lines."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hyperlt.workdir import checkpoint
from hyperlt.training import loop as train
from hyperlt.errors import UserInputError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 3
RECORD_KEYS = {"step", "epoch", "loss", "sample_losses", "sample_accuracy", "grad_norm", "images_per_s"}

# Shared by the subprocess tests of the training loop, sharding, multi-host and precision: a 2-stage,
# 8/16-channel ResNet with 3 experts on 92 synthetic long-tailed 8x8 images (5 steps of 16 per epoch),
# so a run takes seconds and needs neither the digits source nor scikit-learn. (At 4/8 channels some
# BatchNorm channels are nearly constant and amplify float rounding from step to step, which would
# make 1e-5 comparisons between device layouts meaningless.)
PRELUDE = textwrap.dedent("""
    import json, os, signal, sys
    import jax, numpy as np
    from hyperlt.workdir import checkpoint
    from hyperlt import configs as config_lib
    from hyperlt.training import loop as train
    from hyperlt.data import longtail, pipeline

    def tiny_config(*overrides):
      config = config_lib.load("digits")
      config_lib.override(config, [
          "model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1", "model.hyper_hidden=(16,)",
          "optim.batch_size=16", "optim.epochs=2", "optim.warmup_epochs=0", "train.progress=False",
          "train.log_every_steps=1", "data.val_fraction=0.0", *overrides])
      return config_lib.validate(config)

    def tiny_data():
      rng = np.random.default_rng(0)
      counts = np.array([40, 24, 14, 8, 6])
      def images(labels):
        x = np.linspace(40, 215, 5)[labels][:, None, None, None] + rng.normal(0, 30, (len(labels), 8, 8, 1))
        x[np.arange(len(labels)), labels] = 255  # a class-specific bright row
        return np.clip(x, 0, 255).astype(np.uint8)
      train_y = np.repeat(np.arange(5), counts).astype(np.int32)
      test_y = np.repeat(np.arange(5), 6).astype(np.int32)
      return pipeline.Prepared(
          name="tiny", class_names=tuple("abcde"), train_x=images(train_y), train_y=train_y,
          val_x=np.zeros((0, 8, 8, 1), np.uint8), val_y=np.zeros(0, np.int32), test_x=images(test_y),
          test_y=test_y, class_counts=counts, mean=(0.5,), std=(0.25,),
          test_sets=longtail.all_test_sets(test_y), groups=longtail.shot_groups(counts, 20, 10))

    def params(run):
      return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(run.state.params)]

    def losses(workdir):
      with open(os.path.join(workdir, checkpoint.METRICS_FILE)) as f:
        return [json.loads(line)["loss"] for line in f]
""")
STEPS_PER_EPOCH = 92 // 16
TINY_RUN = f"tiny_config('optim.epochs={EPOCHS}', 'train.checkpoint_every_epochs=1')"

# Kills the process (SIGKILL, no clean-up) inside the second checkpoint save, after its files are written
# to orbax's temporary directory and before the rename that commits them.
_KILLED_SCRIPT = PRELUDE + textwrap.dedent(f"""
    from orbax.checkpoint._src.path import atomicity
    saves = []
    real_save, real_finalize = checkpoint.save, atomicity.AtomicRenameTemporaryPath.finalize
    def save(*args, **kwargs):
      saves.append(1)
      return real_save(*args, **kwargs)
    async def finalize(self, *args, **kwargs):
      if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
      return await real_finalize(self, *args, **kwargs)
    checkpoint.save, atomicity.AtomicRenameTemporaryPath.finalize = save, finalize
    train.train({TINY_RUN}, sys.argv[1], data=tiny_data(), log=print)
    print("NOT KILLED")
""")

# Resumes the killed run, then trains the same config without interruption in a fresh work dir.
_RESUME_SCRIPT = PRELUDE + textwrap.dedent(f"""
    resumed = train.train({TINY_RUN}, sys.argv[1], data=tiny_data(), log=print)
    straight = train.train({TINY_RUN}, sys.argv[2], data=tiny_data(), log=print)
    loaded = train.load(sys.argv[1], with_data=False)
    print("RESULT", json.dumps({{"resumed": params(resumed), "straight": params(straight),
                                "loaded": params(loaded), "loaded_step": int(loaded.state.step)}}))
""")


def run_python(script: str, *args: str, cache_dir: pathlib.Path | None = None, xla_flags: str = "",
               timeout: int = 120) -> subprocess.CompletedProcess:
  """Runs ``script`` in a fresh CPU-only interpreter from the repository root.

  XLA's backend optimisation is off: these runs check what is computed, not how fast, and an
  unoptimised CPU compile is about five times faster. ``cache_dir`` shares compiled programs between
  processes that compile the same step (JAX's persistent compilation cache).
  """
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_backend_optimization_level=0 {xla_flags}".strip()}
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=REPO_ROOT)


def xla_cache(tmp_path_factory) -> pathlib.Path:
  """One compilation cache for the whole test session."""
  return tmp_path_factory.getbasetemp() / "xla-cache"


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
  """(workdir, steps per epoch, state after the kill, resume process, result) of one kill + resume."""
  workdir = tmp_path_factory.mktemp("killed")
  cache = xla_cache(tmp_path_factory)
  killed = run_python(_KILLED_SCRIPT, str(workdir), cache_dir=cache)
  assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
  after_kill = {"latest": checkpoint.latest_step(workdir),
                "entries": sorted(p.name for p in (workdir / checkpoint.CHECKPOINT_DIR).iterdir()),
                "metrics": (workdir / checkpoint.METRICS_FILE).read_text()}
  resumed = run_python(_RESUME_SCRIPT, str(workdir), str(tmp_path_factory.mktemp("straight")), cache_dir=cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  result = json.loads(resumed.stdout.split("RESULT", 1)[1])
  return workdir, STEPS_PER_EPOCH, after_kill, resumed, result


@pytest.mark.slow
def test_kill_mid_save_leaves_the_last_complete_checkpoint(killed_then_resumed):
  _, steps_per_epoch, after_kill, _, _ = killed_then_resumed
  assert after_kill["latest"] == steps_per_epoch
  # The interrupted save left only an uncommitted temporary directory, which is never read.
  assert str(steps_per_epoch) in after_kill["entries"]
  assert str(2 * steps_per_epoch) not in after_kill["entries"]
  assert any("tmp" in name for name in after_kill["entries"]), after_kill["entries"]
  logged = [json.loads(l)["step"] for l in after_kill["metrics"].splitlines()]
  assert logged == list(range(1, 2 * steps_per_epoch + 1))


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(killed_then_resumed):
  _, steps_per_epoch, _, resumed, result = killed_then_resumed
  assert f"resumed from step {steps_per_epoch}" in resumed.stdout
  assert result["loaded_step"] == EPOCHS * steps_per_epoch
  for a, b, c in zip(result["resumed"], result["straight"], result["loaded"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.slow
def test_metrics_jsonl_has_one_record_per_step_after_resume(killed_then_resumed):
  workdir, steps_per_epoch, _, _, _ = killed_then_resumed
  records = [json.loads(l) for l in (workdir / checkpoint.METRICS_FILE).read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, EPOCHS * steps_per_epoch + 1))
  for r in records:
    assert RECORD_KEYS <= set(r)
    assert r["epoch"] == (r["step"] - 1) // steps_per_epoch + 1
    assert len(r["sample_losses"]) == len(r["sample_accuracy"]) == 3
    assert np.isfinite(r["loss"]) and r["grad_norm"] >= 0 and r["images_per_s"] > 0
    assert all(0 <= a <= 1 for a in r["sample_accuracy"])


@pytest.mark.slow
def test_resuming_with_another_config_names_the_difference(killed_then_resumed):
  workdir = killed_then_resumed[0]
  helpers = {}
  exec(PRELUDE, helpers)  # pylint: disable=exec-used
  config = helpers["tiny_config"](f"optim.epochs={EPOCHS}", "train.checkpoint_every_epochs=1", "optim.lr=0.02")
  with pytest.raises(UserInputError, match=r"different config \(differs in optim.lr\)"):
    train.train(config, workdir, data=helpers["tiny_data"]())


def test_drop_metrics_after_keeps_earlier_steps_and_other_records(tmp_path):
  lines = [json.dumps({"step": 1}), json.dumps({"event": "evaluate"}), json.dumps({"step": 2}),
           json.dumps({"step": 3}), '{"step": 4, "lo']  # the last line was cut by a kill
  (tmp_path / checkpoint.METRICS_FILE).write_text("\n".join(lines) + "\n")
  train._drop_metrics_after(tmp_path, 2)  # pylint: disable=protected-access
  kept = (tmp_path / checkpoint.METRICS_FILE).read_text().splitlines()
  assert kept == lines[:3]


@pytest.mark.slow
def test_a_work_dir_without_checkpoint_is_started_afresh(tmp_path, killed_then_resumed):
  # A first attempt that failed before its first checkpoint (a wrong data path, say) left config.json;
  # a corrected config may reuse the work dir, while a checkpointed run still refuses it.
  helpers = {}
  exec(PRELUDE, helpers)  # pylint: disable=exec-used
  checkpoint.write_json(tmp_path / checkpoint.CONFIG_FILE, {"optim": {"lr": 123.0}})
  train._check_workdir_config(tmp_path, helpers["tiny_config"]())  # pylint: disable=protected-access
  with pytest.raises(UserInputError, match="differs in"):
    train._check_workdir_config(killed_then_resumed[0], helpers["tiny_config"]())  # pylint: disable=protected-access
