"""The run record (hyperlt.workdir.run): RunFacts validation, and loading without the optimiser."""

from __future__ import annotations

import copy
import json

import chex
import jax
import numpy as np
import pytest

from hyperlt import configs as config_lib
from hyperlt.errors import UserInputError
from hyperlt.models.expert_model import build
from hyperlt.workdir import checkpoint
from hyperlt.workdir import run as run_lib

FACTS = {"dataset": "tiny", "class_names": ["a", "b", "c", "d"], "class_counts": [40, 20, 8, 3],
         "image_shape": [8, 8, 1], "mean": [0.3], "std": [0.25], "num_train": 71, "num_val": 4, "num_test": 40,
         "test_set_sizes": {"forward50": 12, "uniform": 40}, "groups": {"many": [0], "medium": [1, 2], "few": [3]}}


def test_facts_round_trip_and_derived_values():
  facts = run_lib.RunFacts.from_json(FACTS, "data.json")
  assert facts.to_json() == FACTS
  assert list(facts.to_json()) == list(FACTS)           # the key order data.json always had
  assert facts.num_classes == 4 and facts.image_shape == (8, 8, 1) and facts.class_counts == (40, 20, 8, 3)
  np.testing.assert_allclose(facts.prior, np.array([40, 20, 8, 3]) / 71)
  with_lists = {**FACTS, "lists": {"root": "/img", "train": "train.txt", "val": "", "test": "test.txt"}}
  assert run_lib.RunFacts.from_json(with_lists, "data.json").to_json() == with_lists
  with pytest.raises(TypeError):
    facts.groups["many"] = (1,)                          # frozen, also inside


def _changed(path: str, value):
  """FACTS with the field at dotted ``path`` set to ``value`` (deleted for ``...``)."""
  obj = copy.deepcopy(FACTS)
  *parents, key = path.split(".")
  target = obj
  for part in parents:
    target = target[part]
  if value is ...:
    del target[key]
  else:
    target[key] = value
  return obj


@pytest.mark.parametrize("path, value, message", [
    ("class_counts", ..., "missing field 'class_counts'"),
    ("class_counts", [40, 0, 8, 3], "class_counts: expected an integer >= 1, got 0"),
    ("class_names", ["a", "b"], "class_names has 2 names but class_counts has 4 classes"),
    ("class_names", ["a", "b", 3, "d"], "class_names: expected a string, got 3"),
    ("image_shape", [8, 8], "image_shape: expected [H, W, C]"),
    ("mean", [0.3, 0.3, 0.3], "mean: expected 1 values (one per channel)"),
    ("std", [0.0], "std: expected a list of positive finite numbers"),
    ("num_train", "71", "num_train: expected an integer >= 0, got '71'"),
    ("test_set_sizes.uniform", -1, "test_set_sizes.uniform: expected an integer >= 0"),
    ("groups.few", [4], "groups.few: class indices must be below 4"),
    ("groups", [0, 1], "groups: expected an object"),
    ("lists", {"root": "/img"}, "lists: expected the fields root, train, val and test"),
])
def test_bad_facts_name_the_file_and_the_field(path, value, message):
  with pytest.raises(UserInputError) as info:
    run_lib.RunFacts.from_json(_changed(path, value), "--workdir: w/data.json")
  assert str(info.value).startswith("--workdir: w/data.json: ") and message in str(info.value)


def test_an_empty_shot_group_is_valid():
  assert run_lib.RunFacts.from_json(_changed("groups.many", []), "data.json").groups["many"] == ()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A work dir whose checkpoint holds params, batch_stats and an optimiser state no optimiser of this
  config could have made: loading must read the first two and never look at the third."""
  workdir = tmp_path_factory.mktemp("run")
  config = config_lib.load("digits")
  config_lib.override(config, ["model.stage_sizes=(1,1)", "model.widths=(8,16)", "model.branch_stages=1",
                               "model.hyper_hidden=(16,)"])
  config_lib.validate(config)
  model = build(config.model, 4)
  init = jax.jit(lambda: model.init(jax.random.PRNGKey(3), (8, 8, 1)),
                 compiler_options={"xla_backend_optimization_level": 0})
  params, batch_stats = init()
  checkpoint.write_json(workdir / checkpoint.CONFIG_FILE, config_lib.to_dict(config))
  checkpoint.write_json(workdir / checkpoint.DATA_FILE, FACTS)
  mngr = checkpoint.manager(workdir)
  state = {"params": params, "batch_stats": batch_stats, "step": np.int32(7),
           "opt_state": {"not_an_optax_state": np.arange(5.0)}, "rng": jax.random.PRNGKey(0)}
  checkpoint.save(mngr, 7, state)
  mngr.close()
  return workdir, params, batch_stats


def test_load_restores_parameters_without_the_optimiser(saved):
  workdir, params, batch_stats = saved
  run = run_lib.load(workdir, with_data=False)
  chex.assert_trees_all_equal(run.params, params)
  chex.assert_trees_all_equal(run.batch_stats, batch_stats)
  assert run.step == 7 and run.data is None and run.train_state is None and run.workdir == workdir
  assert run.facts == run_lib.RunFacts.from_json(FACTS, "data.json")
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(run.params))


def test_load_rejects_a_checkpoint_of_another_model(saved):
  workdir, _, _ = saved
  config = json.loads((workdir / checkpoint.CONFIG_FILE).read_text())
  config["model"]["widths"] = [8, 32]
  checkpoint.write_json(workdir / checkpoint.CONFIG_FILE, config)
  try:
    with pytest.raises(UserInputError, match="cannot be read into this model") as info:
      run_lib.load(workdir, with_data=False)
    # Named from the saved shapes, before orbax reads an array.
    assert str(workdir) in str(info.value) and "there but" in str(info.value) and "/branches/" in str(info.value)
  finally:
    config["model"]["widths"] = [8, 16]
    checkpoint.write_json(workdir / checkpoint.CONFIG_FILE, config)
  with pytest.raises(UserInputError, match="no checkpoint of step 3 .* has steps 7"):
    run_lib.load(workdir, step=3, with_data=False)


def test_bad_data_json_is_named(tmp_path, saved):
  workdir, _, _ = saved
  bad = tmp_path / "w"
  bad.mkdir()
  (bad / checkpoint.CHECKPOINT_DIR).symlink_to(workdir / checkpoint.CHECKPOINT_DIR)
  (bad / checkpoint.CONFIG_FILE).write_text((workdir / checkpoint.CONFIG_FILE).read_text())
  checkpoint.write_json(bad / checkpoint.DATA_FILE, _changed("std", [-1.0]))
  with pytest.raises(UserInputError, match=r"data\.json: std: expected a list of positive finite numbers"):
    run_lib.load(bad, with_data=False)
