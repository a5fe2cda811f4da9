"""Keras callbacks of the M2m recipe: phases, LR schedule, balanced evaluation, M2m statistics, NaN guard."""

import json
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from m2m_tf import metrics as metrics_lib
from m2m_tf.data.pipeline import eval_dataset
from m2m_tf.io_utils import atomic_write_json
from m2m_tf.training.schedules import warmup_step_lr


class PhaseSchedule(keras.callbacks.Callback):
  """Switches M2m's phase 2 and deferred class weights on at their epochs (SPEC §1).

  At every epoch begin it sets `trainer.phase2 = epoch >= m2m_from` and, when
  `phase2_class_weight` is given (DRW), the class weights: phase 2's from
  `weights_from` on, `phase1_class_weight` (default ones) before. It depends on
  the epoch number alone, so a resumed run gets the right phase.
  """

  def __init__(self, m2m_from: Optional[int] = None, *, weights_from: Optional[int] = None,
               phase1_class_weight=None, phase2_class_weight=None):
    super().__init__()
    self.m2m_from = m2m_from
    self.weights_from = weights_from
    self.phase1_class_weight = phase1_class_weight
    self.phase2_class_weight = phase2_class_weight

  def on_epoch_begin(self, epoch, logs=None):
    self.model.phase2.assign(self.m2m_from is not None and epoch >= self.m2m_from)
    if self.phase2_class_weight is None:
      return
    if self.weights_from is not None and epoch >= self.weights_from:
      cw = self.phase2_class_weight
    elif self.phase1_class_weight is not None:
      cw = self.phase1_class_weight
    else:
      cw = np.ones(self.model.num_classes, np.float32)
    self.model.class_weight.assign(np.asarray(cw, np.float32))


class EpochLearningRate(keras.callbacks.Callback):
  """Sets the learning rate at each epoch begin from `warmup_step_lr` (official code: per epoch)."""

  def __init__(self, base_lr: float, warmup_epochs: int, milestones: Sequence[int],
               factors: Sequence[float]):
    super().__init__()
    self.schedule = warmup_step_lr(base_lr, warmup_epochs, milestones, factors)

  def on_epoch_begin(self, epoch, logs=None):
    self.model.optimizer.learning_rate.assign(self.schedule(epoch))

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["lr"] = float(self.schedule(epoch))


class M2mStatistics(keras.callbacks.Callback):
  """Adds the epoch's M2m rates to the logs: generation, seed+Bernoulli pass and acceptance.

  m2m_gen_rate = generation slots / samples, m2m_candidate_rate = translated
  slots / samples, m2m_accept_rate = accepted / translated (the gamma test),
  m2m_accepted = accepted samples in the epoch.
  """

  def __init__(self, samples_per_epoch: int):
    super().__init__()
    self.samples_per_epoch = samples_per_epoch

  def on_epoch_end(self, epoch, logs=None):
    if logs is None or "accepted" not in logs:
      return
    n = float(self.samples_per_epoch)
    cand = float(logs["candidates"])
    logs["m2m_gen_rate"] = float(logs["gen_slots"]) / n
    logs["m2m_candidate_rate"] = cand / n
    logs["m2m_accept_rate"] = float(logs["accepted"]) / cand if cand else 0.0
    logs["m2m_accepted"] = float(logs["accepted"])


class RaiseOnNaN(keras.callbacks.Callback):
  """Stops training with a FloatingPointError naming the epoch and batch when the loss is not finite."""

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = None if logs is None else logs.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise FloatingPointError(
          f"The training loss became {float(loss)} at epoch {getattr(self, '_epoch', '?')}, "
          f"batch {batch}. Lower the learning rate or check the inputs for NaN/Inf; "
          "the best weights so far are kept in the output directory.")


class BalancedEvaluation(keras.callbacks.Callback):
  """Evaluates f on the balanced splits every epoch and keeps the best epoch by validation bACC.

  Adds `<split>_bacc`, `<split>_gm` and `<split>_n_zero_recall` to the logs for
  every split (e.g. "val", "test"). Model selection follows SPEC §3: the
  reported test metrics are those of the epoch with the best validation bACC
  (first such epoch on ties). With `state_dir`, the best epoch, its metrics and
  f's weights are written there atomically every time they improve, and reloaded
  at train begin, so a resumed run selects the same epoch.
  """

  def __init__(self, splits: Dict[str, Tuple[np.ndarray, np.ndarray]], class_counts, *,
               batch_size: int = 512, select_on: str = "val", state_dir: Optional[str] = None):
    super().__init__()
    if select_on not in splits:
      raise ValueError(f"select_on={select_on!r} is not one of the splits {sorted(splits)}.")
    self.splits = {k: (eval_dataset(x, batch_size=batch_size), np.asarray(y)) for k, (x, y) in splits.items()}
    self.class_counts = np.asarray(class_counts)
    self.select_on = select_on
    self.state_dir = state_dir
    self.best_epoch = -1
    self.best_score = -np.inf
    self.best_summaries = None
    self.best_weights = None

  def _state_paths(self):
    return (os.path.join(self.state_dir, "best_state.json"),
            os.path.join(self.state_dir, "best_f.weights.h5"))

  def on_train_begin(self, logs=None):
    if not self.state_dir:
      return
    state_path, weights_path = self._state_paths()
    if os.path.exists(state_path) and os.path.exists(weights_path):
      with open(state_path) as fh:
        state = json.load(fh)
      self.best_epoch = state["best_epoch"]
      self.best_score = state["best_score"]
      self.best_summaries = state["summaries"]
      current = self.model.f.get_weights()
      self.model.f.load_weights(weights_path)
      self.best_weights = self.model.f.get_weights()
      self.model.f.set_weights(current)

  def evaluate(self) -> Dict[str, dict]:
    """Metrics summaries (see `m2m_tf.metrics.summarize`) of the current f on every split."""
    out = {}
    for name, (ds, y) in self.splits.items():
      logits = self.model.f.predict(ds, verbose=0)
      out[name] = metrics_lib.summarize(y, np.argmax(logits, axis=1), self.class_counts)
    return out

  def on_epoch_end(self, epoch, logs=None):
    summaries = self.evaluate()
    if logs is not None:
      for name, s in summaries.items():
        logs[f"{name}_bacc"] = s["bacc"]
        logs[f"{name}_gm"] = s["gm"]
        logs[f"{name}_n_zero_recall"] = s["n_zero_recall"]
    score = summaries[self.select_on]["bacc"]
    if score > self.best_score:
      self.best_score, self.best_epoch, self.best_summaries = score, epoch, summaries
      self.best_weights = self.model.f.get_weights()
      if self.state_dir:
        state_path, weights_path = self._state_paths()
        tmp = weights_path + ".tmp.weights.h5"
        self.model.f.save_weights(tmp)
        os.replace(tmp, weights_path)
        atomic_write_json(state_path, {"best_epoch": epoch, "best_score": score,
                                       "summaries": summaries})
    if logs is not None:
      logs["best_epoch"] = self.best_epoch
