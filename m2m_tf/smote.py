"""SMOTE oversampling (Chawla et al. 2002), the ERM-SMOTE baseline (docs/method.md, baselines).

For every class c with N_c < target_c, `target_c - N_c` synthetic examples are
made; each one picks a base example x_i of class c uniformly at random, one of
its k nearest neighbours x_nn of the same class uniformly at random (Euclidean
distance over all input dimensions, x_i itself excluded) and a gap
u ~ U[0, 1):

    x_new = x_i + u * (x_nn - x_i)

which is imbalanced-learn's `SMOTE` rule (`BaseSMOTE._generate_samples`);
by default every class is oversampled up to N_max = max_k N_k (imbalanced-learn's
`sampling_strategy='auto'`). Differences from imbalanced-learn, on purpose:
  * a class with 2 <= N_c <= k uses its N_c - 1 other examples as neighbours
    (imbalanced-learn raises an error);
  * a class with a single example cannot be interpolated: its synthetic examples
    are copies of it (plain random oversampling);
  * the random stream is NumPy's `default_rng(seed)`, so the draws (not their
    distribution) differ from imbalanced-learn's `random_state`.
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
  """Indices [n, min(k, n - 1)] of each example's nearest same-class neighbours.

  Euclidean distance on the flattened examples; an example is never its own
  neighbour (sklearn's `kneighbors()` without a query excludes the query
  point). Needs n >= 2.
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
  """The random choices for `n_new` synthetic examples of one class.

  Returns:
    rows: int64 [n_new], base examples, uniform over the class's n_class.
    cols: int64 [n_new], which of the base's n_neighbours neighbours.
    steps: float64 [n_new], gaps u ~ U[0, 1).
  """
  rows = rng.integers(0, n_class, size=n_new)
  cols = rng.integers(0, n_neighbours, size=n_new)
  steps = rng.random(n_new)
  return rows, cols, steps


def interpolate(x_class: np.ndarray, nbrs: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, steps: np.ndarray) -> np.ndarray:
  """x_new = x[rows] + steps * (x[nbrs[rows, cols]] - x[rows]), in float64.

  The rule of imbalanced-learn's `BaseSMOTE._generate_samples` (with
  nn_data = X = x_class). Works on examples of any shape.
  """
  x = np.asarray(x_class, dtype=np.float64)
  base = x[rows]
  diff = x[nbrs[rows, cols]] - base
  u = np.asarray(steps, np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
  return base + u * diff


def smote(x, y, *, k_neighbors: int = 5, target_counts: TargetCounts = None,
          seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Oversamples every class with SMOTE.

  Args:
    x: [N, ...] features (vectors or images; distances use all dimensions).
    y: [N] integer labels >= 0.
    k_neighbors: k, the number of nearest same-class neighbours (5 in the paper).
      Classes with N_c <= k use N_c - 1; a class with one example is duplicated.
    target_counts: None (every class up to N_max), a mapping {class: size}
      (classes not named are left as they are) or an array [K] of sizes. Each
      size must be >= the class's current count.
    seed: seed of `np.random.default_rng`; same seed, same output.
  Returns:
    (x_res float32 [M, ...], y_res [M] with y's integer dtype): the originals
    first, in their order, then the synthetic examples grouped by class in
    increasing class order.
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
