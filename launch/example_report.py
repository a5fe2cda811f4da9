r"""The README's example of a run report: the Quick start's run and its `report.md` and figures.

  python -m launch.example_report                        # runs the Quick start if needed
  python -m launch.example_report --run_dir=runs/reuters_ce_m2m_s0

Trains (or reuses, once finished) `python -m m2m_tf.main --dataset=reuters --method=m2m` in
--run_dir, then copies its `report.md` and `figures/` to results/example_reuters_m2m/ (the run's
weights stay out of the repository).
"""

import argparse
import os
import shutil
import sys
from typing import Optional, Sequence

from m2m_tf.config import ExperimentConfig
from data_prep.atomic import read_json
from m2m_tf.run_records import FIGURES_DIR, REPORT_FILE, RESULTS_FILE
from m2m_tf.training import run

OUT = os.path.join("results", "example_reuters_m2m")


def ensure_run(run_dir: str) -> None:
  """Trains the Quick start's run into `run_dir` unless it has finished there (resumes it)."""
  if read_json(os.path.join(run_dir, RESULTS_FILE)) is None:
    run.run_experiment(ExperimentConfig.from_leaves(dataset="reuters", method="m2m",
                                                    output_dir=run_dir, verbose=0))


def copy_report(run_dir: str, out: str = OUT) -> str:
  """Copies `run_dir`'s report.md and figures/ to `out` (replacing both); returns `out`."""
  if not os.path.exists(os.path.join(run_dir, REPORT_FILE)):
    raise SystemExit(f"example_report: {run_dir} has no report.md; run "
                     f"`python -m m2m_tf.report {run_dir}` first.")
  os.makedirs(out, exist_ok=True)
  shutil.copyfile(os.path.join(run_dir, REPORT_FILE), os.path.join(out, REPORT_FILE))
  shutil.rmtree(os.path.join(out, FIGURES_DIR), ignore_errors=True)
  shutil.copytree(os.path.join(run_dir, FIGURES_DIR), os.path.join(out, FIGURES_DIR))
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Makes results/example_reuters_m2m/ (module docstring)."""
  p = argparse.ArgumentParser(prog="python -m launch.example_report", description=__doc__)
  p.add_argument("--run_dir", default=os.path.join("runs", "reuters_ce_m2m_s0"))
  args = p.parse_args(argv)
  ensure_run(args.run_dir)
  print(f"wrote {copy_report(args.run_dir)}/report.md and its figures")
  return 0


if __name__ == "__main__":
  sys.exit(main())
