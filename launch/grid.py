r"""Run a whole table as a grid of rows x seeds, in parallel processes, resumably; then collect it.

  python -m launch.grid --dataset=reuters --table=table2 --seeds=0,1,2,3,4
  python -m launch.grid --dataset=reuters --table=ablations
  python -m launch.grid --dataset=reuters --table=table2 --rows=erm,drs,m2m

Each run is `python -m m2m_tf.main ... --output_dir=<root>/<row>_s<seed>`. A run
with a results.json is skipped, an unfinished one resumes from its last epoch
commit (docs/runs.md). The ERM runs go first: the frozen g of the M2m row with
seed s is the best ERM model of seed s + 1000 (`erm_s1000`, ...), trained
independently of f as in the paper, under the dataset's recipe; the ensemble
ablation adds seed s + 1100.

Table 2's post-hoc row (ERM + post-hoc LA, launch/tables.py LA_ROWS) trains
nothing: once the ERM runs are finished, each `erm_s<seed>` without a
posthoc_la.json is adjusted by `python -m m2m_tf.evaluate --checkpoint=<run>
--posthoc_tau=select` (tau chosen on that run's validation bACC; it needs the
run's weights, which the run store does not keep, so it runs where the ERM run
trained, and the store then keeps its posthoc_la.json).

Where the runs live: the run store (launch/store.py) keeps runs/grid/<dataset>,
the grids recorded in Keras' momentum form (the ablation, vocabulary and
substitute tables; Table 2's Keras-form twin, results/momentum_keras/), and
runs/grid_pytorch/<dataset>, Table 2 in PyTorch's form (the default), made by

  python -m launch.grid --dataset=reuters --table=table2 --root=runs/grid_pytorch/reuters

Each row's settings (and the M2m rows' beta, lam, gamma, which the ablations
build on) come from `--budgets` (default results/budgets_<dataset>.json,
written by `launch.tune` on the validation split) when present.

The committed tables `<results_dir>/<name>.{csv,md}` are written only by a
complete grid: every row of --table for every seed of 0-4, all finished,
with hyper-parameters from a complete selection. Anything less (--rows, fewer
seeds, unfinished runs under --collect_only) writes
`<results_dir>/partial/<name>.{csv,md}` instead and says so.
"""

import json
import os
import time
from typing import List

from absl import flags

from launch import budgets
from launch import runner
from launch import store
from launch import tables
from m2m_tf.cli import run_absl
from data_prep.atomic import atomic_write_json, read_json

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset of the grid.")
flags.DEFINE_enum("table", "table2", list(tables.TABLES), "Which rows: Table 2 (the paper's "
                  "11 rows and, beyond the paper, the logit-adjustment family's 4), the M2m "
                  "ablations, or, beyond the paper, Reuters' bag-of-words "
                  "sizes (vocab) or Twitter's embedding substitutes (substitutes).")
flags.DEFINE_list("rows", None, "Subset of row keys (default: all rows of --table); a subset "
                  "makes a partial table.")
flags.DEFINE_list("seeds", [str(s) for s in tables.CANONICAL_SEEDS], "Seeds.")
flags.DEFINE_integer("jobs", 2, "Parallel processes (each uses one intra-op thread).")
flags.DEFINE_string("root", None, "Run folder (default runs/grid/<dataset>; the run store keeps "
                    "runs/{grid,grid_pytorch}/<dataset>, launch/store.py).")
flags.DEFINE_string("results_dir", "results", "Where the CSV and Markdown tables go (a partial "
                    "grid's under <results_dir>/partial).")
flags.DEFINE_string("budgets", None, "JSON of the settings selected per row with equal budgets "
                    "(default results/budgets_<dataset>.json if it exists; launch.tune).")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run, e.g. epochs=2.")
flags.DEFINE_string("data_dir", None, "Raw data root (passed on).")
flags.DEFINE_bool("collect_only", False, "Only rebuild the tables from finished runs.")


TITLES = {"table2": "Table 2", "ablations": "ablations",
          "vocab": "bag-of-words size (beyond the paper)",
          "substitutes": "offline embedding substitutes (beyond the paper)"}


@flags.multi_flags_validator(["dataset", "table"])
def _table_fits_dataset(values) -> bool:
  """The vocabulary table is Reuters', the substitutes table Twitter's."""
  allowed = tables.TABLE_DATASETS.get(values["table"])
  if allowed and values["dataset"] not in allowed:
    raise flags.ValidationError(f"--table={values['table']} is for --dataset="
                                f"{' or '.join(allowed)}, not {values['dataset']}")
  return True


@flags.multi_flags_validator(["rows", "table"])
def _rows_in_table(values) -> bool:
  """--rows must be keys of the chosen table (a typo would otherwise be a KeyError)."""
  valid = list(tables.TABLES[values["table"]])
  unknown = [r for r in values["rows"] or () if r not in valid]
  if unknown:
    raise flags.ValidationError(f"--rows {unknown} not in --table={values['table']} "
                                f"(rows: {','.join(valid)})")
  return True


def _load_selection(path: str, what: str) -> tuple:
  """(a selection's "selected" entry or {}, whether the selection is partial, its
  "momentum_forms" entry or {}: row -> {form: tuning runs})."""
  record = read_json(path)
  if record is None:
    return {}, False, {}
  print(f"{what} from {path}: {record['selected']}")
  return record["selected"], record.get("complete") is False, record.get("momentum_forms", {})


def _train(dataset, rows, seeds, root, settings) -> int:
  """Runs the grid's unfinished runs (ERM g runs first), then the post-hoc adjustments of the
  post-hoc rows' base runs; returns how many runs and adjustments there were."""
  jobs = runner.plan(dataset, rows, seeds, root, FLAGS.extra, FLAGS.data_dir,
                     row_settings=settings)
  print(f"{len(jobs)} runs to do under {root} with {FLAGS.jobs} processes")
  for stage in (0, 1):  # the ERM g runs before the M2m runs that read them
    runner.run_jobs([(out, cmd) for st, out, cmd in jobs if st == stage], FLAGS.jobs)
  posthoc = runner.posthoc_jobs(rows, seeds, root, FLAGS.data_dir)
  print(f"{len(posthoc)} post-hoc adjustments to do")
  runner.run_posthoc(posthoc)
  return len(jobs) + len(posthoc)


def _notes(dataset, seeds, timing_path, gaps, tuning_note="") -> List[str]:
  """The lines under a table's title: provenance, timing, tuning forms, gaps."""
  given = "".join(f" --{k}={v}" for k, v in (("root", FLAGS.root), ("budgets", FLAGS.budgets))
                  if v)  # defaults stay implicit, so committed tables keep their line
  notes = [f"Made by `python -m launch.grid --dataset={dataset} --table={FLAGS.table}{given}` "
           f"(seeds {','.join(map(str, seeds))}).",
           "Test metrics of the epoch with the best validation bACC; GM with zero recalls "
           "replaced by 0.001 (imbalanced-learn correction)."]
  if gaps:
    notes.insert(0, f"**Partial grid ({'; '.join(gaps)}): not a committed table.**")
  if os.path.exists(timing_path):
    with open(timing_path) as fh:
      timing = json.load(fh)
    notes.append(f"Wall time of the invocation that trained {timing['runs']} of these runs: "
                 f"{timing['wall_seconds']:.0f} s with {timing['jobs']} processes on this machine "
                 f"({os.cpu_count()} cores; load average at the end "
                 f"{', '.join(f'{v:.1f}' for v in timing['load_average'])}).")
  if FLAGS.extra:
    notes.append(f"Extra flags: {FLAGS.extra}.")
  return notes + ([tuning_note] if tuning_note else [])


def main(argv) -> int:
  """Trains the grid's unfinished runs, then writes its complete or partial table."""
  del argv
  dataset = FLAGS.dataset
  root = FLAGS.root or os.path.join("runs", "grid", dataset)
  all_rows = tables.TABLES[FLAGS.table]
  rows = {k: all_rows[k] for k in (FLAGS.rows or all_rows)}
  seeds = [int(s) for s in FLAGS.seeds]
  t0 = time.time()
  settings, budget_partial, tuned_forms = _load_selection(
      FLAGS.budgets or os.path.join(FLAGS.results_dir, f"budgets_{dataset}.json"),
      "Settings selected with equal budgets")
  kept = store.is_stored_root(root, dataset)  # a folder whose finished runs the store keeps
  if kept:
    print(f"restored {len(store.restore('runs', dataset, store.STORE))} runs from {store.STORE}")
  n_runs = 0 if FLAGS.collect_only else _train(dataset, rows, seeds, root, settings)
  if kept and n_runs:
    store.save("runs", dataset, store.STORE)
  wall = time.time() - t0
  name = dataset if FLAGS.table == "table2" else f"{FLAGS.table}_{dataset}"
  timing_path = os.path.join(root, f"timing_{FLAGS.table}.json")
  if n_runs:
    atomic_write_json(timing_path, {"runs": n_runs, "wall_seconds": wall, "jobs": FLAGS.jobs,
                                    "load_average": os.getloadavg()})
  gaps = tables.grid_gaps(root, FLAGS.table, list(rows), seeds)
  gaps += ["settings from a partial selection"] if budget_partial else []
  out_dir = tables.output_dir(FLAGS.results_dir, gaps)
  title = f"{dataset}: {TITLES[FLAGS.table]}"
  df = tables.collect(root, name, rows, paper=tables.PAPER.get(dataset), results_dir=out_dir,
                      seeds=seeds, title=title + (" (partial)" if gaps else ""),
                      notes=_notes(dataset, seeds, timing_path, gaps,
                                   budgets.tuning_form_note(rows, tuned_forms)),
                      sections=[budgets.budget_markdown(FLAGS.table, rows, settings, dataset,
                                                        tuned_forms)])
  with open(os.path.join(out_dir, f"{name}.md")) as fh:
    print(fh.read())
  print(f"grid wall time this invocation: {wall:.0f} s; runs: {len(df)}")
  print(tables.where_line("grid", f"{name}.{{csv,md}}", FLAGS.results_dir, gaps))
  return 0


if __name__ == "__main__":
  run_absl(main)
