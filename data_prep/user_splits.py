"""Pure NumPy rules for user-supplied data: label encoding, input checks, stratified hold-outs,
long-tail subsampling and the translation's clip range. Problems are one-line `DataError`s naming
the file. See docs/data.md#your-own-data.
"""

import hashlib
from typing import Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from data_prep import splits
from data_prep.errors import DataError

SPLITS = ("train", "val", "test")
IMBALANCE_PROFILES = ("exp", "step")
CLIP_MODES = ("auto", "none", "global")


# ---------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------


def _label_values(y, where: str) -> Tuple[str, np.ndarray]:
  """("int", int64 array) or ("str", str array) for one split's labels (1.0 is an integer; bytes
  are UTF-8).

  Raises:
    DataError: labels that are neither integers nor strings (fractional or
      non-finite floats, mixed types, other objects).
  """
  y = np.asarray(y)
  if y.ndim != 1:
    raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
  kind = y.dtype.kind
  if kind in "iub":
    return "int", y.astype(np.int64)
  if kind == "f":
    if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
      return "int", y.astype(np.int64)
    bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
    raise DataError(f"{where}: labels must be integers or strings, got float "
                    f"values such as {bad!r}")
  if kind in "US":
    return "str", np.char.decode(y, "utf-8") if kind == "S" else y.astype(str)
  if kind == "O":
    values = y.tolist()
    if all(isinstance(v, (bytes, str)) for v in values):
      return "str", np.asarray([v.decode("utf-8") if isinstance(v, bytes) else v
                                for v in values], dtype=str)
    if all(isinstance(v, (int, np.integer)) for v in values):
      return "int", y.astype(np.int64)
  raise DataError(f"{where}: labels must be integers or strings, got dtype "
                  f"{y.dtype}")


def encode_labels(labels: Mapping[str, np.ndarray], where: Mapping[str, str],
                  class_names: Optional[Sequence[str]] = None
                  ) -> Tuple[Dict[str, np.ndarray], Tuple[str, ...]]:
  """Maps every split's labels to int64 0..K-1 and names the classes
  (docs/data.md#your-own-data, step 2).

  Args:
    labels: split ("train", "val", "test") -> raw labels; "train" required.
    where: split -> the file (and array) named in error messages.
    class_names: optional names, one per class (integer labels index it).
  Returns:
    (split -> int64 labels, class names).
  Raises:
    DataError: labels of another type, a class missing from training, or a validation / test
      class that training does not have.
  """
  values = {s: _label_values(y, where[s]) for s, y in labels.items()}
  kind = values["train"][0]
  word = {"int": "integers", "str": "strings"}
  for s, (k, _) in values.items():
    if k != kind:
      raise DataError(f"{where[s]}: labels are {word[k]} but the training labels are "
                      f"{word[kind]}")
  if class_names is not None:
    names = tuple(str(c) for c in class_names)
    classes = list(range(len(names))) if kind == "int" else list(names)
  else:
    classes = np.unique(values["train"][1]).tolist()
    names = tuple(str(c) for c in classes)
  lookup = {c: i for i, c in enumerate(classes)}
  out = {}
  for s, (_, y) in values.items():
    index = np.fromiter((lookup.get(v, -1) for v in y.tolist()), np.int64, count=len(y))
    if np.any(index < 0):
      bad = y[index < 0][0]
      known = (f"one of the {len(names)} class_names" if s == "train"
               else "a class of the training data")
      raise DataError(f"{where[s]}: label {bad.item()!r} is not {known} "
                      f"({int((index < 0).sum())} such example(s))")
    out[s] = index
  counts = np.bincount(out["train"], minlength=len(names))
  missing = [names[k] for k in np.flatnonzero(counts == 0)]
  if missing:
    raise DataError(f"{where['train']}: class(es) {missing[:5]} have no training example "
                    f"({len(missing)} of {len(names)} classes); every class needs one")
  return out, names


# ---------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------


def check_pair(x: np.ndarray, y: np.ndarray, where: str) -> None:
  """Raises DataError unless x has one row per label and at least one row."""
  if len(x) != len(y):
    raise DataError(f"{where}: {len(x)} inputs but {len(y)} labels")
  if len(x) == 0:
    raise DataError(f"{where}: the split is empty")


def as_features(x, where: str) -> np.ndarray:
  """float32 [n, d] features, checked to be numeric and finite.

  Raises:
    DataError: non-numeric values, or NaN / Inf (naming the first row and column).
  """
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise DataError(f"{where}: features must be numeric, got dtype {x.dtype}")
  x = x.astype(np.float32)
  bad = ~np.isfinite(x)
  if np.any(bad):
    row, col = np.argwhere(bad)[0]
    raise DataError(f"{where}: {int(bad.sum())} NaN or Inf feature value(s), first in row "
                    f"{row} column {col}")
  return x


def as_images(x, where: str) -> np.ndarray:
  """NHWC images: uint8 as given (other integers in [0, 255] become uint8), floats in [0, 1] as
  float32; 3-D arrays get a channel.

  Raises:
    DataError: another rank, non-finite or out-of-range values.
  """
  x = np.asarray(x)
  if x.ndim == 3:  # [n, h, w] grayscale
    x = x[..., None]
  if x.ndim != 4:
    raise DataError(f"{where}: images must be [n, height, width, channels], got shape {x.shape}")
  if x.dtype == np.uint8:
    return x
  if x.dtype.kind in "iub":
    if x.size and (x.min() < 0 or x.max() > 255):
      raise DataError(f"{where}: integer images must lie in [0, 255], got "
                      f"[{x.min()}, {x.max()}]")
    return x.astype(np.uint8)
  if x.dtype.kind != "f":
    raise DataError(f"{where}: images must be uint8 or float, got dtype {x.dtype}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{where}: {int((~np.isfinite(x)).sum())} NaN or Inf pixel value(s)")
  if x.size and (x.min() < 0.0 or x.max() > 1.0):
    raise DataError(f"{where}: float images must lie in [0, 1], got [{x.min():g}, "
                    f"{x.max():g}] (pass uint8 for 0..255)")
  return x.astype(np.float32)


def check_same_shape(x: Mapping[str, np.ndarray], where: Mapping[str, str]) -> None:
  """Raises DataError unless every split's examples have the training shape."""
  want = x["train"].shape[1:]
  for s, arr in x.items():
    if arr.shape[1:] != want:
      raise DataError(f"{where[s]}: examples have shape {arr.shape[1:]} but the training "
                      f"examples have {want}")


# ---------------------------------------------------------------------------
# Hold-outs and the long tail.
# ---------------------------------------------------------------------------


def _hash_key(what: str, seed: int, index: int) -> bytes:
  """A platform-independent pseudo-random sort key (not NumPy's generator)."""
  return hashlib.sha256(f"user-holdout:{what}:{seed}:{index}".encode()).digest()


def stratified_holdout(y: np.ndarray, class_names: Sequence[str], fraction: float,
                       split_seed: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
  """Per-class hold-out by the rule of docs/data.md#your-own-data (step 3); returns sorted
  (kept, held) indices into y. A class of fewer than 2 stays whole, with a warning.

  Args:
    y: int64 labels in [0, K).
    class_names: K names (for the warning).
    fraction: in [0, 1); 0 holds out nothing.
    split_seed: the hold-out's seed (not the run seed).
    what: "validation" or "test" (the split being made, also part of the key).
  """
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"{what} fraction must be in [0, 1), got {fraction}")
  held, small = [], []
  for k, name in enumerate(class_names):
    members = np.flatnonzero(y == k)
    if fraction == 0.0:
      break
    if len(members) < 2:
      small.append(name)
      continue
    n = min(len(members) - 1, max(1, round(fraction * len(members))))
    order = sorted(members.tolist(), key=lambda i: _hash_key(what, split_seed, i))
    held.extend(order[:n])
  if small:
    logging.warning("%d class(es) have fewer than 2 training examples and stay whole in "
                    "training, with none in the %s split: %s", len(small), what, small[:10])
  held = np.asarray(sorted(held), np.int64)
  keep = np.ones(len(y), bool)
  keep[held] = False
  return np.flatnonzero(keep).astype(np.int64), held


def hold_out_indices(y_train: np.ndarray, given: Sequence[str], class_names: Sequence[str],
                     test_fraction: float, val_fraction: float, seed: int, where: str
                     ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """(kept training indices, {split: held-out training indices}): the test split, then the
  validation split, held out of training (`stratified_holdout`) when not in `given`.

  Args:
    y_train: the training labels (encoded).
    given: the splits the source has already.
    class_names: the class names (for messages).
    test_fraction, val_fraction: the fractions held out per class.
    seed: the split seed.
    where: the source, for messages.
  Raises:
    DataError: a split to hold out would be empty.
  """
  keep, held = np.arange(len(y_train)), {}
  for split, fraction, what in (("test", test_fraction, "test"),
                                ("val", val_fraction, "validation")):
    if split in given:
      continue
    kept, out = stratified_holdout(y_train[keep], class_names, fraction, seed, what)
    if not len(out):
      raise DataError(f"{where}: no {what} split given and none held out ({split}_fraction "
                      f"{fraction}, classes of fewer than 2 examples stay in training)")
    held[split], keep = keep[out], keep[kept]
  return keep, held


def step_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
  """The step profile: the first floor(K/2) classes keep n_max, the others
  max(1, int(n_max / ratio)) (LDAM's "step" imbalance, defined for odd K too)."""
  if num_classes < 1 or imbalance_ratio < 1:
    raise DataError(f"step_counts needs K >= 1 and ratio >= 1, got {num_classes}, "
                    f"{imbalance_ratio}")
  minor = max(1, int(n_max / imbalance_ratio))
  return np.asarray([n_max if k < num_classes // 2 else minor for k in range(num_classes)],
                    np.int64)


def long_tail_indices(y: np.ndarray, class_names: Sequence[str], imbalance_ratio: float,
                      profile: str = "exp", n_max: Optional[int] = None,
                      where: str = "training split") -> np.ndarray:
  """Sorted indices of a long-tailed subset of a (balanced) training split: class k keeps its
  first N_k examples (`splits.long_tail_counts` for profile "exp", `step_counts` for "step";
  n_max defaults to the smallest class). See docs/data.md#your-own-data, step 4.

  Raises:
    DataError: an unknown profile, or a class with fewer than N_k examples.
  """
  if profile not in IMBALANCE_PROFILES:
    raise DataError(f"imbalance_profile must be one of {list(IMBALANCE_PROFILES)}, got "
                    f"{profile!r}")
  k = len(class_names)
  have = np.bincount(y, minlength=k)
  n_max = int(have.min()) if n_max is None else int(n_max)
  counts = (splits.long_tail_counts(n_max, k, imbalance_ratio) if profile == "exp"
            else step_counts(n_max, k, imbalance_ratio))
  short = np.flatnonzero(have < counts)
  if short.size:
    c = short[0]
    raise DataError(f"{where}: class {class_names[c]!r} has {have[c]} training examples, the "
                    f"{profile} long tail with n_max={n_max} needs {counts[c]}")
  return np.sort(splits.first_per_class(y, counts)).astype(np.int64)


# ---------------------------------------------------------------------------
# The translation's domain.
# ---------------------------------------------------------------------------


def clip_range_for(x_train: np.ndarray, input_kind: str, mode: str = "auto"):
  """The box M2m's translation clips to (docs/data.md#your-own-data).

  Args:
    x_train: the final training inputs.
    input_kind: "image" or "features".
    mode: "auto" (images (0, 1); features the per-feature training range), "global" (features:
      one (min, max) over all training values) or "none".
  Returns:
    None, a (min, max) pair of floats, or a pair of float32 arrays.
  """
  if mode not in CLIP_MODES:
    raise DataError(f"clip must be one of {list(CLIP_MODES)}, got {mode!r}")
  if mode == "none":
    return None
  if input_kind == "image":
    return (0.0, 1.0)
  if mode == "global":
    return (float(x_train.min()), float(x_train.max()))
  return (x_train.min(axis=0).astype(np.float32), x_train.max(axis=0).astype(np.float32))
