"""A small synthetic long-tailed dataset for fast tests and offline demos."""

import numpy as np

from data_prep import splits

SYNTHETIC_LABEL = "Synthetic long-tailed data (not from the paper)"


def build_synthetic_lt(*, num_classes: int = 5, dim: int = 32,
                       n_max: int = 200, imbalance_ratio: float = 20.0,
                       n_val_per_class: int = 20, n_test_per_class: int = 50,
                       noise: float = 0.35, seed: int = 0
                       ) -> splits.DatasetSplits:
  """Gaussian class clusters in [0, 1]^dim with a long-tailed training set: prototypes
  p_k ~ U(0.25, 0.75)^dim, examples clip(p_k + noise * N(0, I), 0, 1), float32;
  `splits.long_tail_counts(n_max, K, imbalance_ratio)` training examples per class,
  `n_val_per_class` / `n_test_per_class` for evaluation. Deterministic in the arguments (one
  `np.random.default_rng(seed)`; docs/data.md#synthetic-long-tailed-data).

  Returns:
    DatasetSplits named "synthetic_lt", input_kind "bow", clip_range (0, 1).
  """
  if dim < 1:
    raise ValueError(f"dim must be >= 1, got {dim}")
  counts = splits.long_tail_counts(n_max, num_classes, imbalance_ratio)
  rng = np.random.default_rng(seed)
  prototypes = rng.uniform(0.25, 0.75, size=(num_classes, dim))

  def sample(per_class):
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    x = prototypes[y] + noise * rng.standard_normal((len(y), dim))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y

  x_train, y_train = sample(counts)
  x_val, y_val = sample(np.full(num_classes, n_val_per_class))
  x_test, y_test = sample(np.full(num_classes, n_test_per_class))
  return splits.DatasetSplits(
      name="synthetic_lt", x_train=x_train, y_train=y_train, x_val=x_val,
      y_val=y_val, x_test=x_test, y_test=y_test,
      class_names=tuple(f"class_{k}" for k in range(num_classes)),
      input_kind="bow", clip_range=(0.0, 1.0), label=SYNTHETIC_LABEL)
