"""The data protocol (hyperlt.data.dataset) with both of its implementations: arrays held in memory
(hyperlt.data.resident) and images streamed from list files (hyperlt.data.streamed). Every test here runs
the same code on both kinds of data."""

from __future__ import annotations

import contextlib
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt import distributed
from hyperlt.data import dataset, longtail, resident, streamed
from hyperlt.training import loop
from hyperlt.training.step import TrainState

BATCH = 8
# The keys of data.json that later commands read (RunFacts); list-file data adds where its lists are.
DESCRIBE_KEYS = ["dataset", "class_names", "class_counts", "image_shape", "mean", "std", "num_train", "num_val",
                 "num_test", "test_set_sizes", "groups"]


def _resident_data(counts=(12, 7, 5, 3), per_class=3, side=16) -> resident.ResidentData:
  rng = np.random.default_rng(0)
  train_y = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  test_y = np.repeat(np.arange(len(counts)), per_class).astype(np.int32)
  images = lambda n: rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
  return resident.ResidentData(
      name="tiny", class_names=tuple("abcd"), train_x=images(len(train_y)), train_y=train_y,
      val_x=images(0), val_y=np.zeros(0, np.int32), test_x=images(len(test_y)), test_y=test_y,
      class_counts=np.asarray(counts), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
      test_sets=longtail.all_test_sets(test_y), groups=longtail.shot_groups(counts, 10, 4))


@pytest.fixture(params=["resident", "streamed"])
def data_and_config(request, list_tree):
  """``(data, config)`` of one kind: 27 training images of 4 classes, 16x16 RGB, batches of 8."""
  if request.param == "resident":
    config = config_lib.load("digits")
    config_lib.override(config, [f"optim.batch_size={BATCH}", "data.crop_padding=2", "data.flip=True"])
    yield _resident_data(), config_lib.validate(config)
  else:
    config = list_tree.config(f"optim.batch_size={BATCH}", "data.val_fraction=0.2")
    with streamed.prepare(config.data) as data:
      yield data, config


def _probe(state, images, labels, key):
  """An update that trains nothing and reports the batch it was given."""
  del key
  return state.replace(step=state.step + 1), {"images": images, "labels": labels}


def _train(data, config, epochs: int, first_epoch: int = 0, start: int = 0) -> list[dict]:
  """The batches the training loop's step sees: the loop of ``hyperlt.training.loop.train`` in small, with
  nothing in it that depends on the kind of data."""
  mesh = distributed.data_mesh(1)
  # Placed as the step returns it, so the step compiles once (as initial_state does for train()).
  state = distributed.replicate(TrainState(
      step=jnp.asarray(first_epoch * (len(data.train_y) // BATCH) + start, jnp.int32), params=jnp.zeros(()),
      batch_stats={}, opt_state=(), rng=jax.random.PRNGKey(config.seed)), mesh)
  seen = []
  with contextlib.closing(data.train_input(config, state.rng, mesh)) as inputs:
    assert isinstance(inputs, dataset.TrainInput)
    step = loop.make_step(_probe, inputs.step_input, mesh)
    for epoch in range(first_epoch, first_epoch + epochs):
      with contextlib.closing(inputs.epoch(epoch, start)) as batches:
        for args in batches:
          state, out = step(state, *args)
          seen.append(jax.device_get(out) | {"epoch": epoch})
      start = 0
      assert set(inputs.interval_metrics(1.0)) <= {"input_wait_fraction"}
  return seen


def test_both_kinds_describe_the_same_facts(data_and_config):
  data, _ = data_and_config
  assert isinstance(data, dataset.RunData)
  facts = json.loads(json.dumps(data.describe()))
  assert list(facts)[:len(DESCRIBE_KEYS)] == DESCRIBE_KEYS and set(facts) - set(DESCRIBE_KEYS) <= {"lists"}
  assert facts["num_train"] == len(data.train_y) == sum(facts["class_counts"])
  assert facts["num_test"] == len(data.test_y) == len(data.test_x)
  assert facts["num_val"] == len(data.val_y) == len(data.val_x)
  assert facts["image_shape"] == list(data.image_shape) == [16, 16, 3]
  chex.assert_trees_all_close(data.prior, np.asarray(data.class_counts) / sum(data.class_counts))
  assert data.num_classes == len(data.class_names) == 4


def test_both_kinds_give_evaluation_images_as_uint8_arrays(data_and_config):
  data, _ = data_and_config
  for images, labels in ((data.test_x, data.test_y), (data.val_x, data.val_y)):
    chunk = images[0:5]
    assert isinstance(chunk, np.ndarray) and chunk.dtype == np.uint8
    chex.assert_shape(chunk, (min(5, len(labels)), *data.image_shape))
  picked = data.test_x[data.test_sets["forward50"]]
  chex.assert_shape(picked, (len(data.test_sets["forward50"]), *data.image_shape))
  chex.assert_trees_all_equal(picked[:2], data.test_x[data.test_sets["forward50"][:2]])


def test_the_same_loop_trains_on_both_kinds(data_and_config):
  data, config = data_and_config
  seen = _train(data, config, epochs=2)
  steps = len(data.train_y) // BATCH
  assert len(seen) == 2 * steps
  for out in seen:
    chex.assert_shape(out["images"], (BATCH, *data.image_shape))
    assert out["images"].dtype == np.float32 and out["labels"].dtype == np.int32
    assert abs(float(out["images"].mean())) < 3  # normalised, not raw pixels
  for epoch in (0, 1):
    labels = np.concatenate([out["labels"] for out in seen if out["epoch"] == epoch])
    # Each epoch draws without replacement from the training set.
    assert np.all(np.bincount(labels, minlength=data.num_classes) <= data.class_counts)
  assert not np.array_equal(seen[0]["labels"], seen[steps]["labels"])  # a new order every epoch
  # The batches are a function of the seed and the position alone: a fresh input resumed mid-epoch sees the
  # batches the first one saw there.
  resumed = _train(data, config, epochs=1, first_epoch=1, start=1)
  chex.assert_trees_all_equal([(o["images"], o["labels"]) for o in resumed],
                              [(o["images"], o["labels"]) for o in seen[steps + 1:]])


def test_closing_ends_every_thread_the_data_started(data_and_config, new_threads):
  data, config = data_and_config
  inputs = data.train_input(config, jax.random.PRNGKey(0), distributed.data_mesh(1))
  batches = inputs.epoch(0)
  next(batches)
  batches.close()
  inputs.close()
  assert not new_threads()  # the training input's threads end with it
  data.test_x[0:4]
  data.val_x[0:2]
  data.close()
  assert not new_threads()
