"""benchmarks/make_subset.py: the carried CIFAR-LT subset holds exactly the recipe's long-tailed training set.

Checked on a small synthetic source: the subset's training images are those hyperlt selects from the full
source, and training on the subset with ``data.n_max`` = its head-class size gives the same arrays.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "benchmarks") not in sys.path:
  sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import hyperlt_adapter as hyperlt  # noqa: E402  pylint: disable=wrong-import-position
import make_subset  # noqa: E402  pylint: disable=wrong-import-position


def _source(path: pathlib.Path) -> pathlib.Path:
  rng = np.random.default_rng(0)
  y_train, y_test = np.repeat(np.arange(10), 60), np.repeat(np.arange(10), 20)
  np.savez(path, x_train=rng.integers(0, 256, (600, 32, 32, 3), dtype=np.uint8), y_train=y_train,
           x_test=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), y_test=y_test,
           class_names=np.array([f"c{i}" for i in range(10)]))
  return path


def test_subset_is_the_recipes_training_set(tmp_path):
  source = _source(tmp_path / "full.npz")
  info = make_subset.make_subset(source, tmp_path / "subset.npz", imbalance_ratio=10, test_per_class=5)
  with np.load(tmp_path / "subset.npz") as z:
    assert z["x_train"].dtype == np.uint8 and z["x_test"].dtype == np.uint8
    assert np.bincount(z["y_test"]).tolist() == [5] * 10
    assert list(z["class_names"]) == [f"c{i}" for i in range(10)]
  assert info["train_class_counts"][0] == 60 and info["train_class_counts"][-1] == 6
  full = hyperlt.prepare_data(hyperlt.config("cifar_lt:c10,ir10", [f"data.path={source}"]))
  sub = hyperlt.prepare_data(hyperlt.config("cifar_lt:c10,ir10", info["overrides"]))
  assert np.array_equal(full.train_x, sub.train_x) and np.array_equal(full.train_y, sub.train_y)


def test_subset_over_the_size_limit_is_refused(tmp_path):
  source = _source(tmp_path / "full.npz")
  with pytest.raises(ValueError, match="limit"):
    make_subset.make_subset(source, tmp_path / "subset.npz", imbalance_ratio=10, test_per_class=5, max_mb=0.01)
  assert not (tmp_path / "subset.npz").exists()
