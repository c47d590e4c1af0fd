"""What every hyperlt speed benchmark records beside its figures, and interleaved timing.

Machines are noisy (a shared CPU most of all), so a benchmark compares variants measured in ONE run,
alternating them round by round, and reports medians and ratios of paired rounds; absolute times are
recorded with the machine's load so a reader can judge them, and are never compared across runs.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def environment() -> dict:
  """Device, host and library versions of this process."""
  devices = jax.devices()
  versions = {name: importlib.metadata.version(name)
              for name in ("jax", "jaxlib", "flax", "optax", "numpy", "pillow")}
  versions["python"] = platform.python_version()
  return {
      "device": {"platform": jax.default_backend(), "kind": devices[0].device_kind, "count": len(devices)},
      "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
               "load_average_at_start": list(os.getloadavg())},
      "versions": versions,
  }


def command() -> str:
  return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def interleave(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
  """Calls every variant once per round, rotating the order each round; returns each one's samples."""
  names = list(variants)
  samples = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      samples[name].append(variants[name]())
  return samples


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
  """Median over rounds of numerator/denominator measured in the same round."""
  return statistics.median(a / b for a, b in zip(numerator, denominator))


def timed(fn: Callable[[], object]) -> float:
  """Seconds one call of ``fn`` takes, its result waited for."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def write(name: str, started: dict, payload: dict) -> pathlib.Path:
  """benchmarks/results/<name>.json: the command, time stamp, ``started`` (``environment()`` taken when
  the benchmark began) and ``payload``."""
  RESULTS.mkdir(parents=True, exist_ok=True)
  record = {"name": name, "command": command(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **started, **payload}
  record["host"]["load_average_at_end"] = list(os.getloadavg())
  path = RESULTS / f"{name}.json"
  path.write_text(json.dumps(record, indent=2) + "\n")
  return path


def compile_all(factories: dict[str, Callable[[], Any]]) -> tuple[dict[str, Any], dict[str, float]]:
  """Builds every variant (an object with ``run(steps)``), runs it once to compile (timed: building,
  compiling and one step) and once more to warm it; returns (variants, compile seconds)."""
  variants, compile_s = {}, {}
  for name, factory in factories.items():
    start = time.perf_counter()
    variants[name] = factory()
    variants[name].run(1)
    compile_s[name] = time.perf_counter() - start
    variants[name].run(1)
    print(f"compiled {name} in {compile_s[name]:.1f}s", flush=True)
  return variants, compile_s
