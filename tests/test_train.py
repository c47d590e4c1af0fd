"""The training loop: resuming, a kill in the middle of a checkpoint save, metrics JSON lines."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from hyperlt.errors import UserInputError
from hyperlt.training import loop
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib
from tests import helpers

EPOCHS = 3
RECORD_KEYS = {"step", "epoch", "loss", "sample_losses", "sample_accuracy", "grad_norm", "images_per_s"}
STEPS_PER_EPOCH = helpers.TINY_STEPS_PER_EPOCH


def _tiny_run_config(*overrides: str):
  """The config of tests/scripts/train_killed_mid_save.py and resume_and_compare.py, then ``overrides``."""
  return helpers.tiny_config(f"optim.epochs={EPOCHS}", "train.checkpoint_every_epochs=1", *overrides)


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
  """(workdir, steps per epoch, state after the kill, resume process, result) of one kill + resume."""
  workdir = tmp_path_factory.mktemp("killed")
  cache = helpers.xla_cache(tmp_path_factory)
  killed = helpers.run_script("train_killed_mid_save.py", str(workdir), cache_dir=cache)
  assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
  after_kill = {"latest": checkpoint.latest_step(workdir),
                "entries": sorted(p.name for p in (workdir / checkpoint.CHECKPOINT_DIR).iterdir()),
                "metrics": (workdir / checkpoint.METRICS_FILE).read_text()}
  resumed = helpers.run_script("resume_and_compare.py", str(workdir), str(tmp_path_factory.mktemp("straight")),
                               cache_dir=cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  result = helpers.read_result(resumed.stdout)
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
  config = _tiny_run_config("optim.lr=0.02")
  with pytest.raises(UserInputError, match=r"different config \(differs in optim.lr\)"):
    loop.train(config, workdir, data=helpers.tiny_data())


def test_drop_metrics_after_keeps_earlier_steps_and_other_records(tmp_path):
  lines = [json.dumps({"step": 1}), json.dumps({"event": "evaluate"}), json.dumps({"step": 2}),
           json.dumps({"step": 3}), '{"step": 4, "lo']  # the last line was cut by a kill
  (tmp_path / checkpoint.METRICS_FILE).write_text("\n".join(lines) + "\n")
  run_lib.drop_metrics_after(tmp_path, 2)
  kept = (tmp_path / checkpoint.METRICS_FILE).read_text().splitlines()
  assert kept == lines[:3]


@pytest.mark.slow
def test_a_work_dir_without_checkpoint_is_started_afresh(tmp_path, killed_then_resumed):
  # A first attempt that failed before its first checkpoint (a wrong data path, say) left config.json;
  # a corrected config may reuse the work dir, while a checkpointed run still refuses it.
  checkpoint.write_json(tmp_path / checkpoint.CONFIG_FILE, {"optim": {"lr": 123.0}})
  run_lib.check_config(tmp_path, helpers.tiny_config())
  with pytest.raises(UserInputError, match="differs in"):
    run_lib.check_config(killed_then_resumed[0], helpers.tiny_config())
