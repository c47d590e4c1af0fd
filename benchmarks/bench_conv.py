"""Convolution formulations and expert forms on the CPU: single layers, the whole training step, a profile.

Three modes, each interleaving its variants round by round in one process (medians, and ratios as medians
of per-round ratios, as in ``benchmarks/common.py``):

* ``micro``: one 3x3 convolution of the CIFAR ResNet-32 at batch 128 (every layer shape it has), forward
  plus both gradients for a fixed output cotangent, jitted, in each formulation: ``xla`` (JAX's own),
  ``chunked`` (hyperlt.models.conv: kernel gradient summed over batch chunks, strided input gradient as
  a stride-1 convolution of the dilated cotangent) at several chunk sizes, ``chunked_dk`` (only the
  kernel gradient chunked), and ``im2col`` (patches by slicing plus one matrix product, autodiff);
* ``step``: the real jitted training step of the CIFAR-100-LT recipe (3 experts, ResNet-32, batch 128,
  on-device augmentation, ``hyperlt.training``) for every (expert form, convolution) pair asked for;
* ``profile``: per-operation time of one step variant from a ``jax.profiler`` trace with
  ``XLA_FLAGS=--xla_cpu_enable_xprof_traceme`` (set by this script before JAX starts), top operations.

    python benchmarks/bench_conv.py micro --rounds 5
    python benchmarks/bench_conv.py step --rounds 4 --steps 2 --variants unrolled/xla,unrolled/chunked
    python benchmarks/bench_conv.py profile --variants unrolled/xla --steps 3

Results go to ``benchmarks/results/conv_<mode>_cpu.json`` (``--name`` to change) with the command.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "profile":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  pylint: disable=wrong-import-position

from hyperlt.models import conv  # noqa: E402

BATCH = 128
# (spatial size, C_in, C_out, stride) of every 3x3 convolution shape in a CIFAR ResNet-32 (widths 16/32/64),
# and how many of each one 3-expert step with SADE's split runs (stem: 1 shared; stage 1: 10 shared;
# stages 2-3: 1 strided + 9 plain per expert).
LAYERS = {
    "stem_3to16": ((32, 3, 16, 1), 1),
    "s1_16": ((32, 16, 16, 1), 10),
    "s2_16to32_stride2": ((32, 16, 32, 2), 3),
    "s1_32": ((16, 32, 32, 1), 27),
    "s2_32to64_stride2": ((16, 32, 64, 2), 3),
    "s1_64": ((8, 64, 64, 1), 27),
}


# ------------------------------------------------------------------------------------------------ micro


def im2col_conv(x, kernel, strides, padding):
  """Reference im2col formulation (measured, not kept): the kh*kw shifted (strided) views of the padded
  input concatenated on the channel axis, then one matrix product with the reshaped kernel."""
  kh, kw, cin, cout = kernel.shape
  (plo, phi), (qlo, qhi) = conv.explicit_padding(x.shape[1:3], (kh, kw), strides, padding)
  xp = jnp.pad(x, ((0, 0), (plo, phi), (qlo, qhi), (0, 0)))
  oh = (xp.shape[1] - kh) // strides[0] + 1
  ow = (xp.shape[2] - kw) // strides[1] + 1
  cols = [lax.slice(xp, (0, i, j, 0), (x.shape[0], i + strides[0] * (oh - 1) + 1, j + strides[1] * (ow - 1) + 1,
                                        cin), (1, strides[0], strides[1], 1))
          for i in range(kh) for j in range(kw)]
  return jnp.einsum("bhwp,po->bhwo", jnp.concatenate(cols, axis=-1), kernel.reshape(kh * kw * cin, cout))


def micro_formulations(stride: int) -> dict:
  """name -> conv(x, kernel) for one layer's stride (SAME padding)."""
  strides = (stride, stride)
  pads = lambda x, k: conv.explicit_padding(x.shape[1:3], k.shape[:2], strides, "SAME")

  def dk_only(x, k):
    # JAX's input gradient, chunked kernel gradient: separates the two parts of ``chunked``.
    @jax.custom_vjp
    def f(x, k):
      return conv.conv2d(x, k, strides, "SAME")

    def fwd(x, k):
      return f(x, k), (x, k)

    def bwd(res, dy):
      x, k = res
      dx = jax.linear_transpose(lambda x: conv.conv2d(x, k, strides, "SAME"), x)(dy)[0]  # XLA's
      dk = conv._kernel_gradient(x, dy, k.shape, strides, pads(x, k), 1, conv.CHUNK)  # pylint: disable=protected-access
      return dx, dk

    f.defvjp(fwd, bwd)
    return f(x, k)

  forms = {"xla": lambda x, k: conv.conv2d(x, k, strides, "SAME", impl="xla"),
           "im2col": lambda x, k: im2col_conv(x, k, strides, "SAME"),
           "chunked_dk": dk_only}
  for chunk in (8, 16, 32):
    forms[f"chunked_{chunk}"] = lambda x, k, c=chunk: conv.chunked_conv(x, k, strides, pads(x, k), 1, c, True)
  return forms


def micro(args) -> dict:
  results = {}
  for name, ((hw, cin, cout, stride), count) in LAYERS.items():
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, hw, hw, cin))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5
    out = -(-hw // stride)
    cot = jax.random.normal(jax.random.PRNGKey(2), (BATCH, out, out, cout))
    fns, reference = {}, None
    for form, f in micro_formulations(stride).items():
      # Forward and both gradients for the cotangent ``cot``: what one training step asks of the layer
      # (the stem's input gradient is dead code in a real step; here it is asked for, like every layer's).
      fn = jax.jit(lambda x, k, f=f: jax.vjp(f, x, k)[1](cot) + (f(x, k),))
      outputs = fn(x, kernel)
      if reference is None:
        reference = outputs
      error = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(outputs, reference))
      fns[form] = (fn, error)
    for fn, _ in fns.values():
      common.timed(lambda fn=fn: fn(x, kernel))
    samples = common.interleave({f: (lambda fn=fn: common.timed(lambda: fn(x, kernel))) for f, (fn, _) in fns.items()},
                                args.rounds)
    med = {f: statistics.median(v) for f, v in samples.items()}
    results[name] = {"shape": {"hw": hw, "c_in": cin, "c_out": cout, "stride": stride}, "per_step": count,
                     "median_ms": {f: 1e3 * v for f, v in med.items()},
                     "over_xla": {f: common.paired_ratio(samples[f], samples["xla"]) for f in samples},
                     "max_relative_error_vs_xla": {f: e for f, (_, e) in fns.items()}}
    print(name, " ".join(f"{f} {1e3 * v:.1f}ms" for f, v in med.items()), flush=True)
  forms = list(next(iter(results.values()))["median_ms"])
  results["per_step_total_ms"] = {f: sum(r["median_ms"][f] * r["per_step"] for r in results.values()) for f in forms}
  return results


# ------------------------------------------------------------------------------------------------- step


def step_variant(form: str, impl: str, images: np.ndarray, labels: np.ndarray, overrides=()):
  """The recipe's jitted training step (``hyperlt_adapter.TrainStep``) with one expert form and one
  convolution formulation."""
  import hyperlt_adapter  # pylint: disable=import-outside-toplevel  (the micro mode needs no training code)
  c = hyperlt_adapter.config("cifar_lt:c100,ir100", [*overrides, f"model.experts={form}", f"model.conv={impl}"])
  return hyperlt_adapter.TrainStep(c, images, labels, 100)


def _variants(args) -> list[tuple[str, str]]:
  return [tuple(v.split("/")) for v in args.variants.split(",")]


def _data():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, 1024).astype(np.int32)


def step(args) -> dict:
  images, labels = _data()
  variants, compile_s = common.compile_all({
      f"{form}/{impl}": functools.partial(step_variant, form, impl, images, labels, args.set)
      for form, impl in _variants(args)})
  samples = common.interleave({n: functools.partial(v.run, args.steps) for n, v in variants.items()}, args.rounds)
  med = {n: statistics.median(s) for n, s in samples.items()}
  first = next(iter(variants))
  return {"median_step_seconds": med, "images_per_s": {n: BATCH / s for n, s in med.items()},
          "over_first": {n: common.paired_ratio(samples[n], samples[first]) for n in samples},
          "first": first, "samples_seconds": samples, "compile_seconds": compile_s}


# ---------------------------------------------------------------------------------------------- profile


def _hlo_index(hlo: str) -> tuple[dict, dict]:
  """(instruction name -> its line, computation name -> its body) of an optimised HLO module's text."""
  lines, bodies, current = {}, {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.-]+) \(.*\{\s*$", line)
    if header:
      current = header.group(1)
      bodies[current] = []
      continue
    if current is not None:
      bodies[current].append(line)
    match = re.match(r"^\s*(?:ROOT )?%?([\w.-]+) = ", line)
    if match:
      lines[match.group(1)] = line
  return lines, {name: "\n".join(body) for name, body in bodies.items()}


def _op_category(name: str, lines: dict, bodies: dict) -> str:
  """What an executed operation of the step is, from its instruction (and the computation a fusion
  calls) in the optimised HLO: which part of a convolution, a layout transpose, a reduction, ..."""
  line = lines.get(name, "")
  called = re.search(r"calls=%?([\w.-]+)", line)
  text = line + ("\n" + bodies.get(called.group(1), "") if called else "")
  conv_line = next((l for l in text.splitlines() if " convolution(" in l), None)
  if conv_line is not None:
    library = "YNNPACK fusion" if "__ynn_fusion" in line else "XLA convolution thunk"
    window = re.search(r"window=\{size=(\d+)x", conv_line)
    if window and int(window.group(1)) > 7:  # the output map as "kernel": a kernel gradient
      part = "kernel gradient"
    elif "lhs_dilate" in conv_line:
      part = "input gradient (dilated, strided layer)"
    elif "transpose(" in conv_line or "custom_vjp" in conv_line or "bwd" in conv_line:
      part = "input gradient"
    else:
      part = "forward"
    return f"convolution {part} [{library}]"
  if " dot(" in text:
    return "matrix product"
  if "transpose" in name or name.startswith("copy") or " transpose(" in text:
    return "layout transpose / copy (with fused elementwise work)"
  if " reduce(" in text or " reduce-window(" in text:
    return "reduction fusion (batch statistics, sums)"
  if " pad(" in text:
    return "pad fusion"
  return "elementwise / other fusion"


def profile(args) -> dict:
  images, labels = _data()
  (form, impl), = _variants(args)[:1]
  variant = step_variant(form, impl, images, labels, args.set)
  variant.run(2)
  lines, bodies = _hlo_index(variant.lowered().compile().as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      seconds = variant.run(args.steps)
    path = sorted(glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "Pjit", "CommonPjRt", "end:")):
      per_op[e["name"]] += e.get("dur", 0) / 1e6 / args.steps
  by_kind = collections.Counter()
  for name, s in per_op.items():
    by_kind[_op_category(name, lines, bodies)] += s
  top = per_op.most_common(args.top)
  for name, s in top:
    print(f"{1e3 * s:8.1f} ms  {name}  [{_op_category(name, lines, bodies)}]")
  print("by kind:", {k: round(1e3 * v, 1) for k, v in by_kind.most_common()})
  return {"variant": f"{form}/{impl}", "step_seconds_while_tracing": seconds,
          "op_seconds_per_step_total": sum(per_op.values()),
          "top_ops_seconds_per_step": {n: s for n, s in top},
          "top_ops_kind": {n: _op_category(n, lines, bodies) for n, _ in top},
          "by_kind_seconds_per_step": dict(by_kind.most_common())}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("mode", choices=("micro", "step", "profile"))
  parser.add_argument("--name", default=None)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2, help="train steps per timed sample (step, profile)")
  parser.add_argument("--variants", default="unrolled/xla,unrolled/chunked",
                      help="comma-separated expert_form/convolution pairs (step, profile: the first)")
  parser.add_argument("--top", type=int, default=25, help="operations listed (profile)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
  args = parser.parse_args(argv)
  started = common.environment()
  print(f"host load {started['host']['load_average_at_start']}", flush=True)
  payload = {"micro": micro, "step": step, "profile": profile}[args.mode](args)
  payload["setup"] = {"mode": args.mode, "rounds": args.rounds, "steps": args.steps, "variants": args.variants,
                      "overrides": args.set, "batch": BATCH, "conv_chunk": conv.CHUNK}
  path = common.write(args.name or f"conv_{args.mode}_{started['device']['platform']}", started, payload)
  print(json.dumps({k: v for k, v in payload.items() if k not in ("samples_seconds",)}, indent=1)[:3000])
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
