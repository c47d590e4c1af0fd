"""Loading, overriding and validating run configurations.

A config is an ``ml_collections.ConfigDict`` returned by ``get_config(variant)`` of a Python file, named
either by a bundled name (``digits``, ``cifar_lt``) or a path, with an optional ``:variant`` suffix as in
big_vision (``cifar_lt:c10,ir100``). Overrides are ``dotted.key=value`` strings; values are read as
Python literals when they parse as one (``0.05``, ``(1, 1, 1)``, ``True``) and as strings otherwise.
The config is locked, so a misspelt key is an error rather than a silently ignored setting.

A ``method`` preset (hyperlt.configs.presets) is applied when the method is chosen: by :func:`override`
for ``method=NAME`` (first, so the other overrides win) and by :func:`load` for a config file that assigns
``method``. :func:`validate` only checks.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import pathlib
from typing import Any, Iterable

import ml_collections

from hyperlt import losses, preference
from hyperlt.errors import UserInputError, require

BUNDLED = ("digits", "cifar_lt")
DEFAULT = "digits"


def load(spec: str = DEFAULT) -> ml_collections.ConfigDict:
  """The config named by ``spec`` = NAME[:variant] or PATH.py[:variant], locked."""
  name, _, variant = spec.partition(":")
  if name in BUNDLED:
    module = importlib.import_module(f"hyperlt.configs.{name}")
  else:
    path = pathlib.Path(name)
    require(path.suffix == ".py" and path.is_file(),
            f"--config: {name!r} is neither a bundled config ({', '.join(BUNDLED)}) nor an existing .py file")
    module_spec = importlib.util.spec_from_file_location(f"hyperlt_user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
      module_spec.loader.exec_module(module)
    except Exception as e:  # A user's file can fail in any way; report it as theirs.
      raise UserInputError(f"--config: {path} failed to load: {type(e).__name__}: {e}") from None
    require(hasattr(module, "get_config"), f"--config: {path} defines no get_config() function")
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except ValueError as e:
    raise UserInputError(f"--config {spec}: {e}") from None
  from hyperlt.configs import presets  # pylint: disable=g-import-not-at-top
  require(isinstance(config, ml_collections.ConfigDict),
          f"--config {spec}: get_config() returned a {type(config).__name__}, expected an ml_collections.ConfigDict")
  if config.get("method"):
    presets.fill(config)  # a config file that assigns method gets the preset beneath its own settings
  config.lock()
  return config


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """Rebuilds a saved config (see :func:`to_dict`), checking it against the current defaults."""
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  _merge(config, values, prefix="")
  config.lock()
  return config


def to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def _merge(config: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
  for key, value in values.items():
    dotted = f"{prefix}{key}"
    require(key in config, f"config: unknown key {dotted!r}")
    if isinstance(config[key], ml_collections.ConfigDict):
      require(isinstance(value, dict), f"config: {dotted!r} must be a section, got {value!r}")
      _merge(config[key], value, prefix=dotted + ".")
    else:
      config[key] = tuple(value) if isinstance(value, list) else value


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _valid_keys(section: ml_collections.ConfigDict, prefix: str) -> list[str]:
  return [f"{prefix}{k}" for k in section.keys()]


def override(config: ml_collections.ConfigDict, assignments: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies ``key=value`` assignments in place; unknown keys and wrong types raise UserInputError.

  ``method=NAME`` goes first, wherever it stands: it applies the preset (:func:`presets.apply`), and the
  other assignments then override its fields in their order.
  """
  from hyperlt.configs import presets  # pylint: disable=g-import-not-at-top
  assignments = list(assignments)
  chooses_method = lambda assignment: assignment.partition("=")[0] == "method"
  for assignment in sorted(assignments, key=lambda assignment: not chooses_method(assignment)):
    section, leaf, value = _parse_assignment(config, assignment)
    if section is config and leaf == "method":
      presets.apply(config, value)
    else:
      section[leaf] = value
  return config


def _parse_assignment(config: ml_collections.ConfigDict, assignment: str) -> tuple[ml_collections.ConfigDict, str, Any]:
  """(section, leaf, value) of one ``key=value`` assignment, the value type-checked against the field's."""
  key, sep, text = assignment.partition("=")
  require(bool(sep) and bool(key), f"override {assignment!r}: expected dotted.key=value")
  *parents, leaf = key.split(".")
  section = config
  for depth, part in enumerate(parents):
    prefix = ".".join(parents[:depth])
    require(part in section and isinstance(section[part], ml_collections.ConfigDict),
            f"unknown config key {key!r}: no section {part!r}; sections: "
            f"{', '.join(k for k in section.keys() if isinstance(section[k], ml_collections.ConfigDict)) or '-'}"
            + (f" under {prefix}" if prefix else ""))
    section = section[part]
  valid = ", ".join(_valid_keys(section, ".".join(parents) + "." if parents else ""))
  require(leaf in section and not isinstance(section[leaf], ml_collections.ConfigDict),
          f"unknown config key {key!r}; valid keys here: {valid}")
  value = _parse_value(text)
  current = section[leaf]
  if isinstance(current, tuple) and isinstance(value, str):
    value = tuple(_parse_value(v.strip()) for v in text.split(",") if v.strip())
  elif isinstance(current, tuple) and not isinstance(value, tuple):
    value = (value,)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, bool) != isinstance(value, bool) or (
      type(current) in (int, float, str, tuple) and not isinstance(value, type(current))):
    raise UserInputError(f"config key {key!r}: expected a {type(current).__name__} like {current!r}, got {text!r}")
  return section, leaf, value


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks ranges and cross-field consistency and returns ``config`` unchanged; each failure names the
  field. It never applies a preset (see hyperlt.configs.presets for when that happens)."""
  from hyperlt.configs import presets  # pylint: disable=g-import-not-at-top
  from hyperlt.models.expert_model import BACKBONES  # pylint: disable=g-import-not-at-top
  if config.method:
    presets.get(config.method)
    require(presets.is_applied(config),
            f"method: {config.method!r} is named but its preset was never applied (none of its fields is set); "
            f"select it with presets.apply(config, {config.method!r}) or the override method={config.method}")
  d, m, l, p, o = config.data, config.model, config.loss, config.preference, config.optim
  require(d.imbalance_ratio >= 1, f"data.imbalance_ratio: expected >= 1, got {d.imbalance_ratio}")
  require(d.n_max >= 0, f"data.n_max: expected >= 0 (0 = smallest class count), got {d.n_max}")
  require(0 <= d.val_fraction < 1, f"data.val_fraction: expected in [0, 1), got {d.val_fraction}")
  require(len(d.mean) == len(d.std), "data.mean and data.std: expected the same length (one per channel)")
  require(all(s > 0 for s in d.std), f"data.std: expected positive numbers, got {d.std}")
  require(d.crop_padding >= 0, f"data.crop_padding: expected >= 0, got {d.crop_padding}")
  require(0 <= d.rotation <= 180, f"data.rotation: expected 0..180 degrees, got {d.rotation}")
  require(d.few_below <= d.many_above, "data.few_below: expected <= data.many_above")
  require(m.backbone in BACKBONES, f"model.backbone: expected one of {BACKBONES}, got {m.backbone!r}")
  require(len(m.stage_sizes) == len(m.widths) and len(m.stage_sizes) >= 1 and all(s >= 1 for s in m.stage_sizes),
          "model.stage_sizes and model.widths: expected equal-length tuples of positive integers")
  num_stages = len(m.stage_sizes) if m.backbone == "resnet_cifar" else 4
  require(0 <= m.branch_stages < num_stages,
          f"model.branch_stages: expected 0..{num_stages - 1} for {m.backbone}, got {m.branch_stages}")
  require(m.width_multiplier > 0, f"model.width_multiplier: expected > 0, got {m.width_multiplier}")
  require(m.branch_width > 0, f"model.branch_width: expected > 0, got {m.branch_width}")
  require(m.posthoc_tau >= 0, f"model.posthoc_tau: expected >= 0 (0 = off), got {m.posthoc_tau}")
  require(m.num_experts >= 1, f"model.num_experts: expected >= 1, got {m.num_experts}")
  require(m.head in ("hyper", "static"), f"model.head: expected 'hyper' or 'static', got {m.head!r}")
  require(m.combine in ("weighted", "mean"), f"model.combine: expected 'weighted' or 'mean', got {m.combine!r}")
  require(m.experts in ("auto", "vmap", "unrolled"),
          f"model.experts: expected 'auto', 'vmap' or 'unrolled', got {m.experts!r}")
  require(m.dtype in ("float32", "bfloat16"), f"model.dtype: expected 'float32' or 'bfloat16', got {m.dtype!r}")
  require(m.scale > 0, f"model.scale: expected > 0, got {m.scale}")
  require(l.mode in losses.LOSS_MODES, f"loss.mode: expected one of {losses.LOSS_MODES}, got {l.mode!r}")
  require(l.objective in losses.OBJECTIVES, f"loss.objective: expected one of {losses.OBJECTIVES}, got {l.objective!r}")
  require(l.mu > 0, f"loss.mu: expected > 0, got {l.mu}")
  require(len(l.anchors) == m.num_experts,
          f"loss.anchors: expected one anchor per expert ({m.num_experts}), got {len(l.anchors)}")
  bad = [a for a in l.anchors if not losses.is_valid_anchor(a)]
  require(not bad, f"loss.anchors: unknown {bad}; expected names from {losses.ANCHOR_NAMES}")
  require(l.mixup_alpha >= 0, f"loss.mixup_alpha: expected >= 0 (0 = off), got {l.mixup_alpha}")
  require(l.diversity >= 0, f"loss.diversity: expected >= 0 (0 = off), got {l.diversity}")
  require(l.diversity_temperature > 0, f"loss.diversity_temperature: expected > 0, got {l.diversity_temperature}")
  require(0 <= l.reweight_start <= 1,
          f"loss.reweight_start: expected a share of training in [0, 1] (0 = off), got {l.reweight_start}")
  require(0 <= l.reweight_beta < 1, f"loss.reweight_beta: expected in [0, 1), got {l.reweight_beta}")
  require(p.sampling in preference.SAMPLING_MODES,
          f"preference.sampling: expected one of {preference.SAMPLING_MODES}, got {p.sampling!r}")
  require(p.beta0 > 0 and p.kappa >= 0, "preference.beta0 > 0 and preference.kappa >= 0 expected")
  if p.default:
    preference.parse(p.default, m.num_experts, field="preference.default")
  require(o.lr > 0 and math.isfinite(o.lr), f"optim.lr: expected a positive number, got {o.lr}")
  require(o.weight_decay >= 0, f"optim.weight_decay: expected >= 0, got {o.weight_decay}")
  require(o.batch_size >= 1, f"optim.batch_size: expected >= 1, got {o.batch_size}")
  require(o.epochs >= 1, f"optim.epochs: expected >= 1, got {o.epochs}")
  require(0 <= o.warmup_epochs <= o.epochs, f"optim.warmup_epochs: expected 0..optim.epochs, got {o.warmup_epochs}")
  require(o.schedule in ("step", "cosine"), f"optim.schedule: expected 'step' or 'cosine', got {o.schedule!r}")
  require(config.train.keep_checkpoints >= 1, "train.keep_checkpoints: expected >= 1")
  require(config.train.checkpoint_every_epochs >= 1, "train.checkpoint_every_epochs: expected >= 1")
  _validate_lists_and_parallel(config)
  return config


def _validate_lists_and_parallel(config: ml_collections.ConfigDict) -> None:
  """The list-file data fields (when ``data.source = "lists"``) and the ``parallel`` section."""
  d, par = config.data, config.parallel
  if d.source == "lists":
    for field in ("root", "train_list", "test_list"):
      require(bool(d[field]), f"data.{field}: required when data.source='lists'")
    require(d.image_size >= 8, f"data.image_size: expected >= 8 pixels, got {d.image_size}")
    require(d.resize >= d.image_size, f"data.resize: expected >= data.image_size ({d.image_size}), got {d.resize}")
    require(0 < d.min_scale <= 1, f"data.min_scale: expected in (0, 1], got {d.min_scale}")
    require(0 <= d.color_jitter < 1, f"data.color_jitter: expected in [0, 1), got {d.color_jitter}")
    require(d.workers >= 0, f"data.workers: expected >= 0 (0 = every core), got {d.workers}")
    require(d.prefetch >= 1, f"data.prefetch: expected >= 1, got {d.prefetch}")
  require(par.num_devices >= 0, f"parallel.num_devices: expected >= 0 (0 = every device), got {par.num_devices}")
  require(par.num_processes >= 1, f"parallel.num_processes: expected >= 1, got {par.num_processes}")
  require(0 <= par.process_id < par.num_processes,
          f"parallel.process_id: expected 0..{par.num_processes - 1}, got {par.process_id}")
  require(par.num_processes == 1 or par.coordinator_address,
          f"parallel.coordinator_address: required for {par.num_processes} processes (host:port of process 0)")
