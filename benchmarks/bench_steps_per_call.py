"""Steps per compiled call: K training steps in one ``lax.scan`` (``loop.make_multi_step``) against K
calls of the single step (``loop.make_step``), on the resident input of a real config.

    python benchmarks/bench_steps_per_call.py --config digits --ks 1,4,8
    python benchmarks/bench_steps_per_call.py --config cifar_lt:c100,ir100 --ks 1,4 --steps 8 \
        --name steps_per_call_cifar_cpu

Random uint8 images of the config's image shape (1024 of them, 100 classes for CIFAR), the run's own update,
augmentation and state layout. Each round times ``--steps`` steps of every K (rotating order); reported:
median seconds per step, and each K's time over K=1's (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from hyperlt import configs as config_lib  # noqa: E402
from hyperlt import distributed  # noqa: E402
from hyperlt.data import augment, resident  # noqa: E402
from hyperlt.models.expert_model import build  # noqa: E402
from hyperlt.training import loop, objectives  # noqa: E402
from hyperlt.training.step import make_optimizer, make_update  # noqa: E402

SHAPES = {"digits": ((8, 8, 1), 10), "cifar_lt": ((32, 32, 3), 100)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="digits")
  parser.add_argument("--ks", default="1,4,8", help="steps per call to compare (the first is the reference)")
  parser.add_argument("--steps", type=int, default=16, help="steps per timed sample (a multiple of every K)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--name", default=None)
  args = parser.parse_args(argv)
  ks = [int(k) for k in args.ks.split(",")]
  if any(args.steps % k for k in ks):
    parser.error(f"--steps {args.steps} must be a multiple of every K in {ks}")
  started = common.environment()
  config = config_lib.load(args.config)
  config_lib.override(config, ["train.progress=False", *args.set])
  config_lib.validate(config)
  image_shape, num_classes = SHAPES[args.config.partition(":")[0]]
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (1024,) + image_shape, dtype=np.uint8)
  labels = rng.integers(0, num_classes, 1024).astype(np.int32)
  batch = config.optim.batch_size
  mesh = distributed.data_mesh(1)
  model = build(config.model, num_classes)
  tx = make_optimizer(config.optim, len(labels) // batch)
  counts = np.bincount(labels, minlength=num_classes)
  update = make_update(model, tx, objectives.from_config(config, counts, 1000))
  mean, std = (0.5,) * image_shape[-1], (0.25,) * image_shape[-1]
  batches = resident.step_input(batch, mean, std, augment.Augmentation.from_config(config.data), mesh)
  x, y = distributed.replicate(images, mesh), distributed.replicate(labels, mesh)
  perm = distributed.replicate(rng.permutation(len(labels)).astype(np.int32), mesh)
  calls = {k: (loop.make_step(update, batches, mesh) if k == 1 else loop.make_multi_step(update, batches, mesh, k))
           for k in ks}
  states = {k: loop.initial_state(model, tx, config.seed, image_shape, mesh) for k in ks}
  per_epoch = len(labels) // batch

  def run(k: int, steps: int) -> float:
    start = time.perf_counter()
    for i in range(0, steps, k):
      states[k], metrics = calls[k](states[k], x, y, perm, i % (per_epoch - k + 1))
    jax.block_until_ready(metrics["loss"])
    return (time.perf_counter() - start) / steps

  compile_s = {}
  for k in ks:
    compile_s[k] = run(k, k) * k
    run(k, k)
  samples = common.interleave({str(k): (lambda k=k: run(k, args.steps)) for k in ks}, args.rounds)
  first = str(ks[0])
  payload = {"median_step_seconds": {k: statistics.median(v) for k, v in samples.items()},
             "over_first": {k: common.paired_ratio(v, samples[first]) for k, v in samples.items()},
             "first": first, "samples_seconds": samples, "compile_seconds": compile_s,
             "setup": {"config": args.config, "overrides": args.set, "batch": batch, "image": list(image_shape),
                       "steps_per_sample": args.steps, "rounds": args.rounds}}
  print(payload["median_step_seconds"], payload["over_first"])
  if args.name:
    print(f"wrote {common.write(args.name, started, payload)}")


if __name__ == "__main__":
  main()
