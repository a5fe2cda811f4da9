"""The container every dataset builder returns: arrays for three splits plus metadata."""

import dataclasses
from typing import Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
  """Train/validation/test arrays of one dataset, ready for `m2m_tf.data`.

  Attributes:
    name: registry name, e.g. "reuters".
    x_train, x_val, x_test: features. float32 for vectors (bag of words,
      embeddings), uint8 NHWC for images (the pipeline scales them to [0, 1]).
    y_train, y_val, y_test: int64 labels in [0, num_classes).
    class_names: one name per class index.
    input_kind: "bow", "embedding" or "image".
    clip_range: the valid input domain (min, max) that M2m's translation clips
      to, or None for unclipped inputs (embeddings). Images: (0.0, 1.0) after
      scaling; binary bag of words: (0.0, 1.0).
    label: a human label for results made with substitute data (for example
      "CIFAR-10 JPEG substitute"); empty when the data are the paper's own.
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


def from_arrays(name: str, arrays, *, input_kind: str, clip_range, label: str = "") -> DatasetSplits:
  """A `DatasetSplits` from a builder's cached arrays (x_/y_ train, val, test and class_names)."""
  return DatasetSplits(
      name=name,
      x_train=arrays["x_train"], y_train=arrays["y_train"],
      x_val=arrays["x_val"], y_val=arrays["y_val"],
      x_test=arrays["x_test"], y_test=arrays["y_test"],
      class_names=tuple(str(c) for c in arrays["class_names"]),
      input_kind=input_kind, clip_range=clip_range, label=label)

