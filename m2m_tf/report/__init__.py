"""A run's report, `RUN_DIR/figures/*.png` and `RUN_DIR/report.md`, from its results and history.

Written at the end of every run and by `python -m m2m_tf.report RUN_DIR`; the figures and what
they show are listed in docs/runs.md#report.
"""

import dataclasses
import glob
import math
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from m2m_tf import plots
from m2m_tf.data import pipeline
from data_prep.atomic import TMP_PREFIX, atomic_write_text, read_json
from m2m_tf.m2m.translation import translate
from m2m_tf.run_records import FIGURES_DIR, FLAGS_FILE, HISTORY_FILE, REPORT_FILE, RESULTS_FILE
from m2m_tf.run_records import flatten_record
from m2m_tf.training.methods import get_method

FIGURES = {"curves": "training_curves.png", "recall": "per_class_recall.png",
           "confusion": "confusion_matrix.png", "cumulative_fp": "cumulative_fp.png",
           "m2m_rates": "m2m_rates.png", "translations": "translations.png"}
# report.md's section of each figure.
TITLES = {"curves": "Training curves", "recall": "Per-class recall",
          "confusion": "Confusion matrix", "cumulative_fp": "Cumulative false positives",
          "m2m_rates": "M2m generation, candidate and acceptance rates",
          "translations": "M2m translations (seed -> x*)"}
M2M_RATES = (("m2m_gen_rate", "generation"), ("m2m_candidate_rate", "candidate"),
             ("m2m_accept_rate", "acceptance"))


@dataclasses.dataclass
class RunFiles:
  """A run folder's results.json, history.csv and flags.json (as {leaf name: value})."""

  run_dir: str
  results: dict
  history: pd.DataFrame
  flags: dict


@dataclasses.dataclass
class Models:
  """The translation grid's inputs: best f, g (f for M2m-Self), `M2mConfig`, `DatasetSplits`."""

  f: object
  g: object
  m2m: object
  data: object


@dataclasses.dataclass
class Written:
  """`write_report`'s output: report.md's path, {figure key: path}, {figure key: drawn values}."""

  report: str
  figures: Dict[str, str]
  drawn: Dict[str, dict]


def read_run(run_dir: str, results: Optional[dict] = None) -> RunFiles:
  """A run folder's files, `results` replacing results.json; FileNotFoundError without results."""
  results = results if results is not None else read_json(os.path.join(run_dir, RESULTS_FILE))
  if results is None:
    raise FileNotFoundError(f"{run_dir} has no results.json: the run is unfinished (run the same "
                            "command again to finish it; its report is written at the end).")
  path = os.path.join(run_dir, HISTORY_FILE)
  history = pd.read_csv(path) if os.path.exists(path) else pd.DataFrame({"epoch": []})
  flags = read_json(os.path.join(run_dir, FLAGS_FILE))
  if not results.get("class_names"):  # results of a run made before they were recorded
    results = dict(results, class_names=[str(k) for k in range(len(results["class_counts"]))])
  return RunFiles(run_dir, results, history, flatten_record(flags or {}))


def grid_models(trainer, data) -> Optional[Models]:
  """The grid's `Models` from an `M2mTrainer` holding the best f; None if the run has no grid."""
  if trainer.m2m_config is None or data.input_kind != "image" or data.train_source is not None:
    return None
  return Models(trainer.f, trainer.g if trainer.g is not None else trainer.f,
                trainer.m2m_config, data)


def deferred_epoch(run: RunFiles) -> Optional[int]:
  """The epoch (from 0) at which the run's second phase starts, None for one-phase runs."""
  f = run.flags
  try:
    deferred = get_method(f.get("method") or run.results.get("method")).deferred
  except ValueError:
    return None
  epoch = f.get("deferred_epoch")
  return int(epoch) if deferred and epoch is not None else None


def phase_marks(run: RunFiles) -> List[tuple]:
  """The phase switch as a vertical mark [(x, label)], x counting epochs from 1; [] if one-phase."""
  d = deferred_epoch(run)
  return [] if d is None else [(d + 0.5, f"phase 2 from epoch {d + 1}")]


def marks(run: RunFiles) -> List[tuple]:
  """The vertical marks of the training curves: the phase switch and the selected epoch."""
  best = run.results.get("best_epoch")
  selected = [(best + 1, f"selected epoch {best + 1}")] if best is not None and best >= 0 else []
  return phase_marks(run) + selected


def _column(h: pd.DataFrame, name: str) -> np.ndarray:
  """A history column as float64 (NaN where the epoch has no value)."""
  return pd.to_numeric(h[name], errors="coerce").to_numpy(np.float64)


def fig_curves(run: RunFiles, path: str) -> dict:
  """Loss, lr and bACC per epoch (`plots.curves`); test bACC as points where evaluated."""
  h = run.history
  x = h["epoch"].to_numpy(np.float64) + 1
  panels = [plots.Panel(title, [plots.Series(col, x, _column(h, col))], ylabel)
            for col, title, ylabel in (("loss", "training loss", "loss"),
                                       ("lr", "learning rate", "lr")) if col in h]
  bacc = [plots.Series(f"{split} bACC", x, _column(h, f"{split}_bacc"), points=split == "test")
          for split in ("val", "test") if f"{split}_bacc" in h]
  if bacc:
    panels.append(plots.Panel("balanced accuracy", bacc, "bACC (%)"))
  return plots.curves(path, panels, title=_title(run), marks=marks(run))


def fig_m2m_rates(run: RunFiles, path: str) -> dict:
  """M2m's generation, candidate and acceptance rates per epoch (M2mStatistics' columns)."""
  h = run.history
  x = h["epoch"].to_numpy(np.float64) + 1
  series = [plots.Series(label, x, _column(h, col)) for col, label in M2M_RATES if col in h]
  panel = plots.Panel("M2m rates per epoch", series, "rate")
  return plots.curves(path, [panel], title=_title(run), marks=phase_marks(run))


def fig_recall(run: RunFiles, path: str) -> dict:
  """Val and test recall per class (`plots.recall_bars`), classes by training count."""
  r = run.results
  groups = [(split, r[split]["per_class_recall"], None) for split in ("val", "test")
            if (r.get(split) or {}).get("per_class_recall")]
  return plots.recall_bars(path, r["class_names"], r["class_counts"], groups,
                           title=f"Per-class recall at the selected epoch; {_title(run)}",
                           ylabel="recall (%)")


def fig_confusion(run: RunFiles, path: str) -> dict:
  """The test confusion matrix (`plots.confusion_matrix`)."""
  r = run.results
  return plots.confusion_matrix(path, r["test"]["confusion_matrix"], r["class_names"],
                                r["class_counts"], title=f"Test confusion matrix; {_title(run)}")


def fig_cumulative_fp(run: RunFiles, path: str) -> dict:
  """The test set's cumulative false positives (`plots.cumulative_fp`)."""
  r = run.results
  return plots.cumulative_fp(path, r["class_names"], r["class_counts"],
                             [("test", r["test"]["cumulative_fp"], None, 1.8)],
                             title=f"Cumulative false positives; {_title(run)}")


def _title(run: RunFiles) -> str:
  """The figures' name of the run: dataset, loss-method, seed."""
  r = run.results
  return (f"{r.get('dataset', '?')} {r.get('loss', '?')}-{r.get('method', '?')}, "
          f"seed {r.get('seed', '?')}")


def _probability(g, x: np.ndarray, target: np.ndarray) -> np.ndarray:
  """g's softmax probability of class target[i] at x[i]."""
  probs = tf.nn.softmax(tf.cast(g(x, training=False), tf.float32)).numpy()
  return probs[np.arange(len(target)), target]


def translate_examples(g, f, x_train, y_train, class_counts, *, lam: float, step_size: float,
                       steps: int, start_noise: float, clip_range=(0.0, 1.0),
                       start_noise_mode: str = "official", n_seeds: int = 4, n_targets: int = 4,
                       seed: int = 0) -> dict:
  """`n_seeds` majority-class seeds translated towards the `n_targets` smallest classes.

  Returns {x0 [S, ...], major, targets [T], x_star [T, S, ...], p_before, p_after [T, S]}, the
  p's being g's probability of the target at the seed and at x*.
  """
  order = plots.count_order(class_counts)
  major = int(order[0])
  targets = [int(k) for k in order[::-1] if k != major][:n_targets]
  pool = np.flatnonzero(np.asarray(y_train) == major)
  pick = np.random.default_rng(seed).choice(pool, size=min(n_seeds, len(pool)), replace=False)
  x0 = pipeline.to_model_input(tf.constant(np.asarray(x_train[np.sort(pick)]))).numpy()
  x_rep = np.tile(x0, (len(targets),) + (1,) * (x0.ndim - 1))
  t_rep = np.repeat(targets, len(x0))
  lo, hi = clip_range if clip_range is not None else (None, None)
  # Traced once: eagerly the T gradient steps through two ResNet-32s take twice as long.
  run = tf.function(lambda x, ys, yt: translate(
      g, f, x, ys, yt, lam=lam, step_size=step_size, steps=steps, clip_min=lo, clip_max=hi,
      start_noise=start_noise, seed=tf.constant([seed, 0], tf.int64),
      start_noise_mode=start_noise_mode))
  xs = run(x_rep, np.full(len(x_rep), major), t_rep).numpy()
  if clip_range is not None:
    xs = np.clip(xs, lo, hi)
  shape = (len(targets), len(x0))
  return {"x0": x0, "major": major, "targets": targets,
          "x_star": xs.reshape(shape + x0.shape[1:]),
          "p_before": _probability(g, x_rep, t_rep).reshape(shape),
          "p_after": _probability(g, xs, t_rep).reshape(shape)}


def fig_translations(run: RunFiles, models: Models, path: str) -> dict:
  """Seeds -> x* with the run's g, best f and M2m settings; drawn values plus "examples"."""
  m, data = models.m2m, models.data
  ex = translate_examples(models.g, models.f, data.x_train, data.y_train, data.class_counts,
                          lam=m.lam, step_size=m.step_size, steps=m.steps,
                          start_noise=m.start_noise, clip_range=m.clip_range,
                          start_noise_mode=m.start_noise_mode)
  who = "f as g (M2m-Self)" if models.g is models.f else "g"
  best = run.results.get("best_epoch", -1) + 1
  title = (f"M2m translations with the run's {who} and best f (epoch {best}); {_title(run)}\n"
           f"(lambda {m.lam}, step {m.step_size}, T {m.steps}, start noise {m.start_noise}; "
           f"accepted if g >= {m.gamma})")
  drawn = plots.translation_grid(path, ex, run.results["class_names"], m.gamma, title=title)
  return dict(drawn, examples=ex)


def draw_figures(run: RunFiles, fig_dir: str, models: Optional[Models] = None) -> Dict[str, dict]:
  """Every figure the run has inputs for, under `fig_dir`; returns {figure key: drawn values}."""
  out, h, test = {}, run.history, run.results.get("test") or {}
  path = {k: os.path.join(fig_dir, name) for k, name in FIGURES.items()}
  if len(h):
    out["curves"] = fig_curves(run, path["curves"])
  if run.results.get("per_class_recall"):
    out["recall"] = fig_recall(run, path["recall"])
  if test.get("confusion_matrix"):
    out["confusion"] = fig_confusion(run, path["confusion"])
  if test.get("cumulative_fp"):
    out["cumulative_fp"] = fig_cumulative_fp(run, path["cumulative_fp"])
  if len(h) and any(col in h for col, _ in M2M_RATES):
    out["m2m_rates"] = fig_m2m_rates(run, path["m2m_rates"])
  if models is not None:
    out["translations"] = fig_translations(run, models, path["translations"])
  return out


def zero_recall_classes(results: dict) -> List[str]:
  """The names of the classes whose test recall at the selected epoch is 0."""
  recall = results.get("per_class_recall") or []
  return [results["class_names"][k] for k, v in enumerate(recall) if v == 0]


def _headline(run: RunFiles) -> List[str]:
  """report.md's numbers: test/val bACC and GM, the selected epoch, the zero-recall classes."""
  r, f = run.results, run.flags
  epochs = f.get("epochs") or len(run.history)
  zero = zero_recall_classes(r)
  lines = ["| split | bACC (%) | GM (%) |", "|---|---|---|"]
  lines += [f"| {name} | {_fmt(r.get(f'{split}_bacc'))} | {_fmt(r.get(f'{split}_gm'))} |"
            for split, name in (("test", "test"), ("val", "validation"))]
  best = r.get("best_epoch", -1)
  lines += ["", f"- Selected epoch: {best + 1} of {epochs}, the best validation bACC "
            f"(`best_epoch` {best} in results.json counts from 0).",
            f"- Classes with zero test recall: {len(zero)} of {len(r['class_names'])}"
            + (f": {', '.join(map(str, zero))}." if zero else ".")]
  return lines + [f"- Warning: {w}" for w in r.get("warnings") or []]


def _fmt(value) -> str:
  """A percentage with two decimals ("n/a" for None or NaN)."""
  return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def markdown(run: RunFiles, figures: Dict[str, str]) -> str:
  """report.md: what ran, the headline numbers, then every figure written (relative links)."""
  r = run.results
  d = deferred_epoch(run)
  phase = "" if d is None else f", phase 2 from epoch {d + 1}"
  label = f" ({r['data_label']})" if r.get("data_label") else ""
  lines = [f"# Run report: {os.path.basename(os.path.normpath(run.run_dir))}", "",
           f"{r.get('dataset')}{label}, {r.get('loss')}-{r.get('method')}, seed {r.get('seed')}"
           f"{phase}. Written at the end of the run, or by `python -m m2m_tf.report RUN_DIR`; "
           "the numbers are results.json's.", ""]
  lines += _headline(run)
  for key, path in figures.items():
    rel = os.path.relpath(path, run.run_dir)
    lines += ["", f"## {TITLES[key]}", "", f"![{os.path.splitext(FIGURES[key])[0]}]({rel})"]
  return "\n".join(lines) + "\n"


def write_report(run_dir: str, results: Optional[dict] = None,
                 models: Optional[Models] = None) -> Written:
  """Draws `run_dir/figures/` and writes `run_dir/report.md`, each file atomically.

  `results` stands for a results.json not yet written; `models` (`grid_models`) draws the
  translation grid (None: report.md still links an earlier grid).
  """
  run = read_run(run_dir, results)
  fig_dir = os.path.join(run_dir, FIGURES_DIR)
  for tmp in glob.glob(os.path.join(fig_dir, TMP_PREFIX + "*")):
    os.remove(tmp)  # a figure's write that a kill interrupted
  drawn = draw_figures(run, fig_dir, models)
  figures = {k: os.path.join(fig_dir, name) for k, name in FIGURES.items()}
  figures = {k: p for k, p in figures.items() if k in drawn or os.path.exists(p)}
  report = os.path.join(run_dir, REPORT_FILE)
  atomic_write_text(report, markdown(run, figures))
  return Written(report, figures, drawn)
