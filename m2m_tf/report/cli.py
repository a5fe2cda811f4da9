"""`python -m m2m_tf.report RUN_DIR`: (re)writes a finished run's report (`m2m_tf.report`).

  python -m m2m_tf.report runs/reuters_m2m_s0
  python -m m2m_tf.report runs/folder_m2m --data_dir=/data   # data moved since the run
  python -m m2m_tf.report runs/folder_m2m --notranslations  # no model is built

The figures come from results.json and history.csv. An M2m run on images also gets its
translation grid: its data, g and best f are rebuilt from flags.json as the run built them (g:
`g_checkpoint`, read relative to the current folder as the run read it, else the run's g_erm/).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from data_prep.paths import DataNotFoundError
from m2m_tf import report
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import M2mError
from m2m_tf.run_records import BEST_WEIGHTS_FILE, FLAGS_FILE, RESULTS_FILE
from data_prep.atomic import read_json
from m2m_tf.training import builders
from m2m_tf.training.inputs import load_data
from m2m_tf.training.methods import get_method


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  p = argparse.ArgumentParser(prog="python -m m2m_tf.report", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("run_dir", help="A finished run folder (it holds results.json).")
  p.add_argument("--data_dir", default=None,
                 help="Data root for the translation grid (default: the run's).")
  p.add_argument("--notranslations", dest="translations", action="store_false",
                 help="Skip the translation grid (no data read, no model built).")
  return p.parse_args(argv)


def g_path(cfg: ExperimentConfig, run_dir: str) -> Optional[str]:
  """The run's g weights: its g_checkpoint, else the g it trained (g_erm/); None for M2m-Self."""
  t = cfg.training
  if t.self_translation:
    return None
  return t.g_checkpoint or os.path.join(run_dir, "g_erm", BEST_WEIGHTS_FILE)


def load_models(run_dir: str, data_dir: Optional[str] = None) -> Optional[report.Models]:
  """The translation grid's inputs (data, g, best f) rebuilt from a run folder; None if no grid.

  Raises M2mError or DataNotFoundError when the data or g cannot be read.
  """
  cfg = ExperimentConfig.from_json(read_json(os.path.join(run_dir, FLAGS_FILE)) or {})
  if not get_method(cfg.training.method).m2m or cfg.model.arch == "mlp":
    return None
  # One device, and the training split in memory (the seeds are drawn from it).
  cfg = cfg.replace(strategy="default", streaming=False, output_dir=run_dir,
                    data_dir=data_dir or cfg.data.data_dir)
  data = load_data(cfg)
  if data.input_kind != "image":
    return None
  g = g_path(cfg, run_dir)
  if g:
    builders.check_g_paths(g)
  trainer = builders.build_trainer(cfg, data, g, data.x_train, data.y_train)
  trainer.f.load_weights(os.path.join(run_dir, BEST_WEIGHTS_FILE))
  return report.grid_models(trainer, data)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes the report of RUN_DIR; returns 0, or 1 with one line if it is not a finished run."""
  args = parse_args(argv)
  if not os.path.isdir(args.run_dir):
    print(f"m2m_tf.report: error: {args.run_dir} is not a folder.", file=sys.stderr)
    return 1
  if read_json(os.path.join(args.run_dir, RESULTS_FILE)) is None:
    print(f"m2m_tf.report: error: {args.run_dir} holds no results.json (an unfinished run: run "
          "its command again; the report is written when it ends).", file=sys.stderr)
    return 1
  models = None
  if args.translations:
    try:
      models = load_models(args.run_dir, args.data_dir)
    except (M2mError, DataNotFoundError) as e:
      print(f"m2m_tf.report: no translation grid: {e}", file=sys.stderr)
  written = report.write_report(args.run_dir, models=models)
  for path in list(written.figures.values()) + [written.report]:
    print(f"wrote {path}")
  return 0
