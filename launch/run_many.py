r"""Run many `m2m_tf.main` command lines one after another in ONE process.

  python -m launch.run_many JOBS.json

JOBS.json is a list of [out_dir, [main.py flags...]]. A table grid has hundreds
of short runs (a Reuters run trains for about 10 s); started one process each,
TensorFlow's start-up and the data loading cost as much as the training. Here
TensorFlow loads once, each dataset is read once, and every run is the same
`run_experiment` call that `python -m m2m_tf.main` makes with those flags.

A run in this process gives the same results as the same command run on its own
(tests/test_launch.py checks it): every run seeds its own random streams,
`keras.utils.clear_session()` resets Keras' global state between runs, and the
shared dataset is read-only. Each run's output (the `main.py` lines, warnings,
errors) is appended to `<out_dir>.log`, as `runner.launch_run` does. A run that
fails is reported and the others go on; the exit status is then 1.
"""

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Dict, List

from absl import flags

from data_prep import user_data
from m2m_tf import config_flags


def config_of(argv: List[str]):
  """The `ExperimentConfig` that `python -m m2m_tf.main` builds from these flags."""
  fv = flags.FlagValues()
  config_flags.define_flags(fv)
  fv(["m2m_tf.main"] + list(argv))
  return config_flags.config_from_flags(fv)


@contextlib.contextmanager
def output_to(path: str):
  """Sends this process's stdout and stderr (file descriptors 1 and 2, so TensorFlow's C++
  lines too) to `path`, appending, and restores them afterwards."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(path, "a") as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      yield
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for fd in saved:
        os.close(fd)


def run_one(out_dir: str, argv: List[str], datasets: Dict[str, object]) -> None:
  """One run, as `python -m m2m_tf.main ARGV` would make it, with its dataset read once."""
  import keras  # lazy: TensorFlow; keeps --help fast
  from m2m_tf.training import run  # lazy: TensorFlow; keeps --help fast
  keras.utils.clear_session()
  cfg = config_of(argv)
  # Your own data's recipe comes from the data (run_experiment resolves it); the data
  # options that key the shared dataset are set either way.
  resolved = cfg if user_data.is_spec(cfg.data.dataset) else cfg.resolved()
  key = json.dumps(resolved.to_json()["data"], sort_keys=True)
  if key not in datasets:
    datasets[key] = run.load_data(resolved)
  results = run.run_experiment(cfg, data=datasets[key])
  print(f"{results['dataset']} {results['loss']}-{results['method']} seed {results['seed']}: "
        f"test bACC {results['test_bacc']:.2f} | val bACC {results['val_bacc']:.2f} | "
        f"{results['seconds']:.0f} s\nresults: {os.path.join(out_dir, 'results.json')}")


def run_all(jobs: List[tuple]) -> List[str]:
  """Runs every (out_dir, argv) job; returns the out_dirs of those that failed."""
  datasets, failed = {}, []
  for out_dir, argv in jobs:
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    t0 = time.time()
    with output_to(out_dir + ".log"):
      try:
        run_one(out_dir, argv, datasets)
        ok = True
      except Exception:
        traceback.print_exc()  # into the run's log; the other runs go on
        ok = False
    if not ok:
      failed.append(out_dir)
    print(f"  {'done' if ok else 'FAILED'} {out_dir} in {time.time() - t0:.0f} s"
          + ("" if ok else f"; see {out_dir}.log"), flush=True)
  return failed


def main() -> int:
  """Reads the jobs file named on the command line and runs its jobs in order."""
  if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    return 0 if len(sys.argv) == 2 else 2
  with open(sys.argv[1]) as fh:
    jobs = json.load(fh)
  failed = run_all(jobs)
  if failed:
    print(f"run_many: {len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}",
          file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
