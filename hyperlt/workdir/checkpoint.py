"""Work directories: orbax checkpoints, with the config and the data facts stored beside them.

Layout of a work dir::

    config.json      the full config of the run (written once, atomically)
    data.json        class counts, normalisation, split sizes (hyperlt.workdir.run.RunFacts)
    metrics.jsonl    one JSON object per logged step, evaluation or event ({"event": "restart", ...})
    .lock            the writer's lock (hyperlt.workdir.lock), held by ``hyperlt train``
    checkpoints/<step>/  orbax checkpoints; the last ``train.keep_checkpoints`` are kept
    damaged/<step>/      checkpoints found unreadable by ``hyperlt train``, moved here (never deleted)
    superseded/<step>/   checkpoints after the step a run was restarted from (``--restart-from``)

Orbax writes each checkpoint to a temporary directory and renames it when complete, and every save is
waited for, so a kill at any moment leaves the previous complete checkpoint as the latest readable one.
Each checkpoint carries a SHA-256 of every top-level entry of the saved state (orbax's custom metadata),
checked on every restore: bytes changed on disk after the save are found, not silently loaded. Every
restore goes through :func:`restore` or :func:`restore_subtree`, which try the checkpoints newest first,
skip the damaged ones with one line saying which and why, and turn every orbax, TensorStore and OS error
into a :class:`~hyperlt.errors.UserInputError`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import pathlib
import re
import sys
import tempfile
from typing import Any, Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from hyperlt import distributed
from hyperlt.errors import UserInputError, require

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged"
SUPERSEDED_DIR = "superseded"
# The key of the per-entry SHA-256 digests in a checkpoint's custom metadata.
CHECKSUM_KEY = "hyperlt_sha256"


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


def warn(message: str) -> None:
  """The default report of a skipped checkpoint: one line on stderr, so ``--json`` output stays one object."""
  print(f"hyperlt: warning: {message}", file=sys.stderr)


def manager(workdir: str | os.PathLike, keep: int = 3) -> ocp.CheckpointManager:
  """The writer's manager (``hyperlt train``, which holds the work dir's lock): a save that a kill left
  uncommitted (orbax's temporary directory) never became a checkpoint and is removed when it opens."""
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  with _quiet():  # see latest_step
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True))


def digests(tree: Any) -> dict[str, str]:
  """SHA-256 of each top-level entry of ``tree`` (a TrainState or a dict): names, dtypes, shapes and bytes
  of its leaves, in tree order. A partial restore (params and batch statistics) checks only its entries."""
  hashes: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashes.setdefault(names[0], hashlib.sha256())
    digest.update(f"{'/'.join(names[1:])}:{array.dtype.str}:{array.shape};".encode())
    digest.update(array.tobytes())
  return {name: h.hexdigest() for name, h in hashes.items()}


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves ``state`` at ``step`` with the digests of its entries, and waits until it is on disk."""
  checksum = digests(jax.device_get(distributed.to_local(state)))
  mngr.save(step, args=ocp.args.StandardSave(state), custom_metadata={CHECKSUM_KEY: checksum}, force=True)
  mngr.wait_until_finished()


def latest_step(workdir: str | os.PathLike) -> int | None:
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return None
  # Listing reads each step's metadata; a damaged one is reported when it is restored, not here.
  with _quiet():
    mngr = ocp.CheckpointManager(directory.resolve())
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def reload(mngr: ocp.CheckpointManager) -> None:
  """Re-lists the manager's steps after checkpoints were moved (quietly, see latest_step)."""
  with _quiet():
    mngr.reload()


class _Damaged(Exception):
  """A checkpoint that cannot be used; the message says why."""


# Set once a checkpoint read has failed in this process (see _ignore_failed_orbax_reads).
_FAILED_READS = {"seen": False}


def _ignore_failed_orbax_reads(unraisable, previous=sys.unraisablehook) -> None:
  """sys.unraisablehook that drops the after-effects of a failed orbax read and passes on everything else.

  A damaged checkpoint fails several concurrent array reads; orbax raises the first. The others end
  later, at any time: their coroutines are collected with their errors, and TensorStore's completion
  callbacks find orbax's event loop closed. Python would print a traceback for each; the failure is
  already reported, once, as the reason the checkpoint was skipped.
  """
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
    return
  if (_FAILED_READS["seen"] and isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == "Event loop is closed"):
    return
  previous(unraisable)


def _drop_unretrieved_read_errors(record: logging.LogRecord) -> bool:
  """A filter of the asyncio logger: drops "exception was never retrieved" of failed orbax reads (see
  _ignore_failed_orbax_reads), which asyncio logs whenever their futures are collected."""
  return not (_FAILED_READS["seen"] and "never retrieved" in str(record.msg)
              and "Encountered error while reading array" in record.getMessage())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """Silences what orbax and TensorStore print about a damaged checkpoint while it is tried (absl log
  lines, tracebacks of failed read coroutines); the reason is reported once, by the caller."""
  if sys.unraisablehook is not _ignore_failed_orbax_reads:
    _ignore_failed_orbax_reads.__defaults__ = (sys.unraisablehook,)
    sys.unraisablehook = _ignore_failed_orbax_reads
    logging.getLogger("asyncio").addFilter(_drop_unretrieved_read_errors)
  # absl: orbax's own warnings; asyncio: "exception was never retrieved" of the failed reads' futures.
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  except BaseException:
    _FAILED_READS["seen"] = True
    # Collect the failed reads now, while orbax's event loop still runs: collected after it has closed,
    # their TensorStore callbacks print "Event loop is closed" tracebacks that no hook can catch.
    gc.collect()
    raise
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _reason(e: BaseException) -> str:
  """The first line of an orbax or TensorStore error, without the array index or TensorStore spec it quotes."""
  text = re.split(r"See full TensorStore details|\[tensorstore_spec|: \(slice\(", str(e))[0].strip().splitlines()
  text = text[0][:160] if text else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _verified(mngr: ocp.CheckpointManager, step: int, read: Callable[[int], Any]) -> Any:
  """``read(step)``, with the checkpoint's metadata and digests checked; _Damaged says what is wrong.

  A UserInputError from ``read`` (a checkpoint of another model) passes through: it is not damage, and
  every other step would fail the same way.
  """
  with _quiet():
    try:
      metadata = mngr.metadata(step)
    except Exception as e:  # pylint: disable=broad-except  # any failure to read it is damage
      raise _Damaged(f"its metadata is truncated, garbled or missing ({_reason(e)})") from None
    if metadata.commit_timestamp_nsecs is None:
      raise _Damaged("its metadata file (_CHECKPOINT_METADATA) is missing or unreadable")
    try:
      tree = read(step)
    except UserInputError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # orbax, TensorStore and OS errors alike
      raise _Damaged(f"its files are truncated, garbled or missing ({_reason(e)})") from None
  # Checkpoints written before checksums existed have none; they are read as they are.
  expected = (metadata.custom_metadata or {}).get(CHECKSUM_KEY)
  if expected is not None:
    actual = digests(jax.device_get(distributed.to_local(tree)))
    changed = sorted(name for name in actual if expected.get(name) != actual[name])
    if changed:
      raise _Damaged(f"the checksum of its {', '.join(changed)} does not match (bytes changed after it was saved)")
  return tree


def _set_aside(directory: pathlib.Path, step: int, destination: pathlib.Path) -> pathlib.Path:
  """Moves ``directory/<step>`` to ``destination/<step>`` (``<step>.1``, ... if taken); returns the new path."""
  destination.mkdir(parents=True, exist_ok=True)
  target, n = destination / str(step), 0
  while target.exists():
    n += 1
    target = destination / f"{step}.{n}"
  os.replace(directory / str(step), target)
  return target


def set_aside_after(workdir: str | os.PathLike, step: int, destination: str) -> list[int]:
  """Moves the checkpoints after ``step`` to ``workdir/destination/<step>``; returns their steps.
  Only the writer (``hyperlt train``, holding the lock) calls this; an open manager then needs
  :func:`reload`."""
  workdir = pathlib.Path(workdir)
  directory = workdir / CHECKPOINT_DIR
  later = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and int(p.name) > step) \
      if directory.is_dir() else []
  for s in later:
    _set_aside(directory, s, workdir / destination)
  return later


def _first_readable(mngr: ocp.CheckpointManager, read: Callable[[int], Any], step: int | None,
                    log: Callable[[str], None], set_aside: pathlib.Path | None) -> tuple[int, Any]:
  """(step, tree) of ``step``, or (default) of the newest checkpoint that reads and verifies.

  Each damaged checkpoint is reported in one line through ``log``; with ``set_aside`` (the writer only)
  it is also moved there, so the next save cannot be shadowed by it and nothing is deleted.
  """
  directory = pathlib.Path(mngr.directory)
  steps = sorted(mngr.all_steps(), reverse=True)
  if step is not None:
    require(step in steps, f"no checkpoint of step {step} in {directory} (it has steps "
            f"{', '.join(map(str, sorted(steps))) or 'none'})")
    try:
      return step, _verified(mngr, step, read)
    except _Damaged as e:
      raise UserInputError(f"checkpoint {directory}/{step} is damaged: {e}") from None
  require(steps, f"no checkpoint in {directory}")
  skipped = []
  for candidate in steps:
    try:
      tree = _verified(mngr, candidate, read)
    except _Damaged as e:
      moved = f"; moved to {_set_aside(directory, candidate, set_aside)}" if set_aside is not None else ""
      skipped.append((candidate, f"{e}{moved}"))
      continue
    for bad, why in skipped:
      log(f"skipped checkpoint step {bad} in {directory}: {why}; using step {candidate}")
    if set_aside is not None and skipped:
      reload(mngr)
    return candidate, tree
  again = ""
  if set_aside is not None:
    reload(mngr)
    again = " (all moved aside: the same hyperlt train command now starts the run afresh)"
  raise UserInputError(f"no readable checkpoint in {directory}: "
                       + "; ".join(f"step {bad}: {why}" for bad, why in skipped) + again)


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None, *,
            log: Callable[[str], None] = warn, set_aside: str | os.PathLike | None = None) -> tuple[int, Any]:
  """(step, state): the checkpoint at ``step`` (default: the newest readable one) restored into the
  structure and shardings of ``abstract_state``, its digests checked.

  ``set_aside`` (a folder; the writer only) receives the damaged checkpoints newer than the one restored.
  """
  return _first_readable(mngr, _state_reader(mngr, abstract_state), step, log,
                         None if set_aside is None else pathlib.Path(set_aside))


def _state_reader(mngr: ocp.CheckpointManager, abstract_state: Any) -> Callable[[int], Any]:
  """``step -> state``: a whole train state restored into the structure and shardings of ``abstract_state``."""
  return lambda s: mngr.restore(s, args=ocp.args.StandardRestore(abstract_state))


def verify_older(mngr: ocp.CheckpointManager, abstract_state: Any, step: int, *,
                 log: Callable[[str], None], set_aside: str | os.PathLike) -> None:
  """Reads every checkpoint before ``step`` and moves the damaged ones to ``set_aside``.

  Orbax removes old checkpoints file by file, so one killed while being removed stays listed, incomplete;
  the writer finds it here (a few reads at start-up) instead of a reader falling back onto it later.
  """
  read = _state_reader(mngr, abstract_state)
  moved = False
  for older in sorted((s for s in mngr.all_steps() if s < step), reverse=True):
    try:
      _verified(mngr, older, read)
    except _Damaged as e:
      target = _set_aside(pathlib.Path(mngr.directory), older, pathlib.Path(set_aside))
      log(f"checkpoint step {older} is incomplete or damaged ({e}; a kill while it was being removed "
          f"leaves it so); moved to {target}")
      moved = True
  if moved:
    reload(mngr)


def restore_subtree(workdir: str | os.PathLike, abstract_subtree: dict, step: int | None = None, *,
                    log: Callable[[str], None] = warn) -> tuple[int, dict]:
  """(step, tree): only the top-level entries of ``abstract_subtree`` (e.g. params and batch_stats) of the
  checkpoint at ``step`` (default: the newest readable one), restored onto this process's first device.

  An orbax partial restore: the other entries (the optimiser state) are neither read nor need a matching
  structure, so serving a model never builds its optimiser. The saved shapes are compared with the
  abstract tree first, so a checkpoint of another model is named as such before any array is read.
  Read-only: a damaged checkpoint is skipped and reported through ``log``, never moved.
  """
  directory = pathlib.Path(workdir).resolve() / CHECKPOINT_DIR
  with _quiet():  # see latest_step
    mngr = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler(),
                                 options=ocp.CheckpointManagerOptions(create=False))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract_subtree)

  def read(s: int) -> dict:
    mismatch = _shape_mismatch(mngr.item_metadata(s).tree, abstract_subtree)
    require(mismatch is None, f"checkpoint {directory}/{s} cannot be read into this model: {mismatch}")
    return mngr.restore(s, args=ocp.args.PyTreeRestore(item=abstract_subtree, restore_args=restore_args,
                                                       partial_restore=True))

  try:
    return _first_readable(mngr, read, step, log, None)
  finally:
    mngr.close()


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
