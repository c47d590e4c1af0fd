"""``hyperlt plot`` (hyperlt.analysis.curves): training curves from metrics.jsonl, events as markers, the
default output under WORKDIR/plots, and TensorBoard event files behind the optional extra."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from hyperlt import cli
from hyperlt.analysis import curves

ANCHORS = ["forward", "uniform", "backward"]


def _record(step: int) -> dict:
  return {"step": step, "epoch": 1, "loss": 3.0 / step, "sample_losses": [1.0 / step, 2.0 / step, 0.5],
          "sample_accuracy": [0.1 * step, 0.2, 0.3], "grad_norm": 10.0 / step, "images_per_s": 100.0}


@pytest.fixture
def workdir(tmp_path):
  """A work dir as training leaves it, with a restart event and a line cut short by a kill."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"loss": {"anchors": ANCHORS}}))
  lines = [json.dumps(_record(s)) for s in (1, 2, 3)]
  # An event is never a metric, even one that carries step-like keys.
  lines.append(json.dumps({"event": "restart", "at_step": 2, "step": 2, "loss": 1e6, "changed": {}}))
  lines += [json.dumps(_record(s)) for s in (4, 5)] + ['{"step": 6, "lo']
  (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  return workdir


def test_events_are_markers_not_metrics(workdir):
  records = curves.read_records(workdir / "metrics.jsonl")
  fig = curves.curves_figure(records, ANCHORS)
  objective = fig.axes[0]
  loss_line = objective.lines[0]
  assert list(loss_line.get_xdata()) == [1, 2, 3, 4, 5]
  assert max(loss_line.get_ydata()) == 3.0                      # the event's "loss" is not plotted
  for ax in fig.axes:
    markers = [l for l in ax.lines if l.get_label() == "restart at step 2"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [2, 2]
  assert "restart at step 2" in [t.get_text() for t in objective.get_legend().get_texts()]
  assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [f"near {a}" for a in ANCHORS]


def test_plot_writes_under_plots_and_never_over_the_workdir(workdir, capsys):
  before = {p.name: p.read_bytes() for p in workdir.iterdir()}
  assert cli.main(["plot", "--workdir", str(workdir)]) == 0
  out = workdir / "plots" / "curves.png"
  assert capsys.readouterr().out.strip() == f"Wrote {out}"
  image = mpimg.imread(out)
  assert image.shape[0] >= 400 and image[..., :3].std() > 0.05
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.name != "plots"} == before
  for bad, message in ((workdir / "metrics.jsonl", "is part of the work dir"),
                       (workdir / "plots", "is a folder"),
                       (workdir / "curves.pdf", "expected a .png file name")):
    assert cli.main(["plot", "--workdir", str(workdir), "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hyperlt: error: --out: ") and message in err and err.count("\n") == 1
  assert (workdir / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]
  assert cli.main(["plot", "--workdir", str(workdir / "missing")]) == 2
  assert "--workdir: " in capsys.readouterr().err


def _tfrecords(path):
  """The records of a TFRecord file (length, length CRC, data, data CRC), CRCs not checked."""
  data, records, at = path.read_bytes(), [], 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    records.append(data[at + 12:at + 12 + length])
    at += 12 + length + 4
  return records


def test_tensorboard_event_files(workdir, tmp_path, capsys):
  pytest.importorskip("tensorboardX")
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  logdir = tmp_path / "tb"
  assert cli.main(["plot", "--workdir", str(workdir), "--out", str(tmp_path / "c.png"),
                   "--tensorboard", str(logdir)]) == 0
  assert f"Wrote TensorBoard events to {logdir}" in capsys.readouterr().out
  (events_file,) = logdir.iterdir()
  scalars, texts = {}, []
  for raw in _tfrecords(events_file):
    event = event_pb2.Event.FromString(raw)
    for value in event.summary.value:
      if value.HasField("simple_value"):
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
      else:
        texts.append((event.step, value.tag))
  assert scalars["loss"] == [(s, pytest.approx(3.0 / s)) for s in (1, 2, 3, 4, 5)]
  assert scalars["sample_losses/backward"] == [(s, 0.5) for s in (1, 2, 3, 4, 5)]
  assert np.allclose([v for _, v in scalars["sample_accuracy/forward"]], [0.1, 0.2, 0.3, 0.4, 0.5])
  assert "epoch" in scalars and "grad_norm" in scalars
  assert [step for step, tag in texts if tag.startswith("events")] == [2]


def test_tensorboard_without_the_extra_fails_before_writing(workdir, tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)   # as if not installed
  assert cli.main(["plot", "--workdir", str(workdir), "--tensorboard", str(tmp_path / "tb")]) == 2
  assert "--tensorboard: needs the tensorboard extra" in capsys.readouterr().err
  assert not (workdir / "plots").exists() and not (tmp_path / "tb").exists()
