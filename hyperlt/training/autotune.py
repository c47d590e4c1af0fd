"""``model.experts=auto`` (and ``model.conv=auto``) decided by measurement at the start of training.

The candidates (:func:`hyperlt.models.timing.candidates`) compute the same function of the same
parameters, so the choice is about speed on the backend at hand, which only a measurement answers: each
is compiled with the run's own update and timed for a few steps on random data
(:func:`hyperlt.models.timing.choose`). The record of the choice, with the timings it was made from,
goes to ``WORKDIR/forms.json`` (one record per cache key: backend, device kind, model shape, per-device
batch), so a resumed run on the same machine reads its earlier choice instead of timing again, and a run
on another backend appends its own.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from hyperlt import distributed
from hyperlt.models import timing
from hyperlt.workdir import checkpoint

FORMS_FILE = "forms.json"


def _cached(workdir: pathlib.Path | None, key: dict) -> dict | None:
  path = None if workdir is None else workdir / FORMS_FILE
  if path is None or not path.exists():
    return None
  records = checkpoint.read_json(path, "--workdir").get("records", [])
  return next((r for r in reversed(records) if isinstance(r, dict) and r.get("key") == key), None)


def _store(workdir: pathlib.Path, record: dict) -> None:
  path = workdir / FORMS_FILE
  records = checkpoint.read_json(path, "--workdir").get("records", []) if path.exists() else []
  records = [r for r in records if r.get("key") != record["key"]] + [record]
  checkpoint.write_json(path, {"records": records})


def _agreed(record: dict, variants: dict[str, dict[str, str]]) -> dict:
  """Process 0's choice on every process: the processes run one program, so they must pick the same
  candidate even when their own timings (or cached records) disagree."""
  if jax.process_count() == 1:
    return record
  names = list(variants)
  mine = names.index(next(n for n, v in variants.items() if v == record["choice"]))
  index = int(multihost_utils.broadcast_one_to_all(np.int32(mine)))
  return {**record, "choice": dict(variants[names[index]])}


def model_config(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int,
                 per_device_batch: int, workdir: pathlib.Path | None, *,
                 make_update: Callable[[Any], Callable], init_state: Callable[[Any], Any],
                 log: Callable[[str], None] = print) -> ml_collections.ConfigDict:
  """``config.model`` with ``experts`` and ``conv`` set to the fastest candidates on this backend (see the
  module docstring); the choice is logged and, with a ``workdir``, recorded there by process 0."""
  key = timing.cache_key(config.model, image_shape, per_device_batch, num_classes)
  record = _cached(workdir, key)
  if record is None:
    record = timing.choose(config.model, image_shape, per_device_batch, make_update=make_update,
                           init_state=init_state, num_classes=num_classes)
    if workdir is not None and distributed.is_primary():
      _store(workdir, record)
    source = "measured"
  else:
    source = f"from {FORMS_FILE}"
  record = _agreed(record, timing.candidates(config.model))
  choice = record["choice"]
  if record["measured"]:  # a choice the config made needs no news
    timings = ", ".join(f"{n} {s:.3f}s" for n, s in record["seconds_per_step"].items())
    log(f"model.experts={choice['experts']}, model.conv={choice['conv']} ({source}; seconds per step: {timings})")
  return timing.apply_choice(config.model, record)
