"""Fixtures of the data-layer tests: a tiny list-file dataset on disk, written once per session."""

from __future__ import annotations

import dataclasses
import pathlib
import threading

import ml_collections
import pytest

from hyperlt import configs as config_lib
from hyperlt.data import lists


@dataclasses.dataclass(frozen=True)
class ListTree:
  """A synthetic SADE-style dataset (``lists.write_example_tree``) and the config that reads it."""

  root: pathlib.Path
  train_list: pathlib.Path
  test_list: pathlib.Path
  train_counts: tuple[int, ...]
  test_per_class: int

  def overrides(self, *extra: str) -> list[str]:
    """Overrides that point a config at this tree: 16-pixel crops, 2 decoding threads, no validation."""
    return ["data.source=lists", f"data.root={self.root}", f"data.train_list={self.train_list}",
            f"data.test_list={self.test_list}", "data.image_size=16", "data.resize=20", "data.val_fraction=0.0",
            "data.workers=2", *extra]

  def config(self, *extra: str) -> ml_collections.ConfigDict:
    """The digits recipe reading this tree, validated."""
    config = config_lib.load("digits")
    config_lib.override(config, self.overrides(*extra))
    return config_lib.validate(config)


@pytest.fixture(scope="session")
def list_tree(tmp_path_factory) -> ListTree:
  root = tmp_path_factory.mktemp("list_tree")
  counts, per_class = (12, 7, 5, 3), 3
  train_list, test_list = lists.write_example_tree(root, counts, per_class, size_range=(24, 48))
  return ListTree(root, train_list, test_list, counts, per_class)


@pytest.fixture
def new_threads():
  """``new_threads()``: the live threads this test started (hyperlt names its threads ``hyperlt-*``)."""
  before = set(threading.enumerate())
  return lambda: sorted(t.name for t in threading.enumerate() if t not in before and t.name.startswith("hyperlt-"))
