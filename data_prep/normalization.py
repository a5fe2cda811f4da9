"""Per-channel or per-feature input statistics, for the standardisation a run on your own data
builds into its model (docs/data.md#your-own-data). NumPy only."""

import math
from typing import Tuple

import numpy as np

Normalization = Tuple[Tuple[float, ...], Tuple[float, ...]]


def input_normalization(data) -> Normalization:
  """(mean, std) of a `DatasetSplits`' training inputs: per channel for images (on the [0, 1]
  scale), per feature for features. A std below 1e-3 (a constant input) becomes 1."""
  if getattr(data, "train_source", None) is not None:  # streamed: from the files' pixel sums
    return data.train_source.normalization
  x = np.asarray(data.x_train)
  if data.input_kind != "image":
    x = x.astype(np.float64)
    std = x.std(axis=0)
    return tuple(x.mean(axis=0).tolist()), tuple(np.where(std < 1e-3, 1.0, std).tolist())
  if x.dtype == np.uint8:  # exact integer moments, as the streaming input computes them
    return normalization_from_moments(*pixel_moments(x))
  mean, std = [], []
  for c in range(x.shape[-1]):  # channel by channel in float64: no whole-array copy
    ch = x[..., c].astype(np.float64)
    mean.append(float(ch.mean()))
    sd = float(ch.std())
    std.append(sd if sd >= 1e-3 else 1.0)
  return tuple(mean), tuple(std)


def pixel_moments(images: np.ndarray, chunk: int = 1024) -> Tuple[int, np.ndarray, np.ndarray]:
  """(pixels per channel, per-channel sum, per-channel sum of squares) of uint8 NHWC images:
  exact int64 sums, `chunk` images at a time; the moments of parts add up to the whole's."""
  images = np.asarray(images)
  c = images.shape[-1]
  sums, sums_sq = np.zeros(c, np.int64), np.zeros(c, np.int64)
  for start in range(0, len(images), chunk):
    part = images[start:start + chunk].reshape(-1, c).astype(np.int64)
    sums += part.sum(axis=0)
    sums_sq += (part * part).sum(axis=0)
  return int(np.prod(images.shape[:-1])), sums, sums_sq


def normalization_from_moments(pixels: int, sums, sums_sq, scale: float = 255.0
                               ) -> Normalization:
  """Per-channel (mean, std) on the [0, 1] scale from exact integer moments; the variance is
  formed in integers and rounded once, so it does not depend on the summation order."""
  mean, std = [], []
  for s, ss in zip(sums, sums_sq):
    s, ss = int(s), int(ss)
    mean.append(s / pixels / scale)
    sd = math.sqrt((pixels * ss - s * s) / (pixels * pixels)) / scale
    std.append(sd if sd >= 1e-3 else 1.0)
  return tuple(mean), tuple(std)
