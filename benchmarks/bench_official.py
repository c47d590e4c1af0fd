"""hyperlt against the official PyTorch code of SADE and PRL, side by side in one run.

What is compared, at equal widths, batch size, threads and augmentation:

* train: one training step at batch 128. hyperlt: the jitted step of ``hyperlt train`` for the recipe
  (``--recipe``, default cifar_lt:c100,ir100: ResNet-32, 3 experts on SADE's split, hypernetwork heads,
  T = 3 preference samples, STCH, SGD). Official: their 3-expert CIFAR ResNet-32 (``ResNet_s`` of
  model/ldam_drw_resnets/expert_resnet_cifar.py with BasicBlock and the recipe's stage sizes, built as
  their ``ResNet32Model`` builds it: use_norm, returns_feat, 3 experts, and for PRL ``use_hnet``; branch
  widths set to hyperlt's ``model.widths``), their loss (SADE: ``DiverseExpertLoss``; PRL: ``TADELoss``,
  the same three-expert loss under the name PRL's loss module has), SGD as their configs set it
  (lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4); one step = zero_grad, forward (PRL: their
  hypernetwork draws its Dirichlet preference), loss, backward, optimiser step, ``loss.item()`` (their
  trainer reads it every step).
* eval: predicted classes of ``--eval-images`` uint8 test images for one preference (the "uniform"
  vertex), in batches of ``--eval-batch``, normalisation included on both sides. hyperlt: features,
  then heads (``hyperlt evaluate``'s path). SADE: their model in eval mode under ``torch.no_grad``; PRL:
  the same with ``model(x, ray=preference)`` as their test scripts call it.
* sweep66 / sweep231: predicted classes for every preference of the 0.1 / 0.05 simplex grid on
  ``--sweep-images`` images. hyperlt computes the features once and all heads in one call; PRL's code
  takes the preference as an input of the forward pass, so it needs one full pass per preference (as its
  test scripts run it). SADE has no preference input and is not swept.

Augmentation is EXCLUDED on both sides (``data.crop_padding=0 data.flip=False data.rotation=0`` for
hyperlt; already-normalised tensors for the official step, whose augmentation runs in DataLoader worker
processes beside the step). hyperlt's step still gathers and normalises its batch on the device.

Threads: both frameworks get the same cores: ``--cores N`` pins this process to N cores before JAX and
PyTorch start (default: every core it may use); XLA uses them all and ``torch.set_num_threads(N)``. On a
CPU other jobs share, PyTorch's OpenMP threads spin at every barrier and lose most of their time when a
core is taken away (steps 5-10x slower under a load of 6 on 2 cores); ``--omp-passive`` sets
``OMP_WAIT_POLICY=PASSIVE`` for them. Measure alone, and record the load (the results file does).

Timing: every variant is compiled/warmed up first (two calls), then variants alternate round by round
(A, B, C, A, B, C, ... with a rotating start), ``--rounds`` rounds; a train sample is the mean of
``--steps`` consecutive steps. Each ratio is hyperlt's throughput over the official code's (> 1: hyperlt
is faster), computed per round from the paired samples; reported as min / median / max over rounds.

Needs PyTorch beside hyperlt (never a dependency of the package) and checkouts of the official code:
see benchmarks/setup_official.sh. Their code is imported from the given directories, never copied here.

    /work/bench-venv/bin/python benchmarks/bench_official.py \\
        --sade-dir benchmarks/.official/SADE-AgnosticLT --prl-dir benchmarks/.official/PRL
    ... --rounds 2 --steps 1 --sweep-images 64 --name quick          # a short look
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPE = "cifar_lt:c100,ir100"
NO_AUGMENTATION = ("data.crop_padding=0", "data.flip=False", "data.rotation=0")
# The official CIFAR configs (SADE and PRL): SGD, lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, tau 2.
OFFICIAL_SGD = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
OFFICIAL_TAU = 2.0
# Their loss class for the three experts (PRL's configs name DiverseExpertLoss, which its loss module lacks;
# its TADELoss is the same loss).
OFFICIAL_LOSS = {"sade": ("DiverseExpertLoss",), "prl": ("DiverseExpertLoss", "TADELoss")}
SWEEP_STEPS = {"sweep66": 0.1, "sweep231": 0.05}
# PyTorch's first steps on a CPU are several times slower than later ones (oneDNN builds its kernels for
# each new shape); these run before any timing, beside the warm-up sample every variant gets.
OFFICIAL_WARMUP_STEPS = 3


# --------------------------------------------------------------------------------------------- machine


def pin_cores(cores: int | None) -> int:
  """Pins this process to its first ``cores`` usable cores (all of them when None); returns the count.

  Call before JAX or PyTorch start: both size their thread pools from the cores the process may use.
  """
  usable = sorted(os.sched_getaffinity(0))
  if cores:
    if cores > len(usable):
      raise SystemExit(f"--cores {cores}: only {len(usable)} cores are usable")
    os.sched_setaffinity(0, usable[:cores])
    usable = usable[:cores]
  return len(usable)


def cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine(cores: int) -> dict:
  """The host this runs on: cores used, CPU model, load."""
  return {"cores_used": cores, "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "machine": platform.machine(),
          "system": platform.system(), "load_average_at_start": list(os.getloadavg())}


def versions(torch_module=None) -> dict:
  out = {"python": platform.python_version()}
  for name in ("hyperlt", "jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  if torch_module is not None:
    out["torch"] = torch_module.__version__
  import hyperlt_adapter  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  out["hyperlt_commit"] = hyperlt_adapter.versions()["hyperlt_commit"]
  return out


def command() -> str:
  return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]])


# ------------------------------------------------------------------------------------------- timing


def interleave(variants: dict[str, Callable[[], float]], rounds: int, deadline: float | None = None) -> dict:
  """Calls each variant once per round, the order rotated every round; returns each one's samples.

  With a ``deadline`` (``time.perf_counter()`` value) no round starts after it, but one always runs.
  """
  names = list(variants)
  samples = {n: [] for n in names}
  for r in range(rounds):
    if r and deadline is not None and time.perf_counter() > deadline:
      break
    for name in names[r % len(names):] + names[:r % len(names)]:
      samples[name].append(variants[name]())
  return samples


def spread(values: Sequence[float]) -> dict:
  return {"min": min(values), "median": statistics.median(values), "max": max(values),
          "per_round": list(values)}


def speed_ratio(hyperlt_s: Sequence[float], official_s: Sequence[float]) -> dict:
  """hyperlt's throughput over the official code's, per round (official time / hyperlt time, same work)."""
  return spread([o / h for h, o in zip(hyperlt_s, official_s)])


def timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


# ------------------------------------------------------------------------------------ official side


def load_module(path: pathlib.Path, alias: str):
  """Imports the file ``path`` as module ``alias`` (the two official repositories both name their
  package ``model``, so each file is loaded under its own name)."""
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is the official checkout complete? (see setup_official.sh)")
  spec = importlib.util.spec_from_file_location(alias, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[alias] = module
  spec.loader.exec_module(module)
  return module


def official_commit(repo: pathlib.Path) -> str | None:
  marker = repo / "OFFICIAL_COMMIT"
  return marker.read_text().strip() if marker.exists() else None


@contextlib.contextmanager
def cuda_calls_on(torch, device):
  """Their losses move the class prior with ``.cuda()`` when built; on a CPU that call is redirected to
  ``device`` while they are built (a no-op on a GPU)."""
  if device.type == "cuda":
    yield
    return
  original = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
  try:
    yield
  finally:
    torch.Tensor.cuda = original


class Official:
  """The official 3-expert CIFAR ResNet of ``kind`` ("sade" or "prl") from the checkout ``repo``, with
  their loss and optimiser, ready to time a training step and inference."""

  def __init__(self, kind: str, repo: pathlib.Path, *, torch, device, num_classes: int, stage_sizes: Sequence[int],
               widths: Sequence[int], class_counts: Sequence[int], mean, std, batch_size: int,
               images: np.ndarray, labels: np.ndarray, seed: int = 0):
    if int(widths[0]) != 16:
      raise ValueError(f"the official CIFAR ResNet has 16 channels in stage 1; model.widths is {tuple(widths)}")
    self.kind, self.torch, self.device, self.batch_size = kind, torch, device, batch_size
    torch.manual_seed(seed)
    arch = load_module(repo / "model" / "ldam_drw_resnets" / "expert_resnet_cifar.py", f"official_{kind}_resnet")
    loss_module = load_module(repo / "model" / "loss.py", f"official_{kind}_loss")
    kwargs = dict(num_experts=3, num_classes=num_classes, layer2_output_dim=int(widths[1]),
                  layer3_output_dim=int(widths[2]), use_norm=True, returns_feat=True)
    if kind == "prl":
      kwargs["use_hnet"] = True
    self.net = arch.ResNet_s(arch.BasicBlock, list(stage_sizes), **kwargs).to(device)
    self.net.train()
    self.loss_name = next((n for n in OFFICIAL_LOSS[kind] if hasattr(loss_module, n)), None)
    if self.loss_name is None:
      raise AttributeError(f"{repo}/model/loss.py has none of {OFFICIAL_LOSS[kind]}")
    with cuda_calls_on(torch, device):
      self.criterion = getattr(loss_module, self.loss_name)(cls_num_list=list(map(int, class_counts)),
                                                            tau=OFFICIAL_TAU)
    self.optimizer = torch.optim.SGD(self.net.parameters(), **OFFICIAL_SGD)
    self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    # Training batches: normalised tensors on the device, as their DataLoader hands them to the step.
    rng = np.random.default_rng(seed)
    self._batches = []
    for _ in range(4):
      idx = rng.choice(len(labels), batch_size, replace=False)
      x = self._normalise(images[idx])
      y = torch.from_numpy(np.asarray(labels[idx], np.int64)).to(device)
      self._batches.append((x, y))
    self._calls = 0

  def _normalise(self, images_uint8: np.ndarray):
    x = self.torch.from_numpy(np.ascontiguousarray(images_uint8)).to(self.device)
    return (x.permute(0, 3, 1, 2).float().div_(255.0) - self.mean) / self.std

  def parameter_count(self, backbone_only: bool = True) -> int:
    skip = ("linears", "hnet2linears")
    return int(sum(p.numel() for n, p in self.net.named_parameters()
                   if not (backbone_only and n.split(".")[0] in skip)))

  def _sync(self):
    if self.device.type == "cuda":
      self.torch.cuda.synchronize()

  def train_steps(self, steps: int) -> float:
    """Seconds per step over ``steps`` consecutive training steps."""
    start = time.perf_counter()
    for _ in range(steps):
      x, y = self._batches[self._calls % len(self._batches)]
      self._calls += 1
      self.optimizer.zero_grad()
      out = self.net(x)
      loss = self.criterion(output_logits=out["output"], target=y, extra_info={"logits": out["logits"].transpose(0, 1)})
      loss.backward()
      self.optimizer.step()
      loss.item()
    self._sync()
    return (time.perf_counter() - start) / steps

  def predict(self, images_uint8: np.ndarray, preferences: np.ndarray | None, batch: int) -> np.ndarray:
    """Predicted classes [P, N] (P = 1 without preferences): one full pass over the images per preference."""
    torch = self.torch
    self.net.eval()
    rays = [None] if preferences is None else [torch.tensor(p, dtype=torch.float32, device=self.device)
                                               for p in np.atleast_2d(preferences)]
    out = []
    with torch.no_grad():
      for ray in rays:
        preds = []
        for s in range(0, len(images_uint8), batch):
          x = self._normalise(images_uint8[s:s + batch])
          result = self.net(x) if ray is None else self.net(x, ray=ray)
          preds.append(result["output"].argmax(dim=1))
        out.append(torch.cat(preds))
    classes = torch.stack(out).cpu().numpy()
    self.net.train()
    return classes


# -------------------------------------------------------------------------------------- the measure


@dataclasses.dataclass
class Setup:
  """What both sides are measured on."""

  recipe: str = RECIPE
  overrides: tuple[str, ...] = ()
  classes: int = 100
  rounds: int = 5
  steps: int = 2
  eval_images: int = 1000
  eval_batch: int = 500
  sweep_images: int = 256
  sweep_rounds: int = 2
  sweeps: tuple[str, ...] = ("sweep66", "sweep231")
  hyperlt_methods: tuple[str, ...] = ("",)
  # hyperlt's training steps per compiled call (loop.make_multi_step); one variant each, K = 1 named plainly.
  steps_per_call: tuple[int, ...] = (1,)
  device: str = "auto"
  seed: int = 0


def synthetic_longtail(num_classes: int, imbalance_ratio: float = 100.0, per_class: int = 500, seed: int = 0):
  """Random uint8 32x32 images with the class counts of a CIFAR-LT training set (IR 100: 10,847 images
  for 100 classes), labels ordered by frequency."""
  import hyperlt_adapter as hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  balanced = np.repeat(np.arange(num_classes), per_class)
  labels = balanced[hyperlt.longtail_indices(balanced, imbalance_ratio, seed=seed)].astype(np.int32)
  images = np.random.default_rng(seed).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
  return images, labels


def measure(setup: Setup, official_dirs: dict[str, pathlib.Path], *, images: np.ndarray | None = None,
            labels: np.ndarray | None = None, test_images: np.ndarray | None = None,
            deadline: float | None = None, log: Callable[[str], None] = print) -> dict:
  """Times both sides as the module docstring describes; returns the figures (no file written).

  ``official_dirs`` maps "sade"/"prl" to checkouts (missing kinds are skipped). ``images``/``labels``:
  the training set both sides draw batches from (default: synthetic CIFAR-100-LT IR100);
  ``test_images``: for eval and sweeps (default: random). ``deadline``: no new round after it.
  """
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import hyperlt_adapter as hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel

  if images is None:
    images, labels = synthetic_longtail(setup.classes, seed=setup.seed)
  num_classes = int(labels.max()) + 1
  rng = np.random.default_rng(setup.seed + 1)
  if test_images is None:
    test_images = rng.integers(0, 256, (setup.eval_images, 32, 32, 3), dtype=np.uint8)
  eval_x = test_images[:setup.eval_images]
  sweep_x = test_images[:setup.sweep_images]
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  device = torch.device("cuda" if setup.device == "auto" and torch.cuda.is_available() else
                        ("cpu" if setup.device == "auto" else setup.device))
  if device.type == "cuda":
    # What their train.py sets (seed_everything): deterministic cuDNN, no autotuning.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

  # hyperlt: one step per method, the recipe with augmentation off.
  hyperlt_steps = {}
  for method in setup.hyperlt_methods:
    for k in setup.steps_per_call:
      name = ("hyperlt" if not method else f"hyperlt:{method}") + (f"_k{k}" if k != 1 else "")
      c = hyperlt.config(setup.recipe, [*NO_AUGMENTATION, *setup.overrides, *([f"method={method}"] if method else [])])
      start = time.perf_counter()
      hyperlt_steps[name] = hyperlt.TrainStep(c, images, labels, num_classes, steps_per_call=k)
      hyperlt_steps[name].run(1)
      log(f"{name}: compiled in {time.perf_counter() - start:.1f}s ({hyperlt.expert_form(c)} experts, {k} step(s) "
          "per call)")
  reference = hyperlt_steps[next(iter(hyperlt_steps))]
  c = reference.config
  counts = np.bincount(labels, minlength=num_classes)
  officials = {}
  for kind, repo in official_dirs.items():
    officials[kind] = Official(kind, pathlib.Path(repo), torch=torch, device=device, num_classes=num_classes,
                               stage_sizes=tuple(c.model.stage_sizes), widths=tuple(c.model.widths),
                               class_counts=counts, mean=c.data.mean, std=c.data.std, batch_size=c.optim.batch_size,
                               images=images, labels=labels, seed=setup.seed)
    officials[kind].train_steps(OFFICIAL_WARMUP_STEPS)
    log(f"{kind} (official, {officials[kind].loss_name}): warmed up on {device}")

  # Train: every variant warmed up once more, then interleaved.
  train_fns = {n: (lambda s=s: s.run(setup.steps)) for n, s in hyperlt_steps.items()}
  train_fns.update({k: (lambda o=o: o.train_steps(setup.steps)) for k, o in officials.items()})
  for fn in train_fns.values():
    fn()
  log(f"train: {setup.rounds} rounds of {setup.steps} step(s) each, variants {list(train_fns)}")
  train_s = interleave(train_fns, setup.rounds, deadline)

  # Eval: one preference (the uniform vertex).
  alpha = np.eye(3, dtype=np.float32)[1]
  inference = reference.inference(setup.eval_batch)
  eval_fns = {"hyperlt": lambda: timed(lambda: inference.predict(eval_x, alpha[None]))}
  eval_fns.update({k: (lambda o=o, k=k: timed(lambda: o.predict(eval_x, alpha[None] if k == "prl" else None,
                                                                setup.eval_batch)))
                   for k, o in officials.items()})
  for fn in eval_fns.values():
    fn()
    fn()
  log(f"eval: {len(eval_x)} images, {setup.rounds} rounds")
  eval_s = interleave(eval_fns, setup.rounds, deadline)

  # Sweeps: hyperlt (features once) against PRL's one pass per preference.
  sweep_s, grids = {}, {}
  for sweep in setup.sweeps:
    grid = hyperlt.simplex_grid(3, SWEEP_STEPS[sweep])
    grids[sweep] = len(grid)
    fns = {"hyperlt": lambda g=grid: timed(lambda: inference.predict(sweep_x, g))}
    if "prl" in officials:
      fns["prl"] = lambda g=grid: timed(lambda: officials["prl"].predict(sweep_x, g, setup.eval_batch))
    fns["hyperlt"]()
    log(f"{sweep}: {len(grid)} preferences x {len(sweep_x)} images, {setup.sweep_rounds} rounds")
    sweep_s[sweep] = interleave(fns, setup.sweep_rounds, deadline)

  batch = c.optim.batch_size
  median = statistics.median
  images_per_s = {"train": {n: batch / median(v) for n, v in train_s.items()},
                  "eval": {n: len(eval_x) / median(v) for n, v in eval_s.items()}}
  for sweep, samples in sweep_s.items():
    images_per_s[sweep] = {n: len(sweep_x) / median(v) for n, v in samples.items()}
  ratios = {}
  for kind in officials:
    for name in hyperlt_steps:
      ratios[f"train_{name.replace(':', '_')}_over_{kind}"] = speed_ratio(train_s[name], train_s[kind])
    ratios[f"eval_hyperlt_over_{kind}"] = speed_ratio(eval_s["hyperlt"], eval_s[kind])
  for sweep, samples in sweep_s.items():
    if "prl" in samples:
      ratios[f"{sweep}_hyperlt_over_prl"] = speed_ratio(samples["hyperlt"], samples["prl"])
  hyperlt_sweep_over_eval = {sweep: median(s["hyperlt"]) / median(eval_s["hyperlt"]) *
                             len(eval_x) / len(sweep_x) for sweep, s in sweep_s.items()}
  return {
      "ratios": ratios,
      "images_per_s": images_per_s,
      "samples_seconds": {"train": train_s, "eval": eval_s, **sweep_s},
      "hyperlt_sweep_over_single_eval_per_image": hyperlt_sweep_over_eval,
      "setup": {
          "recipe": setup.recipe, "overrides": [*NO_AUGMENTATION, *setup.overrides],
          "augmentation": "excluded on both sides",
          "hyperlt_expert_form": hyperlt.expert_form(c), "hyperlt_methods": list(hyperlt_steps),
          "hyperlt_steps_per_call": list(setup.steps_per_call),
          "stage_sizes": list(c.model.stage_sizes), "widths": list(c.model.widths),
          "branch_stages": c.model.branch_stages, "batch": batch, "classes": num_classes,
          "train_images": int(len(labels)), "rounds": setup.rounds, "steps_per_sample": setup.steps,
          "eval_images": int(len(eval_x)), "eval_batch": setup.eval_batch, "sweep_images": int(len(sweep_x)),
          "sweep_rounds": setup.sweep_rounds, "sweep_preferences": grids,
          "threads": {"xla_cores": threads, "torch_num_threads": torch.get_num_threads(),
                      "torch_interop_threads": torch.get_num_interop_threads(),
                      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
          "device": {"torch": str(device), "jax": hyperlt.backend()},
          "cudnn": ({"deterministic": True, "benchmark": False} if device.type == "cuda" else None),
          "official": {k: {"dir": str(official_dirs[k]), "commit": official_commit(pathlib.Path(official_dirs[k])),
                           "loss": o.loss_name, "sgd": OFFICIAL_SGD, "tau": OFFICIAL_TAU,
                           "backbone_parameters": o.parameter_count()}
                       for k, o in officials.items()},
          "hyperlt_backbone_parameters": hyperlt.backbone_parameter_count(reference),
      },
  }


def print_summary(result: dict) -> None:
  print("hyperlt over official, throughput (>1: hyperlt faster), min / median / max over rounds:")
  for name, r in result["ratios"].items():
    print(f"  {name:32s} {r['min']:7.2f} {r['median']:7.2f} {r['max']:7.2f}")
  for what, rates in result["images_per_s"].items():
    print(f"  {what} images/s: " + ", ".join(f"{n} {v:.1f}" for n, v in rates.items()))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sade-dir", type=pathlib.Path, help="checkout of the official SADE code")
  parser.add_argument("--prl-dir", type=pathlib.Path, help="checkout of the official PRL code")
  parser.add_argument("--name", default=None, help="results file name (default: official_<platform>)")
  parser.add_argument("--recipe", default=RECIPE)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="hyperlt config override for both sides' model, e.g. model.widths=(16,24,48)")
  parser.add_argument("--hyperlt-methods", default="prl",
                      help="comma-separated hyperlt methods to time (prl = the recipe's default; also e.g. sade)")
  parser.add_argument("--steps-per-call", default="1",
                      help="comma-separated hyperlt training steps per compiled call to time, e.g. 1,4 "
                           "(train.steps_per_call; K > 1: K steps unrolled in one call)")
  parser.add_argument("--classes", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2, help="train steps per timed sample")
  parser.add_argument("--eval-images", type=int, default=1000)
  parser.add_argument("--eval-batch", type=int, default=500)
  parser.add_argument("--sweep-images", type=int, default=256)
  parser.add_argument("--sweep-rounds", type=int, default=2)
  parser.add_argument("--sweeps", default="sweep66,sweep231", help="sweep66, sweep231, or none")
  parser.add_argument("--cores", type=int, default=0, help="pin to this many cores (0 = all usable)")
  parser.add_argument("--device", default="auto", help="torch device (auto: cuda if available)")
  parser.add_argument("--omp-passive", action="store_true",
                      help="OMP_WAIT_POLICY=PASSIVE for PyTorch's OpenMP threads: on a CPU shared with other "
                           "jobs their default spin-waiting makes steps several times slower")
  args = parser.parse_args(argv)
  if not (args.sade_dir or args.prl_dir):
    parser.error("give --sade-dir and/or --prl-dir (see benchmarks/setup_official.sh)")
  cores = pin_cores(args.cores or None)
  if args.omp_passive:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"   # read when PyTorch's OpenMP runtime starts: before the import
  sys.path.insert(0, str(HERE))
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  import hyperlt_adapter as hyperlt  # pylint: disable=g-import-not-at-top,import-outside-toplevel

  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  host = machine(cores)
  methods = tuple("" if m.strip() in ("prl", "") else m.strip() for m in args.hyperlt_methods.split(","))
  setup = Setup(recipe=args.recipe, overrides=tuple(args.set), classes=args.classes, rounds=args.rounds,
                steps=args.steps, eval_images=args.eval_images, eval_batch=args.eval_batch,
                sweep_images=args.sweep_images, sweep_rounds=args.sweep_rounds,
                sweeps=tuple(s for s in args.sweeps.split(",") if s in SWEEP_STEPS),
                hyperlt_methods=methods, device=args.device,
                steps_per_call=tuple(int(k) for k in args.steps_per_call.split(",")))
  dirs = {k: d for k, d in (("sade", args.sade_dir), ("prl", args.prl_dir)) if d}
  print(f"host: {host['cpu_model']}, {cores} cores, load {host['load_average_at_start']}", flush=True)
  result = measure(setup, dirs, log=lambda m: print(m, flush=True))
  host["load_average_at_end"] = list(os.getloadavg())
  name = args.name or f"official_{hyperlt.backend()}"
  record = {"name": name, "command": command(), "python": sys.executable, "date": started, "machine": host,
            "versions": versions(torch), **result}
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  path.write_text(json.dumps(record, indent=2) + "\n")
  print_summary(result)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
