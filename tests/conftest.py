"""Shared fixtures. Training is the expensive part of the suite, so one embedded-default run is
trained once per session and shared by every test that needs a trained model."""

from __future__ import annotations

import pathlib

import pytest

from hyperlt import configs as config_lib
from hyperlt.training import loop as train
from hyperlt.workdir import run as run_lib
from tests import helpers

@pytest.fixture
def tiny_config():
  """A factory of seconds-fast digits configs: ``tiny_config(*overrides)`` is the embedded default with a
  1-block ResNet of narrow widths and 2 epochs, then the overrides."""
  return helpers.tiny_digits_config


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
