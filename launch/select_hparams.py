r"""Select M2m's (beta, lam, gamma) on the VALIDATION split over the paper's grid.

The grid and the rule: docs/method.md#hyper-parameters-and-their-selection.

  python -m launch.select_hparams --dataset=reuters --losses=ce,ldam --seeds=0

Grid: beta in {0.9, 0.99, 0.999} x lam in {0.01, 0.1, 0.5} x gamma in {0.9, 0.99}
(18 settings) per loss. The choice maximises the mean validation bACC over
--seeds; test metrics play no part (they are not even read). Writes
results/hparams_<dataset>.json ({"selected": {loss: {beta, lam, gamma}}, "grid": [...]})
and results/hparams_<dataset>.md, which `launch.grid` then uses.

Only a complete selection (every default loss, beta, lam, gamma and seed
included) writes those files; a narrower one writes
`<results_dir>/partial/hparams_<dataset>.{json,md}` (marked "complete": false)
and says so, so that it never replaces the committed selection.
"""

import itertools
import json
import os
import sys
from typing import List

from absl import flags
import pandas as pd

from launch import runner
from launch import tables
from launch.markdown import markdown_table
from m2m_tf.cli import run_absl

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset.")
flags.DEFINE_list("losses", ["ce", "ldam"], "Losses whose M2m row is tuned (ERM-M2m, LDAM-M2m).")
flags.DEFINE_list("seeds", ["0"], "Seeds averaged for the selection.")
flags.DEFINE_list("betas", ["0.9", "0.99", "0.999"], "beta grid.")
flags.DEFINE_list("lams", ["0.01", "0.1", "0.5"], "lam grid.")
flags.DEFINE_list("gammas", ["0.9", "0.99"], "gamma grid.")
flags.DEFINE_integer("jobs", 2, "Parallel processes.")
flags.DEFINE_string("root", None, "Run folder (default runs/hp/<dataset>).")
flags.DEFINE_string("grid_root", None, "Where the ERM g runs live (default runs/grid/<dataset>).")
flags.DEFINE_string("results_dir", "results", "Output folder (a partial selection's under "
                    "<results_dir>/partial).")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run.")

# The flags whose default values make up the canonical (committed) selection.
_GRID_FLAGS = {"losses": str, "betas": float, "lams": float, "gammas": float, "seeds": int}


def selection_gaps() -> List[str]:
  """What the flags leave out of the canonical grid (their defaults); empty when nothing."""
  gaps = []
  for name, kind in _GRID_FLAGS.items():
    given = {kind(v) for v in FLAGS[name].value}
    left_out = [v for v in FLAGS[name].default if kind(v) not in given]
    if left_out:
      gaps.append(f"--{name} leaves out {','.join(left_out)}")
  return gaps


def _settings(ds: str, root: str, g_root: str, seeds: List[int]) -> tuple:
  """(every setting as (loss, beta, lam, gamma, seed, out), the unfinished runs' jobs)."""
  base = [sys.executable, "-m", "m2m_tf.main", f"--dataset={ds}", "--verbose=0", "--method=m2m"]
  jobs, settings = [], []
  for loss, beta, lam, gamma in itertools.product(FLAGS.losses, FLAGS.betas, FLAGS.lams,
                                                  FLAGS.gammas):
    for s in seeds:
      out = os.path.join(root, f"{loss}_b{beta}_l{lam}_g{gamma}_s{s}")
      settings.append((loss, float(beta), float(lam), float(gamma), s, out))
      if os.path.exists(os.path.join(out, "results.json")):
        continue
      g = os.path.join(g_root, f"erm_s{runner.g_seeds_of(s)[0]}", "best_f.weights.h5")
      jobs.append((out, base + [f"--loss={loss}", f"--beta={beta}", f"--lam={lam}",
                                f"--gamma={gamma}", f"--seed={s}", f"--g_checkpoint={g}",
                                f"--output_dir={out}"] + [f"--{e}" for e in FLAGS.extra]))
  return settings, jobs


def _select(settings) -> tuple:
  """(per-loss best setting by mean val bACC, the mean table); test metrics are not read."""
  rows = []
  for loss, beta, lam, gamma, s, out in settings:
    with open(os.path.join(out, "results.json")) as fh:
      r = json.load(fh)
    rows.append({"loss": loss, "beta": beta, "lam": lam, "gamma": gamma, "seed": s,
                 "val_bacc": r["val_bacc"], "val_gm": r["val_gm"]})
  mean = pd.DataFrame(rows).groupby(["loss", "beta", "lam", "gamma"],
                                    as_index=False)["val_bacc"].mean()
  selected = {}
  for loss, sub in mean.groupby("loss"):
    best = sub.sort_values("val_bacc", ascending=False, kind="stable").iloc[0]
    selected[loss] = {"beta": float(best.beta), "lam": float(best.lam), "gamma": float(best.gamma)}
  return selected, mean


def _markdown(ds: str, selected: dict, mean, gaps: List[str]) -> str:
  """The selection as Markdown: one table of mean val bACC per loss."""
  lines = [f"# {ds}: M2m hyper-parameters selected on validation bACC"
           + (" (partial)" if gaps else ""), ""]
  if gaps:
    lines += [f"**Partial selection ({'; '.join(gaps)}): not a committed selection.**", ""]
  lines += [f"Made by `python -m launch.select_hparams --dataset={ds}` (seeds {FLAGS.seeds}). "
            "Test metrics are not used.", ""]
  for loss, sub in mean.groupby("loss"):
    body = [[r.beta, r.lam, r.gamma, f"{r.val_bacc:.2f}"]
            for _, r in sub.sort_values("val_bacc", ascending=False).iterrows()]
    lines += [f"## loss = {loss}: selected {selected[loss]}", "",
              markdown_table(["beta", "lam", "gamma", "val bACC"], body), ""]
  return "\n".join(lines)


def main(argv) -> int:
  """Trains the ERM g runs and the grid's M2m runs, then writes the (partial) selection."""
  del argv
  ds = FLAGS.dataset
  root = FLAGS.root or os.path.join("runs", "hp", ds)
  g_root = FLAGS.grid_root or os.path.join("runs", "grid", ds)
  seeds = [int(s) for s in FLAGS.seeds]
  # ERM g runs first (shared with the Table 2 grid).
  g_seeds = [runner.g_seeds_of(s)[0] for s in seeds]
  erm_jobs = runner.plan(ds, {"erm": tables.TABLE2_ROWS["erm"]}, g_seeds, g_root, {}, FLAGS.extra,
                         None)
  runner.run_jobs([(out, cmd) for _, out, cmd in erm_jobs], FLAGS.jobs)
  settings, jobs = _settings(ds, root, g_root, seeds)
  print(f"{len(jobs)} of {len(settings)} runs to do")
  runner.run_jobs(jobs, FLAGS.jobs)
  selected, mean = _select(settings)
  gaps = selection_gaps()
  tables.write_selection(FLAGS.results_dir, f"hparams_{ds}",
                         {"selected": selected, "seeds": seeds, "criterion": "mean val_bacc",
                          "grid": mean.to_dict(orient="records")},
                         _markdown(ds, selected, mean, gaps), gaps)
  return 0


if __name__ == "__main__":
  run_absl(main)
