"""Method presets: every baseline is a choice of heads, anchors, sampling and objective on one path.

A preset is a small set of config fields; hyperlt.training.objectives builds the training objective from
the fields alone, so a method made of existing pieces is ONE entry in :data:`METHODS` below.

When a preset is applied, and why explicit settings always win
--------------------------------------------------------------
A preset is applied once, when the method is chosen; every setting made after it wins, also one that
names the base default. ``configs.validate`` only checks a config and never applies a preset, and
``config.method`` in a finished config records which preset it started from (the fields are the truth:
a saved ``config.json`` holds them all and reloads unchanged).

* Command line (``hyperlt train --config digits method=sade loss.mode=continuous``) and
  ``configs.override``: the ``method=NAME`` assignment is applied FIRST, wherever it stands in the list
  (:func:`apply`), then the other assignments in their order. So ``method=sade loss.mode=continuous``
  trains SADE's experts with the continuous loss and ``method=balpoe loss.mixup_alpha=0.0`` is BalPoE
  without mixup.
* Python: ``presets.apply(config, "sade")`` (or ``configs.override(config, ["method=sade"])``), then set
  fields. Assigning ``config.method = "sade"`` alone applies nothing; ``configs.validate`` rejects a
  config whose method names a preset none of whose fields is set.
* Config files (``--config mine.py``): a ``get_config()`` that assigns ``c.method = NAME`` gets the
  preset from ``configs.load`` beneath the file's own settings (:func:`fill`): the preset's value goes
  into each of its fields that the file left at the base default (``hyperlt/configs/base.py``). A file
  cannot tell load that it set a preset field back to the base default (the value is the same); such a
  setting goes on the command line after the file (``--config mine.py loss.mode=continuous``).

Choosing another method replaces the first one's fields: :func:`apply` resets the fields of the
config's current preset to the base defaults before setting its own (``method=""`` selects none).

How each method maps onto the path (T experts, vertices e_i, anchors a_i; see hyperlt.losses):

======================= ===================================================================================
ce                      1 expert, static head, forward anchor: plain softmax cross-entropy
balanced_softmax        1 expert, static head, uniform anchor: CE(v + log pi, y)
balanced_softmax_mixup  balanced_softmax trained on mixup batches (alpha 0.4)
logit_adjust            ce trained, then evaluated with v - tau * log pi (post-hoc; tau = 1, training prior)
sade                    3 static experts, sample i = e_i with anchor i (forward/uniform/backward), loss
                        summed; predicts with the mean of the experts' logits (preference 1,1,1)
balpoe                  sade with anchors tau * log pi, tau = 0, 1, 2, and mixup (alpha 0.4)
ride                    3 static experts, LDAM margins (max 0.5) per expert, RIDE's diversity term (0.2,
                        temperature 1), deferred class-balanced re-weighting from 80% of training (DRW,
                        beta 0.9999); mean of logits; no router (see docs/baselines.md)
prl                     the library default: hypernetwork heads, continuous loss, vertex Dirichlet
                        sampling, STCH
prl_paper               prl with the paper loss mode (sample i always gets anchor i)
prl_code                the published PRL code's switches: learned scale, paper loss, STCH as coded,
                        symmetric Dir(1.2), mean combination
======================= ===================================================================================

Training with ``sampling = vertices``, ``combine = weighted`` and static heads gives sample i exactly
expert i's logits ``v_i``, so ``sum_i CE(v_i + a_i, y)`` is SADE's (and BalPoE's, RIDE's) per-expert
objective. A ``mean`` combination at training time would instead train the ensemble mean against every
anchor, which is a different method; the mean appears at prediction time as the preference (1,1,1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from hyperlt.errors import require


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  summary: str
  fields: dict[str, Any]
  # Whether the method's evaluation reads anything about the test set's class prior.
  uses_test_prior: bool = False


_SINGLE = {"model.num_experts": 1, "model.head": "static", "preference.sampling": "vertices",
           "loss.mode": "paper", "loss.objective": "sum"}
_STATIC_EXPERTS = {"model.head": "static", "preference.sampling": "vertices", "loss.mode": "paper",
                   "loss.objective": "sum", "preference.default": (1.0, 1.0, 1.0)}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ce", "softmax cross-entropy, one expert", {**_SINGLE, "loss.anchors": ("forward",)}),
    Method("balanced_softmax", "Balanced Softmax, one expert", {**_SINGLE, "loss.anchors": ("uniform",)}),
    Method("balanced_softmax_mixup", "Balanced Softmax on mixup batches (alpha 0.4), one expert",
           {**_SINGLE, "loss.anchors": ("uniform",), "loss.mixup_alpha": 0.4}),
    Method("logit_adjust", "CE with post-hoc logit adjustment (tau = 1)",
           {**_SINGLE, "loss.anchors": ("forward",), "model.posthoc_tau": 1.0}),
    Method("sade", "SADE: forward/uniform/backward experts, mean of logits", dict(_STATIC_EXPERTS)),
    Method("balpoe", "BalPoE: tau = 0, 1, 2 experts, mixup 0.4, mean of logits",
           {**_STATIC_EXPERTS, "loss.anchors": ("logit_adjust:0", "logit_adjust:1", "logit_adjust:2"),
            "loss.mixup_alpha": 0.4}),
    Method("ride", "RIDE: LDAM-DRW experts with the diversity loss, mean of logits",
           {**_STATIC_EXPERTS, "loss.anchors": ("ldam:0.5",) * 3, "loss.diversity": 0.2,
            "loss.diversity_temperature": 1.0, "loss.reweight_start": 0.8}),
    Method("prl", "PRL, continuous loss (library default)", {}),
    Method("prl_paper", "PRL with the paper loss mode", {"loss.mode": "paper"}),
    Method("prl_code", "PRL with the published code's switches",
           {"preference.learn_scale": True, "loss.mode": "paper", "loss.objective": "stch_code",
            "preference.sampling": "symmetric", "preference.beta0": 1.2, "model.combine": "mean"}),
)}


def _field(config: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
  """(section, leaf) of a dotted field name."""
  section = config
  *parents, leaf = dotted.split(".")
  for part in parents:
    section = section[part]
  return section, leaf


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  section, leaf = _field(config, dotted)
  return section[leaf]


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  section, leaf = _field(config, dotted)
  section[leaf] = value


def get(name: str) -> Method:
  """The preset called ``name``; UserInputError naming the field for an unknown one."""
  require(name in METHODS, f"method: unknown {name!r}; expected one of {', '.join(METHODS)} (or '' for none)")
  return METHODS[name]


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Selects method ``name`` (in place): sets ``config.method`` and every field of its preset.

  The fields of the config's previous preset, if another, are first reset to the base defaults, so the
  result is the same whichever method was selected before; ``name = ""`` selects none. Set fields after
  this call to override the preset.
  """
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  fields = get(name).fields if name else {}
  if config.method and config.method != name:
    defaults = base.get_config()
    for dotted in get(config.method).fields:
      _set(config, dotted, _get(defaults, dotted))
  for dotted, value in fields.items():
    _set(config, dotted, value)
  config.method = name
  return config


def fill(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Applies ``config.method``'s preset beneath the config's own settings (in place): each preset field
  still at its base default takes the preset's value, the others keep theirs.

  This is how ``configs.load`` reads a config file that assigns ``c.method`` (see the module docstring).
  """
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  if not config.method:
    return config
  defaults = base.get_config()
  for dotted, value in get(config.method).fields.items():
    if _get(config, dotted) == _get(defaults, dotted):
      _set(config, dotted, value)
  return config


def is_applied(config: ml_collections.ConfigDict) -> bool:
  """False for a config whose method names a preset none of whose fields is set (every field that the
  preset changes still holds its base default): ``config.method`` was assigned, the preset never applied.

  A preset applied and then fully overridden back to the base defaults reads the same; such a config
  should say ``method=""``.
  """
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  defaults = base.get_config()
  changes = {dotted: value for dotted, value in get(config.method).fields.items()
             if value != _get(defaults, dotted)} if config.method else {}
  return not changes or any(_get(config, dotted) != _get(defaults, dotted) for dotted in changes)


def describe() -> str:
  """One line per preset: name, summary and fields."""
  lines = []
  for m in METHODS.values():
    fields = " ".join(f"{k}={v!r}" for k, v in m.fields.items()) or "(library defaults)"
    lines.append(f"{m.name:<23} {m.summary}\n{'':<23} {fields}")
  return "\n".join(lines)


if __name__ == "__main__":
  print(describe())
