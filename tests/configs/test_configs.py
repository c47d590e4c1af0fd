"""Config loading, overrides and validation: every bad value is named."""

from __future__ import annotations

import pytest

from hyperlt import configs as config_lib
from hyperlt.errors import UserInputError


@pytest.mark.parametrize("spec", ["digits", "digits:local", "cifar_lt", "cifar_lt:c10,ir100",
                                  "cifar_lt:c100,ir10,local", "cifar_lt:c10,ir100,reduced"])
def test_bundled_configs_validate(spec):
  config_lib.validate(config_lib.load(spec))


def test_cifar_variants_follow_method():
  c10 = config_lib.load("cifar_lt:c10,ir10")
  assert c10.data.imbalance_ratio == 10 and c10.loss.mu == 0.1 and c10.data.source == "npz"
  c100 = config_lib.load("cifar_lt:c100,ir100")
  assert c100.loss.mu == 0.3 and c100.loss.tau == 2.0 and c100.optim.milestones == (160, 180)
  assert c100.model.stage_sizes == (5, 5, 5) and c100.optim.epochs == 200
  assert (c100.data.crop_padding, c100.data.flip, c100.data.rotation) == (4, True, 15.0)  # published augmentation
  reduced = config_lib.load("cifar_lt:c10,ir100,reduced")
  assert reduced.model.stage_sizes == (1, 1, 1) and reduced.optim.epochs == 10
  assert reduced.optim.schedule == "cosine" and reduced.data.rotation == 15.0 and reduced.loss.mu == 0.3
  with pytest.raises(UserInputError, match="unknown variant"):
    config_lib.load("cifar_lt:c10,fast")


def test_overrides_parse_types():
  config = config_lib.load("digits")
  config_lib.override(config, ["optim.lr=0.2", "model.widths=8,16,32", "train.progress=False",
                               "loss.anchors=forward,uniform,backward", "optim.epochs=3", "data.imbalance_ratio=10"])
  assert config.optim.lr == 0.2 and config.model.widths == (8, 16, 32) and config.train.progress is False
  assert config.data.imbalance_ratio == 10.0 and isinstance(config.data.imbalance_ratio, float)


@pytest.mark.parametrize("assignment,message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
    ("nothing.lr=0.1", "no section 'nothing'"),
    ("optim.lr=fast", "expected a float"),
    ("optim.epochs=2.5", "expected an int"),
    ("optim", "expected dotted.key=value"),
    ("optim=3", "unknown config key 'optim'"),
])
def test_bad_overrides(assignment, message):
  with pytest.raises(UserInputError, match=message):
    config_lib.override(config_lib.load("digits"), [assignment])


@pytest.mark.parametrize("assignment,field", [
    ("optim.lr=-1.0", "optim.lr"),
    ("model.num_experts=2", "loss.anchors"),
    ("loss.anchors=forward,sideways,backward", "loss.anchors"),
    ("model.branch_stages=3", "model.branch_stages"),
    ("loss.objective=max", "loss.objective"),
    ("preference.sampling=grid", "preference.sampling"),
    ("preference.default=1,-1,0", "preference.default"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("model.head=linear", "model.head"),
])
def test_validation_names_the_field(assignment, field):
  config = config_lib.override(config_lib.load("digits"), [assignment])
  with pytest.raises(UserInputError, match=field.replace(".", r"\.")):
    config_lib.validate(config)


def test_config_files_by_path(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("from hyperlt.configs import digits\n\ndef get_config(variant=''):\n"
                  "  c = digits.get_config()\n  c.optim.epochs = 7\n  return c\n")
  assert config_lib.load(str(path)).optim.epochs == 7
  with pytest.raises(UserInputError, match="neither a bundled config"):
    config_lib.load(str(tmp_path / "missing.py"))
  broken = tmp_path / "broken.py"
  broken.write_text("raise RuntimeError('boom')\n")
  with pytest.raises(UserInputError, match="failed to load"):
    config_lib.load(str(broken))
  with pytest.raises(UserInputError, match="unknown variant"):
    config_lib.load("digits:huge")


def test_round_trip_through_dict():
  config = config_lib.override(config_lib.load("cifar_lt:c10"), ["optim.lr=0.3"])
  again = config_lib.from_dict(config_lib.to_dict(config))
  assert config_lib.to_dict(again) == config_lib.to_dict(config)
  with pytest.raises(UserInputError, match="unknown key"):
    config_lib.from_dict({"optim": {"speed": 1}})


def test_override_applies_method_first_and_the_rest_in_order():
  config = config_lib.override(config_lib.load("digits"), ["loss.mode=continuous", "optim.lr=0.3", "method=sade",
                                                           "optim.lr=0.2"])
  assert config.method == "sade" and config.loss.mode == "continuous" and config.optim.lr == 0.2
  assert config.model.head == "static"
  with pytest.raises(UserInputError, match="expected a str"):
    config_lib.override(config_lib.load("digits"), ["method=1"])


@pytest.mark.parametrize("spec", ["digits", "cifar_lt:c10,ir100"])
@pytest.mark.parametrize("overrides,valid", [([], True), (["method=ride", "loss.diversity=0.0"], True),
                                             (["optim.lr=-1.0"], False)])
def test_validate_never_changes_the_config(spec, overrides, valid):
  config = config_lib.override(config_lib.load(spec), overrides)
  before = config_lib.to_dict(config)
  if valid:
    assert config_lib.validate(config) is config
  else:
    with pytest.raises(UserInputError, match="optim.lr"):
      config_lib.validate(config)
  assert config_lib.to_dict(config) == before
