"""Method presets: every baseline is a choice of heads, anchors, sampling and objective on one path.

A preset is a small set of config fields. Select one with the ``method`` field, on the command line
(``hyperlt train --config digits method=sade``) or in Python (``config.method = "sade"``);
:func:`hyperlt.configs.validate` applies it before checking the config. A preset only fills fields that
are still at their defaults (``hyperlt/configs/base.py``), so an explicit setting always wins, in any
order: ``method=balpoe loss.mixup_alpha=0.2`` is BalPoE with a weaker mixup. (The one thing that cannot
be expressed this way is setting a preset's field back to its base default; use ``method=""`` and the
fields themselves for that.)

How each method maps onto the path (T experts, vertices e_i, anchors a_i; see hyperlt.losses):

============== ==========================================================================================
ce             1 expert, static head, forward anchor: plain softmax cross-entropy
balanced_softmax 1 expert, static head, uniform anchor: CE(v + log pi, y)
logit_adjust   ce trained, then evaluated with v - tau * log pi (post-hoc; tau = 1, training prior)
sade           3 static experts, sample i = e_i with anchor i (forward/uniform/backward), loss summed;
               predicts with the mean of the experts' logits (preference 1,1,1)
balpoe         sade with anchors tau * log pi, tau = 0, 1, 2, and mixup (alpha 0.4)
ride           3 static experts, LDAM margins (max 0.5) per expert, RIDE's diversity term (0.2,
               temperature 1), deferred class-balanced re-weighting from 80% of training (DRW, beta
               0.9999); mean of logits; no router (see docs/baselines.md)
prl            the library default: hypernetwork heads, continuous loss, vertex Dirichlet sampling, STCH
prl_paper      prl with the paper loss mode (sample i always gets anchor i)
prl_code       the published PRL code's switches: learned scale, paper loss, STCH as coded, symmetric
               Dir(1.2), mean combination
============== ==========================================================================================

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


def _get(config: ml_collections.ConfigDict, dotted: str):
  section = config
  *parents, leaf = dotted.split(".")
  for part in parents:
    section = section[part]
  return section, leaf


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills the fields of ``config.method``'s preset that are still at their base defaults (in place)."""
  from hyperlt.configs import base  # pylint: disable=g-import-not-at-top
  name = config.method
  if not name:
    return config
  require(name in METHODS, f"method: unknown {name!r}; expected one of {', '.join(METHODS)} (or '' for none)")
  defaults = base.get_config()
  for dotted, value in METHODS[name].fields.items():
    section, leaf = _get(config, dotted)
    default_section, _ = _get(defaults, dotted)
    if section[leaf] == default_section[leaf]:
      section[leaf] = value
  return config


def describe() -> str:
  """One line per preset: name, summary and fields."""
  lines = []
  for m in METHODS.values():
    fields = " ".join(f"{k}={v!r}" for k, v in m.fields.items()) or "(library defaults)"
    lines.append(f"{m.name:<17} {m.summary}\n{'':<17} {fields}")
  return "\n".join(lines)


if __name__ == "__main__":
  print(describe())
