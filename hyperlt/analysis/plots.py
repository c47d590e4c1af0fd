"""Figures of a preference sweep (PNG, matplotlib's Agg renderer; pyplot's global state is not touched).

* ``simplex.png``: accuracy over the preference simplex (ternary heat map) on forward50, uniform and
  backward50. Each vertex is one expert alone, each point of the triangle a mixture of the three; the
  star marks the best preference on that test set. The panels share one colour scale (by default), so
  a colour means the same accuracy in each.
* ``pareto.png``: many-shot against few-shot accuracy on the uniform test set, one dot per preference,
  with the Pareto front (the preferences no other preference beats on both) drawn as a line; its legend
  counts the points drawn, not the preferences stacked on them.
* ``anchors.png``: the PRL paper's three-test-set view in 2-D: forward50 against backward50 accuracy, the
  colour giving uniform accuracy, the Pareto front over the three test sets (the preferences that no other
  beats on all three) ringed.

Colours follow the preference: from the first anchor (forward) to the last (backward), so the same
preference has the same colour in every figure.
"""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib import tri as mtri
from matplotlib.figure import Figure

from hyperlt.analysis import format as fmt
from hyperlt.analysis import metrics
from hyperlt.analysis.sweep import SweepResult

ANCHOR_TEST_SETS = ("forward50", "uniform", "backward50")
_CMAP_ACCURACY = "viridis"
_CMAP_PREFERENCE = "coolwarm"
_DPI = 100
# Ternary layout: expert 0 bottom left, expert 1 on top, expert 2 bottom right.
_TERNARY_VERTICES = np.array([[0.0, 0.0], [0.5, np.sqrt(3) / 2], [1.0, 0.0]])
_VERTEX_MARKERS = ("s", "^", "D", "v", "P", "X")


def _preference_colour(result: SweepResult) -> tuple[np.ndarray, str]:
  """A scalar per preference for colouring: last anchor's weight minus the first's, in [-1, 1]."""
  a = result.anchors
  return result.preferences[:, -1] - result.preferences[:, 0], f"weight of {a[-1]} − weight of {a[0]}"


def _points(n: int) -> str:
  return f"{n} point" + ("" if n == 1 else "s")


def _present_sets(result: SweepResult) -> list[str]:
  return [s for s in ANCHOR_TEST_SETS if s in result.set_names]


def simplex_figure(result: SweepResult, shared_scale: bool = True) -> Figure | None:
  """Ternary heat maps (T = 3) or accuracy-against-weight lines (T = 2); None for T > 3.

  With ``shared_scale`` the heat maps share one colour scale (the range over all panels) and one colour
  bar; otherwise each panel spans its own range (finer detail, colours not comparable across panels).
  """
  num_experts = result.preferences.shape[1]
  sets = _present_sets(result)
  if num_experts == 2:
    fig = Figure(figsize=(6.5, 4.2), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    weight = result.preferences[:, 1]
    order = np.argsort(weight)
    for name in sets:
      ax.plot(weight[order], 100 * result.column(name)[order], marker="o", ms=3, label=name)
    ax.set_xlabel(f"weight of {result.anchors[1]} (1 − weight of {result.anchors[0]})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy along the preference segment")
    ax.grid(alpha=0.3)
    ax.legend(title="test set")
    return fig
  if num_experts != 3:
    return None
  xy = result.preferences.astype(np.float64) @ _TERNARY_VERTICES
  triangulation = mtri.Triangulation(xy[:, 0], xy[:, 1])
  fig = Figure(figsize=(5.0 * len(sets) + 0.5, 4.9), dpi=_DPI, layout="constrained")
  axes = fig.subplots(1, len(sets), squeeze=False)[0]
  every = 100 * np.stack([result.column(name) for name in sets])
  limits = (float(np.nanmin(every)), float(np.nanmax(every))) if shared_scale else (None, None)
  for ax, name, acc in zip(axes, sets, every):
    mesh = ax.tripcolor(triangulation, acc, shading="gouraud", cmap=_CMAP_ACCURACY, vmin=limits[0],
                        vmax=limits[1])
    ax.plot(*np.vstack([_TERNARY_VERTICES, _TERNARY_VERTICES[:1]]).T, color="black", lw=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=5, color="black", alpha=0.35, linewidths=0, label="grid preference")
    best = int(np.nanargmax(acc))
    pref = fmt.preference(result.preferences[best], digits=2)
    ax.scatter(*xy[best], marker="*", s=260, color="red", edgecolors="white", linewidths=1, zorder=5,
               label=f"best: {pref} ({acc[best]:.1f}%)")
    for j, (vx, vy) in enumerate(_TERNARY_VERTICES):
      offset = (0, 0.08) if j == 1 else (-0.02, -0.08) if j == 0 else (0.02, -0.08)
      ha = "center" if j == 1 else "left" if j == 2 else "right"
      vertex = fmt.preference(np.eye(3)[j])
      ax.text(vx + offset[0], vy + offset[1], result.anchors[j], ha=ha, va="center", fontsize=11,
              fontweight="bold")
      ax.text(vx + offset[0], vy + offset[1] + (0.065 if j == 1 else -0.065), f"({vertex})", ha=ha,
              va="center", fontsize=8, color="dimgray")
    ax.set_title(f"{name} test set", fontsize=12)
    ax.set_xlim(-0.2, 1.2)
    ax.set_ylim(-0.34, np.sqrt(3) / 2 + 0.22)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="lower center", fontsize=9, frameon=False, ncols=2, markerscale=1.0)
    if not shared_scale:
      fig.colorbar(mesh, ax=ax, shrink=0.8, label="accuracy (%)")
  if shared_scale:
    fig.colorbar(mesh, ax=list(axes), shrink=0.8, label="accuracy (%)")
  fig.suptitle(f"Accuracy over the preference simplex ({result.num_preferences} preferences; a vertex is "
               "one expert alone, an inner point a mixture" + ("; one colour scale" if shared_scale else "") + ")",
               fontsize=11)
  return fig


def _experts_alone(ax, result: SweepResult, x: np.ndarray, y: np.ndarray) -> None:
  """A gold marker, one shape per expert, at each vertex preference (one expert alone) of the sweep."""
  for j, v in enumerate(result.vertex_indices()):
    if v is not None:
      ax.scatter(x[v], y[v], marker=_VERTEX_MARKERS[j % len(_VERTEX_MARKERS)], s=100, color="gold",
                 edgecolors="black", zorder=5, label=f"{result.anchors[j]} expert alone")


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left", fontsize=9)


def pareto_figure(result: SweepResult, test_set: str = "uniform") -> Figure | None:
  """Many-shot against few-shot accuracy with the Pareto front; None if a group has no class."""
  if test_set not in result.set_names:
    return None
  many, few = 100 * result.column(test_set, "many"), 100 * result.column(test_set, "few")
  if np.isnan(many).all() or np.isnan(few).all():
    return None
  colour, colour_label = _preference_colour(result)
  front = metrics.pareto_front(np.stack([many, few], axis=1))
  fig = Figure(figsize=(7.2, 5.4), dpi=_DPI, layout="constrained")
  ax = fig.add_subplot()
  dots = ax.scatter(many, few, c=colour, cmap=_CMAP_PREFERENCE, vmin=-1, vmax=1, s=22, alpha=0.85,
                    edgecolors="none", label="preference (grid point)")
  # Preferences with equal (many, few) accuracy share one marker: the legend counts the markers drawn.
  points = np.unique(np.stack([many[front], few[front]], axis=1), axis=0)
  shared = f", {int(front.sum())} preferences" if int(front.sum()) != len(points) else ""
  ax.plot(points[:, 0], points[:, 1], color="black", lw=1.5, marker="o", ms=8, mfc="none", mew=1.5,
          label=f"Pareto front ({_points(len(points))}{shared})")
  _experts_alone(ax, result, many, few)
  _label(ax, f"many-shot accuracy on the {test_set} test set (%)", f"few-shot accuracy on the {test_set} test set (%)",
         f"Head against tail accuracy over {result.num_preferences} preferences")
  fig.colorbar(dots, ax=ax, label=colour_label)
  return fig


def anchors_figure(result: SweepResult) -> Figure | None:
  """Forward50 against backward50 accuracy of every preference, coloured by uniform accuracy, with the
  preferences that no other beats on all three test sets ringed; None without the three sets."""
  sets = _present_sets(result)
  if len(sets) != 3:
    return None
  acc = np.stack([100 * result.column(s) for s in sets], axis=1)
  front = metrics.pareto_front(acc)
  fig = Figure(figsize=(7.4, 5.8), dpi=_DPI, layout="constrained")
  ax = fig.add_subplot()
  # Preferences that share a position are drawn best uniform accuracy last, so the visible colour is the best.
  order = np.argsort(acc[:, 1], kind="stable")
  dots = ax.scatter(acc[order, 0], acc[order, 2], c=acc[order, 1], cmap=_CMAP_ACCURACY, s=24, alpha=0.9,
                    edgecolors="none", label="preference (grid point)")
  ringed = np.unique(acc[front][:, [0, 2]], axis=0)
  ax.scatter(ringed[:, 0], ringed[:, 1], s=80, facecolors="none", edgecolors="black", linewidths=1.2,
             label=f"Pareto front on all three sets ({_points(len(ringed))})")
  _experts_alone(ax, result, acc[:, 0], acc[:, 2])
  _label(ax, f"{sets[0]} accuracy (%)", f"{sets[2]} accuracy (%)",
         f"Head-heavy against tail-heavy test set, {result.num_preferences} preferences")
  fig.colorbar(dots, ax=ax, label=f"{sets[1]} accuracy (%)")
  return fig


def plot_all(result: SweepResult, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Writes the figures that apply to this sweep into ``out_dir``; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  for name, make in (("simplex.png", simplex_figure), ("pareto.png", pareto_figure),
                     ("anchors.png", anchors_figure)):
    fig = make(result)
    if fig is not None:
      fig.savefig(out / name)
      written.append(out / name)
  return written
