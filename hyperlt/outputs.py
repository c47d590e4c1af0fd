"""Checks of the paths commands write, made before any work starts.

A command that would fail only when it writes its result (a missing folder, a file where a folder is
expected, a read-only place) would throw away minutes of work; one that writes over a work dir's own files
(``config.json``, ``data.json``, ``metrics.jsonl``, ``checkpoints/``, the lock) would damage the run it
reads. Every output path is therefore checked here first, and these checks only read the file system.
"""

from __future__ import annotations

import os
import pathlib

from hyperlt.errors import UserInputError, require

# A work dir's own entries: hyperlt.workdir.checkpoint's files, hyperlt.workdir.lock's, the folders that a
# restart and a damaged checkpoint are moved into (hyperlt.training.loop) and the autotuner's record
# (hyperlt.training.autotune). Spelt out here so that checking a path never imports JAX or orbax;
# tests/cli/test_bad_input.py checks them against those modules.
WORKDIR_OWN = ("config.json", "data.json", "metrics.jsonl", "checkpoints", ".lock", ".lock.pid", "superseded",
               "damaged", "forms.json")


def _looks_like_workdir(path: pathlib.Path) -> bool:
  return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
  while not path.exists() and path != path.parent:
    path = path.parent
  return path


def _check_not_workdir_own(target: pathlib.Path, field: str, workdir: str | os.PathLike | None) -> None:
  """``target`` (resolved) is not one of the entries of ``workdir`` or of any work dir above it."""
  candidates = [pathlib.Path(workdir).resolve()] if workdir is not None else []
  candidates += [p for p in target.parents if _looks_like_workdir(p)]
  for candidate in candidates:
    try:
      parts = target.relative_to(candidate).parts
    except ValueError:
      continue
    require(not (parts and parts[0] in WORKDIR_OWN),
            f"{field}: {target} is part of the work dir {candidate} ({parts[0]}), which hyperlt never "
            f"overwrites; choose a path outside its {', '.join(WORKDIR_OWN[:4])}")


def check_workdir_for_training(path: str | os.PathLike, field: str = "--workdir") -> pathlib.Path:
  """A folder ``train`` can create or write: not a file, not under a file, writable."""
  path = pathlib.Path(path).expanduser()
  if path.exists():
    require(path.is_dir(), f"{field}: {path} is a file, not a folder; choose a folder for the work dir")
    require(os.access(path, os.W_OK | os.X_OK), f"{field}: {path} is not writable")
    return path
  existing = _nearest_existing(path.absolute())
  require(existing.is_dir(), f"{field}: {path} cannot be created: {existing} is a file, not a folder")
  require(os.access(existing, os.W_OK | os.X_OK), f"{field}: {path} cannot be created: {existing} is not writable")
  return path


def check_served_workdir(path: str | os.PathLike, field: str = "--workdir") -> pathlib.Path:
  """An existing folder (whether it holds a run is for hyperlt.workdir.run to say)."""
  path = pathlib.Path(path).expanduser()
  require(path.exists(), f"{field}: {path} does not exist; train a run there first with: hyperlt train "
          f"--workdir {path}")
  require(path.is_dir(), f"{field}: {path} is a file, not a work dir (a folder written by hyperlt train)")
  return path


def check_output_file(path: str | os.PathLike, field: str, workdir: str | os.PathLike | None = None,
                      suffix: str | None = None) -> pathlib.Path:
  """The file a command will write at ``path``: its folder exists and is writable, it is not a folder and
  not a work dir's own file. With ``suffix`` (NumPy's ``.npy``), a name without it gets it appended, as
  ``np.save`` does, so the returned path is exactly the file that will be written."""
  path = pathlib.Path(path).expanduser()
  require(not path.is_dir(), f"{field}: {path} is a folder; expected a file name")
  if suffix is not None and path.suffix != suffix:
    path = path.with_name(path.name + suffix)
  require(path.name not in ("", ".", ".."), f"{field}: {path} names a folder; expected a file name")
  require(not path.is_dir(), f"{field}: {path} is a folder; expected a file name")
  _check_not_workdir_own(path.resolve(), field, workdir)
  folder = path.absolute().parent
  require(folder.exists(), f"{field}: the folder {folder} does not exist; create it first (mkdir -p {folder})")
  require(folder.is_dir(), f"{field}: {folder} is a file, not a folder")
  require(os.access(folder, os.W_OK | os.X_OK), f"{field}: the folder {folder} is not writable")
  require(not path.exists() or os.access(path, os.W_OK), f"{field}: {path} exists and is not writable")
  return path


def check_output_folder(path: str | os.PathLike, field: str, workdir: str | os.PathLike | None = None,
                        files: tuple[str, ...] = ()) -> pathlib.Path:
  """The folder a command will write ``files`` into (created if missing): not a file, not under a file,
  writable, not inside a work dir's own entries, and none of ``files`` an existing folder."""
  path = pathlib.Path(path).expanduser()
  _check_not_workdir_own(path.resolve(), field, workdir)
  if path.exists():
    require(path.is_dir(), f"{field}: {path} is a file; expected a folder (it is created if missing)")
    require(os.access(path, os.W_OK | os.X_OK), f"{field}: the folder {path} is not writable")
  else:
    existing = _nearest_existing(path.absolute())
    require(existing.is_dir(), f"{field}: {path} cannot be created: {existing} is a file, not a folder")
    require(os.access(existing, os.W_OK | os.X_OK), f"{field}: {path} cannot be created: {existing} is not "
            "writable")
  resolved = path.resolve()
  for name in files:
    _check_not_workdir_own(resolved / name, field, workdir)
    require(not (path / name).is_dir(), f"{field}: {path / name} is a folder, but the output file "
            f"{name} goes there")
  return path


def write_error(path: pathlib.Path, field: str, error: OSError) -> UserInputError:
  """The error to raise when writing ``path`` fails after the checks (a full disk, a race)."""
  return UserInputError(f"{field}: cannot write {path} ({error.strerror or error})")
