"""Streaming input pipeline: training-step time with and without data loading, in one run.

A synthetic SADE-style list-file dataset is written to a temporary directory (``--images`` JPEGs of
random sizes in ``--size-range``, like ImageNet photographs; or pass ``--root/--train-list`` for real
data). The training step of ``hyperlt.training.loop`` for streamed data (``make_step`` with
``hyperlt.data.streamed.step_input``: uint8 batch sharded over the "data" axis, normalised on the device,
the full update) is then timed in three interleaved forms, ``--rounds`` times each, ``--steps`` steps per
sample:

* ``compute``: steps on one batch already on the device (no loading at all);
* ``streamed``: steps fed by ``hyperlt.data.streaming.Loader`` (worker threads decode with PIL, random-
  resized crop + flip, bounded prefetch, device_put ahead of the step), a fresh epoch per sample, so
  the pipeline's start-up is included (a conservative figure);
* ``loader``: the loader alone, batches taken as fast as it produces them (decoding throughput).

Reported: ``streamed_over_compute`` (median of per-round ratios; 1.0 = loading fully hidden), step times,
``loader_images_per_s`` against ``compute_images_per_s``, and the share of streamed time the loop
waited for input (steps are dispatched as in ``train()``: at most ``train.STEPS_IN_FLIGHT`` queued, so a
wait is time the device ran out of work). On a CPU-only machine the decoding threads and the XLA
computation share the same cores, so some slowdown is expected there; on an accelerator host they do
not compete.

    python benchmarks/bench_input.py                  # -> benchmarks/results/input_<platform>.json
    python benchmarks/bench_input.py --set model.backbone=resnext50_32x4d --image-size 224 --batch 64
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from hyperlt import distributed  # noqa: E402
from hyperlt import configs as config_lib  # noqa: E402
from hyperlt.training import loop as train  # noqa: E402
from hyperlt.data import lists, streaming  # noqa: E402
from hyperlt.data import streamed as streamed_lib  # noqa: E402  (the name "streamed" is a timed variant below)
from hyperlt.models.expert_model import build  # noqa: E402
from hyperlt.training import objectives  # noqa: E402
from hyperlt.training.step import make_optimizer, make_update  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CPU default: a small 3-expert ResNet with a shared trunk (XLA:CPU runs the vmapped branches of the SADE
# split as slow grouped convolutions, see bench_train.py), so a step takes about a second; --set for others.
CPU_MODEL = ("model.backbone=resnet_cifar", "model.stage_sizes=(1,1,1)", "model.widths=(16,32,64)",
             "model.branch_stages=0")
GPU_MODEL = ("model.backbone=resnext50_32x4d", "model.branch_stages=2", "model.branch_width=0.75")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--name", default=None, help="results file name (default: input_<platform>)")
  parser.add_argument("--root", default=None, help="image root of a real list-file dataset")
  parser.add_argument("--train-list", default=None, help="its training list")
  parser.add_argument("--images", type=int, default=512, help="synthetic images to write")
  parser.add_argument("--size-range", type=int, nargs=2, default=(300, 500))
  parser.add_argument("--image-size", type=int, default=None, help="crop side (default: 224 on GPU, 64 on CPU)")
  parser.add_argument("--batch", type=int, default=None, help="global batch (default: 64 on GPU, 32 on CPU)")
  parser.add_argument("--workers", type=int, default=0, help="decoding threads (0 = every core)")
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=8, help="steps per timed sample")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
  args = parser.parse_args(argv)
  started = common.environment()
  platform = started["device"]["platform"]
  on_cpu = platform == "cpu"
  image_size = args.image_size or (64 if on_cpu else 224)
  batch = args.batch or (32 if on_cpu else 64)
  print(f"device: {started['device']}; host load {started['host']['load_average_at_start']}", flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    if args.root:
      root, train_list = pathlib.Path(args.root), pathlib.Path(args.train_list)
    else:
      root = pathlib.Path(tmp)
      classes = 16
      counts = np.maximum((args.images * 0.3 * 0.8 ** np.arange(classes)).astype(int), 2)
      counts[0] += args.images - counts.sum()
      start = time.perf_counter()
      train_list, _ = lists.write_example_tree(root, counts.tolist(), 1, size_range=tuple(args.size_range))
      print(f"wrote {counts.sum()} images in {time.perf_counter() - start:.1f}s", flush=True)
    images = lists.read_list(train_list, root, "--train-list")
    num_classes = int(images.labels.max()) + 1

    config = config_lib.load("digits")
    config_lib.override(config, [*(CPU_MODEL if on_cpu else GPU_MODEL), *args.set])
    config = config_lib.validate(config)
    model = build(config.model, num_classes)
    mesh = distributed.data_mesh()
    tx = make_optimizer(config.optim, len(images) // batch)
    counts = np.bincount(images.labels, minlength=num_classes) + 1
    update = make_update(model, tx, objectives.from_config(config, counts, len(images) // batch * config.optim.epochs))
    step = train.make_step(update, streamed_lib.step_input(IMAGENET_MEAN, IMAGENET_STD, mesh), mesh)
    state = train.initial_state(model, tx, 0, (image_size, image_size, 3), mesh)
    put = lambda x, y: (distributed.global_batch(x, mesh, batch), distributed.global_batch(y, mesh, batch))
    loader = streaming.Loader(images, batch, image_size, seed=0, workers=args.workers, prefetch=args.prefetch,
                              put=put)
    require_steps = args.steps
    assert loader.steps_per_epoch >= require_steps, "fewer batches per epoch than --steps; add --images"
    fixed = next(iter(loader.epoch(0)))
    box = {"state": state, "epoch": 1, "waited": 0.0}

    def run_steps(batches) -> float:
      """Seconds per step, dispatching as the training loop does (train.STEPS_IN_FLIGHT queued at most)."""
      start, in_flight = time.perf_counter(), []
      for _, (x, y) in zip(range(args.steps), batches):
        box["state"], metrics = step(box["state"], x, y)
        in_flight.append(metrics["loss"])
        if len(in_flight) > train.STEPS_IN_FLIGHT:
          in_flight.pop(0).block_until_ready()
      jax.block_until_ready(in_flight)
      return (time.perf_counter() - start) / args.steps

    def compute() -> float:
      return run_steps(iter(lambda: fixed, None))

    def streamed() -> float:
      box["epoch"] += 1
      waited = loader.wait_s
      batches = loader.epoch(box["epoch"])
      seconds = run_steps(batches)
      batches.close()
      box["waited"] += loader.wait_s - waited
      return seconds

    def loader_only() -> float:
      box["epoch"] += 1
      batches = loader.epoch(box["epoch"])
      start = time.perf_counter()
      for _, batch_arrays in zip(range(args.steps), batches):
        jax.block_until_ready(batch_arrays)
      batches.close()
      return (time.perf_counter() - start) / args.steps

    start = time.perf_counter()
    compute()
    compile_s = time.perf_counter() - start
    streamed()
    box["waited"] = 0.0
    samples = common.interleave({"compute": compute, "streamed": streamed, "loader": loader_only}, args.rounds)
    loader.close()

  median_s = {n: statistics.median(v) for n, v in samples.items()}
  streamed_total = sum(samples["streamed"]) * args.steps
  figures = {
      "streamed_over_compute": common.paired_ratio(samples["streamed"], samples["compute"]),
      "compute_images_per_s": batch / median_s["compute"],
      "streamed_images_per_s": batch / median_s["streamed"],
      "loader_images_per_s": batch / median_s["loader"],
      "streamed_input_wait_fraction": box["waited"] / streamed_total,
  }
  payload = {
      **figures,
      "setup": {"images": len(images), "size_range": list(args.size_range), "real_data": bool(args.root),
                "image_size": image_size, "batch": batch, "workers": streaming.default_workers(args.workers),
                "prefetch": args.prefetch, "rounds": args.rounds, "steps_per_sample": args.steps,
                "model": [*(CPU_MODEL if on_cpu else GPU_MODEL), *args.set], "experts": model.num_experts},
      "median_step_seconds": median_s, "samples_seconds": samples, "compile_seconds": compile_s,
  }
  path = common.write(args.name or f"input_{platform}", started, payload)
  print({k: round(v, 3) for k, v in figures.items()})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
