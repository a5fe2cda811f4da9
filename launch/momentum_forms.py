r"""What SGD's momentum form does to a grid table: the same runs in Keras' and PyTorch's form.

  python -m launch.momentum_forms --dataset=reuters   # -> results/momentum_forms_reuters.{csv,md}

The committed Table-2 grids run in PyTorch's form (the official code's and the default; runs
under runs/grid_pytorch/<dataset>); their twins in Keras' form (lr inside the momentum buffer)
are in results/momentum_keras/, made from the runs under runs/grid/<dataset>, recorded before
PyTorch's form became the default (the run store keeps both folders, launch/store.py). The
two differ after each lr change (docs/method.md, difference 9). Here every run of a table is
paired with its twin (same row, seed and selected settings, which were tuned in Keras' form);
rows with no twin (the logit-adjustment family, PyTorch's form only) are listed as left out.
Per row: the mean test bACC and GM of each form, the mean paired difference (PyTorch - Keras)
with its Student-t 95% interval over seeds, and how much the training loss changed over the
first epoch after the lr drop (Keras' form overshoots there).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from launch import over_seeds
from launch import tables
from m2m_tf.markdown import markdown_table
from data_prep.atomic import atomic_write_text

FORMS = ("keras", "pytorch")
METRICS = ("test_bacc", "test_gm")


def paired(keras: pd.DataFrame, pytorch: pd.DataFrame) -> pd.DataFrame:
  """One row per (row, seed) present in both tables: each metric of each form, side by side."""
  cols = ["row", "seed", *METRICS]
  return keras[cols].merge(pytorch[cols], on=["row", "seed"], suffixes=("_keras", "_pytorch"))


def loss_jumps(history: pd.DataFrame) -> pd.DataFrame:
  """Per run (row, seed): training loss of the first epoch after the first lr drop minus that
  of the epoch before it (NaN for a run whose lr never drops)."""
  out = []
  for (row, seed), run in history.sort_values("epoch").groupby(["row", "seed"], sort=False):
    lr, loss = run["lr"].to_numpy(np.float64), run["loss"].to_numpy(np.float64)
    drops = np.flatnonzero(lr[1:] < lr[:-1]) + 1
    out.append({"row": row, "seed": seed,
                "loss_jump": loss[drops[0]] - loss[drops[0] - 1] if len(drops) else np.nan})
  return pd.DataFrame(out, columns=["row", "seed", "loss_jump"])


def _jump(jumps: pd.DataFrame, row: str) -> float:
  values = jumps.loc[jumps["row"] == row, "loss_jump"]
  return float(values.mean()) if len(values) else np.nan


def summary(pairs: pd.DataFrame, jumps: dict) -> pd.DataFrame:
  """Per row: seeds, each form's mean metric, the paired difference's mean and 95% interval,
  and each form's mean loss jump at the lr drop (`jumps`: form -> `loss_jumps`)."""
  rows = []
  for row, sub in pairs.groupby("row", sort=False):
    rec = {"row": row, "seeds": len(sub)}
    for m in METRICS:
      mean, low, high = over_seeds.t_interval(sub[f"{m}_pytorch"] - sub[f"{m}_keras"])
      rec.update({f"{m}_keras": sub[f"{m}_keras"].mean(),
                  f"{m}_pytorch": sub[f"{m}_pytorch"].mean(),
                  f"{m}_diff": mean, f"{m}_diff_low": low, f"{m}_diff_high": high})
    for form in FORMS:
      rec[f"loss_jump_{form}"] = _jump(jumps[form], row)
    rows.append(rec)
  return pd.DataFrame(rows)


def _label(row: str) -> str:
  return tables.TABLE2_ROWS[row][0] if row in tables.TABLE2_ROWS else row


def direction(low: float, high: float) -> str:
  """How an interval of PyTorch - Keras reads: higher or lower when it excludes 0."""
  return {"holds": "higher", "fails": "lower",
          "unresolved": "no clear difference"}[over_seeds.verdict_word(low, high)]


def _diff(r, m: str) -> str:
  low, high = getattr(r, f"{m}_diff_low"), getattr(r, f"{m}_diff_high")
  return f"{getattr(r, f'{m}_diff'):+.2f} [{low:+.2f}, {high:+.2f}] {direction(low, high)}"


def markdown(df: pd.DataFrame, dataset: str, missing: Sequence[str]) -> str:
  """The report: one line per row, the two forms side by side and their paired difference."""
  header = ["method", "seeds", "bACC Keras / PyTorch", "Δ bACC [95% CI]", "GM Keras / PyTorch",
            "Δ GM [95% CI]", "loss change at the lr drop: Keras / PyTorch"]
  body = [[_label(r.row), str(r.seeds), f"{r.test_bacc_keras:.1f} / {r.test_bacc_pytorch:.1f}",
           _diff(r, "test_bacc"), f"{r.test_gm_keras:.1f} / {r.test_gm_pytorch:.1f}",
           _diff(r, "test_gm"), f"{r.loss_jump_keras:+.3f} / {r.loss_jump_pytorch:+.3f}"]
          for r in df.itertuples()]
  lines = [f"# {dataset}: SGD's momentum form, Keras' against PyTorch's", "",
           f"Made by `python -m launch.momentum_forms --dataset={dataset}` from "
           f"`results/momentum_keras/{dataset}.csv` (Keras' form) and `results/{dataset}.csv` "
           "(PyTorch's form, the committed table; the same grid with "
           "`--extra=momentum_form=pytorch`).", "",
           "Each run is paired with its twin of the same row, seed and selected settings (tuned "
           "in Keras' form). Δ = PyTorch - Keras, mean over seeds with its Student-t 95% "
           "interval; 'higher' / 'lower' when the interval excludes 0. The last column is the "
           "change of the training loss over the first epoch after the lr drop (mean over "
           "seeds; docs/method.md, difference 9); where phase 2 starts at that same epoch (the "
           "M2m rows of the text recipes) the new loss moves it too, in both forms alike.", "",
           markdown_table(header, body)]
  if missing:
    lines += ["", f"Runs in only one of the two tables (left out): {', '.join(missing)}."]
  return "\n".join(lines) + "\n"


def _missing(keras: pd.DataFrame, pytorch: pd.DataFrame) -> list:
  key = lambda df: {f"{r}_s{s}" for r, s in zip(df["row"], df["seed"])}
  return sorted(key(keras) ^ key(pytorch))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes results/momentum_forms_<dataset>.{csv,md} from the two forms' tables."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", default="reuters")
  p.add_argument("--results_dir", default="results")
  p.add_argument("--keras_dir", default=None,
                 help="The Keras-form tables (default <results_dir>/momentum_keras).")
  args = p.parse_args(argv)
  keras_dir = args.keras_dir or os.path.join(args.results_dir, "momentum_keras")
  paths = {"keras": keras_dir, "pytorch": args.results_dir}
  try:
    runs = {f: pd.read_csv(os.path.join(d, f"{args.dataset}.csv")) for f, d in paths.items()}
    hist = {f: pd.read_csv(os.path.join(d, f"{args.dataset}_history.csv"))
            for f, d in paths.items()}
  except FileNotFoundError as e:
    print(f"momentum_forms: {e.filename} is missing; run the grid of that form first.",
          file=sys.stderr)
    return 1
  df = summary(paired(runs["keras"], runs["pytorch"]), {f: loss_jumps(h) for f, h in hist.items()})
  stem = os.path.join(args.results_dir, f"momentum_forms_{args.dataset}")
  atomic_write_text(stem + ".csv", df.to_csv(index=False, float_format="%.4f"))
  atomic_write_text(stem + ".md", markdown(df, args.dataset, _missing(runs["keras"],
                                                                      runs["pytorch"])))
  print(f"wrote {stem}.csv and {stem}.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
