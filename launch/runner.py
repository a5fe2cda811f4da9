"""Launching main.py runs as subprocesses, planning a grid's runs (shared by the launch scripts)."""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from launch import tables
from m2m_tf.config import DataConfig
from m2m_tf.config import G_SEED_OFFSET
from m2m_tf.run_records import BEST_WEIGHTS_FILE, RESULTS_FILE

# The flags that shape the data; a g must be trained on the same data as f.
DATA_FIELDS = frozenset(f.name for f in dataclasses.fields(DataConfig))


def run_flags(row_flags: dict) -> List[str]:
  """{'loss': 'ce', 'no_reject': True} -> ['--loss=ce', '--no_reject']."""
  out = []
  for k, v in row_flags.items():
    if isinstance(v, bool):
      out.append(f"--{k}" if v else f"--no{k}")
    else:
      out.append(f"--{k}={v}")
  return out


def g_seeds_of(seed: int, ensemble: bool = False) -> List[int]:
  """The ERM seeds whose best weights are g for the M2m run with `seed`.

  seed + G_SEED_OFFSET (the ensemble's second member: 100 more), never f's own
  ERM twin `erm_s<seed>`: g must be trained independently of f.
  """
  first = seed + G_SEED_OFFSET
  return [first] + ([first + 100] if ensemble else [])


def posthoc_jobs(rows: Dict[str, tuple], seeds: List[int], root: str,
                 data_dir: Optional[str] = None) -> List[tuple]:
  """(out_file, cmd) of the post-hoc adjustments a grid lacks: for each row with "posthoc_of"
  and seed, `m2m_tf.evaluate --posthoc_tau=select` of its base run, once that run is finished
  and has no POSTHOC_FILE. tau is chosen on the run's validation bACC only (the evaluate
  command reads the test split after the choice)."""
  jobs = []
  for key in rows:
    base = tables.posthoc_base(rows, key)
    for s in seeds if base else ():
      run = os.path.join(root, f"{base}_s{s}")
      out = os.path.join(root, tables.finished_marker(rows, key, s))
      if os.path.exists(os.path.join(run, RESULTS_FILE)) and not os.path.exists(out):
        jobs.append((out, [sys.executable, "-m", "m2m_tf.evaluate", f"--checkpoint={run}",
                           "--posthoc_tau=select"] + ([f"--data_dir={data_dir}"] if data_dir
                                                      else [])))
  return jobs


def run_posthoc(jobs: List[tuple]) -> None:
  """Runs `posthoc_jobs`' commands one after another (each a few seconds); RuntimeError names
  the first that fails, with its output's tail."""
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  for out, cmd in jobs:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not os.path.exists(out):
      raise RuntimeError(f"post-hoc adjustment {' '.join(cmd[2:])} failed:\n"
                         f"{(proc.stdout + proc.stderr)[-2000:]}")
    print(proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else f"wrote {out}",
          flush=True)


def run_jobs(jobs: List[tuple], processes: int) -> None:
  """Runs `(out_dir, cmd)` main.py jobs in `processes` parallel `launch.run_many` processes.

  Each process takes every `processes`-th job (so the slow M2m runs spread) and runs them
  one after another with one TensorFlow start-up (launch/run_many.py); its per-run
  "done ... in N s" lines come through. Raises RuntimeError naming the failed runs' logs.
  """
  if not jobs:
    return
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  with tempfile.TemporaryDirectory() as tmp:
    procs = []
    for p in range(min(processes, len(jobs))):
      path = os.path.join(tmp, f"jobs{p}.json")
      with open(path, "w") as fh:
        json.dump([(out, cmd[cmd.index("m2m_tf.main") + 1:]) for out, cmd in jobs[p::processes]],
                  fh)
      procs.append(subprocess.Popen([sys.executable, "-m", "launch.run_many", path], env=env))
    failed = [p.args[-1] for p in procs if p.wait() != 0]
  if failed:
    raise RuntimeError(f"{len(failed)} of {len(procs)} run_many processes had failed runs; "
                       "their logs are named above (<out_dir>.log).")


def row_flags(key: str, rows: Dict[str, tuple], row_settings: Dict[str, dict]) -> tuple:
  """(main.py flags, g ensemble size) of a table row.

  A row builds on a Table-2 grid row (its own key, else its "row" entry, else ERM-M2m):
  that row's flags, then the settings selected for it (launch.tune), then the
  row's own flags, which win (an ablation's gamma = 0 beats the selected gamma).
  """
  own = dict(rows[key][1])
  ensemble = own.pop("g_ensemble", 0)
  base = own.pop("row", key if key in tables.TABLE2_GRID_ROWS else "m2m")
  return {**tables.TABLE2_GRID_ROWS[base][1], **row_settings.get(base, {}), **own}, ensemble


def g_runs(flags_: dict, seed: int, ensemble: int, root: str) -> List[tuple]:
  """(out_dir, flags) of the ERM runs whose best weights are g for an M2m run of `seed`.

  g is ERM under the dataset's recipe (like the official code's pre-trained
  network, not the ERM row's tuned setting), on the same data as f: a row that
  changes the data (say vocab_size) gets g runs of its own, `erm_<data>_s<seed>`.
  """
  data = {k: v for k, v in flags_.items() if k in DATA_FIELDS}
  tag = "".join(f"{k}{v}_" for k, v in sorted(data.items()))
  return [(os.path.join(root, f"erm_{tag}s{gs}"),
           {**tables.TABLE2_ROWS["erm"][1], **data, "seed": gs})
          for gs in g_seeds_of(seed, ensemble)]


def plan(dataset: str, rows: Dict[str, tuple], seeds: List[int], root: str, extra: List[str],
         data_dir, row_settings: Optional[Dict[str, dict]] = None,
         g_root: Optional[str] = None) -> List[tuple]:
  """(stage, out_dir, cmd) for every unfinished run; stage 0 = ERM g runs, 1 = the rest.

  Row `key` with seed s runs in `<root>/<key>_s<s>`, its g runs under `g_root`
  (default `root`); a post-hoc row ("posthoc_of") plans its base row's runs instead.
  `row_settings` are the settings selected per Table-2 row with equal budgets
  (launch.tune); see `row_flags` for how a row's flags are made.
  """
  base = [sys.executable, "-m", "m2m_tf.main", f"--dataset={dataset}", "--verbose=0"]
  base += [f"--data_dir={data_dir}"] if data_dir else []
  tail = [f"--{e}" for e in extra]
  runs = {}  # out_dir -> (stage, flags); a g shared by several rows is planned once
  # A post-hoc row trains nothing: its base row's runs (`posthoc_jobs` adjusts them).
  keys = dict.fromkeys(tables.posthoc_base(rows, k) or k for k in rows)
  for key in keys:
    flags_, ensemble = row_flags(key, {**tables.TABLE2_GRID_ROWS, **rows}, row_settings or {})
    for s in seeds:
      run = dict(flags_, seed=s)
      if flags_.get("method") == "m2m" and not flags_.get("self_translation"):
        gs = g_runs(flags_, s, ensemble, g_root or root)
        run["g_checkpoint"] = ",".join(os.path.join(out, BEST_WEIGHTS_FILE) for out, _ in gs)
        runs.update({out: (0, g) for out, g in gs})
      runs[os.path.join(root, f"{key}_s{s}")] = (1, run)
  jobs = [(stage, out, base + run_flags(f) + [f"--output_dir={out}"] + tail)
          for out, (stage, f) in runs.items()
          if not os.path.exists(os.path.join(out, RESULTS_FILE))]
  return sorted(jobs, key=lambda j: j[0])
