"""Work directories: orbax checkpoints, with the config and the data facts stored beside them.

Layout of a work dir::

    config.json      the full config of the run (written once, atomically)
    data.json        class counts, normalisation, split sizes (hyperlt.data.pipeline.Prepared.describe)
    metrics.jsonl    one JSON object per logged step or evaluation
    checkpoints/<step>/  orbax checkpoints; the last ``train.keep_checkpoints`` are kept

Orbax writes each checkpoint to a temporary directory and renames it when complete, and every save is
waited for, so a kill at any moment leaves the previous complete checkpoint as the latest readable one.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import orbax.checkpoint as ocp

from hyperlt.errors import UserInputError, require

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes JSON so that readers see either the old file or the complete new one."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=2)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: pathlib.Path, what: str) -> Any:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserInputError(f"{what}: {path} does not exist") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserInputError(f"{what}: {path} is not valid JSON ({e})") from None


def manager(workdir: str | os.PathLike, keep: int = 3) -> ocp.CheckpointManager:
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves ``state`` at ``step`` and waits until it is on disk."""
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()


def latest_step(workdir: str | os.PathLike) -> int | None:
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return None
  return ocp.CheckpointManager(directory.resolve()).latest_step()


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> Any:
  """Restores the checkpoint at ``step`` (default: the latest) into the structure of ``abstract_state``."""
  step = mngr.latest_step() if step is None else step
  require(step is not None, f"no checkpoint in {mngr.directory}")
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise UserInputError(f"checkpoint {mngr.directory}/{step} cannot be read into this model: {e}") from None


def require_run(workdir: str | os.PathLike) -> tuple[dict, dict]:
  """(config dict, data facts) of a trained work dir; UserInputError if it holds no checkpoint."""
  workdir = pathlib.Path(workdir)
  require(workdir.is_dir(), f"--workdir: {workdir} does not exist")
  require(latest_step(workdir) is not None,
          f"--workdir: {workdir} has no checkpoint; train one first with: hyperlt train --workdir {workdir}")
  config = read_json(workdir / CONFIG_FILE, "--workdir")
  data = read_json(workdir / DATA_FILE, "--workdir")
  return config, data


def append_metrics(workdir: str | os.PathLike, record: dict) -> None:
  with open(pathlib.Path(workdir) / METRICS_FILE, "a") as f:
    f.write(json.dumps(record) + "\n")
