"""experiments/compare.py: training shared between prediction variants, and the adaptation rows of its table."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_compare():
  spec = importlib.util.spec_from_file_location("compare", REPO_ROOT / "experiments" / "compare.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_comparison_script_shares_training_between_prediction_variants():
  compare = _load_compare()
  key = lambda m: compare.config_key(compare.training_config(compare.method_config("digits", [], m, 0)))
  assert key("ce") == key("logit_adjust")
  assert len({key("ce"), key("balanced_softmax"), key("balanced_softmax_mixup"), key("sade"), key("prl")}) == 5


def test_comparison_rows_for_test_time_adaptation(trained_run, tmp_path):
  compare = _load_compare()
  evaluated = compare.evaluate_method(trained_run, ("em",))
  adapted = evaluated["adapted_em"]
  assert set(adapted["results"]) == set(trained_run.data.test_sets)
  for name, preference in adapted["preference_per_test_set"].items():
    assert len(preference) == trained_run.model.num_experts and abs(sum(preference) - 1) < 1e-5, name
  # The forward50 adaptation leans away from the backward expert, the backward50 one towards it.
  backward = list(trained_run.config.loss.anchors).index("backward")
  assert (adapted["preference_per_test_set"]["backward50"][backward]
          > adapted["preference_per_test_set"]["forward50"][backward])
  record = {"method": "prl", "seed": 0, "uses_test_prior": False, "steps": 1, **evaluated}
  compare.write_tables([record], tmp_path / "table", "cmd", [0], ["prl"])
  table = (tmp_path / "table.md").read_text()
  row = next(line for line in table.splitlines() if "adapted to each test set (em)" in line)
  assert "unlabeled test images" in row
  mean = 100 * np.mean([adapted["results"][n]["all"] for n in trained_run.data.test_sets])
  assert f"{mean:.1f}" in row
