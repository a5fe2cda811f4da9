"""The figures of a run's report (`m2m_tf.report`) and of the CIFAR study (`launch.cifar.report`).

Agg canvas, no pyplot; PNGs are written atomically. Each drawing function returns the values
read back from what it drew, for tests; classes go by training count, largest first.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import numpy as np

from data_prep.atomic import atomic_save

DPI = 110
# Confusion matrices with at most this many classes get their counts written in the cells.
ANNOTATE_MAX_CLASSES = 12


@dataclasses.dataclass
class Series:
  """One curve of a panel: y over x as a line, or as markers only (`points`; NaN y skipped)."""

  label: str
  x: Sequence[float]
  y: Sequence[float]
  color: Optional[object] = None
  points: bool = False
  lw: float = 1.2


@dataclasses.dataclass
class Panel:
  """One axes of `curves`: a title, a y-axis label and its series."""

  title: str
  series: List[Series]
  ylabel: str = ""


def figure(width: float, height: float, **kw) -> Figure:
  """A new figure on the Agg canvas (constrained layout unless `layout` is given)."""
  kw.setdefault("layout", "constrained")
  fig = Figure(figsize=(width, height), **kw)
  FigureCanvasAgg(fig)
  return fig


def save(fig: Figure, path: str) -> str:
  """Writes `fig` as a PNG to `path` atomically (temporary file, then rename); returns path."""
  atomic_save(lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"), path)
  return path


def tab10(i: int):
  """The i-th colour of matplotlib's tab10 cycle (modulo 10)."""
  return matplotlib.colormaps["tab10"](i % 10)


def count_order(class_counts) -> np.ndarray:
  """Class indices by training count, largest first, ties by index (as metrics.py orders)."""
  return np.argsort(-np.asarray(class_counts, np.float64), kind="stable")


def _floats(values) -> np.ndarray:
  """A list that may hold None (JSON's NaN) as float64 with NaN."""
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _draw_series(ax, s: Series):
  """Draws one series; returns its Line2D (markers only for `points`, NaN dropped)."""
  x, y = np.asarray(s.x, np.float64), _floats(s.y)
  if s.points:
    keep = ~np.isnan(y)
    return ax.plot(x[keep], y[keep], ls="none", marker="o", ms=4, label=s.label,
                   color=s.color)[0]
  return ax.plot(x, y, lw=s.lw, label=s.label, color=s.color)[0]


def curves(path: str, panels: Sequence[Panel], *, title: str = "",
           marks: Sequence[Tuple[float, str]] = (), xlabel: str = "epoch",
           legend_all: bool = True) -> Dict[str, dict]:
  """Panels side by side, with `marks` ((x, label) vertical lines) on each; writes `path`.

  Legends on every panel, or on the first only with `legend_all=False`. Returns
  {panel title: {series label: the drawn [n, 2] x/y array}, "marks": [x of each mark]}.
  """
  fig = figure(5 * len(panels), 3.8)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  drawn = {}
  for ax, panel in zip(axes, panels):
    lines = {s.label: _draw_series(ax, s) for s in panel.series}
    drawn[panel.title] = {k: line.get_xydata() for k, line in lines.items()}
    drawn["marks"] = [ax.axvline(x, color="0.35", ls=style, lw=1, label=label).get_xdata()[0]
                      for (x, label), style in zip(marks, ("--", ":", "-."))]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_title(panel.title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if legend_all or ax is axes[0]:
      ax.legend(fontsize=7 if legend_all else 8)
  if title:
    fig.suptitle(title)
  save(fig, path)
  return drawn


def _class_ticks(ax, names, counts, order, with_counts: bool, **kw) -> List[str]:
  """Class names (and N_k) as x tick labels in `order`; returns the labels."""
  labels = [f"{names[k]}\n{counts[k]}" if with_counts else str(names[k]) for k in order]
  ax.set_xticks(np.arange(len(order)), labels, **kw)
  return labels


def recall_bars(path: str, names: Sequence[str], counts: Sequence[int],
                groups: Sequence[Tuple[str, Sequence[Optional[float]], object]], *,
                title: str, ylabel: str = "test recall (%)") -> Dict[str, object]:
  """Grouped per-class bars, classes by training count (tick labels: name and N_k).

  `groups`: (label, one value per class index (None: no value), colour or None).
  Returns {"order": class order, "ticks": tick labels, label: drawn bar heights in order}.
  """
  order = count_order(counts)
  k = len(names)
  fig = figure(max(8, 1.1 * k) if k <= ANNOTATE_MAX_CLASSES else max(8, 0.3 * k + 2), 4)
  ax = fig.subplots()
  width = 0.8 / len(groups)
  drawn = {"order": order}
  for i, (label, values, color) in enumerate(groups):
    x = np.arange(len(names)) + (i - (len(groups) - 1) / 2) * width
    bars = ax.bar(x, _floats(values)[order], width, label=label, color=color)
    drawn[label] = np.array([b.get_height() for b in bars.patches])
  small = k <= ANNOTATE_MAX_CLASSES
  drawn["ticks"] = _class_ticks(ax, names, counts, order, True, fontsize=8 if small else 6,
                                rotation=0 if small else 90)
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8)
  ax.set_title(title)
  save(fig, path)
  return drawn


def cumulative_fp(path: str, names: Sequence[str], counts: Sequence[int],
                  series: Sequence[Tuple[str, Sequence[int], object, float]], *,
                  title: str = "Cumulative false positives") -> Dict[str, np.ndarray]:
  """The paper's Fig. 5: cumulative false positives over classes, largest class first.

  `series`: (label, `metrics.cumulative_false_positives` values (already in count order),
  colour or None, line width). Returns {label: drawn y values, "ticks": class names in order}.
  """
  order = count_order(counts)
  fig = figure(max(7, 0.3 * len(names)), 4)
  ax = fig.subplots()
  drawn = {}
  for label, values, color, lw in series:
    line = ax.plot(np.arange(len(names)), values, marker="o", lw=lw, label=label, color=color)[0]
    drawn[label] = np.asarray(line.get_ydata())
  drawn["ticks"] = _class_ticks(ax, names, counts, order, False, rotation=45, ha="right",
                                fontsize=None if len(names) <= ANNOTATE_MAX_CLASSES else 6)
  ax.set_xlabel("class (by training count, largest first)")
  ax.set_ylabel("cumulative false positives (test)")
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title(title)
  save(fig, path)
  return drawn


def confusion_matrix(path: str, cm, names: Sequence[str], counts: Sequence[int], *,
                     title: str = "Confusion matrix (test)") -> Dict[str, np.ndarray]:
  """The confusion matrix, rows (true) and columns (predicted) by training count, each row in
  percent of the class's examples (its diagonal is the class's recall); small ones show counts.

  Returns {"order": class order, "percent": the drawn [K, K] image, "counts": cm in order}.
  """
  order = count_order(counts)
  cm = np.asarray(cm, np.float64)[np.ix_(order, order)]
  rows = cm.sum(axis=1, keepdims=True)
  pct = np.divide(100 * cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
  k = len(names)
  fig = figure(max(5, 0.28 * k + 2), max(4.2, 0.28 * k + 1.5))
  ax = fig.subplots()
  im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
  fig.colorbar(im, ax=ax, label="% of the true class", shrink=0.8)
  if k <= ANNOTATE_MAX_CLASSES:
    for i, j in np.ndindex(k, k):
      ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
              color="white" if pct[i, j] > 60 else "black")
  ticks = [str(names[c]) for c in order]
  small = 8 if k <= ANNOTATE_MAX_CLASSES else 5
  ax.set_xticks(np.arange(k), ticks, rotation=90, fontsize=small)
  ax.set_yticks(np.arange(k), ticks, fontsize=small)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  save(fig, path)
  return {"order": order, "percent": np.asarray(im.get_array()), "counts": cm.astype(np.int64)}


def _show(ax, image: np.ndarray):
  """An image in [0, 1] (H, W, C); one channel is drawn in grey. Returns the drawn array."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    im = ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
  else:
    im = ax.imshow(image)
  ax.set_xticks([])
  ax.set_yticks([])
  return np.asarray(im.get_array())


def translation_grid(path: str, ex: dict, names: Sequence[str], gamma: float, *,
                     title: str) -> Dict[str, object]:
  """The paper's Fig. 6: seeds (top row) and their translations, one row per target class,
  each titled with g's probability of the target at the seed and at x* (accepted if >= gamma).

  `ex`: `m2m_tf.report.translate_examples`' dict. Returns {"seeds": drawn seed images,
  "translations": drawn [T, S, ...] images, "titles": [T][S] titles of the translations}.
  """
  n_t, n_s = len(ex["targets"]), len(ex["x0"])
  fig = figure(2.1 * n_s, 2.3 * (n_t + 1))
  axes = fig.subplots(n_t + 1, n_s, squeeze=False)
  seeds = [_show(axes[0][j], ex["x0"][j]) for j in range(n_s)]
  for j in range(n_s):
    axes[0][j].set_title(f"seed: {names[ex['major']]}", fontsize=8)
  drawn, titles = [], []
  for i, t in enumerate(ex["targets"]):
    drawn.append([_show(axes[i + 1][j], ex["x_star"][i, j]) for j in range(n_s)])
    titles.append([])
    for j in range(n_s):
      p0, p1 = ex["p_before"][i, j], ex["p_after"][i, j]
      ok = " (accepted)" if p1 >= gamma else ""
      titles[-1].append(f"-> {names[t]}{ok}\ng({names[t]}): {p0:.2f} -> {p1:.2f}")
      axes[i + 1][j].set_title(titles[-1][-1], fontsize=7)
  fig.suptitle(title, fontsize=9)
  save(fig, path)
  return {"seeds": np.stack(seeds), "translations": np.array(drawn), "titles": titles}

