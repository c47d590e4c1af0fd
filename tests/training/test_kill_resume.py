"""Fault injection: ``hyperlt train`` killed with SIGKILL at random moments (during and right after checkpoint
saves included), its newest checkpoint damaged in between, and resumed: the result is bit-identical to an
uninterrupted run and ``metrics.jsonl`` holds each step once."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib
from tests import helpers

# The digits with a narrow 1-block ResNet: 5 steps per epoch, a checkpoint every epoch, seconds per run.
OVERRIDES = ("model.widths=8,16,32", "optim.epochs=4", "optim.warmup_epochs=0", "train.checkpoint_every_epochs=1",
             "train.keep_checkpoints=3", "train.log_every_steps=1")


def _command(workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "hyperlt.cli", "train", "--workdir", str(workdir), "--no-progress", *OVERRIDES]


def _train(workdir: pathlib.Path, cache: pathlib.Path) -> subprocess.CompletedProcess:
  done = subprocess.run(_command(workdir), capture_output=True, text=True, timeout=300,
                        env=helpers.script_env(cache), cwd=helpers.REPO_ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _saving(directory: pathlib.Path) -> bool:
  """Whether a save is under way: orbax writes a checkpoint into a temporary directory first."""
  try:
    return any("tmp" in p.name for p in directory.iterdir())
  except FileNotFoundError:
    return False


def _steps(directory: pathlib.Path) -> set[str]:
  try:
    return {p.name for p in directory.iterdir() if p.name.isdigit()}
  except FileNotFoundError:
    return set()


def _kill(workdir: pathlib.Path, cache: pathlib.Path, moment: str, delay: float) -> str:
  """Starts ``hyperlt train`` and SIGKILLs it at ``moment``: "save" (as soon as a save is seen under way, or
  a new checkpoint committed), "committed" (as soon as a new checkpoint is committed) or "time" (``delay``
  seconds after the start). Returns what the kill hit: "during a save", "after a save", "mid-run" or
  "finished" (the run ended first)."""
  directory = workdir / checkpoint.CHECKPOINT_DIR
  before = _steps(directory)
  process = subprocess.Popen(_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=helpers.script_env(cache), cwd=helpers.REPO_ROOT)
  start = time.monotonic()
  while process.poll() is None:
    if moment == "save" and (_saving(directory) or _steps(directory) - before):
      break
    if moment == "committed" and _steps(directory) - before and not _saving(directory):
      break
    if moment == "time" and time.monotonic() - start >= delay:
      break
    time.sleep(0.001)
  if process.poll() is not None:
    return "finished"
  hit = "during a save" if _saving(directory) else "after a save" if _steps(directory) - before else "mid-run"
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  return hit


def _params(workdir: pathlib.Path) -> list[np.ndarray]:
  return [np.asarray(leaf) for leaf in jax.tree.leaves(run_lib.load(workdir, with_data=False).params)]


def _records(workdir: pathlib.Path) -> list[dict]:
  lines = (workdir / checkpoint.METRICS_FILE).read_text().splitlines()
  return [r for r in map(json.loads, lines) if "step" in r]


def _assert_same_run(resumed: pathlib.Path, straight: pathlib.Path) -> None:
  for a, b in zip(_params(resumed), _params(straight), strict=True):
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
  got, want = _records(resumed), _records(straight)
  assert [r["step"] for r in got] == [r["step"] for r in want]  # each step once, none missing
  assert [r["loss"] for r in got] == [r["loss"] for r in want]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("straight")
  _train(workdir, helpers.xla_cache(tmp_path_factory))
  return workdir


def test_kills_during_and_after_saves_resume_bit_identically(tmp_path, straight, tmp_path_factory):
  cache = helpers.xla_cache(tmp_path_factory)
  rng = random.Random(0)
  hits = [_kill(tmp_path, cache, "save", 0), _kill(tmp_path, cache, "time", rng.uniform(3, 6))]
  assert hits[0] in ("during a save", "after a save"), hits
  _train(tmp_path, cache)
  _assert_same_run(tmp_path, straight)


def _truncate(step_dir: pathlib.Path) -> None:
  for path in step_dir.rglob("*"):
    if path.is_file() and path.parent.name == "d":
      os.truncate(path, path.stat().st_size // 2)


def _flip(step_dir: pathlib.Path) -> None:
  for path in step_dir.rglob("*"):
    if path.is_file() and path.parent.name == "d":
      data = bytearray(path.read_bytes())
      data[len(data) // 2] ^= 0xFF
      path.write_bytes(bytes(data))


def _drop_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "_CHECKPOINT_METADATA").unlink()


def _garble_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "_CHECKPOINT_METADATA").write_text('{"item_handlers": ')


def _half_delete(step_dir: pathlib.Path) -> None:
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file())[::2]:
    path.unlink()


DAMAGE = (_truncate, _flip, _drop_metadata, _garble_metadata, _half_delete)


def kill_loop(workdir: pathlib.Path, straight_dir: pathlib.Path, cache: pathlib.Path, kills: int,
              seed: int = 0) -> dict:
  """``kills`` SIGKILLs at random moments (half at saves or right after them, half at random times), the
  newest checkpoint damaged (each kind in turn) after every other kill that leaves two or more, then a
  final resume.
  Returns the counts; asserts the bit-identical result and that no damaged checkpoint was restored."""
  rng = random.Random(seed)
  counts = {"kills": 0, "during a save": 0, "after a save": 0, "mid-run": 0, "finished": 0, "damaged": 0}
  damaged_kinds: list[str] = []
  for i in range(kills):
    hit = _kill(workdir, cache, ("save", "time", "committed", "time")[i % 4], rng.uniform(2, 6))
    counts[hit] += 1
    counts["kills"] += hit != "finished"
    steps = sorted(map(int, _steps(workdir / checkpoint.CHECKPOINT_DIR)))
    if i % 2 == 1 and len(steps) >= 2:
      damage = DAMAGE[len(damaged_kinds) % len(DAMAGE)]
      damage(workdir / checkpoint.CHECKPOINT_DIR / str(steps[-1]))
      damaged_kinds.append(damage.__name__.strip("_"))
  done = _train(workdir, cache)
  assert "skipped checkpoint" not in done.stdout or damaged_kinds
  _assert_same_run(workdir, straight_dir)
  damaged_dir = workdir / checkpoint.DAMAGED_DIR
  set_aside = sorted(damaged_dir.iterdir()) if damaged_dir.exists() else []
  counts.update(damaged=len(damaged_kinds), kinds=damaged_kinds, set_aside=[p.name for p in set_aside])
  return counts


@pytest.mark.slow
@pytest.mark.skipif("HYPERLT_KILLS" not in os.environ,
                    reason="the long fault-injection loop (about a minute): HYPERLT_KILLS=16 pytest "
                           "tests/training/test_kill_resume.py -s; the short kill test above runs always")
def test_many_kills_and_damaged_checkpoints(tmp_path, straight, tmp_path_factory):
  kills = int(os.environ["HYPERLT_KILLS"])
  counts = kill_loop(tmp_path, straight, helpers.xla_cache(tmp_path_factory), kills)
  print("KILL LOOP", json.dumps(counts))
  assert counts["damaged"] >= 1 and len(counts["set_aside"]) == counts["damaged"]
