"""A run folder's file names and the commit records of its `ckpt/` folder (written by
`m2m_tf.training.checkpoint`), read with the standard library only, so progress reports need no
Keras.
"""

import glob
import os
import re
from typing import Dict, List, Optional

from m2m_tf.errors import CheckpointError
from data_prep.atomic import read_json

# The entries of a run folder (docs/runs.md), named once for the writers and the readers.
CKPT_DIR = "ckpt"  # the commit records and the states they name
FLAGS_FILE = "flags.json"  # the run's configuration (m2m_tf.config.ExperimentConfig)
HISTORY_FILE = "history.csv"  # one row per finished epoch
RESULTS_FILE = "results.json"  # written last: a run folder holding it is finished
BEST_WEIGHTS_FILE = "best_f.weights.h5"  # the selected epoch's f, beside ckpt/
BEST_STATE_FILE = "best_state.json"  # its epoch, score, summaries and the file's sha256
EXPORT_DIR = "saved_model"  # the selected f as a SavedModel
POSTHOC_FILE = "posthoc_la.json"  # post-hoc logit adjustment of a finished run (m2m_tf.evaluate)
REPORT_FILE = "report.md"  # the run's report (m2m_tf.report)
FIGURES_DIR = "figures"  # the report's figures
_RECORD = re.compile(r"state-(\d{4,})\.json$")


def record_path(run_dir: str, epochs_done: int) -> str:
  """The commit record of a run folder's state after `epochs_done` epochs (it may not exist)."""
  return os.path.join(run_dir, CKPT_DIR, f"state-{epochs_done:04d}.json")


def committed_records(ckpt_dir: str) -> List[tuple]:
  """(epochs_done, record path) of every commit record in `ckpt_dir`, newest first."""
  out = []
  for path in glob.glob(os.path.join(ckpt_dir, "state-*.json")):
    m = _RECORD.search(os.path.basename(path))
    if m:
      out.append((int(m.group(1)), path))
  return sorted(out, reverse=True)


def read_record(path: str) -> dict:
  """The JSON of a commit record (no file checks); CheckpointError if it cannot be read."""
  rec = read_json(path)
  if rec is None:
    raise CheckpointError(f"{path} cannot be read as a JSON record")
  return rec


def newest_record(ckpt_dir: str) -> Optional[dict]:
  """The newest readable commit record (its files not checked), or None: for progress reports."""
  for _, path in committed_records(ckpt_dir):
    rec = read_json(path)
    if rec is not None:
      return rec
  return None


# The sections of a run's flags.json (m2m_tf.config.ExperimentConfig), and the builder options
# that older, flat records kept in `dataset_options` and that now have a field of their own (a
# new option never needs listing: `DataConfig` marks its builder options). Standard library only.
CONFIG_SECTIONS = ("data", "model", "schedule", "training", "m2m", "runtime")
NAMED_DATA_OPTIONS = ("imbalance_ratio", "imbalance_profile", "label_column", "val_fraction",
                      "test_fraction", "image_size", "clip", "vocab_size", "embeddings",
                      "substitute")


def flatten_record(record: dict) -> Dict[str, object]:
  """A flags.json (nested, or the older flat form with builder options in `dataset_options`) as
  {leaf name: value}."""
  out = {}
  for key, value in record.items():
    if key in CONFIG_SECTIONS and isinstance(value, dict):
      out.update(value)
    elif key == "dataset_options" and isinstance(value, dict):
      out.update({k: v for k, v in value.items() if k in NAMED_DATA_OPTIONS})
      out[key] = {k: v for k, v in value.items() if k not in NAMED_DATA_OPTIONS}
    else:
      out[key] = value
  return out


def epoch_machines(record: dict) -> List[Optional[str]]:
  """A commit record's (or results.json's) per-epoch machines, padded with None to its epoch
  count: None for an epoch from before machines were recorded."""
  machines = list(record.get("epoch_machines", []))
  n = len(record.get("epoch_seconds", []))
  return machines[:n] + [None] * (n - len(machines))
