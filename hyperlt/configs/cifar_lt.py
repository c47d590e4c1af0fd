"""CIFAR-10-LT / CIFAR-100-LT with the published SADE/PRL recipe (METHOD.md section 6).

Variants, comma-separated after the file name (``cifar_lt:c100,ir100``):
  c10 | c100     dataset (CIFAR-10 via the ".npz" source by default; CIFAR-100 via TFDS)
  ir10|ir50|ir100 imbalance ratio; mu = 0.3 for IR 100/50, 0.1 for IR 10
  reduced         the 2-CPU-core budget: ResNet-8 (one block per stage, widths 16/32/64, the SADE expert
                  split), 10 epochs with 1 warm-up epoch and a cosine schedule; every method of
                  experiments/compare.py on CIFAR-10-LT IR100 in under an hour
  local           a few-minute CPU smoke run: 1 epoch of a 1-block ResNet

Training augmentation is the published one: crop with 4 padding, flip, rotation up to 15 degrees.
"""

from hyperlt.configs import base

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def get_config(variant: str = "c100,ir100"):
  c = base.get_config()
  flags = [v for v in variant.split(",") if v]
  dataset = "c10" if "c10" in flags else "c100"
  ratio = next((int(f[2:]) for f in flags if f.startswith("ir")), 100)
  unknown = set(flags) - {"c10", "c100", "ir10", "ir50", "ir100", "reduced", "local"}
  if unknown:
    raise ValueError(f"unknown variant(s) {sorted(unknown)}; see the docstring of cifar_lt.py")
  if dataset == "c10":
    c.data.source = "npz"
    c.loss.tau = 2.0
  else:
    c.data.source = "tfds:cifar100"
    c.loss.tau = 2.0
  c.data.imbalance_ratio = float(ratio)
  c.data.mean = CIFAR_MEAN
  c.data.std = CIFAR_STD
  c.data.rotation = 15.0
  c.loss.mu = 0.3 if ratio >= 50 else 0.1
  # Two steps per compiled call: 0.89x the time per step on 2 CPU cores for 3x the compile time
  # (benchmarks/results/steps_per_call_cifar_cpu.json); worth it for runs of many epochs, not for "local".
  c.train.steps_per_call = 2
  if "reduced" in flags:
    c.model.stage_sizes = (1, 1, 1)
    c.optim.epochs = 10
    c.optim.warmup_epochs = 1
    c.optim.schedule = "cosine"
    c.optim.milestones = ()
  if "local" in flags:
    c.train.steps_per_call = 1
    c.model.stage_sizes = (1, 1, 1)
    c.optim.epochs = 1
    c.optim.warmup_epochs = 0
    c.optim.milestones = ()
  return c
