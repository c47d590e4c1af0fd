"""Convolution formulations: the same values and gradients as XLA's own, the same parameters, and no
grouped convolution under vmap."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from hyperlt import configs as config_lib
from hyperlt.models import conv
from hyperlt.models.expert_model import build
from hyperlt.models.imagenet_resnet import ImageNetResNet
from hyperlt.models.resnet import CifarResNet

# (input [B, H, W, C_in], kernel [kh, kw, C_in / groups, C_out], strides, padding, groups): stride 1 and 2,
# odd and even sizes, SAME / VALID / asymmetric explicit padding, a 1x1 strided shortcut, a grouped layer.
# Batches of 6 split into 3-image test chunks (operands transposed once for all chunks); batches of 5 and
# 7, and the grouped layer, take the general per-chunk path.
LAYERS = {
    "3x3": ((6, 8, 8, 4), (3, 3, 4, 6), (1, 1), "SAME", 1),
    "3x3_uneven_chunks": ((7, 8, 8, 4), (3, 3, 4, 6), (1, 1), "SAME", 1),
    "3x3_stride2": ((6, 8, 8, 4), (3, 3, 4, 6), (2, 2), "SAME", 1),
    "3x3_stride2_odd": ((6, 9, 7, 3), (3, 3, 3, 5), (2, 2), "SAME", 1),
    "3x3_stride2_uneven_chunks": ((5, 9, 7, 3), (3, 3, 3, 5), (2, 2), "SAME", 1),
    "stem_7x7_stride2": ((6, 12, 12, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3)), 1),
    "1x1_stride2": ((6, 8, 8, 4), (1, 1, 4, 8), (2, 2), "VALID", 1),
    "asymmetric": ((6, 8, 8, 4), (3, 3, 4, 4), (2, 3), ((2, 0), (0, 3)), 1),
    "grouped": ((6, 8, 8, 4), (3, 3, 2, 6), (2, 2), "SAME", 2),
}


@pytest.fixture
def always_chunk(monkeypatch):
  """Chunk every layer, 3 images a chunk: the test shapes are far below the production threshold."""
  monkeypatch.setattr(conv, "MIN_ELEMENTS", 0)
  monkeypatch.setattr(conv, "CHUNK", 3)


def _value_and_grads(impl, x, kernel, strides, padding, groups):
  cotangent = jnp.cos(jnp.arange(1.0, 1.0 + conv.conv2d(x, kernel, strides, padding, groups).size))

  def loss(x, kernel):
    y = conv.conv2d(x, kernel, strides, padding, groups, impl=impl)
    return jnp.sum(y.reshape(-1) * cotangent), y

  (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
  return y, grads


@pytest.mark.parametrize("name", list(LAYERS))
def test_chunked_equals_xla_in_values_and_gradients(name, always_chunk):
  del always_chunk
  x_shape, k_shape, strides, padding, groups = LAYERS[name]
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), k_shape)
  reference = jax.jit(lambda x, k: _value_and_grads("xla", x, k, strides, padding, groups))(x, kernel)
  chunked = jax.jit(lambda x, k: _value_and_grads("chunked", x, k, strides, padding, groups))(x, kernel)
  chex.assert_trees_all_equal_shapes_and_dtypes(chunked, reference)
  chex.assert_trees_all_equal(chunked[0], reference[0])  # the forward pass is XLA's own
  chex.assert_trees_all_close(chunked[1], reference[1], rtol=1e-5, atol=1e-4)


def test_small_layers_keep_xla_gradients_bit_for_bit():
  # Below MIN_ELEMENTS the chunked formulation is XLA's own gradient: the default (digits) run with
  # model.conv=auto is bit-identical to model.conv=xla.
  x_shape, k_shape, strides, padding, groups = LAYERS["3x3_stride2"]
  assert jnp.prod(jnp.array(x_shape)) < conv.MIN_ELEMENTS
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), k_shape)
  results = {impl: jax.jit(lambda x, k, impl=impl: _value_and_grads(impl, x, k, strides, padding, groups))(x, kernel)
             for impl in conv.IMPLS}
  chex.assert_trees_all_equal(results["chunked"], results["xla"])


@pytest.mark.parametrize("shared_input", [False, True])
def test_vmapped_chunked_convolution_is_per_expert_and_ungrouped(shared_input, always_chunk):
  """Under vmap over stacked kernels (the vmap expert form), chunked runs one ordinary convolution per
  expert in the forward pass and both gradients, and equals the experts computed one by one."""
  del always_chunk
  experts = 3
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 4) if shared_input else (experts, 6, 8, 8, 4))
  kernels = jax.random.normal(jax.random.PRNGKey(1), (experts, 3, 3, 4, 6))
  in_axes = (None if shared_input else 0, 0)

  def loss(impl, mapped):
    def f(x, kernels):
      if mapped:
        y = jax.vmap(lambda x, k: conv.conv2d(x, k, (2, 2), impl=impl), in_axes=in_axes)(x, kernels)
      else:
        y = jnp.stack([conv.conv2d(x if shared_input else x[t], kernels[t], (2, 2), impl=impl)
                       for t in range(experts)])
      return jnp.sum(jnp.sin(y)), y
    return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)

  (_, y), grads = jax.jit(loss("chunked", True))(x, kernels)
  (_, y_ref), grads_ref = jax.jit(loss("xla", False))(x, kernels)
  chex.assert_trees_all_close((y, grads), (y_ref, grads_ref), rtol=1e-5, atol=1e-4)
  jaxpr = str(jax.make_jaxpr(loss("chunked", True))(x, kernels))
  assert "conv_general_dilated" in jaxpr
  assert f"feature_group_count={experts}" not in jaxpr and f"batch_group_count={experts}" not in jaxpr
  if not shared_input:  # what it avoids (a shared input makes XLA's form one wide convolution instead)
    assert f"feature_group_count={experts}" in str(jax.make_jaxpr(loss("xla", True))(x, kernels))


def test_bfloat16_chunked_gradient_matches_xla(always_chunk):
  del always_chunk
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 4), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 6), jnp.bfloat16)
  results = {impl: _value_and_grads(impl, x, kernel, (1, 1), "SAME", 1) for impl in conv.IMPLS}
  chex.assert_trees_all_equal_shapes_and_dtypes(results["chunked"], results["xla"])
  assert results["chunked"][1][1].dtype == jnp.bfloat16
  chex.assert_trees_all_close(jax.tree.map(lambda a: a.astype(jnp.float32), results["chunked"]),
                              jax.tree.map(lambda a: a.astype(jnp.float32), results["xla"]), rtol=3e-2, atol=0.25)


def test_conv_module_has_flax_parameters():
  """Same parameter name, shape, dtype and initial values as nn.Conv, and the same output."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  kwargs = dict(features=5, kernel_size=(3, 3), strides=(2, 2), padding="SAME", use_bias=False,
                kernel_init=nn.initializers.kaiming_normal())
  ours, theirs = conv.Conv(impl="chunked", **kwargs), nn.Conv(**kwargs)
  variables = ours.init(jax.random.PRNGKey(3), x)
  chex.assert_trees_all_equal(variables, theirs.init(jax.random.PRNGKey(3), x))
  chex.assert_trees_all_equal(ours.apply(variables, x), theirs.apply(variables, x))
  with pytest.raises(NotImplementedError, match="bias-free"):
    conv.Conv(features=5, kernel_size=(3, 3), use_bias=True).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("backbone", ["cifar", "resnext"])
def test_parameters_and_checkpoints_do_not_depend_on_the_formulation(backbone):
  def init(impl):
    if backbone == "cifar":
      model, shape = CifarResNet(3, stage_sizes=(1, 1, 1), widths=(4, 8, 16), conv=impl), (8, 8, 3)
    else:
      model = ImageNetResNet(3, "resnext50_32x4d", width_multiplier=1 / 16, stage_sizes=(1, 1, 1, 1), conv=impl)
      shape = (32, 32, 3)
    return jax.jit(lambda key: model.init(key, jnp.zeros((2,) + shape), train=False),
                   compiler_options={"xla_backend_optimization_level": 0})(jax.random.PRNGKey(0))

  chex.assert_trees_all_equal(init("chunked"), init("xla"))


def test_resolve_and_build_read_model_conv():
  assert conv.resolve("auto") == ("chunked" if jax.default_backend() == "cpu" else "xla")
  assert [conv.resolve(impl) for impl in conv.IMPLS] == list(conv.IMPLS)
  with pytest.raises(ValueError, match="convolution"):
    conv.resolve("im2col")
  config = config_lib.load("digits")
  assert build(config.model, 10).backbone.conv == conv.resolve("auto")  # no model.conv field: auto
  for impl in conv.IMPLS:
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.conv = impl
    assert build(model_config, 10).backbone.conv == impl
  imagenet = ml_collections.ConfigDict(config.model.to_dict())
  imagenet.backbone = "resnet50"
  assert build(imagenet, 10).backbone.conv == "xla"  # auto is measured for the CIFAR network only
