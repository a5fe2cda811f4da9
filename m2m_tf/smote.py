"""SMOTE oversampling (Chawla et al. 2002), the ERM-SMOTE baseline.

x_new = x_i + u * (x_nn - x_i), imbalanced-learn's rule; see
docs/method.md#re-sampling-and-re-weighting and docs/method.md#difference-13-smote-small-classes.
"""

from typing import Mapping, Sequence, Tuple, Union

import numpy as np
from sklearn.neighbors import NearestNeighbors

TargetCounts = Union[None, Mapping[int, int], Sequence[int], np.ndarray]


def _targets(counts: np.ndarray, target_counts: TargetCounts) -> np.ndarray:
  """Per-class target sizes (int64 [K]) from `target_counts`."""
  k = counts.size
  if target_counts is None:
    return np.where(counts > 0, counts.max(), 0).astype(np.int64)
  if isinstance(target_counts, Mapping):
    tgt = counts.copy()
    for c, n in target_counts.items():
      c = int(c)
      if c < 0:
        raise ValueError(f"smote: target_counts has a negative class {c}")
      if c >= tgt.size:
        tgt = np.concatenate([tgt, np.zeros(c + 1 - tgt.size, np.int64)])
      tgt[c] = int(n)
  else:
    tgt = np.asarray(target_counts, dtype=np.int64)
    if tgt.ndim != 1:
      raise ValueError(
          f"smote: target_counts must be a mapping or a 1-D array, got shape "
          f"{tgt.shape}")
    if tgt.size < k:
      raise ValueError(
          f"smote: target_counts has {tgt.size} entries but y has labels up to "
          f"{k - 1}")
  full = np.zeros(tgt.size, np.int64)
  full[:k] = counts
  short = np.flatnonzero(tgt < full)
  if short.size:
    raise ValueError(
        f"smote: target_counts must be >= the current class counts (SMOTE only "
        f"adds examples); classes {short.tolist()} have targets "
        f"{tgt[short].tolist()} < counts {full[short].tolist()}")
  empty = np.flatnonzero((full == 0) & (tgt > 0))
  if empty.size:
    raise ValueError(
        f"smote: classes {empty.tolist()} have no example to oversample from")
  return tgt


def neighbours(x_class: np.ndarray, k_neighbors: int) -> np.ndarray:
  """Indices [n, min(k, n - 1)] of each example's Euclidean nearest neighbours, itself excluded.

  Raises ValueError for n < 2.
  """
  n = x_class.shape[0]
  k = min(k_neighbors, n - 1)
  if k < 1:
    raise ValueError(f"smote: need at least 2 examples for neighbours, got {n}")
  flat = x_class.reshape(n, -1)
  nn = NearestNeighbors(n_neighbors=k).fit(flat)
  return nn.kneighbors(return_distance=False)


def draws(rng: np.random.Generator, n_class: int, n_neighbours: int,
          n_new: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(rows, cols, steps) [n_new]: uniform base examples, uniform neighbours, gaps u ~ U[0, 1)."""
  rows = rng.integers(0, n_class, size=n_new)
  cols = rng.integers(0, n_neighbours, size=n_new)
  steps = rng.random(n_new)
  return rows, cols, steps


def interpolate(x_class: np.ndarray, nbrs: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, steps: np.ndarray) -> np.ndarray:
  """x_new = x[rows] + steps * (x[nbrs[rows, cols]] - x[rows]) in float64, any example shape."""
  x = np.asarray(x_class, dtype=np.float64)
  base = x[rows]
  diff = x[nbrs[rows, cols]] - base
  u = np.asarray(steps, np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
  return base + u * diff


def smote(x, y, *, k_neighbors: int = 5, target_counts: TargetCounts = None,
          seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Oversamples every class with SMOTE.

  Args:
    x: [N, ...] features; y: [N] integer labels >= 0.
    k_neighbors: nearest same-class neighbours (5 in the paper).
    target_counts: None (every class up to N_max), {class: size} or sizes [K], each >= N_c.
    seed: seed of `np.random.default_rng`; same seed, same output.
  Returns:
    (x_res float32 [M, ...], y_res [M]): the originals in order, then the synthetic examples
    by increasing class.
  Raises:
    ValueError: mismatched lengths, bad labels, k < 1, or bad target_counts.
  """
  x = np.asarray(x)
  y = np.asarray(y)
  if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0]:
    raise ValueError(
        f"smote: x must be [N, ...] and y [N]; got x {x.shape}, y {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"smote: y must hold integer labels, got dtype {y.dtype}")
  if y.size and y.min() < 0:
    raise ValueError(f"smote: labels must be >= 0, got {y.min()}")
  if int(k_neighbors) < 1:
    raise ValueError(f"smote: k_neighbors must be >= 1, got {k_neighbors}")
  counts = np.bincount(y).astype(np.int64) if y.size else np.zeros(0, np.int64)
  if not y.size and target_counts is None:
    return x.astype(np.float32), y.copy()
  tgt = _targets(counts, target_counts)
  rng = np.random.default_rng(seed)
  xs, ys = [x.astype(np.float32)], [y]
  for c in range(tgt.size):
    n_c = int(counts[c]) if c < counts.size else 0
    n_new = int(tgt[c]) - n_c
    if n_new <= 0:
      continue
    x_c = x[y == c]
    if n_c == 1:
      new = np.repeat(x_c, n_new, axis=0).astype(np.float64)
    else:
      nbrs = neighbours(x_c, int(k_neighbors))
      rows, cols, steps = draws(rng, n_c, nbrs.shape[1], n_new)
      new = interpolate(x_c, nbrs, rows, cols, steps)
    xs.append(new.astype(np.float32))
    ys.append(np.full(n_new, c, dtype=y.dtype))
  return np.concatenate(xs, axis=0), np.concatenate(ys, axis=0)
