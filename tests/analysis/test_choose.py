"""Tests of goal-driven preference choice on the validation split (hyperlt.analysis.choose, ``hyperlt choose``)."""

import dataclasses
import json

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from hyperlt import cli, preference
from hyperlt import configs as config_lib
from hyperlt.analysis import choose
from hyperlt.data import pipeline, suites
from hyperlt.errors import UserInputError
from hyperlt.inference.predictor import Predictor
from hyperlt.workdir import checkpoint


# --- parsing goals ----------------------------------------------------------------------------------

def test_parse_metric_and_bound():
  assert choose.parse_metric("few") == choose.Metric("few", "uniform")
  assert choose.parse_metric("backward50:all", "forward10") == choose.Metric("all", "backward50")
  assert choose.parse_metric("many", "forward10") == choose.Metric("many", "forward10")
  bound = choose.parse_bound(" few >= 0.5 ")
  assert (bound.metric, bound.op, bound.value) == (choose.Metric("few", "uniform"), ">=", 0.5)
  assert str(choose.parse_bound("forward50:ece<=0.1")) == "forward50:ece<=0.1"


@pytest.mark.parametrize("text, message", [
    ("fw>=0.5", "--subject-to: unknown metric 'fw'"),
    ("sideways3:few>=0.5", "--subject-to: unknown test set 'sideways3'"),
    ("few=0.5", "expected [test set:]metric>=value"),
    ("few>=abc", "'abc' in 'few>=abc' is not a number"),
    ("few>=50", "did you mean 0.5?"),
    ("few>=-1", "fractions in [0, 1]"),
])
def test_bad_bounds_name_the_problem(text, message):
  with pytest.raises(UserInputError) as info:
    choose.parse_bound(text)
  assert message in str(info.value)


# --- estimates and choices on the trained default ---------------------------------------------------

@pytest.fixture(scope="module")
def val_predictions(trained_run):
  """Validation predictions [P, N_val] on the 0.1 grid, computed as choose computes them."""
  run = trained_run
  grid = preference.simplex_grid(run.model.num_experts, 0.1)
  predictor = Predictor.for_run(run)
  return grid, predictor.classes(predictor.features(run.data.val_x), grid)


def test_estimates_follow_their_definitions(trained_run, val_predictions):
  grid, preds = val_predictions
  data = trained_run.data
  wanted = [choose.parse_metric(m) for m in ("all", "few", "balanced_accuracy", "forward50:all", "backward50:many")]
  values = choose.validation_estimates(trained_run, grid, wanted)
  for p in (0, 30, 65):
    recall = sk_metrics.recall_score(data.val_y, preds[p], average=None, labels=range(data.num_classes))
    assert values["uniform:all"][p] == pytest.approx(sk_metrics.balanced_accuracy_score(data.val_y, preds[p]))
    assert values["uniform:balanced_accuracy"][p] == pytest.approx(values["uniform:all"][p])
    assert values["uniform:few"][p] == pytest.approx(recall[data.groups["few"]].mean())
    forward = suites.test_set_prior("forward50", data.num_classes)
    assert values["forward50:all"][p] == pytest.approx(forward @ recall)
    backward, many = suites.test_set_prior("backward50", data.num_classes), data.groups["many"]
    assert values["backward50:many"][p] == pytest.approx(backward[many] @ recall[many] / backward[many].sum())


def test_choice_meets_its_bound_and_is_optimal(trained_run):
  bound_metric, objective = "backward50:all", "forward50:all"
  grid = preference.simplex_grid(3, 0.1)
  values = choose.validation_estimates(trained_run, grid, [choose.parse_metric(m) for m in (bound_metric, objective)])
  threshold = float(np.median(values[bound_metric]))
  choice = choose.choose(trained_run, maximize=objective, subject_to=[f"{bound_metric}>={threshold}"], step=0.1)
  feasible = values[bound_metric] >= threshold
  assert 0 < feasible.sum() < len(grid)        # the bound bites
  assert choice.feasible == int(feasible.sum()) and choice.grid_size == len(grid)
  assert choice.validation[bound_metric] >= threshold
  assert choice.value == pytest.approx(values[objective][feasible].max())
  assert any(np.allclose(choice.preference, g) for g in grid[feasible])


def test_tightening_a_bound_never_improves_the_objective(trained_run):
  grid = preference.simplex_grid(3, 0.1)
  fwd = choose.validation_estimates(trained_run, grid, [choose.parse_metric("backward50:all")])["backward50:all"]
  thresholds = np.quantile(fwd, [0.0, 0.5, 0.9])
  best = [choose.choose(trained_run, maximize="forward50:all", subject_to=[f"backward50:all>={t}"], step=0.1).value
          for t in thresholds]
  assert best[0] >= best[1] >= best[2]


def test_choice_never_looks_at_test_data(trained_run):
  goal = dict(maximize="forward50:all", subject_to=["backward50:all>=0.3"], step=0.1)
  before = choose.choose(trained_run, **goal)
  data = trained_run.data
  scrambled = dataclasses.replace(data, test_x=np.zeros_like(data.test_x),
                                  test_y=np.random.default_rng(0).permutation(data.test_y))
  after = choose.choose(dataclasses.replace(trained_run, data=scrambled), **goal)
  np.testing.assert_array_equal(before.preference, after.preference)
  assert before.validation == after.validation


def test_minimize_ece_and_infeasible_goals(trained_run):
  choice = choose.choose(trained_run, minimize="ece", step=0.1)
  grid = preference.simplex_grid(3, 0.1)
  ece = choose.validation_estimates(trained_run, grid, [choose.parse_metric("ece")])["uniform:ece"]
  assert choice.value == pytest.approx(ece.min())
  with pytest.raises(UserInputError, match="cannot be met; largest uniform:all is"):
    choose.choose(trained_run, maximize="many", subject_to=["all>=1.0", "few>=0.1"], step=0.1)
  with pytest.raises(UserInputError, match="exactly one of --maximize or --minimize"):
    choose.choose(trained_run, maximize="many", minimize="ece")


def test_no_validation_split_is_a_clear_error(trained_run):
  config = config_lib.from_dict(config_lib.to_dict(trained_run.config))
  with config.unlocked():
    config.data.val_fraction = 0.0
  data = dataclasses.replace(trained_run.data, val_x=trained_run.data.val_x[:0], val_y=trained_run.data.val_y[:0])
  with pytest.raises(UserInputError, match=r"data\.val_fraction = 0"):
    choose.choose(dataclasses.replace(trained_run, config=config, data=data), maximize="many")


# --- the command line -------------------------------------------------------------------------------

def test_cli_choose_json(capsys, trained_workdir):
  argv = ["choose", "--workdir", str(trained_workdir), "--maximize", "forward50:all",
          "--subject-to", "backward50:all>=0.3", "--step", "0.1", "--json"]
  assert cli.main(argv) == 0
  out = json.loads(capsys.readouterr().out)
  assert set(out) == {"preference", "objective", "subject_to", "validation", "feasible", "grid_size", "num_val",
                      "estimated_on", "warnings"}
  assert out["estimated_on"] == "validation" and out["grid_size"] == 66
  assert out["subject_to"][0]["bound"] == "backward50:all>=0.3" and out["subject_to"][0]["value"] >= 0.3
  assert sum(out["preference"]) == pytest.approx(1.0)
  # The digits default holds out a single validation image of its rarest classes: the report says so.
  assert "fewer than 5 validation images (as few as 1)" in out["warnings"][0]


def test_cli_choose_text_and_bad_goal(capsys, trained_workdir):
  assert cli.main(["choose", "--workdir", str(trained_workdir), "--maximize", "many", "--step", "0.25"]) == 0
  out = capsys.readouterr().out
  assert "Chosen preference:" in out and "no test image was used" in out
  assert f"hyperlt evaluate --workdir {trained_workdir} --preference" in out
  assert cli.main(["choose", "--workdir", str(trained_workdir), "--maximize", "fewshot"]) == 2
  assert "--maximize: unknown metric 'fewshot'" in capsys.readouterr().err


def test_cli_choose_without_validation_split(capsys, trained_run, tmp_path):
  """A real work dir of a run with data.val_fraction = 0 (the trained default's weights, saved anew: only
  parameters and batch statistics, which is all a served run reads)."""
  config = config_lib.load("digits")
  config_lib.override(config, ["data.val_fraction=0.0"])
  data = pipeline.prepare(config.data)
  assert len(data.val_y) == 0
  checkpoint.write_json(tmp_path / checkpoint.CONFIG_FILE, config_lib.to_dict(config))
  checkpoint.write_json(tmp_path / checkpoint.DATA_FILE, data.describe())
  mngr = checkpoint.manager(tmp_path)
  checkpoint.save(mngr, 1, {"params": trained_run.params, "batch_stats": trained_run.batch_stats})
  mngr.close()
  assert cli.main(["choose", "--workdir", str(tmp_path), "--maximize", "many"]) == 2
  err = capsys.readouterr().err
  assert "data.val_fraction = 0" in err and len(err.strip().splitlines()) == 1
  # The run itself is fine: evaluation works, only choosing needs the validation split.
  assert cli.main(["evaluate", "--workdir", str(tmp_path), "--json"]) == 0
