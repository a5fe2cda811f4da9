"""Post-hoc logit adjustment, argmax_k (scale * z_k - tau log pi_k), in NumPy (no TensorFlow).

tau is given or chosen on validation bACC over TAU_GRID
(docs/method.md#logit-adjustment-and-balanced-softmax).
"""

import math
from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np

from m2m_tf import metrics

# 0, 0.25, ..., 2.0: the grid of the post-hoc choice (fixed, so that it is not tuned on test).
TAU_GRID = tuple(i / 4 for i in range(9))
SELECT = "select"
# Validation bACCs (percent) closer than this are a tie; a tie goes to the smallest tau.
TIE_TOLERANCE = 1e-9

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[int]]


def log_prior(class_counts: ArrayLike) -> np.ndarray:
  """log pi_k = log N_k - log sum_j N_j, the log training class prior (float64 [K]).

  Raises ValueError unless the counts are a non-empty 1-D array of finite values > 0.
  """
  counts = np.asarray(class_counts, dtype=np.float64)
  if counts.ndim != 1 or counts.size == 0:
    raise ValueError(f"class_counts must be a non-empty 1-D array, got shape {counts.shape}")
  if not np.all(np.isfinite(counts)):
    raise ValueError(f"class_counts must be finite, got {counts}")
  if np.any(counts <= 0):
    bad = np.flatnonzero(counts <= 0).tolist()
    raise ValueError(f"every class needs at least one training example; classes {bad} have "
                     f"counts {counts[bad].tolist()}")
  return np.log(counts) - math.log(float(np.sum(counts)))


def check_tau(tau: float) -> float:
  """tau as a float, or ValueError (one line) unless it is finite and >= 0."""
  value = float(tau)
  if not (math.isfinite(value) and value >= 0):
    raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
  return 0.0 if value == 0 else value  # -0.0 reads as 0.0


def parse_tau(text: str) -> Union[str, float]:
  """A `--posthoc_tau` value: SELECT ("select") or a fixed tau; ValueError for anything else."""
  if text == SELECT:
    return SELECT
  try:
    value = float(text)
  except (TypeError, ValueError):
    raise ValueError(f"--posthoc_tau must be '{SELECT}' or a finite number >= 0, got "
                     f"{text!r}") from None
  try:
    return check_tau(value)
  except ValueError:
    raise ValueError(f"--posthoc_tau must be '{SELECT}' or a finite number >= 0, got "
                     f"{text!r}") from None


def adjust_logits(logits: ArrayLike, class_counts: ArrayLike, tau: float,
                  scale: float = 1.0) -> np.ndarray:
  """scale * z - tau * log pi in float64 [N, K], pi from the training counts N_k.

  tau finite >= 0, scale (the loss's logit scale: LDAM's s, else 1) finite > 0. Raises
  ValueError for bad tau, scale or counts, or logits of another number of classes.
  """
  tau, prior = check_tau(tau), log_prior(class_counts)
  if not (math.isfinite(scale) and scale > 0):
    raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
  z = np.asarray(logits, dtype=np.float64)
  if z.ndim != 2 or z.shape[1] != prior.size:
    raise ValueError(f"logits of shape {z.shape} do not have the {prior.size} classes of "
                     "class_counts")
  return scale * z - tau * prior


def predictions(logits: ArrayLike, class_counts: ArrayLike, tau: float,
                scale: float = 1.0) -> np.ndarray:
  """argmax of `adjust_logits` (int64 [N]; ties go to the lower class index)."""
  return np.argmax(adjust_logits(logits, class_counts, tau, scale), axis=1)


def balanced_accuracy(logits: ArrayLike, labels: ArrayLike, class_counts: ArrayLike,
                      tau: float, scale: float = 1.0) -> float:
  """bACC (percent) of the predictions adjusted by tau (docs/method.md#metrics)."""
  k = len(class_counts)
  cm = metrics.confusion_matrix(labels, predictions(logits, class_counts, tau, scale), k)
  return 100.0 * metrics.balanced_accuracy(metrics.per_class_recall(cm))


class Selection(NamedTuple):
  """`select_tau`'s result: tau, grid, val_bacc (percent, per grid value), tied (taus tied best)."""
  tau: float
  grid: Tuple[float, ...]
  val_bacc: Tuple[float, ...]
  tied: Tuple[float, ...]


def select_tau(val_logits: ArrayLike, val_labels: ArrayLike, class_counts: ArrayLike, *,
               grid: Sequence[float] = TAU_GRID, scale: float = 1.0) -> Selection:
  """The tau of `grid` with the best validation bACC (ties: the smallest tau).

  Raises ValueError for an empty grid or validation split, a bad tau, or bad logits or counts.
  """
  grid = tuple(check_tau(t) for t in grid)
  if not grid:
    raise ValueError("select_tau: the grid is empty")
  if not np.asarray(val_labels).size:
    raise ValueError("select_tau: no validation examples to choose tau on")
  baccs = tuple(balanced_accuracy(val_logits, val_labels, class_counts, t, scale) for t in grid)
  best = max(baccs)
  tied = tuple(sorted(t for t, b in zip(grid, baccs) if best - b <= TIE_TOLERANCE))
  return Selection(tau=tied[0], grid=grid, val_bacc=baccs, tied=tied)
