"""Training curves of a work dir: the records of ``metrics.jsonl`` as one figure (PNG, matplotlib's Agg renderer).

Four panels share the step axis:

* the scalarised training objective (STCH or sum over the T preference samples);
* each preference sample's loss, sample i being drawn near vertex i (named by its anchor), so a sample whose
  loss stalls while the others fall shows an expert that is not learning;
* each sample's training accuracy on its batch;
* the global gradient norm (log scale), where divergence shows first.

Records without a ``step`` (events such as a restart) are drawn as vertical lines, so a resumed or restarted
run shows where it changed course.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hyperlt.errors import UserInputError, require

_DPI = 100


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
  steps = [r for r in records if isinstance(r.get("step"), int) and "loss" in r]
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
    for event in (r for r in records if r.get("event") and isinstance(r.get("at_step"), int)):
      ax.axvline(event["at_step"], color="grey", ls="--", lw=1)
  for ax in axes[1]:
    ax.set_xlabel("step")
  return fig


def plot_curves(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
                anchors: Sequence[str] = ()) -> pathlib.Path:
  """Writes the curves of ``workdir/metrics.jsonl`` to ``out`` (default ``workdir/curves.png``); returns the path."""
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out) if out is not None else workdir / "curves.png"
  require(out.suffix.lower() == ".png", f"--out: expected a .png file name, got {out}")
  require(out.parent.is_dir(), f"--out: folder {out.parent} does not exist")
  fig = curves_figure(read_records(workdir / "metrics.jsonl"), anchors)
  fig.savefig(out)
  return out
