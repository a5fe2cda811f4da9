r"""Run a whole table as a grid of rows x seeds, in parallel processes, resumably; then collect it.

  python -m launch.grid --dataset=reuters --table=table2 --seeds=0,1,2
  python -m launch.grid --dataset=reuters --table=ablations
  python -m launch.grid --dataset=reuters --table=table2 --rows=erm,drs,m2m

Each run is `python -m m2m_tf.main ... --output_dir=<root>/<row>_s<seed>`. A run
with a results.json is skipped, an unfinished one resumes (BackupAndRestore).
The ERM runs go first: their best weights are the frozen g of the M2m rows with
the same seed (g is "ERM on the same data", so it is exactly that run), and the
ensemble ablation uses ERM seeds s and s + 100.

M2m hyper-parameters come from `--hparams` (default results/hparams_<dataset>.json,
written by `launch.select_hparams` on the validation split) when present.
"""

import concurrent.futures
import json
import os
import time

from absl import app
from absl import flags

from launch import tables
from launch.runner import launch_run, plan
from m2m_tf.io_utils import atomic_write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset of the grid.")
flags.DEFINE_enum("table", "table2", ["table2", "ablations"], "Which rows: the paper's Table 2 "
                  "(11 rows) or the M2m ablations.")
flags.DEFINE_list("rows", None, "Subset of row keys (default: all rows of --table).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_integer("jobs", 2, "Parallel processes (each uses one intra-op thread).")
flags.DEFINE_string("root", None, "Run folder (default runs/grid/<dataset>).")
flags.DEFINE_string("results_dir", "results", "Where the CSV and Markdown tables go.")
flags.DEFINE_string("hparams", None, "JSON of selected M2m hyper-parameters (default "
                    "results/hparams_<dataset>.json if it exists).")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run, e.g. epochs=2.")
flags.DEFINE_string("data_dir", None, "Raw data root (passed on).")
flags.DEFINE_bool("collect_only", False, "Only rebuild the tables from finished runs.")


def main(argv):
  del argv
  dataset = FLAGS.dataset
  root = FLAGS.root or os.path.join("runs", "grid", dataset)
  all_rows = tables.TABLE2_ROWS if FLAGS.table == "table2" else tables.ABLATION_ROWS
  rows = {k: all_rows[k] for k in (FLAGS.rows or all_rows)}
  seeds = [int(s) for s in FLAGS.seeds]
  hp_path = FLAGS.hparams or os.path.join(FLAGS.results_dir, f"hparams_{dataset}.json")
  hparams = {}
  if os.path.exists(hp_path):
    with open(hp_path) as fh:
      hparams = json.load(fh)["selected"]
    print(f"M2m hyper-parameters from {hp_path}: {hparams}")
  t0 = time.time()
  if not FLAGS.collect_only:
    jobs = plan(dataset, rows, seeds, root, hparams, FLAGS.extra, FLAGS.data_dir)
    print(f"{len(jobs)} runs to do under {root} with {FLAGS.jobs} processes")
    for stage in (0, 1):
      stage_jobs = [j for j in jobs if j[0] == stage]
      with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
        futures = {pool.submit(launch_run, cmd, out): out for _, out, cmd in stage_jobs}
        for fut in concurrent.futures.as_completed(futures):
          print(f"  done {futures[fut]} in {fut.result():.0f} s", flush=True)
  wall = time.time() - t0
  name = dataset if FLAGS.table == "table2" else f"ablations_{dataset}"
  timing_path = os.path.join(root, f"timing_{FLAGS.table}.json")
  if not FLAGS.collect_only and jobs:
    atomic_write_json(timing_path, {"runs": len(jobs), "wall_seconds": wall, "jobs": FLAGS.jobs,
                                    "load_average": os.getloadavg()})
  notes = [f"Made by `python -m launch.grid --dataset={dataset} --table={FLAGS.table}` "
           f"(seeds {','.join(map(str, seeds))}).",
           "Test metrics of the epoch with the best validation bACC; GM with zero recalls "
           "replaced by 0.001 (imbalanced-learn correction)."]
  if os.path.exists(timing_path):
    with open(timing_path) as fh:
      timing = json.load(fh)
    notes.append(f"Wall time of the invocation that trained {timing['runs']} of these runs: "
                 f"{timing['wall_seconds']:.0f} s with {timing['jobs']} processes on this machine "
                 f"({os.cpu_count()} cores; load average at the end "
                 f"{', '.join(f'{v:.1f}' for v in timing['load_average'])}).")
  if hparams:
    notes.append(f"M2m hyper-parameters selected on validation bACC: `{json.dumps(hparams)}`.")
  if FLAGS.extra:
    notes.append(f"Extra flags: {FLAGS.extra}.")
  df = tables.collect(root, name, rows, paper=tables.PAPER.get(dataset),
                      results_dir=FLAGS.results_dir, seeds=seeds,
                      title=f"{dataset}: {'Table 2' if FLAGS.table == 'table2' else 'ablations'}",
                      notes=notes)
  print(open(os.path.join(FLAGS.results_dir, f"{name}.md")).read())
  print(f"grid wall time this invocation: {wall:.0f} s; runs: {len(df)}")


if __name__ == "__main__":
  app.run(main)
