r"""Table and figures of the CIFAR-10-LT full-schedule runs (`python -m launch.cifar.full`).

  python -m launch.cifar.report                  # table + every figure whose inputs exist
  python -m launch.cifar.report --skip_figures   # table only (no TensorFlow, seconds)
  python -m launch.cifar.report --embedding=tsne # t-SNE instead of PCA for Fig. 4

Reads whatever run folders exist under --root (finished or not) and writes

  <results_dir>/cifar10_jpeg_lt.csv, .md   one row per row of launch.cifar.full.ROWS, and
                                           M2m's paired test-set comparisons (cifar_verdicts)
  <results_dir>/cifar10_jpeg_lt_predictions.npz   the finished rows' test predictions
  <results_dir>/figures/cifar_*.png        each figure only when its inputs exist:
    cifar_fig4_embedding.png        2-D embedding of f's penultimate features on the test set
                                    (finished ERM, DRS, M2m), coloured by class
    cifar_fig5_cumulative_fp.png    cumulative false positives over classes by training count
    cifar_fig6_translations.png     majority seeds translated towards minority classes
                                    (official g, the best f available)
    cifar_per_class_recall.png      per-class test recall of the finished rows
    cifar_training_curves.png       loss, val bACC (and M2m acceptance rate) per epoch
  drawn by `m2m_tf.plots`, the code that draws every run's report (`m2m_tf.report`).

Unfinished rows show their progress and their latest validation bACC: the test
metrics of an epoch that was not selected on validation are never reported.
"""

import argparse
import collections
import dataclasses
import functools
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from data_prep import registry
from data_prep.atomic import atomic_write_text, read_json
from launch import selection_ties
from launch import tables
from launch.cifar import full as cifar_full
from launch.cifar import seeds
from launch.cifar import verdicts as cifar_verdicts
from m2m_tf import plots
from m2m_tf import run_records as ckpt_lib
from m2m_tf.markdown import markdown_table

DATASET = "cifar10_jpeg_lt"
TORCH_CSV = "torch_reference_cifar10_jpeg_lt.csv"  # launch.torch_reference's table
IMBALANCE_RATIO = 100
DEFAULT_G = "../shared/pretrained/official_erm_resnet32_cifar10lt_r100.npz"
# Fallback names (CIFAR-10's index order) for the recall columns before any run has finished.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# The paper's CIFAR-10-LT (ratio 100, lossless PNG data), ResNet-32: launch/tables.py PAPER.
PAPER = tables.PAPER["cifar10_lt"]
# Fig. 4 compares these stages' f (the paper's Fig. 4: ERM, DRS, M2m).
EMBEDDING_STAGES = ("erm", "drs", "m2m")
FIGURES = {"embedding": "cifar_fig4_embedding.png", "cumulative_fp": "cifar_fig5_cumulative_fp.png",
           "translations": "cifar_fig6_translations.png",
           "recall": "cifar_per_class_recall.png", "curves": "cifar_training_curves.png"}


@dataclasses.dataclass
class Run:
  """What a stage's run folder holds (all fields empty for a stage not started)."""

  stage: str
  loss: str
  method: str
  run_dir: str
  seed: int = 0
  flags: Optional[dict] = None
  phase1_flags: Optional[dict] = None  # a branched run's: its source's flags.json
  results: Optional[dict] = None
  history: Optional[pd.DataFrame] = None
  epochs_done: int = 0
  epochs_total: int = 200
  hours: Optional[float] = None
  machines: Dict[str, int] = dataclasses.field(default_factory=dict)  # own epochs per machine

  @property
  def label(self) -> str:
    """The table's name of the stage (e.g. "ERM-M2m")."""
    return cifar_full.ROW_SPECS[self.stage][0] if self.stage in cifar_full.ROW_SPECS else self.stage

  @property
  def key(self) -> str:
    """The run's unique name, `<stage>_s<seed>` (its folder's)."""
    return f"{self.stage}_s{self.seed}"

  @property
  def finished(self) -> bool:
    """Whether the run wrote results.json (its last file)."""
    return self.results is not None

  @property
  def weights(self) -> Optional[str]:
    """f's best-validation weights, if written."""
    path = os.path.join(self.run_dir, "best_f.weights.h5")
    return path if os.path.exists(path) else None


def _history(run_dir: str, record: Optional[dict]) -> Optional[pd.DataFrame]:
  """history.csv, else the history rows of the newest commit record."""
  path = os.path.join(run_dir, "history.csv")
  if os.path.exists(path):
    try:
      return pd.read_csv(path)
    except (pd.errors.EmptyDataError, ValueError):
      pass
  rows = (record or {}).get("history")
  return pd.DataFrame(rows) if rows else None


def _wall_hours(results, record, flags) -> Optional[float]:
  """This run's own training time: the sum of its epoch times.

  A finished run stores every epoch's time in results.json (`epoch_seconds`), an
  unfinished one in its newest checkpoint record. A branched run's lists also
  hold its parent's epoch times; those are left out (they are the parent's row).
  Old results without `epoch_seconds` fall back to `seconds` (last invocation).
  """
  source, first = _epoch_lists(results, record, flags)
  seconds = [s for s in source.get("epoch_seconds", [])[first:] if s]
  if seconds:
    return sum(seconds) / 3600
  return results.get("seconds", 0.0) / 3600 if results else None


def read_run(root: str, stage) -> Run:
  """The `Run` of one `cifar_full.Stage` under `root` (`<root>/<stage>_s<seed>`)."""
  run = Run(stage.name, stage.loss, stage.method, os.path.join(root, stage.key), stage.seed)
  if not os.path.isdir(run.run_dir):
    return run
  flags = read_json(os.path.join(run.run_dir, "flags.json"))
  # As {leaf name: value}, whether the record is nested by section or of the older flat form.
  run.flags = None if flags is None else ckpt_lib.flatten_record(flags)
  if run.flags and run.flags.get("init_from"):
    source = read_json(os.path.join(_source_dir(root, run.flags["init_from"]), "flags.json"))
    run.phase1_flags = None if source is None else ckpt_lib.flatten_record(source)
  run.results = read_json(os.path.join(run.run_dir, "results.json"))
  record = ckpt_lib.newest_record(os.path.join(run.run_dir, ckpt_lib.CKPT_DIR))
  run.history = _history(run.run_dir, record)
  run.epochs_total = int((run.flags or {}).get("epochs") or 200)
  if run.finished:
    run.epochs_done = run.epochs_total
  elif record is not None:
    run.epochs_done = int(record.get("epochs_done", 0))
  elif run.history is not None and len(run.history):
    run.epochs_done = int(run.history["epoch"].max()) + 1
  run.hours = _wall_hours(run.results, record, run.flags)
  run.machines = _machines(run.results, record, run.flags)
  return run


def _epoch_lists(results, record, flags) -> Tuple[dict, int]:
  """(where a run's per-epoch lists are, its first own epoch): results.json once finished
  (older ones lack the lists), else its newest commit record; a branched run's lists also hold
  its source's epochs, before `init_epoch`."""
  source = results if results and "epoch_seconds" in results else record
  return source or {}, int((flags or {}).get("init_epoch") or 0)


def _machines(results, record, flags) -> Dict[str, int]:
  """How many of the run's own epochs (after its branch point) ran on each machine."""
  source, first = _epoch_lists(results, record, flags)
  names = ckpt_lib.epoch_machines(source)[first:]
  return dict(collections.Counter(m or "not recorded" for m in names))


def machines_text(runs: Sequence[Run]) -> str:
  """Where each row's own epochs ran (a row resumed on another CPU changes speed there)."""
  parts = [f"{r.label}: " + ", ".join(f"{m} ({n})" for m, n in r.machines.items())
           for r in runs if r.machines]
  return "; ".join(parts) if parts else "none yet"


def _source_dir(root: str, init_from: str) -> str:
  """A branched run's source folder: its name under `root` (the plan's runs live together, and
  `init_from` is relative to where the launcher ran), else `init_from` as written."""
  here = os.path.join(root, os.path.basename(os.path.normpath(init_from)))
  return here if os.path.isdir(here) else init_from


def read_runs(root: str) -> List[Run]:
  """One `Run` per row and seed of `launch.cifar.full.ROWS`: rows in the plan's order of their
  first seed, each row's seeds in order."""
  order = list(dict.fromkeys(stage.name for stage in cifar_full.ROWS))
  stages = sorted(cifar_full.ROWS, key=lambda s: (order.index(s.name), s.seed))
  return [read_run(root, stage) for stage in stages]


def phase1_hours(root: str) -> Dict[str, tuple]:
  """(hours, epochs) each phase-1 run of the plan spent on its first `BRANCH_EPOCH` epochs (the
  rows branched from it share them) or on as many as it has run, for the runs that have any."""
  out = {}
  for stage in cifar_full.PHASE1:
    rec = ckpt_lib.newest_record(os.path.join(root, stage.key, ckpt_lib.CKPT_DIR))
    seconds = [s for s in (rec or {}).get("epoch_seconds", [])[:cifar_full.BRANCH_EPOCH] if s]
    if seconds:
      out[stage.key] = (sum(seconds) / 3600, len(seconds))
  return out


def class_names(runs: Sequence[Run]) -> List[str]:
  """The class names of the first finished run, else CIFAR-10's."""
  for run in runs:
    if run.finished and run.results.get("class_names"):
      return list(run.results["class_names"])
  return list(CIFAR10_CLASSES)


def _latest(history: Optional[pd.DataFrame], column: str) -> float:
  if history is None or column not in history or not history[column].notna().any():
    return math.nan
  return float(history[column].dropna().iloc[-1])


def last_tie(run: Run) -> dict:
  """A finished run's epoch and test bACC / GM under the official code's tie rule (the last
  epoch with the best validation bACC; ours keeps the first): NaN when unfinished."""
  h = run.history
  if not run.finished or h is None or "val_bacc" not in h or not h["val_bacc"].notna().any():
    return {"best_epoch_last_tie": math.nan, "test_bacc_last_tie": math.nan,
            "test_gm_last_tie": math.nan}
  h = h.sort_values("epoch").reset_index(drop=True)
  _, last = selection_ties.tie_epochs(h["val_bacc"])
  return {"best_epoch_last_tie": int(h["epoch"][last]),
          "test_bacc_last_tie": float(h["test_bacc"][last]) if "test_bacc" in h else math.nan,
          "test_gm_last_tie": float(h["test_gm"][last]) if "test_gm" in h else math.nan}


def posthoc(run: Run) -> dict:
  """A finished run's post-hoc logit adjustment (its posthoc_la.json, written by
  `python -m m2m_tf.evaluate --checkpoint=RUN --posthoc_tau=select`): tau chosen on validation
  bACC, and the adjusted test bACC / GM; NaN where there is none."""
  p = read_json(os.path.join(run.run_dir, "posthoc_la.json")) if run.finished else None
  if p is None:
    return {"posthoc_tau": math.nan, "posthoc_test_bacc": math.nan, "posthoc_test_gm": math.nan}
  return {"posthoc_tau": p["tau"], "posthoc_test_bacc": p["test_bacc"],
          "posthoc_test_gm": p["test_gm"]}


def table_row(run: Run, names: Sequence[str]) -> dict:
  """The CSV row of one stage: progress, test metrics (finished only), recall, paper."""
  r = run.results or {}
  if run.finished:
    status = "done"
  elif run.flags is None and run.history is None:
    status = "not started"
  else:
    status = f"{run.epochs_done} of {run.epochs_total} epochs"
  recall = r.get("per_class_recall") or [None] * len(names)
  row = {"stage": run.stage, "method": run.label, "loss": run.loss,
         "rebalancing": "none" if run.method == "erm" else run.method, "seed": run.seed,
         "epochs": f"{run.epochs_done}/{run.epochs_total}", "status": status,
         "test_bacc": r.get("test_bacc", math.nan), "test_gm": r.get("test_gm", math.nan),
         # Unfinished: the latest epoch's validation bACC (no test numbers of an unselected epoch).
         "val_bacc": r["val_bacc"] if run.finished else _latest(run.history, "val_bacc"),
         "best_epoch": r.get("best_epoch", math.nan), **last_tie(run), **posthoc(run)}
  for name, value in zip(names, recall):
    row[f"recall_{name}"] = math.nan if value is None else value
  paper = PAPER.get(run.stage, (math.nan, math.nan))
  row.update({"wall_hours": math.nan if run.hours is None else run.hours,
              "paper_bacc": paper[0], "paper_gm": paper[1]})
  return row


def table(runs: Sequence[Run]) -> pd.DataFrame:
  """The report's table: one row per stage, in the plan's order."""
  names = class_names(runs)
  return pd.DataFrame([table_row(run, names) for run in runs])


def _fmt(v, digits: int = 1) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  return f"{v:.{digits}f}"


def recipe_text(runs: Sequence[Run]) -> str:
  """The training recipe, read from the first run's flags.json (the plan's values if none)."""
  f = next((r.flags for r in runs if r.flags), None) or {
      "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "warmup_epochs": 5,
      "lr_milestones": [160, 180], "lr_factors": [0.01, 0.01], "weight_decay": 2e-4,
      "deferred_epoch": cifar_full.BRANCH_EPOCH}
  steps = ", ".join(f"x{fac:g} at {m}" for m, fac in zip(f["lr_milestones"], f["lr_factors"]))
  seeds_run = sorted({r.seed for r in runs if r.flags}) or [0]
  return (f"ResNet-32, seeds {', '.join(map(str, seeds_run))}, {f['epochs']} epochs, batch "
          f"{f['batch_size']}, SGD with momentum "
          f"{f['momentum']:g}, lr {f['lr']:g} with {f['warmup_epochs']} warm-up epochs, {steps}, "
          f"weight decay {f['weight_decay']:g}; momentum form: {momentum_text(runs)}; every "
          "row branches from its seed's ERM (LDAM) shared phase-1 run after "
          f"{cifar_full.BRANCH_EPOCH} epochs, and "
          f"DRS, DRW and M2m act from epoch {f['deferred_epoch']}. Test metrics are those of the "
          "epoch with the best validation bACC; GM replaces zero recalls by 0.001.")


# Runs recorded before the field existed ran Keras' form (docs/method.md, difference 9).
FORMS = tables.MOMENTUM_FORMS


def _forms(run: Run) -> tuple:
  """(phase 1's momentum form, the run's own): a branched run's phase 1 is its source's."""
  own = run.flags.get("momentum_form") or "keras"
  if not run.flags.get("init_from"):
    return own, own
  return (run.phase1_flags or {}).get("momentum_form") or "keras", own


def momentum_text(runs: Sequence[Run]) -> str:
  """Which momentum form the rows' epochs ran in (one phrase when all rows agree)."""
  pairs = {}
  for run in runs:
    if run.flags:
      pairs.setdefault(_forms(run), []).append(run.label)
  if not pairs:
    pairs[("keras", cifar_full.ROWS_MOMENTUM_FORM)] = []
  parts = []
  for (early, late), labels in pairs.items():
    text = FORMS[late] if early == late else (
        f"{FORMS[early]} in the shared first {cifar_full.BRANCH_EPOCH} epochs, {FORMS[late]} "
        f"from epoch {cifar_full.BRANCH_EPOCH + 1} (phase 1's only lr changes are the "
        "warm-up's, docs/method.md difference 9)")
    parts.append(text if len(pairs) == 1 else f"{', '.join(labels)}: {text}")
  return "; ".join(parts)


def _start_noise(runs: Sequence[Run] = ()) -> float:
  """The random start's radius: a run's flags.json value, else M2mConfig's default.

  main.py's --start_noise is not in M2M_FLAGS, so the runs use its default; it is
  read from flags.json first so that a table-only report needs no TensorFlow.
  """
  for run in sorted(runs, key=lambda r: r.method != "m2m"):
    if run.flags and "start_noise" in run.flags:
      return float(run.flags["start_noise"])
  from m2m_tf.m2m.generation import M2mConfig  # lazy: TensorFlow; table-only reports run without
  return M2mConfig().start_noise


def m2m_text(runs: Sequence[Run] = ()) -> str:
  """The M2m hyper-parameters of the M2m rows (launch.cifar.full.M2M_FLAGS)."""
  m = cifar_full.M2M_FLAGS
  return (f"beta {m['beta']}, lambda {m['lam']}, gamma {m['gamma']}, step size "
          f"{m['step_size']}, T = {m['steps']}, random start of L2 radius "
          f"{_start_noise(runs)} (the official code's CIFAR-10 values)")


def _main_row(r: pd.Series) -> list:
  """The cells of one stage in the main table (unfinished: the latest val bACC, marked)."""
  done = r["status"] == "done"
  val = _fmt(r["val_bacc"]) + ("" if done or math.isnan(r["val_bacc"]) else " (latest)")
  best = "" if math.isnan(r["best_epoch"]) else str(int(r["best_epoch"]))
  tie = "" if math.isnan(r["best_epoch_last_tie"]) else (
      "same epoch" if r["best_epoch_last_tie"] == r["best_epoch"] else
      f"{int(r['best_epoch_last_tie'])}: {_fmt(r['test_bacc_last_tie'])} / "
      f"{_fmt(r['test_gm_last_tie'])}")
  adjusted = "" if math.isnan(r["posthoc_tau"]) else (
      f"{_fmt(r['posthoc_test_bacc'])} / {_fmt(r['posthoc_test_gm'])} ({r['posthoc_tau']:g})")
  return [r["method"], r["loss"], r["rebalancing"], r["seed"], r["epochs"], r["status"],
          _fmt(r["test_bacc"]), _fmt(r["test_gm"]), adjusted, val, best, tie,
          f"{_fmt(r['paper_bacc'])} / {_fmt(r['paper_gm'])}", _fmt(r["wall_hours"])]


def _main_table(df: pd.DataFrame) -> List[str]:
  """The table of every stage: progress, test metrics, paper, wall hours."""
  header = ["method", "loss", "rebalancing", "seed", "epochs", "status", "test bACC", "test GM",
            "post-hoc LA: test bACC / GM (tau)", "val bACC", "best epoch",
            "last tie: epoch: bACC / GM", "paper bACC / GM", "wall h"]
  return [markdown_table(header, [_main_row(r) for _, r in df.iterrows()])]


def _recall_table(df: pd.DataFrame) -> List[str]:
  """Per-class test recall of each row, averaged over its finished seeds."""
  rec = seeds.recall_over_seeds(df)
  if rec.empty:
    return ["Per-class test recall: no finished run yet."]
  cols = [c for c in rec.columns if c.startswith("recall_")]
  header = ["method", "seeds"] + [c[len("recall_"):] for c in cols]
  body = [[r["method"], int(r["seeds"])] + [_fmt(r[c]) for c in cols] for _, r in rec.iterrows()]
  return ["Per-class test recall (%), each row's mean over its finished seeds, classes in index "
          "order (largest first):", "", markdown_table(header, body)]


def verdicts(runs: Sequence[Run], results_dir: str, df: pd.DataFrame) -> List[str]:
  """M2m's paired comparisons: over seeds (`seeds.seed_verdicts`), then each seed's bootstrap
  over test images from the stored predictions (seeds with a finished run)."""
  labels = {r.stage: r.label for r in runs}
  lines = seeds.seed_verdict_lines(seeds.seed_verdicts(df), labels)
  y, preds, stale = cifar_verdicts.read_predictions(
      runs, os.path.join(results_dir, cifar_verdicts.PREDICTIONS))
  for seed in sorted({r.seed for r in runs if r.finished}):
    mine = [r for r in runs if r.seed == seed]
    lines += [""] + cifar_verdicts.verdict_lines(
        y, {r.stage: preds[r.key] for r in mine if r.key in preds},
        [r.stage for r in mine if r.key in stale], len(class_names(runs)),
        {r.stage: r.label for r in mine}, seed, [r.stage for r in mine if r.finished])
  return lines


def markdown(df: pd.DataFrame, runs: Sequence[Run], root: str,
             verdict: Sequence[str] = (), summary: Optional[pd.DataFrame] = None) -> str:
  """The report's Markdown: data caveat, recipe, g, M2m values, the tables, provenance."""
  summary = seeds.summary(df) if summary is None else summary
  lines = [
      "# CIFAR-10-LT (imbalance ratio 100), ResNet-32, the paper's 200-epoch schedule", "",
      "**JPEG substitute (CIFAR-10 re-encoded as JPEG; not comparable to the paper to the "
      "decimal).**", "",
      f"Made by `python -m launch.cifar.report` from the run folders under `{root}/` "
      "(trained by `python -m launch.cifar.full`).", "",
      f"- Recipe: {recipe_text(runs)}",
      "- g for the M2m rows: the official pre-trained ResNet-32 "
      f"(`{os.path.basename(DEFAULT_G)}`), independent of f; 66.2% bACC on the JPEG test "
      "split (`results/official_g_cifar10_jpeg.md`).",
      f"- M2m hyper-parameters: {m2m_text(runs)}. There was no hyper-parameter grid.",
      "- Paper: the M2m paper's Table 2 (lossless CIFAR-10-LT, ratio 100, ResNet-32), the mean "
      "of its 3 seeds; its spread is not in our reference copy, so it is not shown.",
      "- Seeds: each seed has its own phase 1 (initialisation and data order); the long-tailed "
      "subset is the official one for every seed, as in the paper. PyTorch reference: "
      "`python -m launch.torch_reference` on the same data from the same kind of start "
      f"(`results/{TORCH_CSV[:-4]}.md`, docs/torch_reference.md).",
      "- Post-hoc LA: each finished row's logits minus tau log(prior) at evaluation (Menon et "
      "al., ICLR 2021), tau chosen on validation bACC from 0, 0.25, ..., 2 "
      "(`python -m m2m_tf.evaluate --checkpoint=RUN --posthoc_tau=select`); a tau of 2 is the "
      "grid's edge.",
      "- Last tie: on a tie in validation bACC our runs keep the first epoch; the official code "
      "keeps the last. The column gives that epoch's test bACC / GM where it differs "
      "(`results/selection_ties.md` counts the same for the text tables).",
      "- Unfinished rows show their progress and the latest epoch's validation bACC, no test "
      "numbers. Wall hours: this row's own epochs after the branch point, else results.json's "
      f"`seconds`; {_phase1_text(root)}.",
      "- Machines of each row's own epochs (epoch counts; a run resumed on another CPU runs at "
      f"its speed there, docs/platform.md): {machines_text(runs)}.", ""]
  lines += (["Each row over the seeds (test bACC and GM: mean ± sample std over the finished "
             "seeds):", ""] + seeds.summary_markdown(summary, df)
            + ["", "Each run:", ""] + _main_table(df) + [""] + _recall_table(df))
  if verdict:
    lines += [""] + list(verdict)
  return "\n".join(lines) + "\n"


def _phase1_text(root: str) -> str:
  hours = phase1_hours(root)
  if not hours:
    return "no shared phase-1 run has started"
  parts = []
  for name, (h, epochs) in hours.items():
    so_far = "" if epochs >= cifar_full.BRANCH_EPOCH else f" so far ({epochs} of them)"
    stage = cifar_full.STAGES[name]
    parts.append(f"{stage.label}'s (seed {stage.seed}) took {h:.1f} h{so_far}")
  return f"of the shared first {cifar_full.BRANCH_EPOCH} epochs, " + ", ".join(parts)


def write_table(runs: Sequence[Run], results_dir: str, root: str) -> List[str]:
  """Writes `<results_dir>/cifar10_jpeg_lt.csv` (one line per run), `cifar10_jpeg_lt_seeds.csv`
  (one per row, over seeds) and `cifar10_jpeg_lt.md`; returns their paths."""
  df = table(runs)
  summary = seeds.summary(df, seeds.torch_reference(os.path.join(results_dir, TORCH_CSV)))
  os.makedirs(results_dir, exist_ok=True)
  paths = [os.path.join(results_dir, f"{DATASET}{suffix}") for suffix in
           (".csv", "_seeds.csv", ".md")]
  atomic_write_text(paths[0], df.to_csv(index=False, float_format="%.4f"))
  atomic_write_text(paths[1], summary.to_csv(index=False, float_format="%.4f"))
  atomic_write_text(paths[2], markdown(df, runs, root, verdicts(runs, results_dir, df), summary))
  return paths


# --- figures -----------------------------------------------------------------


def _color(run: Run):
  """One colour per row in every figure, by its place in the plan."""
  names = list(dict.fromkeys(stage.name for stage in cifar_full.ROWS))
  return plots.tab10(names.index(run.stage) if run.stage in names else 9)


def fig_training_curves(runs: Sequence[Run], path: str) -> Optional[str]:
  """Loss, val bACC and (M2m rows) acceptance rate per epoch of every run with a history."""
  runs = [r for r in runs if r.history is not None and len(r.history)]
  if not runs:
    return None
  m2m = [r for r in runs if "m2m_accept_rate" in r.history]
  panels = [("loss", "training loss", runs), ("val_bacc", "val bACC (%)", runs)]
  if m2m:
    panels.append(("m2m_accept_rate", "M2m acceptance rate", m2m))

  def series(col, rows):
    """One line per run that has the column (unfinished runs tagged with their progress)."""
    out = []
    for r in rows:
      if col in r.history:
        tag = "" if r.finished else f" ({r.epochs_done}/{r.epochs_total})"
        out.append(plots.Series(r.label + tag, r.history["epoch"] + 1, r.history[col],
                                color=_color(r)))
    return out

  plots.curves(path, [plots.Panel(title, series(col, rows)) for col, title, rows in panels],
               title="CIFAR-10-LT (JPEG substitute), ratio 100, ResNet-32", legend_all=False)
  return path


def fig_per_class_recall(runs: Sequence[Run], path: str) -> Optional[str]:
  """Grouped per-class test recall bars of each row, averaged over its finished seeds, classes
  by training count."""
  runs = [r for r in runs if r.finished and r.results.get("per_class_recall")]
  if not runs:
    return None
  rows = {}
  for r in runs:
    rows.setdefault(r.stage, []).append(r)
  groups = []
  for mine in rows.values():
    bacc = np.mean([r.results["test_bacc"] for r in mine])
    recall = np.mean([r.results["per_class_recall"] for r in mine], axis=0)
    groups.append((f"{mine[0].label} (bACC {bacc:.1f}, {len(mine)} seed"
                   f"{'s' if len(mine) > 1 else ''})", list(recall), _color(mine[0])))
  plots.recall_bars(path, runs[0].results["class_names"], runs[0].results["class_counts"],
                    groups, title="Per-class test recall, mean over seeds (classes by training "
                    "count N_k, largest first)")
  return path


def fig_cumulative_fp(runs: Sequence[Run], path: str) -> Optional[str]:
  """The paper's Fig. 5: cumulative false positives over classes, largest class first."""
  runs = [r for r in runs if r.finished and (r.results.get("test") or {}).get("cumulative_fp")]
  if not runs:
    return None
  # ERM and M2m are the paper's pair; the other rows are drawn thinner.
  series = [(r.label, r.results["test"]["cumulative_fp"], _color(r),
             2.2 if r.stage in ("erm", "m2m") else 1.0) for r in runs]
  plots.cumulative_fp(path, runs[0].results["class_names"], runs[0].results["class_counts"],
                      series, title="Cumulative false positives (Fig. 5)")
  return path


# --- figures that need models and data ---------------------------------------


def build_f(run: Run, input_shape, num_classes: int):
  """f of a run with its best-validation weights."""
  from m2m_tf import models  # lazy: TensorFlow; table-only reports run without
  f = models.build_model("resnet32", input_shape, num_classes, normed_head=run.loss == "ldam")
  f.load_weights(run.weights)
  return f


def load_official_g(path: str, input_shape=(32, 32, 3), num_classes: int = 10):
  """The official pre-trained ResNet-32 g (PyTorch layout .npz), or None if the file is missing."""
  if not os.path.isfile(path):
    return None
  from m2m_tf import models  # lazy: TensorFlow; table-only reports run without
  g = models.build_model("resnet32", input_shape, num_classes, name="g")
  return models.load_torch_state_dict(g, path)


def features(f, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """f's penultimate features (the "avgpool" output) of uint8 images x, float32 [N, D]."""
  import keras  # lazy: TensorFlow; table-only reports run without it
  body = keras.Model(f.input, f.get_layer("avgpool").output)
  return cifar_verdicts.apply_in_batches(body, x, batch_size)


def embed(feats: np.ndarray, method: str = "pca") -> np.ndarray:
  """2-D embedding of features: PCA (default) or t-SNE (slower: about a minute per model)."""
  if method == "tsne":
    return TSNE(n_components=2, init="pca", random_state=0).fit_transform(feats)
  return PCA(n_components=2, random_state=0).fit_transform(feats)


def fig_embedding(runs: Sequence[Run], data, path: str, method: str = "pca") -> Optional[str]:
  """The paper's Fig. 4: f's test-set penultimate features in 2-D, one panel per run."""
  runs = [r for r in runs if r.stage in EMBEDDING_STAGES and r.finished and r.weights]
  if not runs:
    return None
  fig = plots.figure(4.8 * len(runs), 4.6, layout=None)
  axes = fig.subplots(1, len(runs), squeeze=False)
  for ax, r in zip(axes[0], runs):
    f = build_f(r, data.x_test.shape[1:], data.num_classes)
    z = embed(features(f, data.x_test), method)
    for k, name in enumerate(data.class_names):
      m = data.y_test == k
      ax.scatter(z[m, 0], z[m, 1], s=2, alpha=0.5, color=plots.tab10(k), label=name)
    ax.set_title(f"{r.label} (test bACC {r.results['test_bacc']:.1f})")
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0][-1].legend(markerscale=5, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
  fig.suptitle(f"f's penultimate features on the test set ({method.upper()}), coloured by class")
  return plots.save(fig, path)


def translation_f(runs: Sequence[Run]) -> Optional[Run]:
  """The f for Fig. 6: seed 0's finished M2m run, else its ERM run (finished or its best so
  far)."""
  by = {r.stage: r for r in runs if r.seed == 0}
  if "m2m" in by and by["m2m"].finished and by["m2m"].weights:
    return by["m2m"]
  if "erm" in by and by["erm"].weights:
    return by["erm"]
  return None


def translate_examples(g, f, data, n_seeds: int = 4, n_targets: int = 4, seed: int = 0):
  """Majority-class training seeds translated towards the `n_targets` smallest classes
  (`m2m_tf.report.translate_examples`, the code of every run's report).

  Uses the M2m values of the CIFAR runs (`cifar_full.M2M_FLAGS`, `M2mConfig`'s
  random start of a per-sample radius) and clips to [0, 1]. Returns a dict: x0
  [S, H, W, C], major (seed class), targets [T], x_star [T, S, H, W, C], p_before /
  p_after [T, S] (g's softmax probability of the target at the seed and at x*).
  """
  from m2m_tf import report  # lazy: TensorFlow; table-only reports run without
  m = cifar_full.M2M_FLAGS
  return report.translate_examples(
      g, f, data.x_train, data.y_train, data.class_counts, lam=m["lam"],
      step_size=m["step_size"], steps=m["steps"], start_noise=_start_noise(),
      clip_range=(0.0, 1.0), start_noise_mode="per_sample", n_seeds=n_seeds,
      n_targets=n_targets, seed=seed)


def fig_translations(g, f_run: Run, data, path: str) -> str:
  """The paper's Fig. 6: seeds (top row) and their translations, one row per target class."""
  f = build_f(f_run, data.x_train.shape[1:], data.num_classes)
  ex = translate_examples(g, f, data)
  gamma = cifar_full.M2M_FLAGS["gamma"]
  state = "" if f_run.finished else f", unfinished: best of {f_run.epochs_done} epochs"
  m = cifar_full.M2M_FLAGS
  plots.translation_grid(
      path, ex, data.class_names, gamma,
      title=f"M2m translations with the official g and f = {f_run.label}'s{state}\n"
      f"(lambda {m['lam']}, step {m['step_size']}, T {m['steps']}, start noise "
      f"{_start_noise()}; accepted if g >= {gamma})")
  return path


def make_figures(runs: Sequence[Run], fig_dir: str, *, load_data: Callable[[], object],
                 load_g: Callable[[], object], embedding: str = "pca") -> Dict[str, str]:
  """Every figure whose inputs exist; returns {figure key: path} of those written.

  `load_data()` (a `DatasetSplits`-like object: x_/y_ train and test as uint8
  images and labels, class_names, class_counts, num_classes) and `load_g()`
  (the official g, or None) are called only when a model figure is due; tests
  inject small ones.
  """
  every_seed, runs = runs, [r for r in runs if r.seed == 0]  # figures of seed 0, but recall
  out = {"curves": fig_training_curves(runs, os.path.join(fig_dir, FIGURES["curves"])),
         "recall": fig_per_class_recall(every_seed, os.path.join(fig_dir, FIGURES["recall"])),
         "cumulative_fp": fig_cumulative_fp(runs, os.path.join(fig_dir, FIGURES["cumulative_fp"]))}
  want_embedding = any(r.stage in EMBEDDING_STAGES and r.finished and r.weights for r in runs)
  f_run = translation_f(runs)
  data = load_data() if want_embedding or f_run else None
  if want_embedding:
    out["embedding"] = fig_embedding(runs, data, os.path.join(fig_dir, FIGURES["embedding"]),
                                     embedding)
  g = load_g() if f_run else None
  if f_run and g is not None:
    out["translations"] = fig_translations(g, f_run, data,
                                           os.path.join(fig_dir, FIGURES["translations"]))
  return {k: v for k, v in out.items() if v}


# --- command line --------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  p = argparse.ArgumentParser(prog="python -m launch.cifar.report", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", default="results/cifar10_jpeg_lt_full",
                 help="Folder of the run folders.")
  p.add_argument("--results_dir", default="results",
                 help="Where the table goes (figures under its figures/).")
  p.add_argument("--data_dir", default=None,
                 help="Data root (default $M2M_DATA_DIR, else ../shared/data).")
  p.add_argument("--g_checkpoint", default=DEFAULT_G, help="The official pre-trained ResNet-32 g.")
  p.add_argument("--skip_figures", action="store_true", help="Write the table only.")
  p.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                 help="2-D embedding of Fig. 4.")
  return p.parse_args(argv)


def make_predictions(runs: Sequence[Run], results_dir: str,
                     load_data: Callable[[], object]) -> Optional[str]:
  """Stores every finished row's test predictions for the paired comparisons; prints how
  many test images each disagrees on with the row's own recorded confusion matrix."""
  if not any(r.finished and r.weights for r in runs):
    return None
  data = load_data()

  def predict_run(run: Run) -> np.ndarray:
    f = build_f(run, data.x_test.shape[1:], data.num_classes)
    pred = cifar_verdicts.predict(f, data.x_test)
    off = cifar_verdicts.confusion_check(run, data.y_test, pred, data.num_classes)
    print(f"{run.stage}: predictions differ from its recorded test confusion matrix on "
          f"{'?' if off is None else off} of {len(pred)} images")
    return pred

  path = os.path.join(results_dir, cifar_verdicts.PREDICTIONS)
  cifar_verdicts.write_predictions(runs, data.y_test, predict_run, path)
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes the predictions (unless --skip_figures), the table, then the figures."""
  args = parse_args(argv)
  runs = read_runs(args.root)

  @functools.lru_cache(maxsize=1)
  def load_data():
    """The real CIFAR-10-LT JPEG splits (read once, only when a model is due)."""
    return registry.load_dataset(DATASET, args.data_dir, imbalance_ratio=IMBALANCE_RATIO)

  predictions = None if args.skip_figures else make_predictions(runs, args.results_dir, load_data)
  for path in ([predictions] if predictions else []) + write_table(runs, args.results_dir,
                                                                    args.root):
    print(f"wrote {path}")
  if args.skip_figures:
    return 0
  written = make_figures(runs, os.path.join(args.results_dir, "figures"), load_data=load_data,
                         load_g=lambda: load_official_g(args.g_checkpoint),
                         embedding=args.embedding)
  for key in FIGURES:
    print(f"wrote {written[key]}" if key in written else f"skipped {FIGURES[key]} (no input yet)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
