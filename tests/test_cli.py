"""The command line: the product's promise on the embedded default, JSON contract, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hyperlt import cli
from hyperlt.data import longtail

GROUPS = ("all", "many", "medium", "few")


def run_cli(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def evaluate_json(capsys, workdir, pref):
  code, out, err = run_cli(capsys, "evaluate", "--workdir", str(workdir), "--preference", pref, "--json")
  assert code == 0, err
  return json.loads(out)


def test_evaluate_json_contract(capsys, trained_workdir):
  result = evaluate_json(capsys, trained_workdir, "1,0,0")
  assert list(result) == ["preference", "results", "counts"]
  assert result["preference"] == [1.0, 0.0, 0.0]
  assert list(result["results"]) == list(longtail.TEST_SET_NAMES)
  for row in result["results"].values():
    assert set(row) == set(GROUPS)
    for value in row.values():
      assert value is None or 0.0 <= value <= 1.0
  # "counts": the images behind each cell; a group without images is the one with accuracy None.
  assert list(result["counts"]) == list(result["results"])
  for name, row in result["counts"].items():
    assert row["all"] == sum(row[g] for g in GROUPS if g != "all") > 0
    assert [g for g in GROUPS if row[g] == 0] == [g for g in GROUPS if result["results"][name][g] is None]


def test_forward_and_backward_preferences_trade_head_for_tail(capsys, trained_workdir):
  """The product's promise (issue 2): preference 1,0,0 favours the head, 0,0,1 the tail."""
  forward = evaluate_json(capsys, trained_workdir, "1,0,0")["results"]
  backward = evaluate_json(capsys, trained_workdir, "0,0,1")["results"]
  assert forward["forward50"]["all"] > backward["forward50"]["all"]
  assert backward["backward50"]["all"] > forward["backward50"]["all"]
  assert backward["uniform"]["few"] > forward["uniform"]["few"]
  assert backward["uniform"]["many"] < forward["uniform"]["many"]


def test_evaluate_table_is_printed(capsys, trained_workdir):
  code, out, _ = run_cli(capsys, "evaluate", "--workdir", str(trained_workdir))
  assert code == 0
  assert "preference 0,1,0" in out  # the default: the uniform anchor's vertex
  assert all(name in out for name in longtail.TEST_SET_NAMES)


@pytest.mark.parametrize("pref,message", [
    ("1,0", "expected 3 numbers"),
    ("1,-2,0", "non-negative"),
    ("nan,1,1", "finite"),
    ("0,0,0", "positive"),
])
def test_bad_preference_exits_2_with_one_line(capsys, trained_workdir, pref, message):
  code, out, err = run_cli(capsys, "evaluate", "--workdir", str(trained_workdir), "--preference", pref)
  assert code == 2
  assert out == ""
  assert err.count("\n") == 1 and err.startswith("hyperlt: error: --preference") and message in err


def test_workdir_without_checkpoint(capsys, tmp_path):
  code, _, err = run_cli(capsys, "evaluate", "--workdir", str(tmp_path))
  assert code == 2 and "has no checkpoint" in err and "hyperlt train --workdir" in err
  code, _, err = run_cli(capsys, "evaluate", "--workdir", str(tmp_path / "nope"))
  assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("overrides,message", [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["data.source=npz", "data.path=/nonexistent/data.npz"], "does not exist"),
    (["optim.epochs=0"], "optim.epochs"),
])
def test_bad_train_input_exits_2(capsys, tmp_path, overrides, message):
  code, _, err = run_cli(capsys, "train", "--workdir", str(tmp_path / "w"), "--no-progress", *overrides)
  assert code == 2 and message in err and err.count("\n") == 1


def test_malformed_data_file(capsys, tmp_path):
  bad = tmp_path / "bad.npz"
  bad.write_text("this is not an archive")
  code, _, err = run_cli(capsys, "train", "--workdir", str(tmp_path / "w"), "--no-progress",
                         "data.source=npz", f"data.path={bad}")
  assert code == 2 and "bad.npz" in err and "not a readable .npz" in err
  partial = tmp_path / "partial.npz"
  np.savez(partial, x_train=np.zeros((4, 8, 8, 1), np.uint8), y_train=np.zeros(4, np.int64))
  code, _, err = run_cli(capsys, "train", "--workdir", str(tmp_path / "w2"), "--no-progress",
                         "data.source=npz", f"data.path={partial}")
  assert code == 2 and "x_test" in err


def test_unknown_config_name_and_argparse_errors(capsys):
  code, _, err = run_cli(capsys, "train", "--config", "imagenet_huge")
  assert code == 2 and "--config" in err
  with pytest.raises(SystemExit) as info:
    cli.main(["evaluate"])  # --workdir is required
  assert info.value.code == 2


def test_console_script_end_to_end(tmp_path):
  """The installed `hyperlt` entry point: train a tiny run, evaluate it, reject bad input without a traceback."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  exe = [sys.executable, "-m", "hyperlt.cli"]
  workdir = tmp_path / "run"
  train = subprocess.run(exe + ["train", "--workdir", str(workdir), "--no-progress", "optim.epochs=2",
                                "model.widths=(4,8,16)", "optim.warmup_epochs=0"],
                         capture_output=True, text=True, env=env, timeout=300)
  assert train.returncode == 0, train.stderr
  assert "forward50" in train.stdout and "backward50" in train.stdout
  bad = subprocess.run(exe + ["evaluate", "--workdir", str(workdir), "--preference", "1,0,nan"],
                       capture_output=True, text=True, env=env, timeout=120)
  assert bad.returncode == 2
  assert "Traceback" not in bad.stderr and bad.stderr.strip().count("\n") == 0
