"""Work directories: orbax checkpoints, with the config and the data facts stored beside them.

Layout of a work dir::

    config.json      the full config of the run (written once, atomically)
    data.json        class counts, normalisation, split sizes (hyperlt.workdir.run.RunFacts)
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

import jax
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
  mngr = ocp.CheckpointManager(directory.resolve())
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> Any:
  """Restores the checkpoint at ``step`` (default: the latest) into the structure of ``abstract_state``."""
  step = mngr.latest_step() if step is None else step
  require(step is not None, f"no checkpoint in {mngr.directory}")
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise UserInputError(f"checkpoint {mngr.directory}/{step} cannot be read into this model: {e}") from None


def restore_subtree(workdir: str | os.PathLike, abstract_subtree: dict,
                    step: int | None = None) -> tuple[int, dict]:
  """(step, tree): only the top-level entries of ``abstract_subtree`` (e.g. params and batch_stats) of the
  checkpoint at ``step`` (default: the latest), restored onto this process's first device.

  An orbax partial restore: the other entries (the optimiser state) are neither read nor need a matching
  structure, so serving a model never builds its optimiser. The saved shapes are compared with the
  abstract tree first, so a checkpoint of another model is named as such before any array is read.
  """
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  mngr = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler(),
                               options=ocp.CheckpointManagerOptions(create=False))
  try:
    step = mngr.latest_step() if step is None else step
    require(step is not None, f"no checkpoint in {directory}")
    require(step in mngr.all_steps(), f"no checkpoint of step {step} in {directory} (it has steps "
            f"{', '.join(map(str, mngr.all_steps())) or 'none'})")
    mismatch = _shape_mismatch(mngr.item_metadata(step).tree, abstract_subtree)
    require(mismatch is None, f"checkpoint {directory}/{step} cannot be read into this model: {mismatch}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract_subtree)
    tree = mngr.restore(step, args=ocp.args.PyTreeRestore(item=abstract_subtree, restore_args=restore_args,
                                                          partial_restore=True))
  finally:
    mngr.close()
  return step, tree


def _shape_mismatch(saved: Any, abstract: Any) -> str | None:
  """The first leaf of ``abstract`` that the saved tree lacks or holds with another shape, described."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    name = "/".join(str(getattr(key, "key", key)) for key in path)
    node = saved
    for key in path:
      node = node.get(getattr(key, "key", None)) if isinstance(node, dict) else None
    if node is None:
      return f"it has no {name}"
    if tuple(node.shape) != tuple(leaf.shape):
      return f"{name} has shape {tuple(node.shape)} there but {tuple(leaf.shape)} in this model"
  return None


def append_metrics(workdir: str | os.PathLike, record: dict) -> None:
  with open(pathlib.Path(workdir) / METRICS_FILE, "a") as f:
    f.write(json.dumps(record) + "\n")
