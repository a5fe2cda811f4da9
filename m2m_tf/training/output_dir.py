"""The run folder: a lock against a second process, a manifest of our files, a safe --overwrite.

Rules (docs/runs.md):
  * one process at a time: `RunLock` holds an exclusive `flock` on `.m2m_lock`
    for the whole run. The kernel drops it when the process dies, however it
    dies, so the lock of a dead run is simply taken over;
  * a folder is ours when it holds our manifest (`.m2m_manifest.json`) or, for
    runs made before the manifest existed, our `flags.json`. Only the entries
    a run of ours writes (`OUR_ENTRIES`) are ever deleted, and only by
    `--overwrite`, and only after the inputs were validated (`OutputPlan.apply`);
    a folder that also holds anything else is refused whole;
  * an unfinished run resumes when its configuration matches, compared on
    resolved paths and ignoring settings that cannot change the result; a run
    that never committed an epoch does not block a corrected command. A run on
    your own data whose content changed since (its `data_digest`) is refused
    with a line of its own.
"""

import dataclasses
import fcntl
import os
import shutil
import socket
from typing import Callable, Iterable, List, Optional

from m2m_tf.errors import OutputDirError
from data_prep.atomic import TMP_PREFIX, atomic_write_json, read_json
from m2m_tf.run_records import BEST_STATE_FILE, BEST_WEIGHTS_FILE, CKPT_DIR, EXPORT_DIR
from m2m_tf.run_records import FIGURES_DIR, FLAGS_FILE, HISTORY_FILE, POSTHOC_FILE, REPORT_FILE
from m2m_tf.run_records import RESULTS_FILE, committed_records

LOCK_FILE = ".m2m_lock"
MANIFEST_FILE = ".m2m_manifest.json"
# Post-hoc logit adjustment of a finished run (POSTHOC_FILE) is ours too, so that it does not
# make the folder foreign, and --overwrite drops it with the results it was made from.
OUR_ENTRIES = (FLAGS_FILE, RESULTS_FILE, HISTORY_FILE, BEST_WEIGHTS_FILE, BEST_STATE_FILE,
               EXPORT_DIR, "tensorboard", CKPT_DIR, "g_erm", "backup", LOCK_FILE, MANIFEST_FILE,
               POSTHOC_FILE, REPORT_FILE, FIGURES_DIR)
# Settings that cannot change a run's result: they never block a resume (--streaming reads the
# same batches from disk; --noexport only skips the SavedModel).
NOT_RESULT_FIELDS = frozenset({"overwrite", "verbose", "data_dir", "output_dir", "keep_epochs",
                               "export", "streaming", "stop_after", "test_every_epoch",
                               "inter_op_threads"})
PATH_FIELDS = frozenset({"g_checkpoint", "init_from"})
# The content digest of your own data (m2m_tf.config.DataConfig.data_digest).
DATA_DIGEST = "data_digest"


def is_locked(output_dir: str) -> bool:
  """Whether a live process holds the `RunLock` of `output_dir` (never takes it for long)."""
  path = os.path.join(output_dir, LOCK_FILE)
  if not os.path.exists(path):
    return False
  with open(path) as fh:
    try:
      fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
  return False


class RunLock:
  """An exclusive lock on a run folder for the life of a run (a context manager).

  Args:
    output_dir: the run folder; created if missing.
  """

  def __init__(self, output_dir: str):
    self.output_dir = output_dir
    self._fh = None

  def __enter__(self):
    try:
      os.makedirs(self.output_dir, exist_ok=True)
      fh = open(os.path.join(self.output_dir, LOCK_FILE), "a+")
    except OSError as e:
      raise OutputDirError(f"cannot use output folder {self.output_dir}: "
                           f"{e.strerror or e}") from None
    try:
      fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      fh.seek(0)
      owner = fh.read().strip() or "another process"
      fh.close()
      raise OutputDirError(f"{self.output_dir} is in use by another run ({owner}); wait for it "
                           "to end or choose another --output_dir.") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    self._fh = fh
    return self

  def __exit__(self, *exc):
    if self._fh is not None:
      fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
      self._fh.close()
      self._fh = None
    return False


def _resolve(value):
  if not value:
    return value
  return ",".join(os.path.realpath(p) for p in str(value).split(","))


def config_differences(previous: dict, current: dict, defaults: dict) -> List[str]:
  """Fields that differ in a way that can change the result (paths compared resolved).

  A field missing from `previous` (added after that run started) counts as its default.
  """
  diff = []
  for k in sorted(set(previous) | set(current)):
    if k in NOT_RESULT_FIELDS:
      continue
    a, b = previous.get(k, defaults.get(k)), current.get(k, defaults.get(k))
    if k in PATH_FIELDS:
      a, b = _resolve(a), _resolve(b)
    if a != b:
      diff.append(k)
  return diff


def our_entries(output_dir: str) -> Optional[frozenset]:
  """The entries a run of ours may write in the folder, or None when the folder is not ours.

  A folder is ours when it holds our manifest (its recorded entries count too,
  so files of a run made by another version are recognised) or, for runs made
  before the manifest existed, our flags.json.
  """
  manifest = read_json(os.path.join(output_dir, MANIFEST_FILE))
  if manifest is not None:
    return frozenset(OUR_ENTRIES) | frozenset(manifest.get("entries") or ())
  flags = read_json(os.path.join(output_dir, FLAGS_FILE))
  if flags and "seed" in flags and ({"dataset", "method"} <= set(flags) or "data" in flags):
    return frozenset(OUR_ENTRIES)
  return None


def is_ours(output_dir: str) -> bool:
  """Whether the folder was made by a run of ours (see `our_entries`)."""
  return our_entries(output_dir) is not None


def foreign_entries(output_dir: str) -> List[str]:
  """The entries of the folder that no run of ours wrote (all of them if the folder is not ours)."""
  return _foreign(output_dir, our_entries(output_dir))


def _foreign(output_dir: str, ours: Optional[frozenset]) -> List[str]:
  names = [n for n in sorted(os.listdir(output_dir))
           if not n.startswith(TMP_PREFIX) and n != LOCK_FILE]
  return names if ours is None else [n for n in names if n not in ours]


def _describe(names: Iterable[str]) -> str:
  names = list(names)
  return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@dataclasses.dataclass
class OutputPlan:
  """What to do with the run folder, decided before any work and applied after the inputs check.

  action: "fresh" (start a run), "resume" (continue the committed one),
  "replace" (--overwrite: delete our entries, then start) or "restart" (a run
  that never committed an epoch: delete our entries except g_erm/, which is a
  run of its own with its own checks, then start).
  """

  output_dir: str
  action: str
  config_json: dict
  ours: frozenset = frozenset(OUR_ENTRIES)

  def apply(self) -> None:
    """Deletes our entries for "replace"; writes flags.json and the manifest for a new run."""
    if self.action == "resume":
      return
    if self.action in ("replace", "restart"):
      # The manifest stays (it is rewritten below): a kill mid-way leaves a folder still ours.
      keep = {LOCK_FILE, MANIFEST_FILE} | ({"g_erm"} if self.action == "restart" else set())
      for name in sorted(self.ours - keep):
        path = os.path.join(self.output_dir, name)
        if not os.path.lexists(path):
          continue
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
    atomic_write_json(os.path.join(self.output_dir, MANIFEST_FILE),
                      {"made_by": "m2m_tf", "entries": list(OUR_ENTRIES)})
    atomic_write_json(os.path.join(self.output_dir, FLAGS_FILE), self.config_json)


def plan_output_dir(output_dir: str, config_json: dict, overwrite: bool,
                    differences: Callable[[dict], List[str]]) -> OutputPlan:
  """Decides fresh / resume / replace for a locked folder, deleting nothing.

  Args:
    output_dir: the (locked) run folder.
    config_json: this run's configuration, written to flags.json.
    overwrite: whether a finished or different run of ours may be replaced.
    differences: the fields in which a recorded flags.json differs from this
      run in a way that can change the result.

  Raises:
    OutputDirError: foreign files; results without --overwrite; an unfinished
      run of another configuration that committed epochs, without --overwrite.
  """
  ours = our_entries(output_dir)
  foreign = _foreign(output_dir, ours)
  if foreign:
    raise OutputDirError(f"{output_dir} holds files that no run of ours wrote ({_describe(foreign)}"
                         "); nothing was changed. Choose another --output_dir (--overwrite never "
                         "deletes files it did not write).")
  if ours is None:
    return OutputPlan(output_dir, "fresh", config_json)
  if overwrite:
    return OutputPlan(output_dir, "replace", config_json, ours)
  if os.path.exists(os.path.join(output_dir, RESULTS_FILE)):
    raise OutputDirError(f"{output_dir} already holds results ({RESULTS_FILE}); pass --overwrite "
                         "to replace them or choose another --output_dir.")
  committed = committed_records(os.path.join(output_dir, CKPT_DIR))
  if not committed:
    if os.path.isdir(os.path.join(output_dir, "backup")):
      raise OutputDirError(f"{output_dir} holds an unfinished run of an older m2m_tf (backup/) "
                           "that cannot be resumed; pass --overwrite to start it again.")
    return OutputPlan(output_dir, "restart", config_json, ours)  # no epoch committed
  previous = read_json(os.path.join(output_dir, FLAGS_FILE)) or {}
  diff = differences(previous)
  if DATA_DIGEST in diff:
    dataset = (config_json.get("data") or {}).get("dataset", config_json.get("dataset"))
    raise OutputDirError(
        f"{output_dir} holds an unfinished run ({committed[0][0]} epochs done) made from other "
        f"data: the content of {dataset} changed since ({DATA_DIGEST} differs); restore the "
        "file(s) it was made from to resume it, or pass --overwrite to start again.")
  if diff:
    raise OutputDirError(
        f"{output_dir} holds an unfinished run ({committed[0][0]} epochs done) with a different "
        f"configuration (differs in {diff}); run the same command to resume it, pass --overwrite "
        "to start again, or choose another --output_dir.")
  return OutputPlan(output_dir, "resume", config_json)
