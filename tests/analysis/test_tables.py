"""The text tables of evaluate and train (hyperlt.analysis.evaluate.format_table, format_comparison):
cells that rest on fewer than a handful of images are marked, and the image counts behind each cell."""

from __future__ import annotations

import re
import types

import numpy as np

from hyperlt.analysis import evaluate

RESULTS = {"uniform": {"all": 0.9, "many": 1.0, "medium": 0.85, "few": 0.8},
           "backward50": {"all": 0.7, "many": 1.0, "medium": None, "few": 0.75}}
COUNTS = {"uniform": {"all": 100, "many": 30, "medium": 40, "few": 30},
          "backward50": {"all": 52, "many": 2, "medium": 0, "few": 50}}


def _columns(line: str) -> list[int]:
  """Where each cell's number (or "-") ends: the numbers must stay in their columns."""
  return [m.end() for m in re.finditer(r"\d+\.\d\d|-", line[11:])]


def test_cells_on_few_images_are_marked_and_explained():
  text = evaluate.format_table(RESULTS, "title", COUNTS)
  lines = text.splitlines()
  assert lines[3] == "backward50    70.00  100.00*      -   75.00"
  assert "*" not in lines[2]                              # 30 images: not marked
  assert lines[-1] == evaluate.FEW_IMAGES_NOTE == "* fewer than 5 images"
  assert _columns(lines[2]) == _columns(lines[3]) == [8, 16, 24, 32]
  # Without counts (or without small cells) the table is unmarked and has no note.
  plain = evaluate.format_table(RESULTS, "title")
  assert "*" not in plain and plain.splitlines()[3] == "backward50    70.00  100.00       -   75.00"
  assert evaluate.FEW_IMAGES_NOTE not in evaluate.format_table(RESULTS, "", {"uniform": COUNTS["uniform"]})


def test_comparison_marks_small_test_sets_only():
  results = [{"results": RESULTS}, {"results": RESULTS}]
  counts = {"uniform": {"all": 3}, "backward50": {"all": 52}}
  lines = evaluate.format_comparison(results, ["a", "b"], counts).splitlines()
  assert lines[1] == "uniform           90.00*      90.00*"
  assert lines[2] == "backward50        70.00       70.00"
  assert lines[-1] == evaluate.FEW_IMAGES_NOTE
  assert "*" not in evaluate.format_comparison(results, ["a", "b"])


def test_image_counts_follow_the_accuracy_table():
  labels = np.array([0, 0, 1, 2, 2, 2])
  test_sets = {"all_six": np.arange(6), "tail": np.array([3, 4, 5, 2])}
  groups = {"many": np.array([True, False, False]), "medium": np.array([False, True, False]),
            "few": np.array([False, False, True])}
  run = types.SimpleNamespace(data=types.SimpleNamespace(test_y=labels, test_sets=test_sets, groups=groups))
  counts = evaluate.image_counts(run)
  assert counts == {"all_six": {"all": 6, "many": 2, "medium": 1, "few": 3},
                    "tail": {"all": 4, "many": 0, "medium": 1, "few": 3}}
  table = evaluate.accuracy_table(labels, labels, test_sets, groups)
  assert {name: [g for g, v in row.items() if v is None] for name, row in table.items()} == \
      {name: [g for g, n in row.items() if n == 0] for name, row in counts.items()}
  assert list(table["tail"]) == list(counts["tail"]) == list(evaluate.GROUP_NAMES)
