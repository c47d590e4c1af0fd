"""Mixed precision (model.dtype = "bfloat16") and compile-once training, for both compute dtypes.

bfloat16 is the compute dtype of the backbone only: parameters, batch statistics, optimiser state,
features, logits and the loss stay float32. Every training step after the first reuses the first
step's compiled program (counted from JAX's compile log over two epochs).
"""

from __future__ import annotations

import json
import textwrap

import pytest
from test_train import PRELUDE, run_python

pytestmark = pytest.mark.slow  # every test here shares one subprocess that trains twice

_SCRIPT = PRELUDE + textwrap.dedent("""
    import collections, functools, logging, re
    import jax.numpy as jnp
    from hyperlt import losses as losses_lib
    from hyperlt.training import step as step_lib
    jax.config.update("jax_log_compiles", True)
    compiles = collections.Counter()
    class Count(logging.Handler):
      def emit(self, record):
        match = re.match(r"Compiling jit\\((\\w+)\\)", record.getMessage())
        if match:
          compiles[match.group(1)] += 1
    logging.getLogger("jax").addHandler(Count())
    dtypes = lambda tree: sorted({str(leaf.dtype) for leaf in jax.tree.leaves(tree)
                                  if jnp.issubdtype(leaf.dtype, jnp.floating)})
    out = {}
    for dtype in ("float32", "bfloat16"):
      compiles.clear()
      config, data = tiny_config(f"model.dtype={dtype}"), tiny_data()
      run = train.train(config, None, data=data, log=print)
      counted = dict(compiles)
      images = jnp.zeros((16, 8, 8, 1), jnp.float32)
      update = step_lib.make_update(run.model, step_lib.make_optimizer(config.optim, 5),
                                    losses_lib.adjustments(config.loss.anchors, data.prior, config.loss.tau),
                                    step_lib.StepConfig.from_config(config))
      after, metrics = jax.eval_shape(update, run.state, images, jnp.zeros(16, jnp.int32), jax.random.PRNGKey(0))
      features = jax.make_jaxpr(functools.partial(run.model.features, train=True))(
          run.state.params, run.state.batch_stats, images)
      out[dtype] = {
          "steps": int(run.state.step), "compiles": counted,
          "trained": {k: dtypes(getattr(run.state, k)) for k in ("params", "batch_stats", "opt_state")},
          "updated": {k: dtypes(getattr(after, k)) for k in ("params", "batch_stats", "opt_state")},
          "loss": str(metrics["loss"].dtype), "features": str(features.out_avals[0].dtype),
          "bf16_convolutions": len(re.findall(r"bf16\\[[^]]*\\] = conv_general_dilated", str(features))),
      }
    print("RESULT", json.dumps(out))
""")


@pytest.fixture(scope="module")
def both_dtypes() -> dict:
  proc = run_python(_SCRIPT, timeout=150)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.split("RESULT", 1)[1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_compiles_its_step_once(both_dtypes, dtype):
  result = both_dtypes[dtype]
  assert result["steps"] == 2 * (92 // 16)
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
