"""Training curves of a work dir: the records of ``metrics.jsonl`` as one figure (PNG, matplotlib's Agg renderer).

Four panels share the step axis:

* the scalarised training objective (STCH or sum over the T preference samples);
* each preference sample's loss, sample i being drawn near vertex i (named by its anchor), so a sample whose
  loss stalls while the others fall shows an expert that is not learning;
* each sample's training accuracy on its batch;
* the global gradient norm (log scale), where divergence shows first.

Records with an ``"event"`` key (``{"event": "restart", "at_step": N, ...}``) are not metrics: they are drawn as
vertical lines at ``at_step``, so a restarted run shows where it changed course.

``hyperlt plot`` writes the figure to ``WORKDIR/plots/curves.png`` by default (never over the work dir's own
files) and, with the ``tensorboard`` extra (tensorboardX), the same records as TensorBoard event files.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hyperlt import outputs
from hyperlt.errors import UserInputError, require

_DPI = 100
PLOTS_DIR = "plots"   # the default folder of figures inside a work dir
CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.jsonl"


def read_records(path: str | pathlib.Path) -> list[dict]:
  """The JSON records of a ``metrics.jsonl`` file; a line cut short by a kill is skipped."""
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise UserInputError(f"--workdir: {path} does not exist; train first (hyperlt train)") from None
  records = []
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def curves_figure(records: Sequence[dict], anchors: Sequence[str] = ()) -> Figure:
  """The four-panel figure of the step records (those with ``step`` and ``loss``) in ``records``."""
  steps = [r for r in records if "event" not in r and isinstance(r.get("step"), int) and "loss" in r]
  require(bool(steps), "metrics.jsonl: no logged training step yet (train.log_every_steps sets how often)")
  step = np.array([r["step"] for r in steps])
  fig = Figure(figsize=(10, 6.5), dpi=_DPI, layout="constrained")
  axes = fig.subplots(2, 2, sharex=True)
  axes[0, 0].plot(step, [r["loss"] for r in steps], color="black")
  axes[0, 0].set_title("objective")
  for panel, key, title in ((axes[0, 1], "sample_losses", "loss of each preference sample"),
                            (axes[1, 0], "sample_accuracy", "batch accuracy of each sample")):
    values = np.array([r.get(key, []) for r in steps], dtype=object)
    width = max((len(v) for v in values), default=0)
    for i in range(width):
      label = anchors[i] if i < len(anchors) else f"sample {i}"
      panel.plot(step, [v[i] if len(v) > i else np.nan for v in values], label=f"near {label}")
    panel.set_title(title)
    if width:
      panel.legend(fontsize="small")
  axes[1, 1].semilogy(step, [max(r.get("grad_norm", np.nan), 1e-12) for r in steps], color="tab:red")
  axes[1, 1].set_title("gradient norm")
  for ax in axes.flat:
    ax.grid(alpha=0.3)
    for event in events(records):
      ax.axvline(event["at_step"], color="grey", ls="--", lw=1, label=f"{event['event']} at step {event['at_step']}")
  if events(records):
    axes[0, 0].legend(fontsize="small")
  for ax in axes[1]:
    ax.set_xlabel("step")
  return fig


def events(records: Sequence[dict]) -> list[dict]:
  """The event records (a restart, ...) that name the step they happened at."""
  return [r for r in records if r.get("event") and isinstance(r.get("at_step"), int)]


def _anchors(workdir: pathlib.Path) -> tuple[str, ...]:
  """The run's anchors from its config.json (names the preference samples); none if it is not readable."""
  try:
    return tuple(json.loads((workdir / "config.json").read_text())["loss"]["anchors"])
  except (OSError, ValueError, KeyError, TypeError):
    return ()


def plot_curves(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
                anchors: Sequence[str] | None = None) -> pathlib.Path:
  """Writes the curves of ``workdir/metrics.jsonl`` to ``out`` (default ``workdir/plots/curves.png``, the
  folder created); returns the path. ``anchors`` name the samples (default: the run's loss.anchors)."""
  workdir = outputs.check_served_workdir(workdir)
  if out is None:
    out = workdir / PLOTS_DIR / CURVES_FILE
    outputs.check_output_folder(out.parent, "--out", workdir, files=(CURVES_FILE,))
    out.parent.mkdir(exist_ok=True)
  out = outputs.check_output_file(out, "--out", workdir)
  require(out.suffix.lower() == ".png", f"--out: expected a .png file name, got {out}")
  fig = curves_figure(read_records(workdir / METRICS_FILE), _anchors(workdir) if anchors is None else anchors)
  try:
    fig.savefig(out)
  except OSError as e:
    raise outputs.write_error(out, "--out", e) from None
  return out


def _scalars(record: dict, anchors: Sequence[str]) -> dict[str, float]:
  """A step record's numbers as TensorBoard tags: lists become one tag per entry (``sample_losses/forward``)."""
  tags = {}
  for key, value in record.items():
    if key == "step":
      continue
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      tags[key] = float(value)
    elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
      for i, v in enumerate(value):
        tags[f"{key}/{anchors[i] if i < len(anchors) else i}"] = float(v)
  return tags


def check_tensorboard(workdir: str | pathlib.Path, logdir: str | pathlib.Path):
  """The tensorboardX module, once ``logdir`` is known to be a folder it may write; UserInputError naming
  ``--tensorboard`` without the extra or for a bad folder (checked before any file is written)."""
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("--tensorboard: needs the tensorboard extra (tensorboardX); install it with: "
                         "pip install 'hyperlt[tensorboard]'") from None
  outputs.check_output_folder(logdir, "--tensorboard", outputs.check_served_workdir(workdir))
  return tensorboardX


def write_tensorboard(workdir: str | pathlib.Path, logdir: str | pathlib.Path) -> pathlib.Path:
  """Writes the step records of ``workdir/metrics.jsonl`` as TensorBoard scalars (and events as text) into
  ``logdir`` with tensorboardX (the ``tensorboard`` extra); returns ``logdir``."""
  tensorboardx = check_tensorboard(workdir, logdir)
  workdir, logdir = pathlib.Path(workdir), pathlib.Path(logdir)
  records = read_records(workdir / METRICS_FILE)
  anchors = _anchors(workdir)
  writer = tensorboardx.SummaryWriter(str(logdir))
  try:
    for record in records:
      if "event" not in record and isinstance(record.get("step"), int):
        for tag, value in _scalars(record, anchors).items():
          writer.add_scalar(tag, value, record["step"])
    for event in events(records):
      writer.add_text("events", json.dumps(event), event["at_step"])
  finally:
    writer.close()
  return logdir
