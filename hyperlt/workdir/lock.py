"""One writer per work dir: an operating-system file lock held by ``hyperlt train`` for the whole run.

Two trainings writing one work dir would interleave checkpoints and ``metrics.jsonl`` records. The lock is
an ``flock``-style lock from the ``filelock`` package on ``<workdir>/.lock``: the kernel releases it when the
process ends, however it ends (kill -9 included), so a crashed run never leaves a stale lock behind and no
"remove the lock file" step exists. Read-only commands (evaluate, sweep, choose, predict, adapt) take no lock:
they read finished checkpoints, which are renamed into place complete (see hyperlt.workdir.checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Iterator

import filelock

from hyperlt.errors import UserInputError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds the work dir's write lock for the ``with`` block; UserInputError at once if another process does.

  The lock file records the holder's process id, so the message can say which process to wait for.
  """
  path = pathlib.Path(workdir) / LOCK_FILE
  lock = filelock.FileLock(str(path), timeout=0)
  try:
    lock.acquire()
  except filelock.Timeout:
    holder = _holder(path)
    raise UserInputError(f"--workdir: {workdir} is being written by another hyperlt process{holder}; wait for "
                         "it to finish or choose another --workdir") from None
  try:
    _write_holder(path)
    yield
  finally:
    lock.release()


def _write_holder(path: pathlib.Path) -> None:
  # filelock on Unix keeps the file; the pid beside it only improves the message of a second writer.
  with contextlib.suppress(OSError):
    path.with_name(LOCK_FILE + ".pid").write_text(f"{os.getpid()}\n")


def _holder(path: pathlib.Path) -> str:
  try:
    pid = path.with_name(LOCK_FILE + ".pid").read_text().strip()
  except OSError:
    return ""
  return f" (process {pid})" if pid.isdigit() else ""
