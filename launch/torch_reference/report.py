"""Tables of the PyTorch reference (docs/torch_reference.md): `collect` copies a device
output folder's histories under results/, `report` writes
results/torch_reference_cifar10_jpeg_lt.{csv,md} beside m2m_tf's rows and the paper's."""

import json
import pathlib
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from data_prep.atomic import atomic_save, atomic_write_text
from launch import tables
from launch.torch_reference import training as tr
from m2m_tf.markdown import markdown_table
from m2m_tf.run_records import HISTORY_FILE


def selected_row(rows: Sequence[Dict]) -> Dict:
  """The epoch the official code reports: the best validation bACC, the LAST on a tie."""
  best = None
  for row in rows:
    if best is None or float(row["val_bacc"]) >= float(best["val_bacc"]):
      best = row
  return best


def summarize_run(name: str, rows: Sequence[Dict], recipe: tr.Recipe) -> Dict:
  """One run's table row: progress, the selected epoch's metrics (finished runs), the latest
  epoch's, M2m's acceptance rate and the seconds per epoch after the branch point."""
  method, seed = name.rsplit("_s", 1)
  own = [r for r in rows if int(r["epoch"]) > recipe.deferral]
  best = selected_row(rows) if len(rows) == recipe.epochs else None
  seeded = sum(float(r["seeded"]) for r in own)
  out = {"method": method, "seed": int(seed), "epochs": f"{len(rows)}/{recipe.epochs}",
         "best_epoch": int(best["epoch"]) if best else None,
         "latest_epoch": int(rows[-1]["epoch"]),
         "latest_val_bacc": float(rows[-1]["val_bacc"]),
         "latest_test_bacc": float(rows[-1]["test_bacc"]),
         "accept_rate": (sum(float(r["accepted"]) for r in own) / seeded) if seeded else None,
         "seconds_per_epoch": np.mean([float(r["seconds"]) for r in own]) if own else None}
  for key in ["val_bacc", "test_bacc", "test_gm"] + [k for k in rows[0] if "recall_" in k]:
    out[key] = float(best[key]) if best and best[key] != "" else None  # "": not recorded
  return out


def phase1_windows(deferral: int) -> List[tuple]:
  """(first, last) epochs of the phase-1 windows: 21-60, 61-100, 101-140, 141-160 for 160."""
  edges = [deferral * k // 8 for k in (1, 3, 5, 7)] + [deferral]
  return [(lo + 1, hi) for lo, hi in zip(edges[:-1], edges[1:])]


def phase1_rows(runs_dir: pathlib.Path, tf_history, deferral: int) -> List[List[str]]:
  """Phase 1 side by side: each PyTorch seed's and m2m_tf's training loss at the deferral
  epoch and mean validation bACC over `phase1_windows` (at lr 0.1 a single epoch's bACC
  swings by several points, so windows are averaged)."""
  out = []
  for hist in sorted(runs_dir.glob("*_phase1_s*/history.csv")):
    frame = pd.read_csv(hist)
    out.append(_phase1_row(f"PyTorch, {hist.parent.name}", frame, "train_loss", deferral))
  if pathlib.Path(tf_history).exists():
    frame = pd.read_csv(tf_history)  # its epoch column counts from 0
    frame = frame.assign(epoch=frame.epoch + 1)
    out.append(_phase1_row("m2m_tf (TF), erm_phase1_s0", frame, "loss", deferral))
  return out


def _phase1_row(label: str, frame, loss_column: str, deferral: int) -> List[str]:
  """One line of `phase1_rows` from a history frame (epochs counted from 1)."""
  at = frame[frame.epoch == deferral]
  loss = float(at[loss_column].iloc[0]) if len(at) else None
  means = [frame.val_bacc[(frame.epoch >= lo) & (frame.epoch <= hi)].mean()
           for lo, hi in phase1_windows(deferral)]
  return [label, _f(loss, 3)] + [_f(m) for m in means]


def _mean_sd(values: Sequence[float]) -> str:
  """'mean ± sd (n)' of finished values, sd over seeds (n - 1)."""
  v = [x for x in values if x is not None and x == x]  # x != x: NaN, an unfinished run
  if not v:
    return "n/a"
  sd = f" ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else ""
  return f"{np.mean(v):.2f}{sd} (n={len(v)})"


def collect(src, dest, states: bool = False) -> List[str]:
  """Copies each run's history.csv and result.json, and machine.json, from a device output
  folder `src` into `dest`; with `states`, an unfinished run's state.pt too (what a later
  session resumes from). Returns the runs copied."""
  src, dest = pathlib.Path(src), pathlib.Path(dest)
  copied = []
  for hist in sorted(src.glob("*/history.csv")):
    run = hist.parent
    (dest / run.name).mkdir(parents=True, exist_ok=True)
    names = ["history.csv", "result.json"]
    if states and not (run / "result.json").exists():
      names.append("state.pt")
    for name in names:
      if (run / name).exists():
        shutil.copyfile(run / name, dest / run.name / name)
    copied.append(run.name)
  if (src / "machine.json").exists():
    shutil.copyfile(src / "machine.json", dest / "machine.json")
  return copied


def _tf_rows(path) -> Dict[str, Dict]:
  """Our TF rows (seed 0) by stage, from the committed CIFAR table."""
  if not pathlib.Path(path).exists():
    return {}
  table = pd.read_csv(path)
  return {r["stage"]: r for r in table.to_dict("records")}


def _tf_text(row: Optional[Dict]) -> str:
  """'bACC / GM' of a finished TF row at the epoch the official rule selects (the last on a
  validation tie, as this module), else its progress."""
  if row is None:
    return "n/a"
  if row["status"] != "done":
    return f"running ({row['epochs']})"
  return f"{row['test_bacc_last_tie']:.2f} / {row['test_gm_last_tie']:.2f}"


TF_PHASE1 = "results/cifar10_jpeg_lt_full/erm_phase1_s0/history.csv"


def report(runs_dir, results_dir, tf_table="results/cifar10_jpeg_lt.csv",
           tf_phase1=TF_PHASE1, recipe: tr.Recipe = tr.Recipe()) -> pathlib.Path:
  """Writes torch_reference_cifar10_jpeg_lt.{csv,md} under `results_dir` from the runs."""
  runs_dir = pathlib.Path(runs_dir)
  names = sorted(p.parent.name for p in runs_dir.glob("*/history.csv")
                 if "_phase1_" not in p.parent.name)
  frame = pd.DataFrame([summarize_run(n, tr.read_history(runs_dir / n), recipe) for n in names])
  base = pathlib.Path(results_dir) / "torch_reference_cifar10_jpeg_lt"
  atomic_save(lambda tmp: frame.to_csv(tmp, index=False, float_format="%.4f"), f"{base}.csv")
  per_run = [[f"{r['method']}_s{r['seed']}", r["epochs"], r["best_epoch"] or "",
              _f(r["val_bacc"]), _f(r["test_bacc"]), _f(r["test_gm"]),
              f"{r['latest_epoch']}: {_f(r['latest_val_bacc'])} / {_f(r['latest_test_bacc'])}",
              _f(r["accept_rate"], 3), _f(r["seconds_per_epoch"], 1)]
             for r in frame.to_dict("records")]
  done = int(frame.best_epoch.notna().sum())
  text = _report_header(runs_dir) + [
      f"- Finished: {done} of {len(frame)} rows; an unfinished row shows its latest epoch "
      "(each run resumes from its state, docs/torch_reference.md).", "",
      "## The rows", "", markdown_table(
          ["method", "PyTorch test bACC", "PyTorch test GM", "m2m_tf (TF, seed 0) bACC / GM",
           "paper bACC / GM"], _summary(frame, _tf_rows(tf_table))), "",
      markdown_table(["run", "epochs", "selected epoch", "val bACC", "test bACC", "test GM",
                      "latest epoch: val / test bACC", "M2m accepted / slots with a seed",
                      "GPU s per epoch after 160"], per_run), "",
      f"## Phase 1 (ERM, epochs 1-{recipe.deferral}, shared by each seed's rows)", "",
      markdown_table(["run", f"training loss, epoch {recipe.deferral}"] +
                     [f"mean val bACC, epochs {lo}-{hi}"
                      for lo, hi in phase1_windows(recipe.deferral)],
                     phase1_rows(runs_dir, tf_phase1, recipe.deferral)), ""]
  text += _from_tf_section(runs_dir / "from_tf", _tf_rows(tf_table), recipe)
  atomic_write_text(f"{base}.md", "\n".join(text))
  return base


def _from_tf_section(folder: pathlib.Path, tf_rows: Dict[str, Dict],
                     recipe: tr.Recipe) -> List[str]:
  """The rows branched in PyTorch from m2m_tf's own phase-1 state (`import_tf`), beside
  m2m_tf's rows: the same weights and momentum after epoch 160, then each framework's
  epochs 161-200 (their data order and kernels differ)."""
  runs = [m for m in tr.ROWS if (folder / f"{m}_s0" / "history.csv").exists()]
  if not runs:
    return []
  lines = []
  for m in runs:
    r = summarize_run(f"{m}_s0", tr.read_history(folder / f"{m}_s0"), recipe)
    pytorch = (f"{_f(r['test_bacc'])} / {_f(r['test_gm'])} (epoch {r['best_epoch']})"
               if r["best_epoch"] else f"running ({r['epochs']}; epoch {r['latest_epoch']}: "
               f"val {_f(r['latest_val_bacc'])}, test {_f(r['latest_test_bacc'])})")
    lines.append([tables.TABLE2_ROWS[m][0], pytorch, _tf_text(tf_rows.get(m)),
                  _f(r["accept_rate"], 3), _f(r["seconds_per_epoch"], 1)])
  return ["## From m2m_tf's own phase-1 state (seed 0)", "",
          "`python -m launch.torch_reference import_tf` converts m2m_tf's state after epoch 160 "
          "(`results/cifar10_jpeg_lt_full/erm_phase1_s0`; weights by module name, momentum "
          "b = -m / lr) into a phase-1 run that scores m2m_tf's recorded validation bACC; "
          "PyTorch then trains each row's epochs 161-200 from it. Both sides start from the same "
          "weights; their data order, random draws and kernels differ.", "",
          markdown_table(["row", "PyTorch test bACC / GM (selected epoch)",
                          "m2m_tf test bACC / GM", "M2m accepted / slots with a seed",
                          "GPU s per epoch after 160"], lines), "",
          "Validation bACC epoch by epoch (PyTorch / m2m_tf; - where a side has not reached it):",
          "", *_trajectories(folder, runs, TF_RUNS, recipe), ""]


TF_RUNS = "results/cifar10_jpeg_lt_full"
TRAJECTORY_EPOCHS = (161, 162, 163, 165, 170, 180, 190, 200)


def _trajectories(folder: pathlib.Path, methods: Sequence[str], tf_root,
                  recipe: tr.Recipe) -> List[str]:
  """A table of both sides' validation bACC at `TRAJECTORY_EPOCHS` for each branched row."""
  epochs = [e for e in TRAJECTORY_EPOCHS if recipe.deferral < e <= recipe.epochs]
  lines = []
  for m in methods:
    ours = {int(r["epoch"]): float(r["val_bacc"]) for r in tr.read_history(folder / f"{m}_s0")}
    path = pathlib.Path(tf_root) / f"{m}_s0" / HISTORY_FILE  # our run folder
    tf = {}
    if path.exists():  # its epoch column counts from 0
      tf = {int(e) + 1: float(v) for e, v in pd.read_csv(path)[["epoch", "val_bacc"]].values}
    lines.append([tables.TABLE2_ROWS[m][0]] + [f"{_f(ours.get(e)).replace('n/a', '-')} / "
                                   f"{_f(tf.get(e)).replace('n/a', '-')}" for e in epochs])
  return [markdown_table(["row"] + [f"epoch {e}" for e in epochs], lines)]


def _summary(frame, tf_rows: Dict[str, Dict]) -> List[List[str]]:
  """Per method: the finished seeds' mean and sd, m2m_tf's row and the paper's."""
  paper = tables.PAPER["cifar10_lt"]
  return [[tables.TABLE2_ROWS[m][0],
           _mean_sd(list(frame.test_bacc[frame.method == m])),
           _mean_sd(list(frame.test_gm[frame.method == m])), _tf_text(tf_rows.get(m)),
           "{:.1f} / {:.1f}".format(*paper[m])] for m in tr.ROWS if m in set(frame.method)]


def _f(value, digits: int = 2) -> str:
  """A number with `digits` decimals, or n/a."""
  return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _report_header(runs_dir: pathlib.Path) -> List[str]:
  """The title, provenance and recipe lines of the report."""
  machine = {}
  if (runs_dir / "machine.json").exists():
    machine = json.loads((runs_dir / "machine.json").read_text())
  return [
      "# CIFAR-10-LT (ratio 100), ResNet-32: an independent PyTorch reference of the CE rows", "",
      "**JPEG substitute (CIFAR-10 re-encoded as JPEG; not comparable to the paper to the "
      "decimal).**", "",
      f"Made by `python -m launch.torch_reference report --runs {runs_dir}` from runs trained by "
      "`python3 -m launch.torch_reference all` on "
      f"{machine.get('gpu', 'a GPU')} (PyTorch {machine.get('torch', '?')}, float32 with TF32 "
      "off); docs/torch_reference.md says what this reference is and how it differs from "
      "m2m_tf.", "",
      "- tr.Recipe: the official code's, as m2m_tf's CIFAR rows (200 epochs, batch 128, SGD "
      "momentum 0.9 in PyTorch's form, lr 0.1 with 5 warm-up epochs, x0.01 at 160 and 180, "
      "weight decay 2e-4, deferral 160; M2m beta 0.999, lambda 0.5, gamma 0.9, step 0.1, "
      "T = 10; g the official checkpoint), on the same exported arrays; the last partial batch "
      "is kept (97 steps per epoch; m2m_tf drops it: 96).",
      "- Each seed's ERM, DRS and M2m share that seed's first 160 epochs. Test metrics are "
      "those of the epoch with the best validation bACC, the last one on a tie (the official "
      "rule; m2m_tf's numbers here are taken at the epoch that rule selects in its runs). ± is "
      "the standard deviation over seeds.", ""]
