"""Export a trained run for serving: a serialized ``jax.export`` artifact that needs only ``jax`` to run.

The artifact is :func:`hyperlt.inference.predictor.image_probabilities` with the run's parameters, batch
statistics, normalisation (mean/std of its data facts) and post-hoc logit shift embedded as constants::

    images uint8 [batch, H, W, C]  (, preference float32 [T])  ->  probabilities float32 [batch, K]

``batch`` is a symbolic dimension, so one artifact serves every batch size. With a fixed preference the
artifact takes the images only; otherwise the raw preference (one non-negative weight per expert, any
positive sum: the model normalises it) is its second input. Loading it::

    import jax
    exported = jax.export.deserialize(open("model.jax", "rb").read())
    probabilities = exported.call(images, preference)

A JSON sidecar (``FILE.json``) records what the artifact expects: image shape and dtype, class names, the
preference (or "input"), the platforms, the hyperlt version and the checkpoint step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import outputs
from hyperlt import preference as preference_lib
from hyperlt import version
from hyperlt.errors import require
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir import run as run_lib

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu",)
BATCH = "batch"  # the name of the symbolic batch dimension


def parse_platforms(text: str | Sequence[str], field: str = "--platforms") -> tuple[str, ...]:
  """Platforms to lower for, from "cpu,cuda" or a sequence; each one of :data:`PLATFORMS`, no repeats."""
  names = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
  require(bool(names) and all(names), f"{field}: expected comma-separated platforms from {', '.join(PLATFORMS)}, "
          f"got {text!r}")
  unknown = [p for p in names if p not in PLATFORMS]
  require(not unknown, f"{field}: unknown platform(s) {unknown}; expected names from {', '.join(PLATFORMS)}")
  require(len(set(names)) == len(names), f"{field}: a platform is named twice in {names}")
  return tuple(names)


def export(run: run_lib.Run, preference: np.ndarray | None = None,
           platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
  """The run's probabilities as a ``jax.export.Exported`` with a symbolic batch size.

  Args:
    run: a loaded run (its data need not be loaded).
    preference: a raw preference [T] to fix (as ``hyperlt.preference.parse`` returns it), or None to take
      the preference as the second input.
    platforms: the platforms to lower for; one artifact may hold several (e.g. cpu and cuda).
  """
  probabilities = Predictor.for_run(run).probability_function()
  h, w, c = run.facts.image_shape
  batch, = jax.export.symbolic_shape(BATCH)
  images = jax.ShapeDtypeStruct((batch, h, w, c), jnp.uint8)
  if preference is None:
    serve = lambda x, alpha: probabilities(x, alpha[None])[0]
    specs = (images, jax.ShapeDtypeStruct((run.model.num_experts,), jnp.float32))
  else:
    fixed = jnp.asarray(preference, jnp.float32)[None]
    serve = lambda x: probabilities(x, fixed)[0]
    specs = (images,)
  return jax.export.export(jax.jit(serve), platforms=tuple(platforms))(*specs)


def metadata(run: run_lib.Run, preference: np.ndarray | None, platforms: Sequence[str]) -> dict[str, Any]:
  """The sidecar's content: what the artifact takes and returns, and where it came from."""
  h, w, c = run.facts.image_shape
  t, k = run.model.num_experts, run.facts.num_classes
  inputs = [{"name": "images", "shape": [BATCH, h, w, c], "dtype": "uint8"}]
  if preference is None:
    inputs.append({"name": "preference", "shape": [t], "dtype": "float32"})
  return {
      "format": "jax.export (load with jax.export.deserialize)",
      "hyperlt_version": version.installed(),
      "jax_version": jax.__version__,
      "workdir": str(pathlib.Path(run.workdir).resolve()),
      "step": int(run.step),
      "platforms": list(platforms),
      "num_classes": k,
      "class_names": list(run.facts.class_names),
      "image_shape": [h, w, c],
      "dtype": "uint8",
      "anchors": list(run.config.loss.anchors),
      "preference": "input" if preference is None else [float(v) for v in preference],
      "inputs": inputs,
      "outputs": [{"name": "probabilities", "shape": [BATCH, k], "dtype": "float32"}],
  }


def describe(meta: dict[str, Any]) -> str:
  """A few lines on the artifact's inputs and output, for the command line."""
  h, w, c = meta["image_shape"]
  lines = [f"  input  images       uint8 [batch, {h}, {w}, {c}], pixels 0..255, any batch size"]
  if meta["preference"] == "input":
    lines.append(f"  input  preference   float32 [{len(meta['anchors'])}], one non-negative weight per expert "
                 f"({', '.join(meta['anchors'])})")
  else:
    lines.append(f"  fixed  preference   {','.join(f'{v:.6g}' for v in meta['preference'])} "
                 f"({', '.join(meta['anchors'])})")
  lines.append(f"  output probabilities float32 [batch, {meta['num_classes']}] (softmax over the classes)")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Written:
  """The files :func:`write` wrote, and the sidecar's content."""
  path: pathlib.Path
  sidecar: pathlib.Path
  metadata: dict[str, Any]


def sidecar_path(out: str | os.PathLike) -> pathlib.Path:
  out = pathlib.Path(out)
  return out.with_name(out.name + ".json")


def write(workdir: str | os.PathLike, out: str | os.PathLike, preference=None,
          platforms: Sequence[str] = DEFAULT_PLATFORMS, *, step: int | None = None) -> Written:
  """Exports the work dir's checkpoint (at ``step``, default the latest) to ``out`` and ``out``.json.

  ``preference`` is a raw preference (anything ``hyperlt.preference.parse`` reads) or None for a
  preference input. Neither file may be one of the work dir's own (hyperlt.outputs).
  """
  out = outputs.check_output_file(out, "--out", workdir)
  sidecar = outputs.check_output_file(sidecar_path(out), "--out (its sidecar FILE.json)", workdir)
  platforms = parse_platforms(platforms)
  run = run_lib.load(workdir, step, with_data=False)
  alpha = None if preference is None else preference_lib.parse(preference, run.model.num_experts, "--preference")
  exported = export(run, alpha, platforms)
  meta = metadata(run, alpha, platforms)
  out.write_bytes(exported.serialize())
  sidecar.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
  return Written(out, sidecar, meta)
