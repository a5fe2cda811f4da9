r"""Tune every row of Table 2 with the same budget, on VALIDATION bACC only.

  python -m launch.tune --dataset=reuters                  # every row, seed 0
  python -m launch.tune --dataset=reuters --rows=erm,m2m   # a partial selection

Each row runs its `launch.budgets` search space (BUDGET_SIZE settings) for every seed
of --seeds; the setting with the best mean validation bACC is selected (test metrics
are not read). The M2m rows use g = the ERM run of seed s + 1000 under --grid_root,
as the grid does. Writes results/budgets_<dataset>.{json,md}, which `launch.grid`
applies to each row; a selection with fewer rows than Table 2 or other seeds than
the default writes under results/partial/ instead. Runs live under
runs/tune/<dataset>/<row>/ and resume like any run.
"""

import os
import sys
from typing import List

from absl import flags
import pandas as pd

from launch import budgets
from launch import runner
from launch import tables
from launch.markdown import markdown_table
from m2m_tf.cli import run_absl

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset.")
flags.DEFINE_list("rows", list(tables.TABLE2_ROWS), "Table 2 rows to tune.")
flags.DEFINE_list("seeds", ["0"], "Seeds averaged for the selection.")
flags.DEFINE_integer("jobs", 2, "Parallel processes.")
flags.DEFINE_string("root", None, "Run folder (default runs/tune/<dataset>).")
flags.DEFINE_string("grid_root", None, "Where the ERM g runs live (default runs/grid/<dataset>).")
flags.DEFINE_string("results_dir", "results", "Output folder.")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run.")


def settings_and_jobs(ds: str, root: str, g_root: str, rows: List[str], seeds: List[int]):
  """(every (row, setting, seed, out_dir), the jobs of the unfinished runs)."""
  base = [sys.executable, "-m", "m2m_tf.main", f"--dataset={ds}", "--verbose=0"]
  settings, jobs = [], []
  for row in rows:
    row_flags = tables.TABLE2_ROWS[row][1]
    for setting in budgets.row_budget(row, ds):
      for s in seeds:
        out = os.path.join(root, row, f"{budgets.setting_name(setting)}_s{s}")
        settings.append((row, setting, s, out))
        if os.path.exists(os.path.join(out, "results.json")):
          continue
        g = []
        if row_flags["method"] == "m2m":
          path = os.path.join(g_root, f"erm_s{runner.g_seeds_of(s)[0]}", "best_f.weights.h5")
          g = [f"--g_checkpoint={path}"]
        jobs.append((out, base + runner.run_flags({**row_flags, **setting}) + g +
                     [f"--seed={s}", f"--output_dir={out}"] + [f"--{e}" for e in FLAGS.extra]))
  return settings, jobs


def markdown(ds: str, selected: dict, mean: pd.DataFrame, gaps: List[str]) -> str:
  """Each row's selected setting and its budget's best validation bACC."""
  lines = [f"# {ds}: equal tuning budgets ({budgets.BUDGET_SIZE} settings a row) on "
           "validation bACC" + (" (partial)" if gaps else ""), ""]
  if gaps:
    lines += [f"**Partial selection ({'; '.join(gaps)}).**", ""]
  lines += [f"Made by `python -m launch.tune --dataset={ds}` (seeds {','.join(FLAGS.seeds)}). "
            "Test metrics are not used.", ""]
  body = [[tables.TABLE2_ROWS[row][0], len(mean[mean.row == row]),
           ", ".join(f"{k}={v}" for k, v in setting.items()),
           f"{mean[mean.row == row].val_bacc.max():.2f}"] for row, setting in selected.items()]
  lines += [markdown_table(["row", "settings run", "selected", "val bACC"], body), ""]
  return "\n".join(lines)


def main(argv) -> int:
  """Trains the g runs the M2m rows need, every row's budget, then writes the selection."""
  del argv
  ds, seeds = FLAGS.dataset, [int(s) for s in FLAGS.seeds]
  root = FLAGS.root or os.path.join("runs", "tune", ds)
  g_root = FLAGS.grid_root or os.path.join("runs", "grid", ds)
  if any(tables.TABLE2_ROWS[r][1]["method"] == "m2m" for r in FLAGS.rows):
    g_seeds = [runner.g_seeds_of(s)[0] for s in seeds]
    erm = runner.plan(ds, {"erm": tables.TABLE2_ROWS["erm"]}, g_seeds, g_root, {}, FLAGS.extra,
                      None)
    runner.run_jobs([(out, cmd) for _, out, cmd in erm], FLAGS.jobs)
  settings, jobs = settings_and_jobs(ds, root, g_root, FLAGS.rows, seeds)
  print(f"{len(jobs)} of {len(settings)} runs to do", flush=True)
  runner.run_jobs(jobs, FLAGS.jobs)
  selected, mean = budgets.select(settings)
  gaps = [f"--{name} {','.join(FLAGS[name].value)} (default {','.join(FLAGS[name].default)})"
          for name in ("rows", "seeds") if FLAGS[name].value != FLAGS[name].default]
  tables.write_selection(FLAGS.results_dir, f"budgets_{ds}",
                         {"selected": selected, "seeds": seeds,
                          "budget_size": budgets.BUDGET_SIZE, "criterion": "mean val_bacc"},
                         markdown(ds, selected, mean, gaps), gaps)
  return 0


if __name__ == "__main__":
  run_absl(main)
