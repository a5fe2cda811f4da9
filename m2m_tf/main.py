r"""Train a classifier on long-tailed data with M2m or a baseline.

  python -m m2m_tf.main --dataset=reuters --method=m2m
  python -m m2m_tf.main --dataset=reuters --method=drw --loss=ldam --seed=1 \
      --output_dir=runs/reuters_ldam_drw_s1

Unset schedule flags take the dataset's recipe (docs/method.md#training-recipes,
data_prep/registry.py).
The flags are generated from the fields of `m2m_tf.config.ExperimentConfig`
(`m2m_tf.config_flags`). This is the only module that reads FLAGS; it turns
them into an `ExperimentConfig` for `m2m_tf.training.run.run_experiment`.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from data_prep.paths import DataNotFoundError
from data_prep.registry import available_datasets
from m2m_tf import config_flags
from m2m_tf import quiet
from m2m_tf.cli import run_absl
from m2m_tf.errors import ConfigError, M2mError

FLAGS = flags.FLAGS

# One flag per field of m2m_tf.config.ExperimentConfig, with its help text and rule.
config_flags.define_flags(FLAGS)


def config_from_flags():
  """The `ExperimentConfig` of the parsed FLAGS (the only place FLAGS are read)."""
  if ":" not in FLAGS.dataset and FLAGS.dataset not in available_datasets():
    raise app.UsageError(f"--dataset={FLAGS.dataset} has a recipe but no builder yet; "
                         f"available: {sorted(available_datasets())}.")
  try:
    return config_flags.config_from_flags(FLAGS)
  except ConfigError as e:
    raise app.UsageError(f"invalid flags: {e}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = config_from_flags()
  # TensorFlow's start-up lines only when --verbosity asks (docs/runs.md#quiet-start-up).
  if not FLAGS["verbosity"].present:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # its INFO lines after start-up, too
  quiet.import_tensorflow(verbose=FLAGS["verbosity"].present)
  from m2m_tf.training.run import run_experiment  # lazy: --help and bad flags need no TensorFlow
  if not FLAGS["verbosity"].present:
    # TF's Python INFO lines (signature renames, saver timings, asset paths) are noise too; our
    # own progress lines go to stderr (`fitting.say`). --verbosity=0 brings the INFO lines back.
    logging.set_verbosity(logging.WARNING)
  try:
    results = run_experiment(config)
  except KeyboardInterrupt:
    print("m2m_tf.main: interrupted; run the same command again to resume.", file=sys.stderr)
    sys.exit(130)
  except (M2mError, DataNotFoundError) as e:
    # User errors get one line; anything else is a bug and keeps its traceback.
    sys.exit(f"m2m_tf.main: error: {e}")
  if "stopped_after" in results:
    print(f"{results['output_dir']}: stopped after {results['stopped_after']} of "
          f"{results['epochs']} epochs (--stop_after); the same command without it goes on.")
    return
  line = (f"{results['dataset']} {results['loss']}-{results['method']} seed {results['seed']}: "
          f"test bACC {results['test_bacc']:.2f} GM {results['test_gm']:.2f} | "
          f"val bACC {results['val_bacc']:.2f} GM {results['val_gm']:.2f} | "
          f"best epoch {results['best_epoch']} | {results['seconds']:.0f} s")
  if results.get("data_label"):
    line += f" [{results['data_label']}]"
  print(line)
  print(f"results: {os.path.join(results['output_dir'], 'results.json')}")
  sys.stdout.flush()


def run_main():
  """Console-script entry point (`m2m-train`); --help prints the flags and exits 0."""
  run_absl(main, flag_modules=[config_flags.__name__])


if __name__ == "__main__":
  run_main()
