"""Evaluation metrics of docs/method.md#metrics (NumPy, host side).

Functions return fractions in [0, 1] (`summarize`: percentages); a class absent from y_true has
NaN recall and is left out of every mean. Groups and orders come from the training counts N_k.
"""

import math
from typing import Dict, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[np.ndarray, Sequence[int], Sequence[float]]


def _labels(y, num_classes: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{what} must be 1-D, got shape {y.shape}")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError(f"{what} must hold integer class indices")
  y = y.astype(np.int64)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
        f"{what} has labels outside [0, {num_classes}): min {y.min()}, "
        f"max {y.max()}")
  return y


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike,
                     num_classes: int) -> np.ndarray:
  """C[i, j] = number of examples of true class i predicted as j (int64 [K, K]).

  Raises ValueError on labels outside [0, K) or inputs of different lengths.
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  t = _labels(y_true, num_classes, "y_true")
  p = _labels(y_pred, num_classes, "y_pred")
  if t.shape != p.shape:
    raise ValueError(
        f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
  flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def _check_cm(cm) -> np.ndarray:
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
  return cm


def per_class_recall(cm) -> np.ndarray:
  """Recall of class k, C[k, k] / sum_j C[k, j], as float64 [K]; NaN if class k has no example."""
  cm = _check_cm(cm).astype(np.float64)
  support = cm.sum(axis=1)
  out = np.full(cm.shape[0], np.nan)
  ok = support > 0
  out[ok] = np.diag(cm)[ok] / support[ok]
  return out


def _valid(recalls) -> np.ndarray:
  r = np.asarray(recalls, dtype=np.float64)
  if r.ndim != 1:
    raise ValueError(f"recalls must be 1-D, got shape {r.shape}")
  return r[~np.isnan(r)]


def balanced_accuracy(recalls) -> float:
  """bACC: mean per-class recall, NaN recalls skipped; NaN if none is left."""
  r = _valid(recalls)
  return float(r.mean()) if r.size else float("nan")


def geometric_mean(recalls, correction: float = 0.001) -> float:
  """GM: geometric mean of per-class recalls, zero recalls replaced by `correction`.

  NaN recalls are skipped; correction=0 gives the plain GM (docs/method.md#metrics).
  """
  if correction < 0:
    raise ValueError(f"correction must be >= 0, got {correction}")
  r = _valid(recalls).copy()
  if not r.size:
    return float("nan")
  r[r == 0] = correction
  if np.any(r == 0):
    return 0.0
  return float(np.exp(np.mean(np.log(r))))


def n_zero_recall(recalls) -> int:
  """Number of classes (present in y_true) with recall exactly 0."""
  return int(np.sum(_valid(recalls) == 0))


def _order_by_count(class_counts) -> np.ndarray:
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
    raise ValueError(
        f"class_counts must be a non-empty 1-D array of counts >= 0, got "
        f"{counts}")
  # Descending count; ties keep the class index order (stable sort).
  return np.argsort(-counts.astype(np.float64), kind="stable")


def _check_same_k(recalls, class_counts):
  if len(recalls) != len(class_counts):
    raise ValueError(
        f"recalls has {len(recalls)} classes but class_counts has "
        f"{len(class_counts)}")


def majority_classes(class_counts) -> np.ndarray:
  """Boolean mask [K] of the majority classes (docs/method.md#metrics).

  The shortest prefix, by training count descending (ties: lower index first), holding
  strictly more than half of all training examples.
  """
  order = _order_by_count(class_counts)
  counts = np.asarray(class_counts, dtype=np.float64)
  if counts.sum() <= 0:
    raise ValueError("class_counts must have at least one training example")
  cum = np.cumsum(counts[order])
  n_major = int(np.argmax(cum > 0.5 * counts.sum())) + 1
  mask = np.zeros(counts.size, dtype=bool)
  mask[order[:n_major]] = True
  return mask


def _group_mean(recalls: np.ndarray, mask: np.ndarray) -> float:
  r = np.asarray(recalls, dtype=np.float64)[mask]
  r = r[~np.isnan(r)]
  return float(r.mean()) if r.size else float("nan")


def major_minor_accuracy(recalls, class_counts) -> Tuple[float, float]:
  """(Major, Minor) accuracy: mean recall of `majority_classes` and of the rest; NaN if empty."""
  _check_same_k(recalls, class_counts)
  major = majority_classes(class_counts)
  return _group_mean(recalls, major), _group_mean(recalls, ~major)


def shot_groups(class_counts) -> Dict[str, np.ndarray]:
  """Masks of the many (> 100), medium (20..100 inclusive), few (< 20) shot classes."""
  counts = np.asarray(class_counts)
  _order_by_count(counts)  # validation
  return {"many": counts > 100,
          "medium": (counts >= 20) & (counts <= 100),
          "few": counts < 20}


def shot_accuracy(recalls, class_counts) -> Tuple[float, float, float]:
  """(many, medium, few)-shot accuracy: mean recall of each `shot_groups` group; empty: NaN."""
  _check_same_k(recalls, class_counts)
  g = shot_groups(class_counts)
  return (_group_mean(recalls, g["many"]), _group_mean(recalls, g["medium"]),
          _group_mean(recalls, g["few"]))


def cumulative_false_positives(cm, class_counts) -> np.ndarray:
  """Cumulative false positives, int64 [K] (the paper's Fig. 5; docs/method.md#metrics).

  out[j] is the sum of FP_k = sum_i C[i, k] - C[k, k] over the j + 1 classes with the most
  training examples (ties: lower index first).
  """
  cm = _check_cm(cm)
  if cm.shape[0] != len(class_counts):
    raise ValueError(
        f"confusion matrix has {cm.shape[0]} classes but class_counts has "
        f"{len(class_counts)}")
  fp = cm.sum(axis=0) - np.diag(cm)
  return np.cumsum(fp[_order_by_count(class_counts)]).astype(np.int64)


def _pct(v: float):
  """Percent, or None for NaN (JSON has no NaN)."""
  return None if v is None or math.isnan(v) else 100.0 * float(v)


def summarize(y_true: ArrayLike, y_pred: ArrayLike, class_counts) -> Dict:
  """All metrics of docs/method.md#metrics for one prediction, as a JSON-serialisable dict.

  Keys: acc, bacc, gm, major_acc, minor_acc, many_acc, medium_acc, few_acc (%),
  n_zero_recall, per_class_recall (K values, %), confusion_matrix (K x K ints, rows true),
  cumulative_fp (K ints). K = len(class_counts), the training counts; NaN becomes None.
  """
  counts = np.asarray(class_counts)
  k = counts.size
  cm = confusion_matrix(y_true, y_pred, k)
  rec = per_class_recall(cm)
  total = cm.sum()
  major, minor = major_minor_accuracy(rec, counts)
  many, medium, few = shot_accuracy(rec, counts)
  return {
      "acc": _pct(np.trace(cm) / total if total else float("nan")),
      "bacc": _pct(balanced_accuracy(rec)),
      "gm": _pct(geometric_mean(rec)),
      "n_zero_recall": n_zero_recall(rec),
      "per_class_recall": [_pct(v) for v in rec],
      "confusion_matrix": cm.tolist(),
      "major_acc": _pct(major),
      "minor_acc": _pct(minor),
      "many_acc": _pct(many),
      "medium_acc": _pct(medium),
      "few_acc": _pct(few),
      "cumulative_fp": [int(v) for v in cumulative_false_positives(cm, counts)],
  }
