"""Shared fixtures. Training is the expensive part of the suite, so one embedded-default run is
trained once per session and shared by every test that needs a trained model."""

from __future__ import annotations

import pathlib

import pytest

from hyperlt import configs as config_lib
from hyperlt.training import loop as train
from hyperlt.workdir import run as run_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg75.npz"


def _tiny_config(*overrides: str):
  config = config_lib.load("digits")
  config_lib.override(config, ["model.widths=(8,16,32)", "optim.epochs=2", "optim.warmup_epochs=0",
                               "train.progress=False", *overrides])
  return config_lib.validate(config)


@pytest.fixture
def tiny_config():
  """A factory of seconds-fast digits configs: ``tiny_config(*overrides)`` is the embedded default with a
  1-block ResNet of narrow widths and 2 epochs, then the overrides."""
  return _tiny_config


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory) -> pathlib.Path:
  """A work dir holding the embedded default (`hyperlt train` with no arguments), trained once."""
  workdir = tmp_path_factory.mktemp("digits_default")
  config = config_lib.load("digits")
  config.train.progress = False
  train.train(config, workdir, log=lambda _: None)
  return workdir


@pytest.fixture(scope="session")
def trained_run(trained_workdir) -> run_lib.Run:
  """The trained embedded default, restored with its data (parameters and batch statistics only)."""
  return run_lib.load(trained_workdir)
