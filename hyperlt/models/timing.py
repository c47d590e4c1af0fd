"""Timing the model's interchangeable formulations in the real training step, for choosing one at start-up.

The expert forms (:data:`hyperlt.models.expert_split.FORMS`) and the convolution formulations
(:data:`hyperlt.models.conv.IMPLS`) compute the same function of the same parameters, so which one is
fastest is a question only a measurement on the actual backend answers. :func:`time_forms` builds the
model once per form, jits the caller's real update on random data, compiles it, runs a few steps and
returns seconds per step; :func:`time_variants` does the same for any set of model-config overrides
(``{"conv": "xla"}``, ...).

The update comes from the caller (``make_update``, ``init_state``), so this module does not import the
training code: ``hyperlt.training`` calls it, not the reverse. Random normalised images stand in for the
data: the step's cost does not depend on pixel values.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from hyperlt.models import conv
from hyperlt.models import expert_split
from hyperlt.models.expert_model import ExpertModel, build

# update(state, images [B, H, W, C] float32, labels [B] int32, key) -> (state, metrics)
Update = Callable[[Any, jnp.ndarray, jnp.ndarray, jax.Array], tuple[Any, Any]]


def default_forms(backend: str | None = None) -> tuple[str, ...]:
  """The expert forms worth timing on ``backend`` (default: JAX's): every form, except ``map`` on CPU,
  where the whole ResNet-32 step took 4.3x the time of ``unrolled`` (3.9 s per step on 2 cores), so
  timing it would only lengthen start-up."""
  backend = backend or jax.default_backend()
  return tuple(f for f in expert_split.FORMS if not (backend == "cpu" and f == "map"))


def conv_candidates(mode: str, backbone: str, backend: str | None = None) -> tuple[str, ...]:
  """The convolution formulations worth timing for ``model.conv`` = ``mode``: the named one, or for "auto"
  on the CIFAR ResNet ``chunked`` on CPU (measured 0.58x the step time of ``xla`` there, see
  :mod:`hyperlt.models.conv`, so timing ``xla`` would only lengthen start-up) and both elsewhere (not yet
  measured on GPU/TPU); the ImageNet-style ResNets keep ``xla`` (``chunked`` was measured on CIFAR layers
  only)."""
  backend = backend or jax.default_backend()
  if mode != "auto":
    return (conv.resolve(mode),)
  if backbone != "resnet_cifar":
    return ("xla",)
  return ("chunked",) if backend == "cpu" else tuple(conv.IMPLS)


def candidates(model_config: ml_collections.ConfigDict, backend: str | None = None) -> dict[str, dict[str, str]]:
  """The model-config overrides ``{"experts": form, "conv": impl}`` a start-up measurement chooses among,
  named "form/impl": the product of the forms ``model.experts`` allows (:func:`default_forms` for "auto")
  and :func:`conv_candidates`. With one expert every form computes the same single branch, so the form is
  not a choice there (the backend's default is taken)."""
  backend = backend or jax.default_backend()
  experts = model_config.experts
  if experts != "auto":
    forms = (expert_split.resolve(experts),)
  elif model_config.num_experts == 1:
    forms = (expert_split.resolve("auto"),)
  else:
    forms = default_forms(backend)
  impls = conv_candidates(model_config.conv, model_config.backbone, backend)
  return {f"{form}/{impl}": {"experts": form, "conv": impl} for form in forms for impl in impls}


def cache_key(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], batch_size: int,
              num_classes: int) -> dict[str, Any]:
  """What a measured choice depends on: backend and device kind, the model's shape (every model field but
  the two being chosen), the image shape, the classes and the per-device batch. A work dir keeps its
  choices under this key, so a resumed run on the same machine does not time again."""
  model = {k: list(v) if isinstance(v, tuple) else v for k, v in model_config.to_dict().items()
           if k not in ("experts", "conv")}
  return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "model": model,
          "requested": {"experts": model_config.experts, "conv": model_config.conv},
          "image_shape": list(image_shape), "num_classes": num_classes, "batch_size": batch_size}


def choose(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], batch_size: int, *,
           make_update: Callable[[ExpertModel], Update], init_state: Callable[[ExpertModel], Any],
           num_classes: int, steps: int = 3, rounds: int = 2) -> dict[str, Any]:
  """The fastest of :func:`candidates` on this backend, as a JSON-ready record
  ``{"key", "choice": {"experts", "conv"}, "measured", "reason", "seconds_per_step", "steps", "rounds"}``.

  With one candidate nothing is timed (``measured`` false, ``reason`` says why). Otherwise every candidate
  is compiled and timed for ``rounds`` rounds of ``steps`` steps (:func:`time_variants`) on random data,
  with its own state: the run's state and random stream are untouched, and since every candidate computes
  the same function (tests/models/test_expert_split.py), the choice changes speed only, up to float
  rounding (a run that must repeat to the last bit names its form instead of "auto").
  """
  key = cache_key(model_config, image_shape, batch_size, num_classes)
  variants = candidates(model_config)
  record = {"key": key, "steps": steps, "rounds": rounds}
  if len(variants) == 1:
    (choice,) = variants.values()
    reasons = []
    if model_config.experts != "auto":
      reasons.append(f"model.experts={model_config.experts} names the form")
    elif model_config.num_experts == 1:
      reasons.append("one expert: every form computes the same single branch")
    if model_config.conv != "auto":
      reasons.append(f"model.conv={model_config.conv} names the formulation")
    elif len(conv_candidates("auto", model_config.backbone)) == 1:
      reasons.append(f"model.conv=auto is {choice['conv']} for {model_config.backbone} on {key['backend']}")
    return {**record, "choice": dict(choice), "measured": False, "reason": "; ".join(reasons),
            "seconds_per_step": {}}
  seconds = time_variants(model_config, variants, image_shape, batch_size, steps, make_update=make_update,
                          init_state=init_state, num_classes=num_classes, rounds=rounds)
  fastest = min(seconds, key=seconds.get)
  return {**record, "choice": dict(variants[fastest]), "measured": True,
          "reason": f"fastest of {len(variants)} candidates", "seconds_per_step": seconds}


def apply_choice(model_config: ml_collections.ConfigDict, record: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``model_config`` with the form and convolution ``record`` (from :func:`choose`) chose."""
  return _with_overrides(model_config, record["choice"])


def _with_overrides(model_config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(model_config.to_dict())
  with config.unlocked():
    for field, value in overrides.items():
      setattr(config, field, value)
  return config


def time_variants(model_config: ml_collections.ConfigDict, variants: Mapping[str, Mapping[str, Any]],
                  image_shape: tuple[int, int, int], batch_size: int, steps: int, *,
                  make_update: Callable[[ExpertModel], Update], init_state: Callable[[ExpertModel], Any],
                  num_classes: int, rounds: int = 1, seed: int = 0) -> dict[str, float]:
  """Seconds per training step of each variant of ``model_config``, ``{name: seconds}``.

  ``variants`` maps a name to model-config overrides (e.g. ``{"experts": "unrolled"}``). For each, the
  model is built (:func:`hyperlt.models.expert_model.build`), ``make_update(model)`` is jitted (state
  donated) and ``init_state(model)`` gives its state; the step is compiled and run once untimed. Then,
  ``rounds`` times, every variant runs ``steps`` consecutive steps on the same random batch, the variants
  alternating so that a load change on a shared machine falls on all of them; a variant's time is the
  median over rounds of its mean step time. ``batch_size`` is what one device computes (the per-device
  batch when the run is data-parallel): the step runs on JAX's default device.
  """
  if steps < 1 or rounds < 1:
    raise ValueError(f"time_variants: expected steps >= 1 and rounds >= 1, got {steps} and {rounds}")
  image_key, label_key, step_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  images = jax.random.normal(image_key, (batch_size,) + tuple(image_shape), jnp.float32)
  labels = jax.random.randint(label_key, (batch_size,), 0, num_classes, jnp.int32)
  runs = {}
  for name, overrides in variants.items():
    model = build(_with_overrides(model_config, overrides), num_classes)
    step = jax.jit(make_update(model), donate_argnums=0)
    state, _ = step(init_state(model), images, labels, step_key)  # compiles
    runs[name] = [step, jax.block_until_ready(state)]

  def sample(name: str) -> float:
    step, state = runs[name]
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, images, labels, step_key)
    jax.block_until_ready((state, metrics))
    runs[name][1] = state
    return (time.perf_counter() - start) / steps

  samples = {name: [] for name in runs}
  names = list(runs)
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      samples[name].append(sample(name))
  return {name: statistics.median(values) for name, values in samples.items()}


def time_forms(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], batch_size: int,
               steps: int, *, make_update: Callable[[ExpertModel], Update], init_state: Callable[[ExpertModel], Any],
               num_classes: int, forms: Iterable[str] | None = None, rounds: int = 1,
               seed: int = 0) -> dict[str, float]:
  """Seconds per training step of each expert form, ``{form: seconds}`` (see :func:`time_variants`);
  ``forms`` defaults to :func:`default_forms`. Everything else in ``model_config`` (the convolution
  formulation included) is as given.

  For example, in a training loop (``tx``, ``objective`` and ``seed`` as the run's)::

      timings = time_forms(config.model, image_shape, batch_size, 3, num_classes=num_classes,
                           make_update=lambda m: make_update(m, tx, objective),
                           init_state=lambda m: init_state(m, tx, seed, image_shape))
      form = min(timings, key=timings.get)
  """
  forms = tuple(default_forms() if forms is None else forms)
  unknown = [f for f in forms if f not in expert_split.FORMS]
  if unknown:
    raise ValueError(f"time_forms: unknown expert forms {unknown}; expected some of {tuple(expert_split.FORMS)}")
  return time_variants(model_config, {f: {"experts": f} for f in forms}, image_shape, batch_size, steps,
                       make_update=make_update, init_state=init_state, num_classes=num_classes, rounds=rounds,
                       seed=seed)
