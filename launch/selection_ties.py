r"""How much the tie rule of best-validation selection moves the reported test numbers.

  python -m launch.selection_ties   # results/*_history.csv -> results/selection_ties.{csv,md}

Every run reports the test metrics of its epoch with the best validation bACC. On a tie we
keep the first such epoch (a later epoch must improve strictly, as Keras' `save_best_only`
does); the official M2m code compares with `>=` and so keeps the last. Validation sets are
small (CIFAR-10-LT: 100 images a class, bACC in steps of 0.1), so ties happen. This
report re-selects every committed run's epoch under both rules from its per-epoch history
and counts where, and by how much, the test bACC differs. docs/method.md gives the why.
"""

import argparse
import glob
import os
import sys
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from m2m_tf.markdown import markdown_table
from data_prep.atomic import atomic_write_text

SUFFIX = "_history.csv"


def tie_epochs(val_bacc: Sequence[float]) -> tuple:
  """Positions of the first and of the last epoch whose validation bACC equals the maximum.

  Equality allows 1e-9 of floating-point noise; NaN epochs (not evaluated) never win.
  """
  v = np.asarray(val_bacc, dtype=np.float64)
  best = np.nanmax(v)
  ties = np.flatnonzero(np.abs(v - best) <= 1e-9)
  return int(ties[0]), int(ties[-1])


def run_rows(history: pd.DataFrame) -> pd.DataFrame:
  """One row per run (`row`, `seed`): the epoch and test bACC under each tie rule."""
  out = []
  for (row, seed), h in history.groupby(["row", "seed"], sort=False):
    h = h.sort_values("epoch")
    first, last = tie_epochs(h["val_bacc"])
    test = h["test_bacc"].to_numpy()
    out.append({"row": row, "seed": seed, "epoch_first": int(h["epoch"].iloc[first]),
                "epoch_last": int(h["epoch"].iloc[last]), "test_bacc_first": test[first],
                "test_bacc_last": test[last]})
  return pd.DataFrame(out)


def summary_row(table: str, runs: pd.DataFrame) -> dict:
  """A table's counts: runs, runs whose selected epoch moves, mean and largest test change."""
  diff = runs["test_bacc_last"] - runs["test_bacc_first"]
  moved = runs["epoch_last"] != runs["epoch_first"]
  return {"table": table, "runs": len(runs), "epoch_moves": int(moved.sum()),
          "test_changes": int((diff.abs() > 1e-9).sum()), "mean_change": float(diff.mean()),
          "largest_change": float(diff.abs().max()) if len(diff) else 0.0}


def summarise(results_dir: str) -> pd.DataFrame:
  """The summary over every `<table>_history.csv` under `results_dir` (sorted by name)."""
  rows = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*" + SUFFIX))):
    table = os.path.basename(path)[:-len(SUFFIX)]
    rows.append(summary_row(table, run_rows(pd.read_csv(path))))
  return pd.DataFrame(rows, columns=["table", "runs", "epoch_moves", "test_changes",
                                     "mean_change", "largest_change"])


def markdown(df: pd.DataFrame) -> str:
  """The report: what the rules are, then one line per table."""
  body = [[r.table, r.runs, r.epoch_moves, r.test_changes, f"{r.mean_change:+.3f}",
           f"{r.largest_change:.2f}"] for r in df.itertuples()]
  return "\n".join([
      "# Best-validation selection: first or last epoch on a tie", "",
      "Made by `python -m launch.selection_ties` from the committed per-epoch histories. "
      "Do not edit by hand.", "",
      "Our runs keep the first epoch with the best validation bACC; the official M2m code "
      "(`val_acc >= BEST_VAL`) keeps the last. Changes are last-rule minus first-rule test "
      "bACC, in points.", "",
      markdown_table(["table", "runs", "runs whose epoch moves", "runs whose test bACC changes",
                      "mean change", "largest change"], body), ""])


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes results/selection_ties.csv and .md; prints their paths."""
  p = argparse.ArgumentParser(prog="python -m launch.selection_ties", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--results_dir", default="results", help="Where the histories are and go.")
  args = p.parse_args(argv)
  df = summarise(args.results_dir)
  if df.empty:
    sys.exit(f"no *{SUFFIX} under {args.results_dir}")
  for ext, text in (("csv", df.to_csv(index=False, float_format="%.4f")), ("md", markdown(df))):
    path = os.path.join(args.results_dir, f"selection_ties.{ext}")
    atomic_write_text(path, text)
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
