"""`DatasetSplits`, what every builder returns, and the per-class selection rules the long-tailed
builders share: `long_tail_counts`, `first_per_class`, `split_eval_per_class` (docs/data.md).
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
  """Train/validation/test arrays of one dataset, ready for `m2m_tf.data`.

  Attributes:
    name: registry name, e.g. "reuters".
    x_train, x_val, x_test: float32 vectors, or uint8 NHWC images (scaled to [0, 1] later).
    y_train, y_val, y_test: int64 labels in [0, num_classes).
    class_names: one name per class index.
    input_kind: "bow", "embedding" or "image".
    clip_range: the (min, max) M2m's translation clips to, or None (embeddings).
    label: a human label for results on substitute data ("CIFAR-10 JPEG substitute"); empty
      for the paper's own data.
    text_features: for text datasets, how raw input becomes x (its "kind" names the rule;
      docs/runs.md#serving-the-exported-model); else None.
    train_source: the streamed training split on disk (`tfrecord_dir.TrainSource`), x_train then
      a `StreamedArray` (length and shape, no values); None: in memory.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: Tuple[str, ...]
  input_kind: str
  clip_range: Optional[Tuple[float, float]]
  label: str = ""
  text_features: Optional[Mapping[str, Any]] = None
  train_source: Optional[Any] = None

  @property
  def num_classes(self) -> int:
    """Number of classes K."""
    return len(self.class_names)

  @property
  def class_counts(self) -> np.ndarray:
    """N_k: training examples per class (int64, length K)."""
    return np.bincount(self.y_train, minlength=self.num_classes).astype(np.int64)

  @property
  def input_shape(self) -> Tuple[int, ...]:
    """Shape of one example, without the batch dimension."""
    return tuple(self.x_train.shape[1:])


def from_arrays(name: str, arrays, *, input_kind: str, clip_range, label: str = "",
                text_features: Optional[Mapping[str, Any]] = None) -> DatasetSplits:
  """A `DatasetSplits` from a builder's cached arrays (x_/y_ train, val, test and class_names)."""
  return DatasetSplits(
      name=name,
      x_train=arrays["x_train"], y_train=arrays["y_train"],
      x_val=arrays["x_val"], y_val=arrays["y_val"],
      x_test=arrays["x_test"], y_test=arrays["y_test"],
      class_names=tuple(str(c) for c in arrays["class_names"]),
      input_kind=input_kind, clip_range=clip_range, label=label,
      text_features=text_features)



def long_tail_counts(n_max: int, num_classes: int,
                     imbalance_ratio: float) -> np.ndarray:
  """N_k = int(n_max * ratio^(-k/(K-1))), at least 1 (k = 0 .. K-1), computed with the official
  CIFAR-LT code's float expression so the counts agree (docs/data.md#cifar-10-jpeg-substitute).
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  if imbalance_ratio < 1:
    raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
  if num_classes == 1:
    return np.array([n_max], dtype=np.int64)
  imb_factor = 1.0 / imbalance_ratio
  return np.array([max(1, int(n_max * imb_factor**(k / (num_classes - 1.0))))
                   for k in range(num_classes)], dtype=np.int64)


def check_labels(labels, num_classes: int, what: str) -> np.ndarray:
  """`labels` as a 1-D int64 array, checked to lie in [0, num_classes).

  Raises:
    ValueError: naming `what`, for labels of another rank or out of range.
  """
  labels = np.asarray(labels, np.int64)
  if labels.ndim != 1:
    raise ValueError(f"{what}: labels must be 1-D, got shape {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{what}: labels must be in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")
  return labels


def class_members(labels: np.ndarray, order_key, k: int) -> np.ndarray:
  """Indices of class k sorted by `order_key` (stable; None: array order)."""
  members = np.flatnonzero(labels == k)
  if order_key is not None:
    members = members[np.argsort(np.asarray(order_key)[members],
                                 kind="stable")]
  return members


def first_per_class(labels, counts: Sequence[int], order_key=None
                    ) -> np.ndarray:
  """Indices of the first counts[k] examples of each class k (by `order_key`, else array
  order; the official CIFAR-LT rule), class by class.

  Raises:
    ValueError: a class has fewer than counts[k] examples.
  """
  labels = check_labels(labels, len(counts), "first_per_class")
  chosen = []
  for k, n_k in enumerate(counts):
    members = class_members(labels, order_key, k)
    if len(members) < n_k:
      raise ValueError(f"first_per_class: class {k} has {len(members)} "
                       f"examples, needs {int(n_k)}")
    chosen.append(members[:int(n_k)])
  return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(
      0, np.int64)


def split_eval_per_class(labels, num_classes: int, *,
                         val_fraction: Optional[float] = None,
                         n_val: Optional[int] = None,
                         order_key=None) -> Tuple[np.ndarray, np.ndarray]:
  """Splits a balanced evaluation set per class: the first examples (by `order_key`) are
  validation, the rest test. Exactly one of `val_fraction` (the first int(round(n_k *
  val_fraction)) of class k) and `n_val` (the first n_val of every class) is given.

  Returns:
    (val_indices, test_indices), class by class, each in order.
  """
  if (val_fraction is None) == (n_val is None):
    raise ValueError("give exactly one of val_fraction and n_val")
  if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
  if n_val is not None and n_val < 0:
    raise ValueError(f"n_val must be >= 0, got {n_val}")
  labels = check_labels(labels, num_classes, "split_eval_per_class")
  val, test = [], []
  for k in range(num_classes):
    members = class_members(labels, order_key, k)
    n_k = n_val if n_val is not None else int(round(len(members) * val_fraction))
    val.append(members[:n_k])
    test.append(members[n_k:])
  return (np.concatenate(val).astype(np.int64),
          np.concatenate(test).astype(np.int64))
