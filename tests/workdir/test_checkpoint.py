"""Checkpoint save, restore and resume through the work dir (hyperlt.workdir.checkpoint and .run)."""

import json

import chex
import pytest

from hyperlt.errors import UserInputError
from hyperlt.training import loop as train
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib


def test_save_restore_resume(tmp_path, tiny_config):
  config = tiny_config("optim.epochs=2", "train.checkpoint_every_epochs=1", "train.keep_checkpoints=1")
  first = train.train(config, tmp_path, log=lambda _: None)
  assert isinstance(first, run_lib.Run)
  steps_per_epoch = first.step // 2
  assert checkpoint.latest_step(tmp_path) == first.step
  # keep_checkpoints=1: only the last one is left.
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [str(first.step)]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["optim"]["epochs"] == 2
  assert json.loads((tmp_path / "data.json").read_text())["class_counts"] == [int(c) for c in first.data.class_counts]
  assert json.loads((tmp_path / "data.json").read_text()) == first.facts.to_json() == first.data.describe()

  restored = run_lib.load(tmp_path)
  chex.assert_trees_all_equal(restored.params, first.params)
  chex.assert_trees_all_equal(restored.batch_stats, first.batch_stats)
  assert restored.step == first.step and restored.facts == first.facts

  # Resuming with more epochs continues from the checkpoint rather than starting over.
  messages = []
  longer = tiny_config("optim.epochs=3", "train.checkpoint_every_epochs=1", "train.keep_checkpoints=1")
  with pytest.raises(UserInputError, match="different config"):
    train.train(longer, tmp_path, log=messages.append)
  # The same config resumes and ends where an uninterrupted run would.
  again = train.train(config, tmp_path, log=messages.append)
  assert any("resumed from step" in m for m in messages)
  assert again.step == 2 * steps_per_epoch
  chex.assert_trees_all_close(again.params, first.params)


def test_corrupt_workdir_files_are_named(tmp_path, tiny_config):
  config = tiny_config("optim.epochs=1")
  train.train(config, tmp_path, log=lambda _: None)
  (tmp_path / "config.json").write_text("{ not json")
  with pytest.raises(UserInputError, match="config.json is not valid JSON"):
    run_lib.load(tmp_path)


def test_write_json_is_atomic(tmp_path):
  path = tmp_path / "x.json"
  checkpoint.write_json(path, {"a": 1})
  checkpoint.write_json(path, {"a": 2})
  assert json.loads(path.read_text()) == {"a": 2}
  assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
