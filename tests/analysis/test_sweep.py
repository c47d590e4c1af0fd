"""Tests of preference sweeps (hyperlt.analysis.sweep), their files and figures, and ``hyperlt sweep``."""

import csv
import json

import numpy as np
import pytest
from matplotlib import image as mpimg
from sklearn import metrics as sk_metrics

from hyperlt import cli, preference
from hyperlt.analysis import evaluate
from hyperlt.analysis import metrics
from hyperlt.analysis import plots
from hyperlt.analysis import sweep
from hyperlt.analysis.sweep import SweepResult
from hyperlt.inference.predictor import Predictor


def _cli_json(capsys, argv):
  capsys.readouterr()
  assert cli.main(argv) == 0
  return json.loads(capsys.readouterr().out)


def _predict(run, alphas):
  """Predicted test classes [P, N], as ``hyperlt evaluate`` computes them."""
  return Predictor.for_run(run).classes(evaluate.test_features(run), alphas)


@pytest.fixture(scope="module")
def grid_result(trained_run):
  """The 231-point sweep of the trained default with both extra suites."""
  return sweep.sweep(trained_run, 0.05, suites=("partial", "dirichlet"))


def test_sweep_json_equals_evaluate_json(capsys, trained_workdir, tmp_path):
  items = _cli_json(capsys, ["sweep", "--workdir", str(trained_workdir), "--step", "0.25", "--json",
                             "--no-figures", "--out", str(tmp_path)])
  assert len(items) == 15                                 # C(4 + 2, 2) grid points for T = 3
  assert all(set(item) == {"preference", "results"} for item in items)
  by_preference = {tuple(item["preference"]): item for item in items}
  for pref in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]):
    single = _cli_json(capsys, ["evaluate", "--workdir", str(trained_workdir), "--json",
                                "--preference", ",".join(str(v) for v in pref)])
    swept = by_preference[tuple(pref)]
    assert swept["preference"] == pytest.approx(single["preference"])
    assert swept["results"] == single["results"]         # exactly: same numbers, keys and order
    assert list(swept["results"]) == list(single["results"])
  # The file copy of the JSON is the printed list.
  assert json.loads((tmp_path / "sweep.json").read_text()) == items


def test_sweep_equals_evaluate_alphas_on_the_fine_grid(trained_run, grid_result):
  assert grid_result.num_preferences == 231
  picks = [0, 57, 130, 230]
  expected = evaluate.evaluate_alphas(trained_run, grid_result.preferences[picks])
  items = grid_result.items()
  for p, want in zip(picks, expected):
    assert items[p]["results"] == want["results"]
    assert set(items[p]["suites"]) == {n for n, s in zip(grid_result.set_names, grid_result.set_suites)
                                       if s != "standard"}


def test_one_compiled_pass_over_all_preferences(trained_run, monkeypatch):
  calls = {"features": 0, "classes": [], "confidences": []}
  real_features = Predictor.features

  def count_features(self, images, *args, **kwargs):
    calls["features"] += 1
    return real_features(self, images, *args, **kwargs)

  def counting(name):
    real = getattr(Predictor, name)

    def call(self, features, alphas, *args, **kwargs):
      calls[name].append(np.shape(alphas))
      return real(self, features, alphas, *args, **kwargs)
    return call

  monkeypatch.setattr(Predictor, "features", count_features)
  for name in ("classes", "confidences"):
    monkeypatch.setattr(Predictor, name, counting(name))
  result = sweep.sweep(trained_run, 0.1)
  assert result.num_preferences == 66
  assert calls == {"features": 1, "classes": [(66, 3)], "confidences": [(66, 3)]}


def test_extra_metrics_match_sklearn(trained_run, grid_result):
  data = trained_run.data
  picks = [0, 100, 230]
  classes = _predict(trained_run, grid_result.preferences[picks])
  uniform = grid_result.set_index("uniform")
  for p, pred in zip(picks, classes):
    np.testing.assert_allclose(grid_result.recall[p], sk_metrics.recall_score(data.test_y, pred, average=None))
    assert grid_result.balanced_accuracy[p, uniform] == pytest.approx(
        sk_metrics.balanced_accuracy_score(data.test_y, pred))
    for name, idx in data.test_sets.items():
      assert grid_result.accuracy[p, grid_result.set_index(name), 0] == pytest.approx(
          (pred[idx] == data.test_y[idx]).mean())
  assert np.all((grid_result.ece >= 0) & (grid_result.ece <= 1))


def test_suite_sets_are_scored_on_their_images(trained_run, grid_result):
  from hyperlt.data import suites
  data = trained_run.data
  sets = suites.partial_class_sets(data.test_y, data.test_sets, seed=trained_run.config.data.test_seed)
  sets.update(suites.dirichlet_sets(data.test_y, seed=trained_run.config.data.test_seed))
  p = 120
  pred = _predict(trained_run, grid_result.preferences[p:p + 1])[0]
  for name, idx in sets.items():
    s = grid_result.set_index(name)
    assert grid_result.set_sizes[s] == len(idx)
    assert grid_result.accuracy[p, s, 0] == pytest.approx((pred[idx] == data.test_y[idx]).mean())
  # A tail-only partial set has no many-shot image: that cell is undefined, not 0.
  tail = grid_result.set_index("partial_uniform_tail")
  assert np.isnan(grid_result.accuracy[p, tail, 1])
  assert grid_result.items()[p]["suites"]["partial_uniform_tail"]["many"] is None


def test_write_files(grid_result, tmp_path):
  paths = sweep.write(grid_result, tmp_path)
  assert [p.name for p in paths] == ["sweep.json", "sweep.csv", "per_class_recall.csv"]
  with open(tmp_path / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == grid_result.num_preferences * len(grid_result.set_names)
  first = rows[grid_result.set_index("uniform")]
  assert first["test_set"] == "uniform" and first["suite"] == "standard"
  assert float(first["all"]) == pytest.approx(grid_result.column("uniform")[0], abs=1e-6)
  assert float(first["balanced_accuracy"]) == pytest.approx(grid_result.balanced_accuracy[0, 5], abs=1e-6)
  with open(tmp_path / "per_class_recall.csv") as f:
    recall_rows = list(csv.reader(f))
  assert len(recall_rows) == 1 + grid_result.num_preferences
  assert recall_rows[0][:3] == ["pref_forward", "pref_uniform", "pref_backward"]


def _texts(fig):
  out = []
  for ax in fig.axes:
    out += [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    if hasattr(ax, "get_zlabel"):
      out.append(ax.get_zlabel())
    legend = ax.get_legend()
    if legend is not None:
      out += [t.get_text() for t in legend.get_texts()]
  return out


def test_figures_are_labelled(grid_result):
  simplex = plots.simplex_figure(grid_result)
  texts = _texts(simplex)
  for word in ("forward", "uniform", "backward", "forward50 test set", "backward50 test set", "accuracy (%)"):
    assert word in texts
  assert any(t.startswith("best: ") for t in texts)
  pareto = _texts(plots.pareto_figure(grid_result))
  assert "many-shot accuracy on the uniform test set (%)" in pareto
  assert "few-shot accuracy on the uniform test set (%)" in pareto
  assert any(t.startswith("Pareto front") for t in pareto)
  assert "backward expert alone" in pareto
  view = _texts(plots.anchors_figure(grid_result))
  for label in ("forward50 accuracy (%)", "uniform accuracy (%)", "backward50 accuracy (%)"):
    assert label in view


def _synthetic(num_experts: int) -> SweepResult:
  grid = preference.simplex_grid(num_experts, 0.25)
  p = len(grid)
  acc = np.random.default_rng(0).uniform(0.5, 1.0, (p, 11, 4))
  names = ("forward50", "forward25", "forward10", "forward5", "forward2", "uniform", "backward2", "backward5",
           "backward10", "backward25", "backward50")
  return SweepResult(preferences=grid, anchors=tuple(f"a{j}" for j in range(num_experts)), class_names=("x", "y"),
                     set_names=names, set_suites=("standard",) * 11, set_sizes=np.full(11, 10),
                     accuracy=acc, balanced_accuracy=acc[..., 0], ece=acc[..., 0] / 10,
                     recall=np.full((p, 2), 0.5))


def test_figures_for_other_expert_counts(tmp_path):
  two = plots.simplex_figure(_synthetic(2))
  assert two is not None and "accuracy (%)" in _texts(two)
  assert plots.simplex_figure(_synthetic(4)) is None      # no ternary view beyond three experts
  written = plots.plot_all(_synthetic(4), tmp_path)
  assert [p.name for p in written] == ["pareto.png", "anchors.png"]


def test_cli_sweep_prints_a_summary_and_writes_figures(capsys, trained_workdir, tmp_path):
  assert cli.main(["sweep", "--workdir", str(trained_workdir), "--step", "0.05", "--out", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "Swept 231 preferences" in out and "best preference" in out
  assert "backward50" in out
  for name in ("simplex.png", "pareto.png", "anchors.png"):
    image = mpimg.imread(tmp_path / name)
    assert image.shape[0] >= 400 and image.shape[1] >= 600
    assert image[..., :3].std() > 0.05                      # not blank
    assert (tmp_path / name).stat().st_size < 400_000


@pytest.mark.parametrize("argv, message", [
    (["--step", "0.3"], "step: expected a positive number that divides 1"),
    (["--suites", "partial,bogus"], "--suites: unknown ['bogus']"),
])
def test_cli_sweep_bad_input_exits_2(capsys, trained_workdir, tmp_path, argv, message):
  assert cli.main(["sweep", "--workdir", str(trained_workdir), "--out", str(tmp_path), *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1


def test_explicit_alphas_are_validated(trained_run):
  from hyperlt.errors import UserInputError
  with pytest.raises(UserInputError, match=r"alphas\[1\]: entries must be non-negative"):
    sweep.sweep(trained_run, alphas=[[1, 0, 0], [1, -1, 1]])
  result = sweep.sweep(trained_run, alphas=[[2, 0, 2]])
  np.testing.assert_allclose(result.preferences, [[0.5, 0, 0.5]])
  assert metrics.pareto_front(result.accuracy[:, :, 0]).all()
