"""Mixed precision (model.dtype = "bfloat16") and compile-once training, for both compute dtypes.

bfloat16 is the compute dtype of the backbone only: parameters, batch statistics, optimiser state,
features, logits and the loss stay float32. Every training step after the first reuses the first
step's compiled program (counted from JAX's compile log over two epochs).
"""

from __future__ import annotations

import collections
import functools
import logging
import re

import jax
import jax.numpy as jnp
import pytest

from hyperlt import configs as config_lib
from hyperlt.data import pipeline
from hyperlt.training import loop, objectives, step as step_lib

pytestmark = pytest.mark.slow  # trains twice


class _CompileCounter(logging.Handler):
  """Counts JAX's "Compiling jit(<name>)" log records by function name."""

  def __init__(self):
    super().__init__()
    self.counts = collections.Counter()

  def emit(self, record):
    match = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
    if match:
      self.counts[match.group(1)] += 1


def _float_dtypes(tree) -> list[str]:
  return sorted({str(leaf.dtype) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)})


def _config(dtype: str):
  config = config_lib.load("digits")
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)", "optim.batch_size=64", "optim.epochs=2",
                               "optim.warmup_epochs=0", "train.progress=False", f"model.dtype={dtype}"])
  return config_lib.validate(config)


@pytest.fixture(scope="module")
def both_dtypes() -> dict:
  data = pipeline.prepare(_config("float32").data)
  counter, logger = _CompileCounter(), logging.getLogger("jax")
  logger.addHandler(counter)
  out = {}
  try:
    for dtype in ("float32", "bfloat16"):
      config = _config(dtype)
      counter.counts.clear()
      with jax.log_compiles(True):
        run = loop.train(config, None, data=data, log=lambda _: None)
      counted = dict(counter.counts)
      images = jnp.zeros((16, *data.image_shape), jnp.float32)
      update = step_lib.make_update(run.model, step_lib.make_optimizer(config.optim, 5),
                                    objectives.from_config(config, data.class_counts, 10))
      after, metrics = jax.eval_shape(update, run.train_state, images, jnp.zeros(16, jnp.int32), jax.random.PRNGKey(0))
      features = jax.make_jaxpr(functools.partial(run.model.features, train=True))(
          run.train_state.params, run.train_state.batch_stats, images)
      out[dtype] = {
          "steps": run.step, "expected_steps": 2 * (len(data.train_y) // 64), "compiles": counted,
          "trained": {k: _float_dtypes(getattr(run.train_state, k)) for k in ("params", "batch_stats", "opt_state")},
          "updated": {k: _float_dtypes(getattr(after, k)) for k in ("params", "batch_stats", "opt_state")},
          "loss": str(metrics["loss"].dtype), "features": str(features.out_avals[0].dtype),
          "bf16_convolutions": len(re.findall(r"bf16\[[^]]*\] = conv_general_dilated", str(features))),
      }
  finally:
    logger.removeHandler(counter)
  return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_compiles_its_step_once(both_dtypes, dtype):
  result = both_dtypes[dtype]
  assert result["steps"] == result["expected_steps"]
  assert result["compiles"].get("step") == 1, result["compiles"]
  assert result["compiles"].get("permutation") == 1, result["compiles"]  # one per run, not per epoch


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_state_features_and_loss_stay_float32(both_dtypes, dtype):
  result = both_dtypes[dtype]
  for group in ("trained", "updated"):
    assert result[group] == {"params": ["float32"], "batch_stats": ["float32"], "opt_state": ["float32"]}, group
  assert result["loss"] == "float32" and result["features"] == "float32"


def test_bfloat16_switch_moves_the_convolutions_to_bfloat16(both_dtypes):
  assert both_dtypes["float32"]["bf16_convolutions"] == 0
  assert both_dtypes["bfloat16"]["bf16_convolutions"] >= 5  # stem + every block's convolutions
