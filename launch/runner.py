"""Launching main.py runs as subprocesses, planning a grid's runs (shared by the launch scripts)."""

import concurrent.futures
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from launch import tables
from m2m_tf.recipes import G_SEED_OFFSET


def run_flags(row_flags: dict) -> List[str]:
  """{'loss': 'ce', 'no_reject': True} -> ['--loss=ce', '--no_reject']."""
  out = []
  for k, v in row_flags.items():
    if isinstance(v, bool):
      out.append(f"--{k}" if v else f"--no{k}")
    else:
      out.append(f"--{k}={v}")
  return out


def launch_run(cmd: List[str], out_dir: str) -> float:
  """Runs one training process (log beside it: <out_dir>.log); returns its wall time."""
  os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  t0 = time.time()
  with open(out_dir + ".log", "a") as log:
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
  if proc.returncode != 0:
    raise RuntimeError(f"Run failed ({proc.returncode}): {' '.join(cmd)}; see {out_dir}.log")
  return time.time() - t0


def g_seeds_of(seed: int, ensemble: bool = False) -> List[int]:
  """The ERM seeds whose best weights are g for the M2m run with `seed`.

  seed + G_SEED_OFFSET (the ensemble's second member: 100 more), never f's own
  ERM twin `erm_s<seed>`: g must be trained independently of f.
  """
  first = seed + G_SEED_OFFSET
  return [first] + ([first + 100] if ensemble else [])


def run_jobs(jobs: List[tuple], processes: int) -> None:
  """Runs `(out_dir, cmd)` jobs in `processes` parallel processes, printing each one's wall time."""
  with concurrent.futures.ThreadPoolExecutor(processes) as pool:
    futures = {pool.submit(launch_run, cmd, out): out for out, cmd in jobs}
    for fut in concurrent.futures.as_completed(futures):
      print(f"  done {futures[fut]} in {fut.result():.0f} s", flush=True)


def plan(dataset: str, rows: Dict[str, tuple], seeds: List[int], root: str, hparams: dict,
         extra: List[str], data_dir, row_settings: Optional[Dict[str, dict]] = None
         ) -> List[tuple]:
  """(stage, out_dir, cmd) for every unfinished run; stage 0 = ERM g runs, 1 = the rest.

  `hparams` are M2m's selected (beta, lam, gamma) per loss (launch.select_hparams);
  `row_settings` the settings selected per row with equal budgets (launch.tune), which
  take precedence; the ERM g runs take the "erm" row's.
  """
  row_settings = row_settings or {}
  jobs = []
  base = [sys.executable, "-m", "m2m_tf.main", f"--dataset={dataset}", "--verbose=0"]
  if data_dir:
    base.append(f"--data_dir={data_dir}")
  needs_erm = set()
  for key, (_, row_flags) in rows.items():
    row_flags = dict(row_flags)
    ensemble = row_flags.pop("g_ensemble", 0)
    if key in tables.TABLE2_ROWS:
      row_flags = {**tables.TABLE2_ROWS[key][1], **row_flags}
    else:
      row_flags = {"loss": "ce", "method": "m2m", **row_flags}
    is_m2m = row_flags.get("method") == "m2m"
    if is_m2m:
      tuned = hparams.get(row_flags["loss"], {})
      row_flags = {**tuned, **row_flags}
    row_flags = {**row_flags, **row_settings.get(key, {})}
    for s in seeds:
      out = os.path.join(root, f"{key}_s{s}")
      flags_ = dict(row_flags)
      if is_m2m and not flags_.get("self_translation"):
        g_seeds = g_seeds_of(s, ensemble)
        needs_erm.update(g_seeds)
        flags_["g_checkpoint"] = ",".join(
            os.path.join(root, f"erm_s{gs}", "best_f.weights.h5") for gs in g_seeds)
      if key == "erm" or os.path.exists(os.path.join(out, "results.json")):
        continue
      cmd = base + run_flags(flags_) + [f"--seed={s}", f"--output_dir={out}"] + \
          [f"--{e}" for e in extra]
      jobs.append((1, out, cmd))
  erm_seeds = sorted(needs_erm | (set(seeds) if "erm" in rows else set()))
  for s in erm_seeds:
    out = os.path.join(root, f"erm_s{s}")
    if not os.path.exists(os.path.join(out, "results.json")):
      cmd = (base + run_flags({**tables.TABLE2_ROWS["erm"][1], **row_settings.get("erm", {})})
             + [f"--seed={s}", f"--output_dir={out}"] + [f"--{e}" for e in extra])
      jobs.append((0, out, cmd))
  return sorted(jobs, key=lambda j: j[0])
