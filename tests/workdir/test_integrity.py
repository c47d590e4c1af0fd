"""Checkpoint integrity: checksums, the fall-back over damaged checkpoints, the writer's clean-up, the work-dir
lock and the metrics cut-back (hyperlt.workdir.checkpoint, .run, .lock and hyperlt.training.loop)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from hyperlt.errors import UserInputError
from hyperlt.training import loop
from hyperlt.workdir import checkpoint, lock
from hyperlt.workdir import run as run_lib
from tests import helpers

EPOCH = helpers.TINY_STEPS_PER_EPOCH  # steps per epoch, and the step of the first checkpoint


def _config():
  return helpers.tiny_config("optim.epochs=3", "train.checkpoint_every_epochs=1", "train.keep_checkpoints=3")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run with checkpoints at steps 5, 10 and 15, and its final parameters."""
  workdir = tmp_path_factory.mktemp("trained")
  run = loop.train(_config(), workdir, data=helpers.tiny_data(), log=lambda _: None)
  return workdir, run


@pytest.fixture
def workdir(trained, tmp_path):
  """A private copy of the trained work dir, to damage."""
  copy = tmp_path / "w"
  shutil.copytree(trained[0], copy)
  return copy


def _step_dir(workdir, step):
  return workdir / checkpoint.CHECKPOINT_DIR / str(step)


def _array_files(workdir, step):
  return [p for p in _step_dir(workdir, step).rglob("*") if p.is_file() and p.parent.name == "d"]


def _flip_bytes(workdir, step):
  """Eight bytes inverted in the middle of every array file (which file holds the parameters is orbax's)."""
  for path in _array_files(workdir, step):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def _wrong_checksum(workdir, step):
  """The saved digest of the parameters changed: the files no longer match what was saved."""
  path = _step_dir(workdir, step) / "_CHECKPOINT_METADATA"
  metadata = json.loads(path.read_text())
  digest = metadata["custom_metadata"][checkpoint.CHECKSUM_KEY]["params"]
  metadata["custom_metadata"][checkpoint.CHECKSUM_KEY]["params"] = digest[::-1]
  path.write_text(json.dumps(metadata))


def _truncate(workdir, step):
  for path in _array_files(workdir, step):
    os.truncate(path, path.stat().st_size // 3)


def _drop_metadata(workdir, step):
  (_step_dir(workdir, step) / "_CHECKPOINT_METADATA").unlink()


def _garble_metadata(workdir, step):
  (_step_dir(workdir, step) / "_CHECKPOINT_METADATA").write_text("{garbled")


def _half_delete(workdir, step):
  """What a kill in the middle of orbax removing a checkpoint leaves: every other file gone."""
  files = sorted(p for p in _step_dir(workdir, step).rglob("*") if p.is_file())
  for path in files[::2]:
    path.unlink()


# Flipped bytes either fail to decompress (data or array metadata) or decode to other values, which the
# checksum finds.
DAMAGE = {"flipped bytes": (_flip_bytes, r"checksum of its .*params.* does not match|truncated, garbled"),
          "checksum mismatch": (_wrong_checksum, r"checksum of its params does not match"),
          "truncated file": (_truncate, "truncated, garbled or missing"),
          "missing metadata": (_drop_metadata, r"metadata file \(_CHECKPOINT_METADATA\) is missing"),
          "garbled metadata": (_garble_metadata, r"metadata file \(_CHECKPOINT_METADATA\) is missing or unreadable"),
          "half deleted": (_half_delete, "")}


def _equal(a, b) -> bool:
  return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(jax.tree.leaves(a),
                                                                                   jax.tree.leaves(b)))


def _listing(workdir):
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_readers_skip_a_damaged_newest_checkpoint_and_say_why(workdir, kind):
  damage, reason = DAMAGE[kind]
  damage(workdir, 3 * EPOCH)
  before = _listing(workdir)
  messages = []
  loaded = run_lib.load(workdir, with_data=False, log=messages.append)
  assert loaded.step == 2 * EPOCH
  assert _equal(loaded.params, run_lib.load(workdir, 2 * EPOCH, with_data=False).params)
  assert len(messages) == 1 and f"skipped checkpoint step {3 * EPOCH}" in messages[0]
  assert re.search(reason, messages[0]), messages[0]
  assert f"using step {2 * EPOCH}" in messages[0]
  assert _listing(workdir) == before  # readers change nothing
  # Asked for by step, the damaged checkpoint is an error, not a silent substitute.
  with pytest.raises(UserInputError, match=f"checkpoint .*/{3 * EPOCH} is damaged"):
    run_lib.load(workdir, 3 * EPOCH, with_data=False)


def test_no_readable_checkpoint_is_one_clear_error(workdir):
  for step, damage in zip((EPOCH, 2 * EPOCH, 3 * EPOCH), (_truncate, _drop_metadata, _wrong_checksum)):
    damage(workdir, step)
  with pytest.raises(UserInputError, match="no readable checkpoint in .*step 15: .*checksum.*step 10: .*metadata"):
    run_lib.load(workdir, with_data=False)


def test_train_sets_damaged_checkpoints_aside_and_resumes_bit_identically(workdir, trained):
  _truncate(workdir, 3 * EPOCH)
  _half_delete(workdir, EPOCH)
  # An uncommitted save (orbax's temporary directory) left by a kill.
  shutil.copytree(_step_dir(workdir, 2 * EPOCH), workdir / checkpoint.CHECKPOINT_DIR / "20.orbax-checkpoint-tmp-1")
  messages = []
  run = loop.train(_config(), workdir, data=helpers.tiny_data(), log=messages.append)
  assert any(f"skipped checkpoint step {3 * EPOCH}" in m and "moved to" in m for m in messages), messages
  assert any(f"checkpoint step {EPOCH} is incomplete or damaged" in m for m in messages), messages
  assert any(f"resumed from step {2 * EPOCH}" in m for m in messages)
  # Nothing deleted: the damaged checkpoints are kept aside; the uncommitted save is gone.
  assert sorted(int(p.name) for p in (workdir / checkpoint.DAMAGED_DIR).iterdir()) == [EPOCH, 3 * EPOCH]
  assert sorted(p.name for p in (workdir / checkpoint.CHECKPOINT_DIR).iterdir()) == [str(2 * EPOCH), str(3 * EPOCH)]
  assert _equal(run.params, trained[1].params)
  steps = [r["step"] for r in map(json.loads, (workdir / checkpoint.METRICS_FILE).read_text().splitlines())]
  assert steps == list(range(1, 3 * EPOCH + 1))


def test_metrics_are_cut_back_atomically(tmp_path):
  lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 9)]
  lines.insert(3, json.dumps({"event": "restart", "at_step": 3, "changed": {}}))
  lines.append(json.dumps({"event": "restart", "at_step": 7, "changed": {}}))
  (tmp_path / checkpoint.METRICS_FILE).write_text("\n".join(lines) + '\n{"step": 9, "lo')  # a line cut by a kill
  run_lib.drop_metrics_after(tmp_path, 5, ({"event": "restart", "at_step": 5, "changed": {}},))
  records = [json.loads(l) for l in (tmp_path / checkpoint.METRICS_FILE).read_text().splitlines()]
  assert [r.get("step", r.get("at_step")) for r in records] == [1, 2, 3, 3, 4, 5, 5]
  assert [p.name for p in tmp_path.iterdir()] == [checkpoint.METRICS_FILE]  # no temporary file left


def test_a_run_killed_before_its_first_checkpoint_leaves_no_records_behind(tmp_path):
  # What a killed first attempt leaves: records of steps 1..7 and no checkpoint.
  (tmp_path / checkpoint.METRICS_FILE).write_text(
      "".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in range(1, 8)))
  loop.train(helpers.tiny_config("optim.epochs=1"), tmp_path, data=helpers.tiny_data(), log=lambda _: None)
  records = [json.loads(l) for l in (tmp_path / checkpoint.METRICS_FILE).read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, EPOCH + 1))
  assert all(r["loss"] != 9.0 for r in records)


def test_a_second_writer_is_refused_at_once(tmp_path):
  with lock.exclusive(tmp_path):
    with pytest.raises(UserInputError, match="being written by another hyperlt process"):
      loop.train(helpers.tiny_config("optim.epochs=1"), tmp_path, data=helpers.tiny_data())
  assert not (tmp_path / checkpoint.METRICS_FILE).exists()


def test_hyperlt_train_on_a_locked_workdir_exits_2_with_one_line(tmp_path):
  """A second process: the lock is an OS lock, so it holds across processes, not only within one."""
  holder = subprocess.Popen(helpers.script_command("hold_workdir_lock.py", str(tmp_path)), stdout=subprocess.PIPE,
                            text=True, env=helpers.script_env())
  try:
    assert holder.stdout.readline().strip() == "held"
    second = subprocess.run([sys.executable, "-m", "hyperlt.cli", "train", "--workdir", str(tmp_path),
                             "--no-progress"], capture_output=True, text=True, timeout=120,
                            env=helpers.script_env(), cwd=helpers.REPO_ROOT)
  finally:
    holder.kill()
    holder.wait()
  assert second.returncode == 2
  assert second.stderr.count("\n") == 1 and "being written by another hyperlt process" in second.stderr
  assert str(holder.pid) in second.stderr
