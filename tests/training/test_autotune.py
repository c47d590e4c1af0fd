"""model.experts=auto chosen by measurement at the start of training, recorded in WORKDIR/forms.json."""

from __future__ import annotations

import json

import pytest

from hyperlt.models import timing
from hyperlt.training import autotune, loop
from tests import helpers


@pytest.fixture
def fake_timings(monkeypatch):
  """timing.time_variants replaced by fixed timings (vmap the fastest); records the variants it was asked."""
  calls = []

  def time_variants(model_config, variants, image_shape, batch_size, steps, **kwargs):
    calls.append(list(variants))
    return {name: (0.5 if name.startswith("vmap") else 1.0) for name in variants}

  monkeypatch.setattr(timing, "time_variants", time_variants)
  return calls


def _choose(config, workdir, batch=16, log=None):
  return autotune.model_config(config, (8, 8, 1), 5, batch, workdir, make_update=None, init_state=None,
                               log=log or (lambda _: None))


def test_the_fastest_is_chosen_recorded_and_reused(tmp_path, fake_timings):
  config = helpers.tiny_config("model.experts=auto")
  logged = []
  chosen = _choose(config, tmp_path, log=logged.append)
  assert (chosen.experts, chosen.conv) == ("vmap", "chunked")
  assert fake_timings == [["vmap/chunked", "unrolled/chunked"]]
  (record,) = json.loads((tmp_path / autotune.FORMS_FILE).read_text())["records"]
  assert record["measured"] and record["choice"] == {"experts": "vmap", "conv": "chunked"}
  assert record["seconds_per_step"] == {"vmap/chunked": 0.5, "unrolled/chunked": 1.0}
  assert record["key"]["batch_size"] == 16 and record["key"]["backend"] == "cpu"
  assert "model.experts=vmap" in logged[0] and "unrolled/chunked 1.000s" in logged[0]
  # A resume with the same key reads the record; another per-device batch is timed and recorded beside it.
  assert _choose(config, tmp_path).experts == "vmap" and len(fake_timings) == 1
  _choose(config, tmp_path, batch=8)
  assert len(fake_timings) == 2
  assert len(json.loads((tmp_path / autotune.FORMS_FILE).read_text())["records"]) == 2


def test_a_named_form_is_not_timed_and_says_why(tmp_path, fake_timings):
  chosen = _choose(helpers.tiny_config("model.experts=unrolled", "model.conv=xla"), tmp_path)
  assert (chosen.experts, chosen.conv) == ("unrolled", "xla") and not fake_timings
  (record,) = json.loads((tmp_path / autotune.FORMS_FILE).read_text())["records"]
  assert not record["measured"]
  assert "model.experts=unrolled names the form" in record["reason"] and "model.conv=xla" in record["reason"]


def test_training_runs_the_chosen_form(tmp_path, fake_timings):
  run = loop.train(helpers.tiny_config("model.experts=auto", "optim.epochs=1"), tmp_path,
                   data=helpers.tiny_data(), log=lambda _: None)
  assert run.model.experts == "vmap" and run.config.model.experts == "auto"
  assert json.loads((tmp_path / autotune.FORMS_FILE).read_text())["records"][0]["measured"]
