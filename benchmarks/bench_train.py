"""Training and evaluation speed at the published CIFAR recipe, as ratios measured in one run.

The recipe: ResNet-32 (stages 5/5/5, widths 16/32/64), 3 experts, batch 128, 100 classes, 32x32 RGB,
SGD with Nesterov momentum, STCH over 3 preference samples (``hyperlt/configs/cifar_lt.py``). Each
variant is the real jitted training step of ``hyperlt.training.loop`` (device-resident batch gather, on-device
crop, flip and rotation, the update of ``hyperlt.training.step``) on random uint8 images; only the model settings change:

* ``shared_t1`` / ``shared_t3``: 1 or 3 experts on a fully shared trunk (``model.branch_stages=0``);
* ``branches_t1`` / ``branches_t3``: SADE's split, stages 2-3 per expert (``branch_stages=2``);
* ``branches_t1`` / ``branches_t3`` are forced to the vmapped form (``model.experts=vmap``);
* ``loop_t3``: ``model.experts=unrolled``, the library's form that applies the branches one after
  another (unrolled at trace time) over the SAME stacked parameters, instead of one vmapped module;
* ``published_t3``: ``default_t3`` with the published SADE/PRL widths 16/24/48 (reduce_dimension);
  ``t3_over_t1_branches_published`` = published_t3 / default_t1, 3 such experts over the plain ResNet-32
  the single-model baselines train;
* ``default_t1`` / ``default_t3``: ``model.experts=auto`` as evaluation resolves it (unrolled on CPU,
  vmapped elsewhere; training times the forms at start-up, hyperlt.training.autotune);
  ``train_images_per_s`` and the 200-epoch extrapolation use ``default_t3``;
* ``map_t3`` (with ``--map``): ``model.experts=map``, the same branches applied by ``jax.lax.map`` over the
  stacked parameters (a compiled sequential map: still an expert axis, no Python loop, and no grouped
  convolutions);
* ``bf16_t3`` (with ``--bf16``, default on GPU): ``branches_t3`` with ``model.dtype=bfloat16``;
* ``eval``: what ``hyperlt evaluate`` computes for ``--eval-images`` test images with ``branches_t3``:
  features in batches of ``train.eval_batch_size``, then predictions for one preference.

Compilation is excluded (each variant is compiled and run twice first). Then every variant is timed
once per round, in a rotating order, for ``--rounds`` rounds; a train sample is the mean time of
``--steps`` consecutive steps. Reported: medians, and ratios as medians of per-round ratios:

    t3_over_t1_shared   = shared_t3 / shared_t1        (target <= 1.15)
    t3_over_t1_branches = branches_t3 / branches_t1    (target <= 2.2)
    vmap_over_loop      = branches_t3 / loop_t3        (target <= 0.7)
    train_images_per_s  = 128 / default_t3;  eval_images_per_s = eval images / eval time

plus ``t3_over_t1_shared_flops`` and ``t3_over_t1_branches_flops`` (default_t3 / default_t1): the same
ratios in XLA's count of floating-point operations per step (``step_flops``), which timing noise
cannot move; ``map_over_loop`` = map_t3 / loop_t3 (with ``--map``); a diagnostic ``grouped_conv`` (one stage-2
convolution for 3 experts, vmapped = one grouped convolution versus 3 separate ones), and
``cifar100_ir100_200_epochs_minutes_extrapolated``: 200 epochs of 84 steps (10,847 CIFAR-100-LT
IR100 images / 128) at the median ``default_t3`` step time. ``--time-epochs N`` also times the real
``train()`` loop for N epochs on synthetic data of that size and extrapolates its steady epochs.

    python benchmarks/bench_train.py                          # -> benchmarks/results/train_<platform>.json
    python benchmarks/bench_train.py --rounds 3 --name quick
    python benchmarks/bench_train.py --time-epochs 3          # on a GPU: the 200-epoch figure from the loop
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import hyperlt_adapter  # pylint: disable=g-import-not-at-top,wrong-import-position

from hyperlt import configs as config_lib  # noqa: E402
from hyperlt.training import loop as train  # noqa: E402
from hyperlt.data import augment, longtail, resident  # noqa: E402
from hyperlt.models import expert_split  # noqa: E402

RECIPE = "cifar_lt:c100,ir100"
CIFAR100_IR100_TRAIN = 10_847
TARGETS = {"t3_over_t1_shared": 1.15, "t3_over_t1_branches": 2.2, "vmap_over_loop": 0.7}


EXTRA_OVERRIDES: list[str] = []  # --set: applied to every variant (for quick checks; recorded in the results)


def grouped_conv_diagnostic(rounds: int) -> dict:
  """Forward+backward of one 3x3 convolution of stage 2 ([3, 128, 16, 16, 32] -> 32 channels) for 3
  experts: vmapped (XLA emits ONE grouped convolution, feature_group_count = 3) versus 3 separate
  convolutions in the same jitted program."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 128, 16, 16, 32))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 32, 32))
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  forms = {"vmapped": jax.vmap(conv), "separate": lambda x, k: jnp.stack([conv(x[t], k[t]) for t in range(3)])}
  grads = {n: jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1))) for n, f in forms.items()}
  for g in grads.values():
    common.timed(lambda g=g: g(x, k))
  samples = common.interleave({n: (lambda g=g: common.timed(lambda: g(x, k))) for n, g in grads.items()}, rounds)
  return {"median_seconds": {n: statistics.median(v) for n, v in samples.items()},
          "vmapped_over_separate": common.paired_ratio(samples["vmapped"], samples["separate"])}


def recipe_config(*overrides: str):
  config = config_lib.load(RECIPE)
  config_lib.override(config, ["train.progress=False", *EXTRA_OVERRIDES, *overrides])
  return config_lib.validate(config)


VARIANTS = {
    "shared_t1": ("model.num_experts=1", "model.branch_stages=0", "loss.anchors=uniform"),
    "shared_t3": ("model.branch_stages=0",),
    # The vmapped form is named explicitly: the default model.experts=auto unrolls the experts on CPU.
    "branches_t1": ("model.num_experts=1", "loss.anchors=uniform", "model.experts=vmap"),
    "branches_t3": ("model.experts=vmap",),
    "default_t1": ("model.num_experts=1", "loss.anchors=uniform"),
    "default_t3": (),
    "loop_t3": ("model.experts=unrolled",),  # the library's unrolled form (hyperlt.models.expert_model)
    # The published SADE/PRL CIFAR model: expert branches at 24/48 channels (SADE's reduce_dimension).
    "published_t3": ("model.widths=(16,24,48)",),
    "map_t3": ("model.experts=map",),
    "bf16_t3": ("model.dtype=bfloat16",),
}


class TrainVariant(hyperlt_adapter.TrainStep):
  """One variant's compiled training step (the step ``hyperlt train`` runs), its state and a resident batch
  source."""

  def __init__(self, name: str, num_classes: int, images: np.ndarray, labels: np.ndarray, steps: int):
    self.name, self.steps = name, steps
    super().__init__(recipe_config(*VARIANTS[name]), images, labels, num_classes)

  def sample(self) -> float:
    return self.run(self.steps)


def check_loop_matches(vmapped: TrainVariant, looped: TrainVariant, images: np.ndarray) -> float:
  """Largest |difference| of the two models' features on the same parameters (inference mode)."""
  state = vmapped.state
  x = augment.normalize(images[:16], vmapped.config.data.mean, vmapped.config.data.std)
  a = jax.jit(lambda p, s: vmapped.model.features(p, s, x, train=False)[0])(state.params, state.batch_stats)
  b = jax.jit(lambda p, s: looped.model.features(p, s, x, train=False)[0])(state.params, state.batch_stats)
  return float(jnp.max(jnp.abs(a - b)))


def synthetic_cifar100_lt(seed: int = 0) -> resident.ResidentData:
  """Random images with the class counts of CIFAR-100-LT IR100 (10,847 training images)."""
  rng = np.random.default_rng(seed)
  counts = longtail.longtail_counts(500, 100, 100)
  train_y = np.repeat(np.arange(100), counts).astype(np.int32)
  test_y = np.repeat(np.arange(100), 100).astype(np.int32)
  image = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  return resident.ResidentData(
      name="synthetic-cifar100-lt-ir100", class_names=tuple(str(c) for c in range(100)),
      train_x=image(len(train_y)), train_y=train_y, val_x=image(0), val_y=np.zeros(0, np.int32), test_x=image(len(test_y)), test_y=test_y,
      class_counts=counts, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
      test_sets=longtail.all_test_sets(test_y), groups=longtail.shot_groups(counts))


def time_loop_epochs(epochs: int) -> dict:
  """Runs ``train()`` for ``epochs`` epochs of the recipe on synthetic CIFAR-100-LT IR100 data."""
  data = synthetic_cifar100_lt()
  steps_per_epoch = len(data.train_y) // 128
  config = recipe_config(f"optim.epochs={epochs}", f"train.log_every_steps={steps_per_epoch}",
                         f"train.checkpoint_every_epochs={epochs}")
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train.train(config, workdir, data=data, log=lambda _: None)
    total = time.perf_counter() - start
    records = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  epoch_s = [steps_per_epoch * 128 / r["images_per_s"] for r in records]
  steady = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
  return {"epochs_run": epochs, "epoch_seconds": epoch_s, "first_epoch_includes_compile": True,
          "wall_seconds": total, "steady_epoch_seconds": steady,
          "cifar100_ir100_200_epochs_minutes_loop": 200 * steady / 60}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--name", default=None, help="results file name (default: train_<platform>)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2, help="train steps per timed sample")
  parser.add_argument("--eval-images", type=int, default=2000)
  parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                      help="also time model.dtype=bfloat16 (auto: on a GPU or TPU only)")
  parser.add_argument("--map", action="store_true",
                      help="also time map_t3 (jax.lax.map over the experts; slow on XLA:CPU)")
  parser.add_argument("--time-epochs", type=int, default=0, help="also time N epochs of the real loop")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override for every variant, e.g. model.stage_sizes=1,1,1 (not the recipe then)")
  args = parser.parse_args(argv)
  EXTRA_OVERRIDES.extend(args.set)
  started = common.environment()
  platform = started["device"]["platform"]
  name = args.name or f"train_{platform}"
  use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and platform != "cpu")
  print(f"device: {started['device']}; host load {started['host']['load_average_at_start']}", flush=True)

  rng = np.random.default_rng(0)
  num_classes = 100
  images = rng.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, 1024).astype(np.int32)
  names = [n for n in VARIANTS if (n != "bf16_t3" or use_bf16) and (n != "map_t3" or args.map)]
  variants, compile_s = common.compile_all(
      {n: (lambda n=n: TrainVariant(n, num_classes, images, labels, args.steps)) for n in names})
  loop_error = max(check_loop_matches(variants["branches_t3"], variants[n], images)
                   for n in ("loop_t3", "map_t3") if n in variants)

  reference = variants["default_t3"]
  test_x = rng.integers(0, 256, (args.eval_images, 32, 32, 3), dtype=np.uint8)
  eval_batch = reference.config.train.eval_batch_size
  alpha = np.eye(3, dtype=np.float32)[1:2]

  def evaluation():
    return reference.inference(eval_batch).predict(test_x, alpha)

  compile_s["eval"] = common.timed(evaluation)
  common.timed(evaluation)
  samples = common.interleave({**{n: v.sample for n, v in variants.items()},
                               "eval": lambda: common.timed(evaluation)}, args.rounds)
  median_s = {n: statistics.median(v) for n, v in samples.items()}
  batch = reference.config.optim.batch_size
  steps_200 = 200 * (CIFAR100_IR100_TRAIN // batch)
  figures = {
      "t3_over_t1_shared": common.paired_ratio(samples["shared_t3"], samples["shared_t1"]),
      "t3_over_t1_branches": common.paired_ratio(samples["branches_t3"], samples["branches_t1"]),
      "vmap_over_loop": common.paired_ratio(samples["branches_t3"], samples["loop_t3"]),
      # What users get: model.experts=auto (unrolled on CPU, vmapped elsewhere).
      "default_experts": expert_split.resolve("auto"),
      "t3_over_t1_branches_default": common.paired_ratio(samples["default_t3"], samples["default_t1"]),
      # 3 experts with the published 24/48 branches over the single ResNet-32 the baselines train.
      "t3_over_t1_branches_published": common.paired_ratio(samples["published_t3"], samples["default_t1"]),
      "default_over_vmap": common.paired_ratio(samples["default_t3"], samples["branches_t3"]),
      "train_images_per_s": batch / median_s["default_t3"],
      "train_images_per_s_vmap": batch / median_s["branches_t3"],
      "eval_images_per_s": args.eval_images / median_s["eval"],
      "cifar100_ir100_200_epochs_minutes_extrapolated": steps_200 * median_s["default_t3"] / 60,
  }
  flops = {n: v.flops() for n, v in variants.items()}
  # The same ratios in work rather than time: what a noisy machine cannot blur.
  figures["t3_over_t1_shared_flops"] = flops["shared_t3"] / flops["shared_t1"]
  figures["t3_over_t1_branches_flops"] = flops["default_t3"] / flops["default_t1"]
  figures["t3_over_t1_branches_published_flops"] = flops["published_t3"] / flops["default_t1"]
  if args.map:
    figures["map_over_loop"] = common.paired_ratio(samples["map_t3"], samples["loop_t3"])
  if use_bf16:
    figures["bf16_over_f32"] = common.paired_ratio(samples["bf16_t3"], samples["branches_t3"])
  payload = {
      **figures,
      "targets": {k: f"<= {v}" for k, v in TARGETS.items()},
      "met": {k: figures[k] <= v for k, v in TARGETS.items() if k in figures},
      "setup": {"recipe": RECIPE, "overrides": args.set, "batch": batch, "classes": num_classes,
                "image": [32, 32, 3],
                "rounds": args.rounds, "steps_per_sample": args.steps, "eval_images": args.eval_images,
                "eval_batch": eval_batch, "loop_vs_vmap_max_feature_difference": loop_error},
      "median_seconds": median_s, "samples_seconds": samples, "compile_seconds": compile_s,
      "step_flops": flops,
  }
  payload["grouped_conv"] = grouped_conv_diagnostic(args.rounds)
  if args.time_epochs:
    payload["loop"] = time_loop_epochs(args.time_epochs)
  path = common.write(name, started, payload)
  print(json.dumps({k: payload[k] for k in figures}, indent=2))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
