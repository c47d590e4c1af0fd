"""Properties of the sweep figures a reader relies on (hyperlt.analysis.plots): one colour scale across
the simplex panels, legends that list what is drawn, no 3-D view."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection, TriMesh
from matplotlib.collections import PolyCollection

from hyperlt import preference
from hyperlt.analysis import plots
from hyperlt.analysis.sweep import SweepResult

SETS = ("forward50", "forward25", "forward10", "forward5", "forward2", "uniform", "backward2", "backward5",
        "backward10", "backward25", "backward50")


def _result(duplicates: bool = False) -> SweepResult:
  """A synthetic 3-expert sweep whose test sets have different accuracy ranges; with ``duplicates`` the
  accuracies are rounded to few values, so several preferences share one point."""
  grid = preference.simplex_grid(3, 0.1)
  p = len(grid)
  rng = np.random.default_rng(0)
  acc = rng.uniform(0.5, 1.0, (p, len(SETS), 4))
  acc[:, 0] = 0.2 + 0.3 * acc[:, 0]           # forward50 spans 35-50%, others up to 100%
  if duplicates:                               # five preferences share the best point
    acc = np.minimum(np.round(acc * 4) / 4, 0.75)
    acc[:5] = 1.0
  return SweepResult(preferences=grid, anchors=("forward", "uniform", "backward"), class_names=("x", "y"),
                     set_names=SETS, set_suites=("standard",) * len(SETS), set_sizes=np.full(len(SETS), 10),
                     accuracy=acc, balanced_accuracy=acc[..., 0], ece=acc[..., 0] / 10, recall=np.full((p, 2), 0.5))


def _meshes(fig):
  return [c for ax in fig.axes for c in ax.collections if isinstance(c, (TriMesh, PolyCollection))]


def test_simplex_panels_share_one_colour_scale_by_default():
  result = _result()
  meshes = _meshes(plots.simplex_figure(result))
  assert len(meshes) == 3
  every = 100 * np.stack([result.column(s) for s in ("forward50", "uniform", "backward50")])
  assert len({(m.norm.vmin, m.norm.vmax) for m in meshes}) == 1
  assert (meshes[0].norm.vmin, meshes[0].norm.vmax) == pytest.approx((every.min(), every.max()))
  own = _meshes(plots.simplex_figure(result, shared_scale=False))
  assert len({(m.norm.vmin, m.norm.vmax) for m in own}) == 3     # each panel its own range


def _legend_vs_drawn(ax):
  """(legend texts, labels of the drawn artists that the legend can show)."""
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  drawn = [a.get_label() for a in [*ax.lines, *ax.collections] if not a.get_label().startswith("_")
           and a.get_visible() and len(a.get_offsets() if hasattr(a, "get_offsets") else a.get_xydata()) > 0]
  return sorted(legend), sorted(drawn)


@pytest.mark.parametrize("duplicates", [False, True])
def test_pareto_legend_lists_what_is_drawn(duplicates):
  result = _result(duplicates)
  ax = plots.pareto_figure(result).axes[0]
  legend, drawn = _legend_vs_drawn(ax)
  assert legend == drawn
  front = next(line for line in ax.lines if line.get_label().startswith("Pareto front"))
  points = len(set(zip(front.get_xdata(), front.get_ydata())))
  assert points == len(front.get_xdata())                 # one marker per distinct point
  if duplicates:                                          # five preferences stacked on one marker
    assert front.get_label() == "Pareto front (1 point, 5 preferences)"
  else:
    assert front.get_label() == f"Pareto front ({points} points)"


def test_anchors_figure_is_2d_with_a_legend_of_what_is_drawn():
  fig = plots.anchors_figure(_result(duplicates=True))
  assert all(ax.name == "rectilinear" for ax in fig.axes)
  ax = fig.axes[0]
  legend, drawn = _legend_vs_drawn(ax)
  assert legend == drawn
  ringed = next(c for c in ax.collections if c.get_label().startswith("Pareto front on all three"))
  assert isinstance(ringed, PathCollection)
  assert ringed.get_label() == "Pareto front on all three sets (1 point)"
  assert len(np.unique(ringed.get_offsets(), axis=0)) == len(ringed.get_offsets())
