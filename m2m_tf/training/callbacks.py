"""Keras callbacks of the M2m recipe: phases, LR schedule, balanced evaluation, M2m statistics,
NaN guard."""

import math
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np

from m2m_tf import metrics as metrics_lib
from m2m_tf.data.pipeline import eval_dataset
from m2m_tf.errors import DivergenceError
from m2m_tf.training.schedules import warmup_step_lr


class PhaseSchedule(keras.callbacks.Callback):
  """Switches M2m's phase 2 and deferred class weights on at their epochs (docs/method.md#phases).

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


class EpochLearningRate(keras.callbacks.LearningRateScheduler):
  """Keras' per-epoch scheduler with `warmup_step_lr` (the official code sets lr per epoch).

  Keras sets the optimizer's learning rate at each epoch begin. The epoch logs
  keep this project's "lr" column, the schedule's float64 value (as in the
  histories of earlier runs and of the checkpoints of runs in progress),
  instead of Keras' "learning_rate" column (the float32 variable).
  """

  def __init__(self, base_lr: float, warmup_epochs: int, milestones: Sequence[int],
               factors: Sequence[float], *, rescale_momentum: bool = False):
    self.epoch_lr = warmup_step_lr(base_lr, warmup_epochs, milestones, factors)
    self.rescale_momentum = rescale_momentum
    super().__init__(lambda epoch, lr: float(self.epoch_lr(epoch)))

  def on_epoch_begin(self, epoch, logs=None):
    """Sets the epoch's lr; with `rescale_momentum`, scales SGD's momentum slots by new / old lr.

    Keras' slot holds v = -lr * b, PyTorch's buffer b; rescaling v when lr changes keeps
    b, which makes Keras' SGD step exactly PyTorch's for a per-epoch lr. The old lr is the
    optimizer's variable, so a resumed run (whose checkpoint holds it) rescales the same way.
    """
    if not self.rescale_momentum:
      super().on_epoch_begin(epoch, logs)
      return
    optimizer = self.model.optimizer
    old = float(np.asarray(optimizer.learning_rate))
    super().on_epoch_begin(epoch, logs)
    new = float(np.asarray(optimizer.learning_rate))
    if old > 0 and new != old:
      inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's SGD
      # Not built yet (before the first step): its slots will start at zero anyway.
      for slot in (inner.momentums if inner.built else ()):
        slot.assign(slot * (new / old))

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["lr"] = float(self.epoch_lr(epoch))


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


class RaiseOnNaN(keras.callbacks.TerminateOnNaN):
  """Keras' `TerminateOnNaN(raise_error=True)`, raising a DivergenceError that names the epoch.

  A DivergenceError (an `m2m_tf.errors.M2mError`) is reported by the command
  line in one line, with the epoch, the batch and what to do.
  """

  def __init__(self):
    super().__init__(raise_error=True)
    self.epoch = None

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch = epoch

  def on_batch_end(self, batch, logs=None):
    try:
      super().on_batch_end(batch, logs)
    except RuntimeError as err:  # TerminateOnNaN's error: the batch loss is NaN or Inf.
      raise DivergenceError(
          f"The training loss became {float(logs['loss'])} at epoch {self.epoch}, batch {batch}. "
          "Lower the learning rate or check the inputs for NaN/Inf; the best weights so far "
          "are kept in the output directory.") from err


class DivergenceGuard(RaiseOnNaN):
  """Stops a diverging run: a non-finite batch loss (`RaiseOnNaN`), or an epoch loss far above
  that of a uniform guess.

  A uniform guess costs ln K per example under cross-entropy; a trained or
  training classifier stays within a small multiple of it (LDAM's scaled
  margins start at most ~2s = 60). An epoch mean above `factor` x max(ln K, 1)
  (default 100x) only happens when the weights blew up, e.g. a learning rate
  100x too large, which otherwise finishes at chance level with exit code 0.

  Args:
    num_classes: K.
    factor: multiple of max(ln K, 1) above which the run is stopped.
  """

  def __init__(self, num_classes: int, factor: float = 100.0):
    super().__init__()
    self.uniform = max(math.log(num_classes), 1.0)
    self.limit = factor * self.uniform

  def on_epoch_end(self, epoch, logs=None):
    loss = None if logs is None else logs.get("loss")
    if loss is not None and float(loss) > self.limit:
      raise DivergenceError(
          f"training diverged at epoch {epoch}: mean loss {float(loss):.4g} (a uniform guess "
          f"costs {self.uniform:.3g}, the limit is {self.limit:.3g}). Lower the learning rate.")


def chance_warnings(val_bacc: float, num_classes: int) -> list:
  """A warning when the selected epoch's validation bACC (percent) is near chance (100/K).

  "Near" is below 1.5x chance: a classifier that learned anything on these
  data sets is far above it, one whose weights collapsed sits at it.
  """
  chance = 100.0 / num_classes
  if val_bacc < 1.5 * chance:
    return [f"validation bACC {val_bacc:.2f}% is near chance ({chance:.2f}% for {num_classes} "
            "classes): the run learned (almost) nothing; check the learning rate and the data."]
  return []


class BalancedEvaluation(keras.callbacks.Callback):
  """Evaluates f on the balanced splits and keeps the best epoch by validation bACC.

  The selection split (`select_on`) is evaluated every epoch; the others every
  epoch with `every_epoch`, else only where the selection score reaches or ties
  the best so far (the only epochs whose numbers can be reported, under either
  tie rule). Adds `<split>_bacc`, `<split>_gm` and `<split>_n_zero_recall` to the
  logs for every split evaluated. Model selection: the reported metrics are those
  of the epoch with the best validation bACC (first such epoch on ties). The best
  record (`best_epoch`, `best_score`, `best_summaries`, `best_weights`) lives in
  memory; `RunCheckpoint` commits it with each epoch and restores it, so a resumed
  run selects the same epoch.

  Args:
    splits: name -> (x, y) arrays, e.g. {"val": ..., "test": ...}.
    class_counts: N_k of the training set (for the many/medium/few metrics).
    batch_size: evaluation batch size.
    select_on: the split whose bACC selects the best epoch.
    every_epoch: evaluate every split at every epoch.
  """

  def __init__(self, splits: Dict[str, Tuple[np.ndarray, np.ndarray]], class_counts, *,
               batch_size: int = 512, select_on: str = "val", every_epoch: bool = True):
    super().__init__()
    if select_on not in splits:
      raise ValueError(f"select_on={select_on!r} is not one of the splits {sorted(splits)}.")
    self.splits = {k: (eval_dataset(x, batch_size=batch_size), np.asarray(y))
                   for k, (x, y) in splits.items()}
    self.class_counts = np.asarray(class_counts)
    self.select_on = select_on
    self.every_epoch = every_epoch
    self.best_epoch = -1
    self.best_score = -np.inf
    self.best_summaries = None
    self.best_weights = None

  def evaluate(self, names: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    """Metrics summaries (see `m2m_tf.metrics.summarize`) of the current f on the splits
    `names` (default: all)."""
    out = {}
    for name in (self.splits if names is None else names):
      ds, y = self.splits[name]
      logits = self.model.f.predict(ds, verbose=0)
      out[name] = metrics_lib.summarize(y, np.argmax(logits, axis=1), self.class_counts)
    return out

  def on_epoch_end(self, epoch, logs=None):
    summaries = self.evaluate([self.select_on])
    score = summaries[self.select_on]["bacc"]
    if self.every_epoch or score >= self.best_score:
      summaries.update(self.evaluate([k for k in self.splits if k != self.select_on]))
    if logs is not None:
      for name, s in summaries.items():
        logs[f"{name}_bacc"] = s["bacc"]
        logs[f"{name}_gm"] = s["gm"]
        logs[f"{name}_n_zero_recall"] = s["n_zero_recall"]
    if score > self.best_score:
      self.best_score, self.best_epoch, self.best_summaries = score, epoch, summaries
      self.best_weights = self.model.f.get_weights()
    if logs is not None:
      logs["best_epoch"] = self.best_epoch
