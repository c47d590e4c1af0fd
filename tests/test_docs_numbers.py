"""The numbers the README and docs quote are the ones in the committed results file of one default run
(docs/results/default_run.json, written by scripts/regenerate_docs.py). No training here: the checks
read the committed files only."""

from __future__ import annotations

import pathlib
import importlib.util
import json
import re

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("regenerate_docs", REPO_ROOT / "scripts" / "regenerate_docs.py")
regenerate_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate_docs)

TEST_SETS = ("forward50", "forward25", "forward10", "forward5", "forward2", "uniform",
             "backward2", "backward5", "backward10", "backward25", "backward50")


@pytest.fixture(scope="module")
def results() -> dict:
  return json.loads(regenerate_docs.RESULTS.read_text(encoding="utf-8"))


def _region(doc: str, name: str) -> str:
  found = regenerate_docs.regions((REPO_ROOT / doc).read_text(encoding="utf-8"))
  assert name in found, f"{doc} has no generated region {name}"
  return found[name]


def _pct(fraction) -> str:
  return "-" if fraction is None else f"{100 * fraction:.2f}"


@pytest.mark.parametrize("doc", regenerate_docs.DOCS)
def test_every_generated_region_is_the_rendering_of_the_results_file(doc, results):
  for name, render in regenerate_docs.RENDERERS[doc].items():
    assert _region(doc, name) == render(results), (
        f"{doc}: region {name} is stale; run python scripts/regenerate_docs.py --render-only")


def test_the_results_file_records_the_command_and_the_machine(results):
  assert results["command"] == "python scripts/regenerate_docs.py"
  machine = results["machine"]
  assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
  assert machine["jax"] and machine["backend"]
  assert [key for key, _ in regenerate_docs.COMMANDS] == list(results["outputs"])


def _table_rows(block: str, title: str) -> dict[str, list[float]]:
  """{first word: numbers} of the rows under the line starting with ``title`` (up to a blank line)."""
  lines = block.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(title))
  rows = {}
  for line in lines[start + 2:]:
    if not line.strip() or line.startswith(("```", "*")):  # "*" starts the few-images footnote
      break
    name, *values = line.split()
    rows[name] = [float(v.rstrip("*")) for v in values]  # a cell marked "*" rests on few images
  return rows


def test_readme_vertex_table_is_the_evaluate_output_of_the_run(results):
  text = _region("README.md", "train_tables")
  rows = _table_rows(text, "Accuracy (%) of each expert vertex preference")
  assert list(rows) == [*TEST_SETS, "mean"]
  for j, vertex in enumerate(regenerate_docs.VERTICES):
    evaluated = results["outputs"][f"evaluate {vertex}"]["results"]
    for name in TEST_SETS:
      assert f"{rows[name][j]:.2f}" == _pct(evaluated[name]["all"]), (vertex, name)
    mean = np.mean([evaluated[name]["all"] for name in TEST_SETS])
    assert f"{rows['mean'][j]:.2f}" == _pct(mean), vertex


def test_readme_shot_group_table_is_the_uniform_vertex_of_the_run(results):
  text = _region("README.md", "train_tables")
  rows = _table_rows(text, "Accuracy (%) by shot group at preference 0,1,0")
  evaluated = results["outputs"]["evaluate 0,1,0"]["results"]
  assert list(rows) == list(TEST_SETS)
  for name in TEST_SETS:
    # A group without images prints "-", which float() rejects above; every cell here is a number.
    assert [f"{v:.2f}" for v in rows[name]] == [_pct(evaluated[name][g]) for g in ("all", "many", "medium", "few")]


def test_readme_prose_numbers_are_the_run_s(results):
  tradeoff = [float(v) for v in re.findall(r"(\d+\.\d+)%", _region("README.md", "vertex_tradeoff"))]
  forward = results["outputs"]["evaluate 1,0,0"]["results"]["uniform"]
  backward = results["outputs"]["evaluate 0,0,1"]["results"]["uniform"]
  assert [f"{v:.2f}" for v in tradeoff] == [_pct(forward["many"]), _pct(forward["few"]), _pct(backward["many"]),
                                            _pct(backward["few"])]
  means = [float(v) for v in re.findall(r"(\d+\.\d+)%", _region("README.md", "adapt_means"))]
  em, stability = results["outputs"]["adapt em"]["mean"], results["outputs"]["adapt stability"]["mean"]
  assert [f"{v:.2f}" for v in means] == [_pct(em["default"]), _pct(em["adapted"]), _pct(stability["adapted"])]
  # The uniform vertex's mean is the same number in the README's table and in the adaptation baseline.
  rows = _table_rows(_region("README.md", "train_tables"), "Accuracy (%) of each expert vertex preference")
  assert f"{rows['mean'][1]:.2f}" == _pct(em["default"])


def test_readme_names_the_core_count_of_the_quoted_run(results):
  cores = results["machine"]["cpu_count"]
  text = " ".join(_region("README.md", "train_tables").split())
  assert f"XLA:CPU results vary slightly with the core count; the quoted run used {cores} cores" in text


def test_sweep_summary_rows_are_best_points_of_the_run(results):
  rows = _region("docs/sweeps.md", "sweep_summary").split("```")[1].strip().splitlines()
  assert rows[0].split()[:2] == ["test", "set"]
  named = {line.split()[0]: line.split()[1:] for line in rows[1:]}
  assert list(named) == list(regenerate_docs.ANCHOR_SETS)
  # The expert-alone columns are the vertex evaluations of the same run.
  for name, (_, _, *alone) in named.items():
    assert alone == [_pct(results["outputs"][f"evaluate {v}"]["results"][name]["all"])
                     for v in regenerate_docs.VERTICES]
