"""Crash-safe run state (docs/runs.md#kill-it-at-any-instant-run-the-same-command-again):
epoch commits under `<output_dir>/ckpt/`, each made by its record written last, and the files
derived from them (history.csv, best_f.weights.h5, best_state.json).
"""

import csv
import dataclasses
import glob
import hashlib
import io
import os
import shutil
import time
from typing import List, Optional, Sequence

from absl import logging
import keras
import numpy as np

from m2m_tf.errors import CheckpointError
from data_prep.atomic import TMP_PREFIX, atomic_save, atomic_write_json, atomic_write_text
from data_prep.atomic import file_sha256
from m2m_tf.machine import machine_name
# The commit records' format lives in `m2m_tf.run_records` (no Keras), for progress reports.
from m2m_tf.run_records import BEST_STATE_FILE, BEST_WEIGHTS_FILE, CKPT_DIR, committed_records
from m2m_tf.run_records import HISTORY_FILE, epoch_machines, read_record, record_path


@dataclasses.dataclass
class RunState:
  """One committed checkpoint, loaded and verified."""

  epochs_done: int
  f_weights: List[np.ndarray]
  optimizer_vars: List[np.ndarray]
  best: Optional[dict]  # {"epoch", "score", "summaries", "file", "sha256"}; None before any
  best_weights: Optional[List[np.ndarray]]
  history: List[dict]
  epoch_seconds: List[float]
  record_path: str
  # Each epoch's `machine_name()`; None where not recorded (older records).
  epoch_machines: List[Optional[str]] = dataclasses.field(default_factory=list)


def _save_npz(path: str, arrays: Sequence[np.ndarray]) -> str:
  """Writes `arrays` as an .npz atomically; returns the sha256 of the bytes written."""
  buf = io.BytesIO()
  np.savez(buf, *arrays)
  data = buf.getvalue()

  def write(tmp):
    with open(tmp, "wb") as fh:
      fh.write(data)

  atomic_save(write, path)
  return hashlib.sha256(data).hexdigest()


def _load_npz(path: str, sha256: str) -> List[np.ndarray]:
  """The arrays of an .npz written by `_save_npz`, after checking its sha256 (one read)."""
  if not os.path.exists(path):
    raise CheckpointError(f"{path} is missing")
  with open(path, "rb") as fh:
    data = fh.read()
  if hashlib.sha256(data).hexdigest() != sha256:
    raise CheckpointError(f"{path} does not match the sha256 of its record")
  with np.load(io.BytesIO(data)) as z:
    return [z[f"arr_{i}"] for i in range(len(z.files))]


def load_state(record_path: str) -> RunState:
  """Reads a commit record and the files it names, verifying their hashes."""
  rec = read_record(record_path)
  folder = os.path.dirname(record_path)
  try:
    f_weights = _load_npz(os.path.join(folder, rec["state_file"]), rec["state_sha256"])
    n_f = rec["n_f_weights"]
    best = rec.get("best")
    best_weights = None
    if best is not None:
      best_weights = _load_npz(os.path.join(folder, best["file"]), best["sha256"])
  except CheckpointError:
    raise
  except (KeyError, TypeError, ValueError, OSError) as e:
    raise CheckpointError(f"{record_path} is damaged ({type(e).__name__}: {e})") from None
  return RunState(epochs_done=int(rec["epochs_done"]), f_weights=f_weights[:n_f],
                  optimizer_vars=f_weights[n_f:],
                  best=best, best_weights=best_weights, history=rec.get("history", []),
                  epoch_seconds=rec.get("epoch_seconds", []), record_path=record_path,
                  epoch_machines=epoch_machines(rec))


def latest_state(ckpt_dir: str) -> Optional[RunState]:
  """The newest commit in `ckpt_dir` that verifies (None: no record); warns of damaged ones.

  Raises:
    CheckpointError: records exist but none is usable.
  """
  records = committed_records(ckpt_dir)
  problems = []
  for _, path in records:
    try:
      state = load_state(path)
    except CheckpointError as e:
      problems.append(str(e))
      logging.warning("Damaged checkpoint skipped: %s", e)
      continue
    if problems:
      logging.warning("Resuming from the previous checkpoint %s (%d epochs done).", path,
                      state.epochs_done)
    return state
  if problems:
    raise CheckpointError(f"no usable checkpoint in {ckpt_dir}: {'; '.join(problems)}. Pass "
                          "--overwrite to start this run again from scratch.")
  return None


def write_history(path: str, rows: Sequence[dict]) -> None:
  """history.csv from the committed rows: `epoch` first, then the other keys sorted."""
  keys = sorted({k for r in rows for k in r if k != "epoch"})
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["epoch"] + keys)
  for r in rows:
    writer.writerow([r["epoch"]] + [r.get(k, "") for k in keys])
  atomic_write_text(path, buf.getvalue())


def _json_float(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return v


class RunCheckpoint(keras.callbacks.Callback):
  """Commits the run's state at every epoch end; restores it before training. Place it LAST
  among the callbacks: the epoch's evaluation and logs must exist when it commits.

  Args:
    output_dir: the run folder (checkpoints go to its `ckpt/`).
    evaluation: the run's `BalancedEvaluation`, whose best-epoch record is committed too.
    keep_last: commits kept while training (>= 2: a damaged newest one has a predecessor).
    keep_epochs: completed-epoch counts whose state is kept for good (`branching.branch`).
  """

  def __init__(self, output_dir: str, evaluation, *, keep_last: int = 2,
               keep_epochs: Sequence[int] = ()):
    super().__init__()
    self.output_dir = output_dir
    self.ckpt_dir = os.path.join(output_dir, CKPT_DIR)
    self.evaluation = evaluation
    self.keep_last = max(2, int(keep_last))
    self.keep_epochs = {int(e) for e in keep_epochs}
    self.history: List[dict] = []
    self.epoch_seconds: List[float] = []
    self.epoch_machines: List[Optional[str]] = []
    self._best_ref = None  # {"epoch", "file", "sha256"} of the best file the last commit named
    self._t0 = None

  def apply(self, trainer, state: RunState) -> None:
    """Loads a verified `RunState` into the trainer, its optimizer and the evaluation."""
    f_vars, opt = trainer.f.weights, trainer.optimizer
    if not opt.built:
      opt.build(trainer.f.trainable_variables)
    check_shapes(state.record_path, "f", f_vars, state.f_weights)
    check_shapes(state.record_path, "optimizer", opt.variables, state.optimizer_vars)
    for v, a in zip(f_vars, state.f_weights):
      v.assign(a)
    for v, a in zip(opt.variables, state.optimizer_vars):
      v.assign(a)
    ev = self.evaluation
    if state.best is not None:
      ev.best_epoch, ev.best_score = state.best["epoch"], state.best["score"]
      ev.best_summaries, ev.best_weights = state.best["summaries"], state.best_weights
      # A branched run names the source's best file, which is not in its own ckpt/ yet.
      own = os.path.dirname(state.record_path) == self.ckpt_dir
      self._best_ref = {k: state.best[k] for k in ("epoch", "file", "sha256")} if own else None
    self.history = [dict(r) for r in state.history]
    self.epoch_seconds = list(state.epoch_seconds)
    self.epoch_machines = list(state.epoch_machines)

  def restore(self, trainer) -> int:
    """Restores the newest usable commit; returns the epochs done (0: nothing to resume)."""
    self.set_model(trainer)
    self._clean_temporaries()
    state = latest_state(self.ckpt_dir)
    if state is None:
      return 0
    self.apply(trainer, state)
    self._write_derived(state.epochs_done, best_changed=True)
    self.prune(keep=self.keep_last)
    return state.epochs_done

  def on_epoch_begin(self, epoch, logs=None):
    self._t0 = time.time()

  def on_epoch_end(self, epoch, logs=None):
    row = {"epoch": int(epoch)}
    row.update({k: _json_float(v) for k, v in (logs or {}).items()})
    self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
    self.epoch_seconds = self.epoch_seconds[:epoch] + [time.time() - (self._t0 or time.time())]
    self.epoch_machines = self.epoch_machines[:epoch] + [machine_name()]
    self.commit(epoch + 1)

  def commit(self, epochs_done: int) -> None:
    """Writes the state after `epochs_done` epochs, then its record (the commit point)."""
    os.makedirs(self.ckpt_dir, exist_ok=True)
    trainer = self.model
    state_file = f"state-{epochs_done:04d}.npz"
    arrays = [np.asarray(v) for v in trainer.f.get_weights()]
    arrays += [v.numpy() for v in trainer.optimizer.variables]
    sha = _save_npz(os.path.join(self.ckpt_dir, state_file), arrays)
    ev = self.evaluation
    best, new_best = None, False
    if ev.best_weights is not None:
      ref = self._best_ref
      # A new best (or a branch's first commit, whose best is the source's): write its file once.
      new_best = ref is None or ref["epoch"] != ev.best_epoch
      if new_best:
        file = f"best-e{ev.best_epoch:04d}.npz"
        ref = {"epoch": ev.best_epoch, "file": file,
               "sha256": _save_npz(os.path.join(self.ckpt_dir, file), ev.best_weights)}
      best = {"score": ev.best_score, "summaries": ev.best_summaries, **ref}
    record = {"epochs_done": epochs_done, "state_file": state_file, "state_sha256": sha,
              "n_f_weights": len(trainer.f.weights), "best": best, "history": self.history,
              "epoch_seconds": self.epoch_seconds, "epoch_machines": self.epoch_machines}
    atomic_write_json(record_path(self.output_dir, epochs_done), record)
    self._best_ref = None if best is None else {k: best[k] for k in ("epoch", "file", "sha256")}
    self._write_derived(epochs_done, best_changed=new_best)
    self.prune(keep=self.keep_last)

  def _write_derived(self, epochs_done: int, best_changed: bool) -> None:
    """history.csv, and best_f.weights.h5 + best_state.json, from the committed state."""
    write_history(os.path.join(self.output_dir, HISTORY_FILE), self.history)
    ev = self.evaluation
    if not best_changed or ev.best_weights is None:
      return
    weights_path = os.path.join(self.output_dir, BEST_WEIGHTS_FILE)
    f = self.model.f
    current = f.get_weights()

    def save(tmp):
      f.set_weights(ev.best_weights)
      f.save_weights(tmp)

    try:
      atomic_save(save, weights_path)
    finally:
      f.set_weights(current)
    atomic_write_json(os.path.join(self.output_dir, BEST_STATE_FILE), {
        "best_epoch": ev.best_epoch, "best_score": ev.best_score, "summaries": ev.best_summaries,
        "weights_sha256": file_sha256(weights_path), "epochs_done": epochs_done})

  def prune(self, keep: int) -> None:
    """Deletes all but the `keep` newest commits (and `keep_epochs`), then unreferenced files."""
    records = committed_records(self.ckpt_dir)
    kept = [p for i, (n, p) in enumerate(records) if i < keep or n in self.keep_epochs]
    for _, path in records:
      if path not in kept:
        os.remove(path)
    referenced = {os.path.basename(p) for p in kept}
    for path in kept:
      rec = read_record(path)
      referenced.add(rec.get("state_file"))
      if rec.get("best"):
        referenced.add(rec["best"].get("file"))
    for path in glob.glob(os.path.join(self.ckpt_dir, "*")):
      if os.path.basename(path) not in referenced:
        os.remove(path)

  def finalize(self) -> None:
    """After a finished run: keeps only the `keep_epochs` states (removes ckpt/ if none)."""
    self.prune(keep=0)
    if os.path.isdir(self.ckpt_dir) and not os.listdir(self.ckpt_dir):
      os.rmdir(self.ckpt_dir)

  def _clean_temporaries(self) -> None:
    for folder in (self.output_dir, self.ckpt_dir):
      for path in glob.glob(os.path.join(folder, TMP_PREFIX + "*")):
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)


def check_shapes(where: str, what: str, variables, arrays) -> None:
  """Raises CheckpointError naming `where` unless `arrays` fit `variables` one by one."""
  if len(variables) != len(arrays):
    raise CheckpointError(f"{where}: {what} has {len(arrays)} arrays, the model "
                          f"{len(variables)}; the checkpoint belongs to another model.")
  for v, a in zip(variables, arrays):
    if tuple(v.shape) != tuple(a.shape):
      raise CheckpointError(f"{where}: {what} variable {v.path} has shape {tuple(v.shape)}, "
                            f"the checkpoint {tuple(a.shape)}.")
