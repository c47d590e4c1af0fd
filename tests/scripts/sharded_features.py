"""Run by tests/inference/test_sharded_features.py in a subprocess with 8 host devices (the device count is fixed when JAX
starts): features and predictions of a small random model on 1 device and split over 8, printed as JSON."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from hyperlt import configs as config_lib
from hyperlt import distributed
from hyperlt.inference.predictor import Predictor
from hyperlt.models.expert_model import build


def main() -> None:
  config = config_lib.load("digits")
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)"])
  model = build(config_lib.validate(config).model, 5)
  params, batch_stats = jax.jit(lambda: model.init(jax.random.PRNGKey(0), (8, 8, 1)),
                                compiler_options={"xla_backend_optimization_level": 0})()
  images = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)  # not a multiple of 8
  out = {"devices": jax.device_count()}
  alphas = np.eye(3, dtype=np.float32)
  for n in (1, 8):
    predictor = Predictor(model, params, batch_stats, (0.5,), (0.25,), mesh=distributed.data_mesh(n), batch_size=12)
    features = predictor.features(images)
    out[str(n)] = {"features": np.asarray(features).tolist(), "classes": predictor.classes(features, alphas).tolist(),
                   "on_devices": len(features.sharding.device_set), "mesh": None if predictor.mesh is None
                   else predictor.mesh.size}
  print("RESULT", json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
