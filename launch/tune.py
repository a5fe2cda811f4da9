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
from typing import List, Optional

from absl import flags
import pandas as pd

from launch import budgets
from launch import runner
from launch import store
from launch import tables
from m2m_tf.markdown import markdown_table
from m2m_tf.cli import run_absl

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset.")
flags.DEFINE_list("rows", list(budgets.TUNED_ROWS), "Table 2 rows to tune (the grid's rows "
                  "with a search space: the paper's and the logit-adjustment family's).")
flags.DEFINE_list("seeds", ["0"], "Seeds averaged for the selection.")
flags.DEFINE_integer("jobs", 2, "Parallel processes.")
flags.DEFINE_string("root", None, "Run folder (default runs/tune/<dataset>).")
flags.DEFINE_string("grid_root", None, "Where the ERM g runs live (default runs/grid/<dataset>).")
flags.DEFINE_string("results_dir", "results", "Output folder.")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run.")
flags.DEFINE_integer("first_settings", 0, "Only each budget's first N settings (0: all); a "
                     "partial selection, for trying the pipeline.", lower_bound=0)


def tune_rows(rows: List[str], ds: str, first: int = 0) -> dict:
  """Each (row, setting) of the budgets as a grid row `<row>/<setting name>` on its Table-2 row.

  Args:
    rows: Table-2 row keys.
    ds: the dataset (deferral fractions become its epochs).
    first: when > 0, only each budget's first settings (a partial selection).
  """
  out = {}
  for row in rows:
    for setting in budgets.row_budget(row, ds)[:first or None]:
      out[f"{row}/{budgets.setting_name(setting)}"] = (row, {"row": row, **setting})
  return out


def settings_and_jobs(ds: str, root: str, g_root: str, rows: List[str], seeds: List[int]):
  """(every (row, setting, seed, out_dir), the jobs of the unfinished runs)."""
  grid_rows = tune_rows(rows, ds, FLAGS.first_settings)
  settings = []
  for key, (row, setting) in grid_rows.items():
    setting = {k: v for k, v in setting.items() if k != "row"}
    settings += [(row, setting, s, os.path.join(root, f"{key}_s{s}")) for s in seeds]
  # A tuning run is read for its validation bACC only: no SavedModel (a quarter of a Reuters run).
  jobs = [(st, out, cmd + ["--noexport"] if st == 1 else cmd) for st, out, cmd in
          runner.plan(ds, grid_rows, seeds, root, FLAGS.extra, None, g_root=g_root)]
  return settings, jobs


def markdown(ds: str, selected: dict, mean: pd.DataFrame, gaps: List[str],
             forms: Optional[dict] = None) -> str:
  """Each row's selected setting, its budget's best validation bACC and the momentum form its
  tuning runs trained in (`forms`: row -> {form: runs})."""
  lines = [f"# {ds}: equal tuning budgets ({budgets.BUDGET_SIZE} settings a row) on "
           "validation bACC" + (" (partial)" if gaps else ""), ""]
  if gaps:
    lines += [f"**Partial selection ({'; '.join(gaps)}).**", ""]
  given = "".join(f" --{k}={FLAGS[k].value}" for k in ("root", "grid_root") if FLAGS[k].value)
  lines += [f"Made by `python -m launch.tune --dataset={ds}{given}` (seeds "
            f"{','.join(FLAGS.seeds)}). Test metrics are not used. 'tuned in': SGD's momentum "
            "form of the row's tuning runs.", ""]
  body = [[tables.TABLE2_GRID_ROWS[row][0], len(mean[mean.row == row]),
           ", ".join(f"{k}={v}" for k, v in setting.items()),
           f"{mean[mean.row == row].val_bacc.max():.2f}",
           budgets.form_text((forms or {}).get(row, {}))] for row, setting in selected.items()]
  lines += [markdown_table(["row", "settings run", "selected", "val bACC", "tuned in"], body),
            ""]
  return "\n".join(lines)


def main(argv) -> int:
  """Trains the g runs the M2m rows need, every row's budget, then writes the selection."""
  del argv
  ds, seeds = FLAGS.dataset, [int(s) for s in FLAGS.seeds]
  root = FLAGS.root or os.path.join("runs", "tune", ds)
  g_root = FLAGS.grid_root or os.path.join("runs", "grid", ds)
  kept = store.is_stored_root(root, ds) and store.is_stored_root(g_root, ds)
  if kept:  # folders the run store keeps (results/run_store)
    print(f"restored {len(store.restore('runs', ds, store.STORE))} runs from {store.STORE}")
  settings, jobs = settings_and_jobs(ds, root, g_root, FLAGS.rows, seeds)
  print(f"{sum(st == 1 for st, _, _ in jobs)} of {len(settings)} runs to do", flush=True)
  for stage in (0, 1):  # the ERM g runs before the M2m runs that read them
    runner.run_jobs([(out, cmd) for st, out, cmd in jobs if st == stage], FLAGS.jobs)
  if kept:
    store.save("runs", ds, store.STORE)
  selected, mean = budgets.select(settings)
  forms = {row: tables.momentum_forms("", [out for r, _, _, out in settings if r == row])
           for row in selected}
  gaps = [f"--{name} {','.join(FLAGS[name].value)} (default {','.join(FLAGS[name].default)})"
          for name in ("rows", "seeds") if FLAGS[name].value != FLAGS[name].default]
  if FLAGS.first_settings:
    gaps.append(f"--first_settings={FLAGS.first_settings} of {budgets.BUDGET_SIZE}")
  tables.write_selection(FLAGS.results_dir, f"budgets_{ds}",
                         {"selected": selected, "seeds": seeds,
                          "budget_size": budgets.BUDGET_SIZE, "criterion": "mean val_bacc",
                          "momentum_forms": forms, "grid": mean.to_dict("records")},
                         markdown(ds, selected, mean, gaps, forms), gaps)
  return 0


if __name__ == "__main__":
  run_absl(main)
