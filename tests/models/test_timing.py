"""Timing the expert forms and convolution formulations in a caller's real update, as a training loop
does at start-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from hyperlt import configs as config_lib
from hyperlt.models import conv
from hyperlt.models import expert_split
from hyperlt.models import timing

IMAGE_SHAPE = (8, 8, 1)


def _model_config():
  config = config_lib.load("digits")
  config_lib.override(config, ["model.widths=(4,8,16)"])
  return config_lib.validate(config).model


def _builders(built: list):
  """(make_update, init_state) of a small but complete step: features in the model's form, hypernetwork
  heads at the T vertex preferences, cross-entropy, SGD; ``built`` records every model it was given."""

  def make_update(model):
    built.append(model)
    alpha = jnp.eye(model.num_experts)

    def update(state, images, labels, key):
      del key
      params, batch_stats = state

      def loss(params):
        feats, new_stats = model.features(params, batch_stats, images, train=True)
        logits = model.logits(params, feats, model.r_hat(params, alpha))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[None]).mean(), new_stats

      (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
      params = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
      return (params, new_stats), {"loss": value}

    return update

  def init_state(model):
    return model.init(jax.random.PRNGKey(0), IMAGE_SHAPE)

  return make_update, init_state


def test_time_forms_times_every_form_in_the_real_update():
  built = []
  make_update, init_state = _builders(built)
  timings = timing.time_forms(_model_config(), IMAGE_SHAPE, 8, 2, make_update=make_update, init_state=init_state,
                              num_classes=10, forms=tuple(expert_split.FORMS), rounds=2)
  assert list(timings) == list(expert_split.FORMS)
  assert all(seconds > 0 for seconds in timings.values())
  assert [model.experts for model in built] == list(expert_split.FORMS)  # each form's own model


def test_default_forms_skip_map_on_cpu_only():
  assert timing.default_forms("cpu") == ("vmap", "unrolled")
  assert timing.default_forms("gpu") == tuple(expert_split.FORMS)


def test_time_variants_applies_model_overrides():
  built = []
  make_update, init_state = _builders(built)
  variants = {impl: {"conv": impl, "experts": "unrolled"} for impl in conv.IMPLS}
  timings = timing.time_variants(_model_config(), variants, IMAGE_SHAPE, 8, 1, make_update=make_update,
                                 init_state=init_state, num_classes=10)
  assert list(timings) == list(conv.IMPLS)
  assert [model.backbone.conv for model in built] == list(conv.IMPLS)


def test_unknown_forms_and_empty_timings_are_refused():
  make_update, init_state = _builders([])
  with pytest.raises(ValueError, match="unknown expert forms"):
    timing.time_forms(_model_config(), IMAGE_SHAPE, 8, 1, make_update=make_update, init_state=init_state,
                      num_classes=10, forms=("loop",))
  with pytest.raises(ValueError, match="steps >= 1"):
    timing.time_forms(_model_config(), IMAGE_SHAPE, 8, 0, make_update=make_update, init_state=init_state,
                      num_classes=10)


@pytest.mark.parametrize("backend,backbone,experts,conv_mode,expected", [
    ("cpu", "resnet_cifar", "auto", "auto", ["vmap/chunked", "unrolled/chunked"]),
    ("gpu", "resnet_cifar", "auto", "auto", [f"{f}/{c}" for f in expert_split.FORMS for c in conv.IMPLS]),
    ("gpu", "resnet50", "auto", "auto", [f"{f}/xla" for f in expert_split.FORMS]),
    ("cpu", "resnet_cifar", "vmap", "xla", ["vmap/xla"]),
    ("gpu", "resnet_cifar", "map", "auto", ["map/xla", "map/chunked"]),
])
def test_candidates_per_backend_and_config(backend, backbone, experts, conv_mode, expected):
  config = _model_config()
  with config.unlocked():
    config.backbone, config.experts, config.conv = backbone, experts, conv_mode
  variants = timing.candidates(config, backend)
  assert list(variants) == expected
  assert all(v == {"experts": n.split("/")[0], "conv": n.split("/")[1]} for n, v in variants.items())


def test_one_expert_is_not_a_choice_of_form():
  config = _model_config()
  with config.unlocked():
    config.num_experts, config.experts = 1, "auto"
  assert list(timing.candidates(config, "cpu")) == ["unrolled/chunked"]
  record = timing.choose(config, IMAGE_SHAPE, 8, make_update=None, init_state=None, num_classes=10)
  assert not record["measured"] and record["seconds_per_step"] == {}
  assert "one expert" in record["reason"] and record["choice"] == {"experts": "unrolled", "conv": "chunked"}
