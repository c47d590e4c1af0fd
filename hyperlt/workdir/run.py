"""A trained run as one record, and the checks and files of the work dir that holds it.

A work dir (layout in :mod:`hyperlt.workdir.checkpoint`) holds one run: ``config.json``, ``data.json``
(the :class:`RunFacts` of its data), ``metrics.jsonl`` and the orbax checkpoints. Everything that serves a
trained model (evaluation, sweeps, adaptation, prediction) starts from :func:`load`, which restores the
parameters and batch statistics only: the optimiser state, a copy of the parameters' size or two, is never
built or read. The training loop (hyperlt.training.loop) writes the files through this module and returns
the same :class:`Run`; this module never imports the training layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import types
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from hyperlt import configs as config_lib
from hyperlt import distributed
from hyperlt.data import longtail, pipeline
from hyperlt.data.dataset import RunData
from hyperlt.errors import UserInputError, require
from hyperlt.models.expert_model import ExpertModel, build
from hyperlt.workdir import checkpoint

Data = RunData


@dataclasses.dataclass(frozen=True)
class ListFiles:
  """Where a list-file run's images come from (``data.source = "lists"``)."""

  root: str
  train: str
  val: str     # "" when the validation split is carved out of the training list
  test: str


@dataclasses.dataclass(frozen=True)
class RunFacts:
  """What a run knows about its data without loading it: the typed content of ``data.json``.

  Class indices are frequency ranks (class 0 the most frequent). ``groups`` maps each shot group
  (many / medium / few) to its class indices; ``test_set_sizes`` maps each test-agnostic test set to its
  image count.
  """

  dataset: str
  class_names: tuple[str, ...]
  class_counts: tuple[int, ...]           # training images per class
  image_shape: tuple[int, int, int]       # [H, W, C] of the model's input
  mean: tuple[float, ...]                 # per-channel normalisation, 0..1 pixel scale
  std: tuple[float, ...]
  num_train: int
  num_val: int
  num_test: int
  test_set_sizes: Mapping[str, int]
  groups: Mapping[str, tuple[int, ...]]
  lists: ListFiles | None = None

  @property
  def prior(self) -> np.ndarray:
    """The training prior ``pi_c = n_c / sum_k n_k`` [K], float64."""
    return longtail.prior_from_counts(self.class_counts)

  @property
  def num_classes(self) -> int:
    """K: the number of classes, numbered by training frequency."""
    return len(self.class_counts)

  @classmethod
  def of(cls, data: Data) -> "RunFacts":
    """The facts of prepared data (validated: ``describe()`` is the data layer's side of the contract)."""
    return cls.from_json(data.describe(), f"the {data.name} data")

  def to_json(self) -> dict:
    """The JSON object written as ``data.json`` (the keys and order ``Facts.describe`` gives)."""
    out = {"dataset": self.dataset, "class_names": list(self.class_names), "class_counts": list(self.class_counts),
           "image_shape": list(self.image_shape), "mean": list(self.mean), "std": list(self.std),
           "num_train": self.num_train, "num_val": self.num_val, "num_test": self.num_test,
           "test_set_sizes": dict(self.test_set_sizes), "groups": {k: list(v) for k, v in self.groups.items()}}
    if self.lists is not None:
      out["lists"] = dataclasses.asdict(self.lists)
    return out

  @classmethod
  def from_json(cls, obj: Any, where: str) -> "RunFacts":
    """Validated facts from a ``data.json`` object; UserInputError naming ``where`` and the field.

    Keys the record does not know are ignored, so a data layer that describes more can still be read.
    """
    require(isinstance(obj, dict), f"{where}: expected a JSON object, got {type(obj).__name__}")
    read = _Reader(obj, where)
    class_counts = read.integers("class_counts", minimum=1)
    num_classes = len(class_counts)
    class_names = read.strings("class_names")
    require(len(class_names) == num_classes, f"{where}: class_names has {len(class_names)} names but "
            f"class_counts has {num_classes} classes")
    image_shape = read.integers("image_shape", minimum=1)
    require(len(image_shape) == 3, f"{where}: image_shape: expected [H, W, C], got {list(image_shape)}")
    mean, std = read.numbers("mean"), read.numbers("std", positive=True)
    for name, values in (("mean", mean), ("std", std)):
      require(len(values) == image_shape[2], f"{where}: {name}: expected {image_shape[2]} values (one per "
              f"channel), got {len(values)}")
    # A shot group may be empty (a run with no many-shot class), so its list may be too.
    groups = read.mapping("groups", lambda key, value: read.integers(key, value, allow_empty=True))
    for name, members in groups.items():
      require(all(c < num_classes for c in members), f"{where}: groups.{name}: class indices must be below "
              f"{num_classes}, got {list(members)}")
    list_files = None
    if obj.get("lists") is not None:
      paths = read.mapping("lists", read.string)
      require(set(paths) >= {"root", "train", "val", "test"}, f"{where}: lists: expected the fields root, "
              f"train, val and test, got {sorted(paths)}")
      list_files = ListFiles(**{k: paths[k] for k in ("root", "train", "val", "test")})
    return cls(dataset=read.string("dataset"), class_names=class_names, class_counts=class_counts,
               image_shape=image_shape, mean=mean, std=std, num_train=read.integer("num_train"),
               num_val=read.integer("num_val"), num_test=read.integer("num_test"),
               test_set_sizes=types.MappingProxyType(read.mapping("test_set_sizes", read.integer)),
               groups=types.MappingProxyType(groups), lists=list_files)


_LOOK_UP = object()  # "read the value of the key from the object"


class _Reader:
  """Typed reads of a JSON object's fields. Each method takes the field's dotted name and, for nested
  values, the value itself; every failure names the object and the field."""

  def __init__(self, obj: dict, where: str):
    self._obj, self._where = obj, where

  def _value(self, key: str, value: Any) -> Any:
    if value is not _LOOK_UP:
      return value
    require(key in self._obj, f"{self._where}: missing field {key!r}")
    return self._obj[key]

  def _check(self, ok: bool, key: str, expected: str, value: Any) -> None:
    require(ok, f"{self._where}: {key}: expected {expected}, got {value!r}")

  def string(self, key: str, value: Any = _LOOK_UP) -> str:
    value = self._value(key, value)
    self._check(isinstance(value, str), key, "a string", value)
    return value

  def integer(self, key: str, value: Any = _LOOK_UP, minimum: int = 0) -> int:
    value = self._value(key, value)
    self._check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, key,
                f"an integer >= {minimum}", value)
    return value

  def _items(self, key: str, value: Any, what: str, allow_empty: bool) -> list:
    value = self._value(key, value)
    self._check(isinstance(value, list) and (allow_empty or len(value) > 0), key,
                f"a {'' if allow_empty else 'non-empty '}list of {what}", value)
    return value

  def integers(self, key: str, value: Any = _LOOK_UP, minimum: int = 0, allow_empty: bool = False) -> tuple[int, ...]:
    items = self._items(key, value, f"integers >= {minimum}", allow_empty)
    return tuple(self.integer(key, v, minimum) for v in items)

  def strings(self, key: str) -> tuple[str, ...]:
    return tuple(self.string(key, v) for v in self._items(key, _LOOK_UP, "strings", False))

  def numbers(self, key: str, positive: bool = False) -> tuple[float, ...]:
    items = self._items(key, _LOOK_UP, "numbers", False)
    what = f"{'positive ' if positive else ''}finite numbers"
    for v in items:
      self._check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive), key, f"a list of {what}", items)
    return tuple(float(v) for v in items)

  def mapping(self, key: str, read_item) -> dict:
    value = self._value(key, _LOOK_UP)
    self._check(isinstance(value, dict), key, "an object", value)
    return {name: read_item(f"{key}.{name}", item) for name, item in value.items()}


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained (or restored) run: everything evaluation, sweeps, adaptation and prediction need.

  Attributes:
    config: the run's validated config.
    model: the expert model (static structure only).
    params, batch_stats: the trained pytrees, on this process's first device.
    facts: what data.json records about the data.
    step: the training step the parameters belong to.
    workdir: where the run lives (None for a run trained without one).
    data: the prepared data, when loaded with it (``load(..., with_data=True)``) or just trained.
    train_state: the full training state (optimiser included) of a run returned by training; None for
      a loaded run, whose optimiser state is never read.
  """

  config: ml_collections.ConfigDict
  model: ExpertModel
  params: Any
  batch_stats: Any
  facts: RunFacts
  step: int
  workdir: pathlib.Path | None = None
  data: Data | None = None
  train_state: Any = None


def require_run(workdir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, RunFacts]:
  """(validated config, facts) of a trained work dir; UserInputError if it holds no checkpoint or its
  files are unreadable."""
  workdir = pathlib.Path(workdir)
  require(workdir.is_dir(), f"--workdir: {workdir} does not exist")
  require(checkpoint.latest_step(workdir) is not None,
          f"--workdir: {workdir} has no checkpoint; train one first with: hyperlt train --workdir {workdir}")
  saved = checkpoint.read_json(workdir / checkpoint.CONFIG_FILE, "--workdir")
  try:
    config = config_lib.validate(config_lib.from_dict(saved))
  except UserInputError as e:
    raise UserInputError(f"--workdir: {workdir}/{checkpoint.CONFIG_FILE} is not a valid config: {e}") from None
  facts_path = workdir / checkpoint.DATA_FILE
  facts = RunFacts.from_json(checkpoint.read_json(facts_path, "--workdir"), f"--workdir: {facts_path}")
  return config, facts


def load(workdir: str | os.PathLike, step: int | None = None, *, with_data: bool = True,
         log: Callable[[str], None] = checkpoint.warn) -> Run:
  """Restores a trained work dir: config, model, parameters and batch statistics (and, by default, its data).

  Only ``params`` and ``batch_stats`` are read from the checkpoint (an orbax partial restore into the
  shapes of ``model.init``); the optimiser is neither built nor restored. Without ``step`` the newest
  checkpoint that reads and matches its checksum is used; each damaged newer one is skipped with one
  line through ``log`` (default: stderr). Nothing in the work dir is changed.
  """
  workdir = pathlib.Path(workdir)
  config, facts = require_run(workdir)
  model = build(config.model, facts.num_classes)
  params, batch_stats = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), facts.image_shape))
  restored_step, tree = checkpoint.restore_subtree(workdir, {"params": params, "batch_stats": batch_stats}, step,
                                                   log=log)
  data = None
  if with_data:
    data = pipeline.prepare(config.data)
    require(tuple(int(c) for c in data.class_counts) == facts.class_counts,
            f"--workdir: the data of {workdir} no longer matches its recorded class counts")
  return Run(config=config, model=model, params=tree["params"], batch_stats=tree["batch_stats"], facts=facts,
             step=restored_step, workdir=workdir, data=data)


# Fields that may change between a run and its resumption: how the run is displayed, launched and fed,
# not what it computes.
_RESUMABLE_CHANGES = {("train", "progress"), ("data", "root"), ("data", "workers"), ("data", "prefetch"),
                      ("model", "experts"), ("model", "conv"), ("train", "steps_per_call")}
_RESUMABLE_SECTIONS = {"parallel"}
# Fields that may change when a run is restarted from one of its checkpoints (``train(...,
# restart_from=STEP)``, ``hyperlt train --restart-from STEP``): how the optimiser steps from there on. The
# model, data, objective and batch size define what the checkpoint holds and stay as they were.
RESTARTABLE_CHANGES = frozenset(("optim", k) for k in (
    "lr", "schedule", "milestones", "decay", "warmup_epochs", "epochs", "weight_decay", "momentum", "nesterov"))


def check_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, restart: bool = False) -> dict:
  """A work dir holds one run: resuming it with another config would mix two experiments.

  Only a run that reached a checkpoint counts; a work dir whose first attempt failed before that (a
  wrong data path, say) is started afresh. With ``restart`` the optimisation fields in
  :data:`RESTARTABLE_CHANGES` may change too. Returns the changed fields that affect the computation,
  ``{"optim.lr": [saved, new], ...}`` (empty for a plain resume).
  """
  path = workdir / checkpoint.CONFIG_FILE
  if checkpoint.latest_step(workdir) is None or not path.exists():
    require(not restart, f"--restart-from: {workdir} has no checkpoint to restart from")
    return {}
  saved = checkpoint.read_json(path, "--workdir")
  current = config_lib.to_dict(config)
  allowed = _RESUMABLE_CHANGES | (RESTARTABLE_CHANGES if restart else frozenset())
  changed = {f"{s}.{k}": [saved.get(s, {}).get(k), current[s][k]]
             for s in current if isinstance(current[s], dict) and s not in _RESUMABLE_SECTIONS
             for k in current[s] if saved.get(s, {}).get(k) != current[s][k]}
  changed.update({k: [saved.get(k), current[k]] for k in current
                  if not isinstance(current[k], dict) and saved.get(k) != current[k]})
  differ = [name for name in changed if tuple(name.split(".", 1)) not in allowed]
  how = ("only optim." + ", optim.".join(k for _, k in sorted(RESTARTABLE_CHANGES)) + " may change on a restart"
         if restart else "resume with the same config, restart from a checkpoint with changed optimisation "
         "fields (hyperlt train --restart-from STEP), or choose a new --workdir")
  require(not differ, f"--workdir: {workdir} holds a run with a different config (differs in "
          f"{', '.join(differ)}); {how}")
  if "optim.momentum" in changed:
    before, after = changed["optim.momentum"]
    # optax keeps no momentum buffer without momentum, so the saved optimiser state would not fit.
    require((before == 0) == (after == 0), f"optim.momentum: a restart cannot switch momentum on or off "
            f"({before} -> {after}): the checkpoint's optimiser state has no place for it")
  return {name: values for name, values in changed.items() if tuple(name.split(".", 1)) not in _RESUMABLE_CHANGES}


def write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, facts: RunFacts) -> None:
  """config.json and data.json, by process 0. After :func:`check_config` a resumed run can only differ in
  the fields that may change (a moved ``data.root``), and later commands should see those."""
  if distributed.is_primary():
    checkpoint.write_json(workdir / checkpoint.CONFIG_FILE, config_lib.to_dict(config))
    checkpoint.write_json(workdir / checkpoint.DATA_FILE, facts.to_json())


def drop_metrics_after(workdir: pathlib.Path, step: int, append: tuple[dict, ...] = ()) -> None:
  """Cuts ``metrics.jsonl`` back to the restored checkpoint, then adds the ``append`` records, in one
  atomic replace: a reader or a kill sees the old file or the new one.

  Records of steps after ``step`` (and events at such steps) were computed by a run that died or was
  superseded before saving; the resumed run logs those steps again, so each step is recorded once. A
  line cut short by a kill is dropped too.
  """
  path = workdir / checkpoint.METRICS_FILE
  if not path.exists() and not append:
    return
  kept = []
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # A line cut short by the kill.
    at = record.get("step", record.get("at_step")) if isinstance(record, dict) else None
    if not (isinstance(at, int) and at > step):
      kept.append(line)
  kept += [json.dumps(record) for record in append]
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    f.write("".join(line + "\n" for line in kept))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
