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
  except Exception as e:  # pylint: disable=broad-except  # a user's get_config can fail in any way
    raise UserInputError(f"--config {spec}: get_config() raised {type(e).__name__}: {e}") from None
  from hyperlt.configs import presets  # pylint: disable=g-import-not-at-top
  require(isinstance(config, ml_collections.ConfigDict),
          f"--config {spec}: get_config() returned a {type(config).__name__}, expected an ml_collections.ConfigDict")
  _check_layout(config, spec)
  if config.get("method"):
    presets.fill(config)  # a config file that assigns method gets the preset beneath its own settings
  config.lock()
  return config


def _check_layout(config: ml_collections.ConfigDict, spec: str) -> None:
  """A config file's result has exactly the sections and fields of hyperlt.configs.base: a misspelt field
  set in a file (``c.optim.learning_rate``) would otherwise be carried along and silently ignored, and a
  missing one would fail deep inside training."""
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  reference = base.get_config()
  def leaves(c, prefix=""):
    out = {}
    for key in c.keys():
      if isinstance(c[key], ml_collections.ConfigDict):
        out.update(leaves(c[key], f"{prefix}{key}."))
      else:
        out[f"{prefix}{key}"] = None
    return out
  have, want = leaves(config), leaves(reference)
  unknown, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
  require(not unknown, f"--config {spec}: get_config() returned unknown field(s) {', '.join(unknown)}; start "
          "from hyperlt.configs.base.get_config() and set only its fields")
  require(not missing, f"--config {spec}: get_config() returned a config without field(s) "
          f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; start from hyperlt.configs.base.get_config()")


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
    kind = type(current).__name__
    raise UserInputError(f"config key {key!r}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} like "
                         f"{current!r}, got {text!r}")
  return section, leaf, value


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  # bools are ints to Python, never numbers to a config; inf and nan are never meaningful settings.
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(field: str, value: Any, low: int, high: int | None = None, note: str = "") -> None:
  """An integer in [low, high] (high None = unbounded)."""
  expected = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
  require(_is_int(value) and value >= low and (high is None or value <= high),
          f"{field}: expected {expected}{note}, got {value!r}")


def _number(field: str, value: Any, expected: str, holds) -> None:
  """A finite number for which ``holds(value)``; ``expected`` words the range for the message."""
  require(_is_number(value) and holds(value), f"{field}: expected {expected}, got {value!r}")


def _ints(field: str, values: Any, low: int, example: str, allow_empty: bool = False) -> None:
  require(isinstance(values, (tuple, list)) and (allow_empty or len(values) >= 1)
          and all(_is_int(v) and v >= low for v in values),
          f"{field}: expected a {'' if allow_empty else 'non-empty '}tuple of integers >= {low}, e.g. "
          f"{example}, got {values!r}")


def _choice(field: str, value: Any, choices: Iterable[str]) -> None:
  choices = tuple(choices)
  require(value in choices, f"{field}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _flag(field: str, value: Any) -> None:
  require(isinstance(value, bool), f"{field}: expected True or False, got {value!r}")


def _text(field: str, value: Any) -> None:
  require(isinstance(value, str), f"{field}: expected a string, got {value!r}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the type, range and cross-field consistency of every field and returns ``config`` unchanged;
  each failure names the field. It never applies a preset (see hyperlt.configs.presets for when that
  happens). Types are checked before ranges, so a config file's ``"0.1"`` or an override's
  ``optim.milestones=abc`` is reported rather than compared."""
  from hyperlt.configs import presets  # pylint: disable=g-import-not-at-top
  _int("seed", config.seed, 0, 2**32 - 1)
  _text("method", config.method)
  if config.method:
    presets.get(config.method)
    require(presets.is_applied(config),
            f"method: {config.method!r} is named but its preset was never applied (none of its fields is set); "
            f"select it with presets.apply(config, {config.method!r}) or the override method={config.method}")
  _validate_data(config.data)
  _validate_model(config.model)
  _validate_loss(config.loss, config.model.num_experts)
  _validate_preference(config.preference, config.model.num_experts)
  _validate_optim(config.optim)
  t = config.train
  for field in ("log_every_steps", "checkpoint_every_epochs", "keep_checkpoints", "eval_batch_size", "steps_per_call"):
    _int(f"train.{field}", t[field], 1)
  _flag("train.progress", t.progress)
  _validate_parallel(config.parallel)
  return config


def _validate_data(d: ml_collections.ConfigDict) -> None:
  from hyperlt.data import lists  # pylint: disable=g-import-not-at-top
  for field in ("source", "path", "data_dir", "manual_dir", "root", "train_list", "val_list", "test_list"):
    _text(f"data.{field}", d[field])
  kind, colon, name = d.source.partition(":")
  require(d.source in ("digits", "npz", lists.SOURCE) or (kind == "tfds" and colon and name.strip()),
          f"data.source: expected 'digits', 'npz', '{lists.SOURCE}' or 'tfds:<name>' (e.g. tfds:cifar100), "
          f"got {d.source!r}")
  _flag("data.download", d.download)
  _flag("data.flip", d.flip)
  _number("data.imbalance_ratio", d.imbalance_ratio, "a number >= 1", lambda v: v >= 1)
  _int("data.n_max", d.n_max, 0, note=" (0 = smallest class count)")
  _int("data.subset_seed", d.subset_seed, 0)
  _int("data.test_seed", d.test_seed, 0)
  _number("data.val_fraction", d.val_fraction, "a number in [0, 1)", lambda v: 0 <= v < 1)
  for field in ("mean", "std"):
    require(isinstance(d[field], (tuple, list)) and all(_is_number(v) for v in d[field]),
            f"data.{field}: expected a tuple of numbers, one per channel (empty = computed), got {d[field]!r}")
  require(len(d.mean) == len(d.std), "data.mean and data.std: expected the same length (one per channel)")
  require(all(s > 0 for s in d.std), f"data.std: expected positive numbers, got {d.std}")
  _int("data.crop_padding", d.crop_padding, 0)
  _number("data.rotation", d.rotation, "0..180 degrees", lambda v: 0 <= v <= 180)
  _int("data.many_above", d.many_above, 0)
  _int("data.few_below", d.few_below, 0)
  require(d.few_below <= d.many_above, "data.few_below: expected <= data.many_above")
  if d.source == lists.SOURCE:
    for field in ("root", "train_list", "test_list"):
      require(bool(d[field]), f"data.{field}: required when data.source='lists'")
  _int("data.image_size", d.image_size, 8, note=" pixels")
  require(_is_int(d.resize) and d.resize >= d.image_size,
          f"data.resize: expected >= data.image_size ({d.image_size}), an integer, got {d.resize!r}")
  _number("data.min_scale", d.min_scale, "a number in (0, 1]", lambda v: 0 < v <= 1)
  _number("data.color_jitter", d.color_jitter, "a number in [0, 1)", lambda v: 0 <= v < 1)
  _int("data.workers", d.workers, 0, note=" (0 = every core)")
  _int("data.prefetch", d.prefetch, 1)


def _validate_model(m: ml_collections.ConfigDict) -> None:
  from hyperlt.models import conv, expert_split  # pylint: disable=g-import-not-at-top
  from hyperlt.models.expert_model import BACKBONES  # pylint: disable=g-import-not-at-top
  _choice("model.backbone", m.backbone, BACKBONES)
  _ints("model.stage_sizes", m.stage_sizes, 1, "(5, 5, 5)")
  _ints("model.widths", m.widths, 1, "(16, 32, 64)")
  require(len(m.stage_sizes) == len(m.widths),
          f"model.stage_sizes and model.widths: expected tuples of equal length, got {len(m.stage_sizes)} and "
          f"{len(m.widths)}")
  _int("model.num_experts", m.num_experts, 1)
  num_stages = len(m.stage_sizes) if m.backbone == "resnet_cifar" else 4
  _int("model.branch_stages", m.branch_stages, 0, num_stages - 1, note=f" for {m.backbone}")
  _ints("model.hyper_hidden", m.hyper_hidden, 1, "(128, 128)", allow_empty=True)
  _choice("model.head", m.head, ("hyper", "static"))
  _choice("model.combine", m.combine, ("weighted", "mean"))
  _choice("model.experts", m.experts, ("auto", *expert_split.FORMS))
  _choice("model.conv", m.conv, ("auto", *conv.IMPLS))
  _choice("model.dtype", m.dtype, ("float32", "bfloat16"))
  _number("model.scale", m.scale, "a number > 0", lambda v: v > 0)
  _number("model.width_multiplier", m.width_multiplier, "a number > 0", lambda v: v > 0)
  _number("model.branch_width", m.branch_width, "a number > 0", lambda v: v > 0)
  _number("model.posthoc_tau", m.posthoc_tau, "a number >= 0 (0 = off)", lambda v: v >= 0)


def _validate_loss(l: ml_collections.ConfigDict, num_experts: int) -> None:
  _choice("loss.mode", l.mode, losses.LOSS_MODES)
  _choice("loss.objective", l.objective, losses.OBJECTIVES)
  require(isinstance(l.anchors, (tuple, list)) and len(l.anchors) == num_experts,
          f"loss.anchors: expected one anchor per expert ({num_experts}), got {l.anchors!r}")
  bad = [a for a in l.anchors if not (isinstance(a, str) and losses.is_valid_anchor(a))]
  require(not bad, f"loss.anchors: unknown {bad}; expected names from {losses.ANCHOR_NAMES}")
  _number("loss.tau", l.tau, "a number >= 0", lambda v: v >= 0)
  _number("loss.mu", l.mu, "a number > 0", lambda v: v > 0)
  _number("loss.mixup_alpha", l.mixup_alpha, "a number >= 0 (0 = off)", lambda v: v >= 0)
  _number("loss.diversity", l.diversity, "a number >= 0 (0 = off)", lambda v: v >= 0)
  _number("loss.diversity_temperature", l.diversity_temperature, "a number > 0", lambda v: v > 0)
  _number("loss.reweight_start", l.reweight_start, "a share of training in [0, 1] (0 = off)",
          lambda v: 0 <= v <= 1)
  _number("loss.reweight_beta", l.reweight_beta, "a number in [0, 1)", lambda v: 0 <= v < 1)


def _validate_preference(p: ml_collections.ConfigDict, num_experts: int) -> None:
  _choice("preference.sampling", p.sampling, preference.SAMPLING_MODES)
  _flag("preference.learn_scale", p.learn_scale)
  _number("preference.beta0", p.beta0, "a number > 0", lambda v: v > 0)
  _number("preference.kappa", p.kappa, "a number >= 0", lambda v: v >= 0)
  require(isinstance(p.default, (tuple, list)),
          f"preference.default: expected a tuple of numbers, one per expert (empty = the uniform anchor's "
          f"vertex), got {p.default!r}")
  if p.default:
    preference.parse(p.default, num_experts, field="preference.default")


def _validate_optim(o: ml_collections.ConfigDict) -> None:
  _number("optim.lr", o.lr, "a positive number", lambda v: v > 0)
  _number("optim.momentum", o.momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
  _flag("optim.nesterov", o.nesterov)
  _number("optim.weight_decay", o.weight_decay, "a number >= 0", lambda v: v >= 0)
  _int("optim.batch_size", o.batch_size, 1)
  _int("optim.epochs", o.epochs, 1)
  _int("optim.warmup_epochs", o.warmup_epochs, 0, o.epochs, note=" (at most optim.epochs)")
  _choice("optim.schedule", o.schedule, ("step", "cosine"))
  # Checked with either schedule: milestones=abc is a mistake even where the cosine schedule ignores them.
  _ints("optim.milestones", o.milestones, 1, "(160, 180) epochs", allow_empty=True)
  if o.schedule == "step":
    require(all(m <= o.epochs for m in o.milestones) and list(o.milestones) == sorted(set(o.milestones)),
            f"optim.milestones: expected increasing epochs in 1..optim.epochs ({o.epochs}) for the step schedule, "
            f"got {tuple(o.milestones)}")
  _number("optim.decay", o.decay, "a factor in (0, 1]", lambda v: 0 < v <= 1)


def _validate_parallel(par: ml_collections.ConfigDict) -> None:
  _int("parallel.num_devices", par.num_devices, 0, note=" (0 = every device)")
  _int("parallel.num_processes", par.num_processes, 1)
  _int("parallel.process_id", par.process_id, 0, par.num_processes - 1)
  _text("parallel.coordinator_address", par.coordinator_address)
  require(par.num_processes == 1 or par.coordinator_address,
          f"parallel.coordinator_address: required for {par.num_processes} processes (host:port of process 0)")
