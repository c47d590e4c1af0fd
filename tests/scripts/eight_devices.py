"""Run with 8 host devices (XLA_FLAGS=--xla_force_host_platform_device_count=8): trains the tiny model on
1 and on 8 devices under argv[1], evaluates the last run on its 8-device mesh and from features computed
on one device, and compiles both input paths' steps for 8 devices with a probe update."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from hyperlt import distributed
from hyperlt.analysis import evaluate
from hyperlt.data import resident, streamed
from hyperlt.data.augment import Augmentation
from hyperlt.inference.predictor import Predictor
from hyperlt.training import loop
from hyperlt.training.step import TrainState
from tests import helpers

base = sys.argv[1]
out = {"devices": jax.device_count()}
for n in (1, 8):
  workdir = f"{base}/resident{n}"
  run = loop.train(helpers.tiny_config(f"parallel.num_devices={n}"), workdir, data=helpers.tiny_data(), log=print)
  out[f"resident{n}"] = {"losses": helpers.logged_losses(workdir), "params": helpers.param_lists(run)}

one = Predictor(run.model, run.params, run.batch_stats, run.facts.mean, run.facts.std)
out["evaluated"] = evaluate.evaluate_alphas(run, np.eye(3, dtype=np.float32))
out["evaluated_one"] = evaluate.evaluate_alphas(run, np.eye(3, dtype=np.float32),
                                                features=one.features(run.data.test_x))

# What the 8-device programs do with a batch of 16: a probe update that averages the images.
mesh = distributed.data_mesh(8)


def probe(state, images, labels, key):
  del key
  return state.replace(params=state.params + jnp.mean(images)), {"labels": jnp.sum(labels)}


state = TrainState(step=jnp.zeros((), jnp.int32), params=jnp.zeros(()), batch_stats={}, opt_state=(),
                   rng=jax.random.PRNGKey(0))
x, y = np.zeros((40, 8, 8, 1), np.uint8), np.zeros(40, np.int32)
on_device = loop.make_step(probe, resident.step_input(16, (0.5,), (0.25,), Augmentation(1, True), mesh), mesh)
out["hlo_resident"] = on_device.lower(state, x, y, np.arange(40, dtype=np.int32), 0).compile().as_text()
from_host = loop.make_step(probe, streamed.step_input((0.5,), (0.25,), mesh), mesh)
out["hlo_streamed"] = from_host.lower(state, x[:16], y[:16]).compile().as_text()
helpers.print_result(out)
