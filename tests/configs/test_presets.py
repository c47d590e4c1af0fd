"""Method presets (hyperlt.configs.presets): a preset is applied when the method is chosen, and every
setting made after it wins, on the command line, in Python and in config files."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt.inference import predictor
from hyperlt.configs import base, presets
from hyperlt.errors import UserInputError
from hyperlt.models.expert_model import build

NUM_CLASSES = 10


def _config(*overrides: str):
  return config_lib.validate(config_lib.override(config_lib.load("digits"), list(overrides)))


def _training_fields(config) -> dict:
  trained = config_lib.to_dict(config)
  trained["model"].pop("posthoc_tau")
  trained.pop("method")
  return trained


@pytest.mark.parametrize("name", list(presets.METHODS))
def test_each_preset_sets_its_fields(name):
  config = _config(f"method={name}")
  assert config.method == name
  for dotted, value in presets.METHODS[name].fields.items():
    section, leaf = dotted.split(".")
    assert config[section][leaf] == value, dotted


def test_sade_ce_and_prl_code_fields():
  sade = _config("method=sade")
  assert (sade.model.head, sade.preference.sampling, sade.loss.mode, sade.loss.objective) == (
      "static", "vertices", "paper", "sum")
  assert tuple(sade.preference.default) == (1.0, 1.0, 1.0)
  code = _config("method=prl_code")
  assert code.preference.learn_scale and code.model.combine == "mean" and code.preference.beta0 == 1.2
  ce = _config("method=ce")
  assert ce.model.num_experts == 1 and ce.loss.anchors == ("forward",)


@pytest.mark.parametrize("overrides,field,value", [
    (["method=sade", "loss.mode=continuous"], "loss.mode", "continuous"),             # the base default wins
    (["loss.mode=continuous", "method=sade"], "loss.mode", "continuous"),             # wherever method= stands
    (["method=balpoe", "loss.mixup_alpha=0.0"], "loss.mixup_alpha", 0.0),              # mixup off
    (["loss.mixup_alpha=0.2", "method=balpoe"], "loss.mixup_alpha", 0.2),
    (["method=ride", "loss.reweight_start=0.0"], "loss.reweight_start", 0.0),
    (["method=prl_code", "preference.learn_scale=False"], "preference.learn_scale", False),
])
def test_explicit_overrides_win_over_the_preset(overrides, field, value):
  config = _config(*overrides)
  section, leaf = field.split(".")
  assert config[section][leaf] == value
  assert config.method == next(o.split("=")[1] for o in overrides if o.startswith("method="))
  other = next(k for k in presets.METHODS[config.method].fields if k != field)
  assert config[other.split(".")[0]][other.split(".")[1]] == presets.METHODS[config.method].fields[other]


def test_python_users_apply_then_set():
  config = config_lib.load("digits")
  presets.apply(config, "sade")
  config.loss.mode = "continuous"
  assert config_lib.validate(config).loss.mode == "continuous" and config.model.head == "static"


def test_choosing_another_method_replaces_the_first_ones_fields():
  config = config_lib.load("digits")
  presets.apply(config, "ride")
  presets.apply(config, "sade")
  assert config.method == "sade" and config.loss.anchors == ("forward", "uniform", "backward")
  assert config.loss.diversity == 0.0 and config.loss.reweight_start == 0.0
  presets.apply(config, "")
  assert config_lib.to_dict(config) == config_lib.to_dict(config_lib.load("digits"))


def test_assigning_the_method_alone_is_rejected():
  config = config_lib.load("digits")
  config.method = "sade"
  with pytest.raises(UserInputError, match="method: 'sade' is named but its preset was never applied"):
    config_lib.validate(config)


def test_unknown_method_names_the_field():
  with pytest.raises(UserInputError, match="method: unknown 'sadee'"):
    _config("method=sadee")
  config = config_lib.load("digits")
  config.method = "sadee"
  with pytest.raises(UserInputError, match="method: unknown 'sadee'"):
    config_lib.validate(config)


def test_config_files_get_the_preset_beneath_their_settings(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("from hyperlt.configs import digits\n\ndef get_config():\n  c = digits.get_config()\n"
                  "  c.method = 'balpoe'\n  c.loss.mixup_alpha = 0.2\n  return c\n")
  config = config_lib.validate(config_lib.load(str(path)))
  assert config.loss.mixup_alpha == 0.2 and config.loss.anchors == presets.METHODS["balpoe"].fields["loss.anchors"]
  # A setting back to the base default goes after the file, as an override.
  config = config_lib.validate(config_lib.override(config_lib.load(str(path)), ["loss.mode=continuous"]))
  assert config.loss.mode == "continuous" and config.model.head == "static"
  # method= on the command line replaces the file's method.
  config = config_lib.validate(config_lib.override(config_lib.load(str(path)), ["method=ride"]))
  assert config.loss.mixup_alpha == 0.0 and config.loss.diversity == 0.2


def test_validation_only_checks(tmp_path):
  config = config_lib.override(config_lib.load("digits"), ["method=sade", "loss.mode=continuous"])
  before = config_lib.to_dict(config)
  assert config_lib.validate(config) is config
  assert config_lib.to_dict(config) == before
  # A saved config (preset applied when it was trained) reloads unchanged.
  for name in presets.METHODS:
    saved = config_lib.to_dict(_config(f"method={name}"))
    assert config_lib.to_dict(config_lib.validate(config_lib.from_dict(saved))) == saved, name


def test_logit_adjust_trains_exactly_like_ce():
  # Post-hoc logit adjustment changes prediction only, so ce's step test covers its training.
  assert _training_fields(_config("method=logit_adjust")) == _training_fields(_config("method=ce"))
  assert _config("method=logit_adjust").model.posthoc_tau == 1.0


def test_posthoc_shift_moves_predictions_to_rare_classes():
  prior = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
  config = _config("method=logit_adjust", "model.stage_sizes=(1,1)", "model.widths=(4,8)", "model.branch_stages=1")
  model = build(config.model, NUM_CLASSES)
  shift = model.prediction_shift(prior)
  np.testing.assert_allclose(shift, -np.log(prior), rtol=1e-6)
  assert build(_config("method=ce").model, NUM_CLASSES).prediction_shift(prior) is None
  params, _ = model.init(jax.random.PRNGKey(0), (8, 8, 1))
  features = jax.random.normal(jax.random.PRNGKey(1), (1, 400, model.feature_dim))
  one = np.ones((1, 1), np.float32)
  plain = np.asarray(predictor.predict(model, params, features, one, output="classes"))
  adjusted = np.asarray(predictor.predict(model, params, features, one, shift, output="classes"))
  rare = np.argsort(prior)[: len(prior) // 2]
  assert np.isin(adjusted, rare).mean() > np.isin(plain, rare).mean()


def test_describe_lists_every_preset():
  text = presets.describe()
  assert all(name in text for name in presets.METHODS)
  assert base.get_config().method == ""
