"""The CIFAR study's run folders, read (`read_runs`) into one table row per stage and seed
(`table`): what `launch.cifar.report` writes and `launch.cifar.figures` draws.
"""

import collections
import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from data_prep.atomic import read_json
from launch import selection_ties
from launch import tables
from launch.cifar import full as cifar_full
from m2m_tf import run_records as ckpt_lib
from m2m_tf.m2m.params import M2mConfig

DATASET = "cifar10_jpeg_lt"
IMBALANCE_RATIO = 100
# Fallback names (CIFAR-10's index order) for the recall columns before any run has finished.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# The paper's CIFAR-10-LT (ratio 100, lossless PNG data), ResNet-32: launch/tables.py PAPER.
PAPER = tables.PAPER["cifar10_lt"]


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
    path = os.path.join(self.run_dir, ckpt_lib.BEST_WEIGHTS_FILE)
    return path if os.path.exists(path) else None


def _history(run_dir: str, record: Optional[dict]) -> Optional[pd.DataFrame]:
  """history.csv, else the history rows of the newest commit record."""
  path = os.path.join(run_dir, ckpt_lib.HISTORY_FILE)
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
  flags = read_json(os.path.join(run.run_dir, ckpt_lib.FLAGS_FILE))
  # As {leaf name: value}, whether the record is nested by section or of the older flat form.
  run.flags = None if flags is None else ckpt_lib.flatten_record(flags)
  if run.flags and run.flags.get("init_from"):
    source = read_json(os.path.join(_source_dir(root, run.flags["init_from"]), ckpt_lib.FLAGS_FILE))
    run.phase1_flags = None if source is None else ckpt_lib.flatten_record(source)
  run.results = read_json(os.path.join(run.run_dir, ckpt_lib.RESULTS_FILE))
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
  """Where each run's own epochs ran, by row and seed (a row resumed on another CPU changes
  speed there)."""
  parts = [f"{r.label} s{r.seed}: " + ", ".join(f"{m} ({n})" for m, n in r.machines.items())
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
  p = read_json(os.path.join(run.run_dir, ckpt_lib.POSTHOC_FILE)) if run.finished else None
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




def start_noise(runs: Sequence[Run] = ()) -> float:
  """The random start's radius: a run's flags.json value, else M2mConfig's default.

  main.py's --start_noise is not in M2M_FLAGS, so the runs use its default.
  """
  for run in sorted(runs, key=lambda r: r.method != "m2m"):
    if run.flags and "start_noise" in run.flags:
      return float(run.flags["start_noise"])
  return M2mConfig().start_noise
