"""Training recipes suggested from the data for user-supplied datasets
(docs/data.md#your-own-data; the paper's recipes are in docs/method.md#training-recipes).

`suggest_recipe` returns exactly the fields of `m2m_tf.recipes.Recipe`, so
`Recipe(**suggest_recipe(splits))` is a recipe; every value is a default that a
flag overrides. The rules follow the paper's recipes for the nearest dataset:

- images: ResNet-32 up to 32 px (CIFAR-LT), pre-activation ResNet-18 up to 64 px,
  ResNet-50 above (ImageNet-LT, batch 256, weight decay 1e-4); 200 epochs with
  CIFAR-LT's schedule (lr x0.01 at 80% and again at 90% of training), random
  crops and flips, M2m's step size 0.1 of the paper's images.
- features: the MLP with one hidden layer of 256 (Reuters / Twitter), 30 epochs
  (twice the paper's 15, as a user dataset may be smaller), lr x0.1 at 80% and
  90%, batch 64, weight decay 5e-5, no augmentation.
- both: linear warm-up over 5 epochs to lr 0.1; M2m's phase 2 (and DRS / DRW)
  from 80% of training; a batch no larger than the largest power of two that
  fits the training set.

The feature step size is ours: M2m's eta is an L2 length in input space, so
it must follow the scale of the features. We take a tenth of the training
data's typical spread, 0.1 * sqrt(sum_j var_j) (the L2 norm of the per-feature
standard deviations), rounded to 2 significant digits.
"""

import math
from typing import Dict, Optional, Tuple

import numpy as np

from data_prep import user_data

DEFERRED_FRACTION = 0.8
SECOND_MILESTONE_FRACTION = 0.9
IMAGE_EPOCHS = 200
FEATURE_EPOCHS = 30
WARMUP_EPOCHS = 5


def image_arch(height: int, width: int) -> str:
  """resnet32 up to 32 px, preact_resnet18 up to 64 px, resnet50 above (the longer side)."""
  side = max(height, width)
  if side <= 32:
    return "resnet32"
  if side <= 64:
    return "preact_resnet18"
  return "resnet50"


def feature_step_size(x_train: np.ndarray) -> float:
  """0.1 * ||per-feature std||_2 of the training features, 2 significant digits (0.1 if 0)."""
  spread = float(np.sqrt(np.var(np.asarray(x_train, np.float64), axis=0).sum()))
  if not spread > 0:
    return 0.1
  value = 0.1 * spread
  digits = 1 - int(math.floor(math.log10(value)))
  return float(round(value, digits))


def _batch(preferred: int, n_train: int) -> int:
  """preferred, or the largest power of two <= n_train when that is smaller (at least 2)."""
  return int(max(2, min(preferred, 2 ** int(math.floor(math.log2(max(n_train, 2)))))))


def suggest_recipe(data) -> Dict[str, object]:
  """A recipe for a `DatasetSplits` (module docstring): the fields of `Recipe`.

  Returns:
    dict with arch, epochs, batch_size, weight_decay, milestones, factors,
    deferred_epoch, step_size, lr, warmup_epochs, augment, hidden_units, start_noise_mode.
  """
  image = data.input_kind == "image"
  n_train = len(data.x_train)
  if image:
    arch = image_arch(*data.input_shape[:2])
    epochs, factors = IMAGE_EPOCHS, (0.01, 0.01)
    batch, weight_decay = (256, 1e-4) if arch == "resnet50" else (128, 2e-4)
    step_size = 0.1
  else:
    arch, epochs, factors = "mlp", FEATURE_EPOCHS, (0.1, 0.1)
    batch, weight_decay = 64, 5e-5
    step_size = feature_step_size(data.x_train)
  deferred = int(round(DEFERRED_FRACTION * epochs))
  return {
      "arch": arch, "epochs": epochs, "batch_size": _batch(batch, n_train),
      "weight_decay": weight_decay,
      "milestones": (deferred, int(round(SECOND_MILESTONE_FRACTION * epochs))),
      "factors": factors, "deferred_epoch": deferred, "step_size": step_size, "lr": 0.1,
      "warmup_epochs": WARMUP_EPOCHS, "augment": image, "hidden_units": (256,),
      # The official random start for images (the official code covers images only).
      "start_noise_mode": "official" if image else "per_sample",
  }


def model_normalization(dataset: str, data) -> Optional[Tuple[Tuple[float, ...],
                                                              Tuple[float, ...]]]:
  """The (mean, std) a run's models standardise their input with: `input_normalization`
  for your own data (a KIND:PATH `dataset`), None for the registered datasets (their models
  use their builders' defaults).

  Args:
    dataset: the run's dataset name or KIND:PATH source.
    data: its loaded `DatasetSplits`.
  """
  return input_normalization(data) if user_data.is_spec(dataset) else None


def input_normalization(data) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """(mean, std) of the training inputs per channel (images, on the [0, 1] scale) or per
  feature (features), for a standardisation layer at the model's input.

  The ResNets standardise their input with a per-channel mean and std (CIFAR-10's
  by default), which must have one entry per channel: grayscale data need their
  own. Features of an arbitrary scale (digits: 0..16) make the suggested MLP
  recipe (lr 0.1) unstable unless the model standardises them first; doing it
  inside the model keeps the data, the clip range and the exported model in the
  user's own units. A std below 1e-3 (a constant feature or channel) becomes 1.
  """
  if getattr(data, "train_source", None) is not None:  # streamed: from the files' pixel sums
    return data.train_source.normalization
  x = np.asarray(data.x_train)
  if data.input_kind != "image":
    x = x.astype(np.float64)
    std = x.std(axis=0)
    return tuple(x.mean(axis=0).tolist()), tuple(np.where(std < 1e-3, 1.0, std).tolist())
  if x.dtype == np.uint8:
    # Exact integer moments: the streaming input computes the same numbers from its files
    # (data_prep/tfrecord_dir.py), so both paths build the same model.
    return normalization_from_moments(*pixel_moments(x))
  # Channel by channel in float64, so a large array is never copied whole.
  mean, std = [], []
  for c in range(x.shape[-1]):
    ch = x[..., c].astype(np.float64)
    mean.append(float(ch.mean()))
    sd = float(ch.std())
    std.append(sd if sd >= 1e-3 else 1.0)
  return tuple(mean), tuple(std)


def pixel_moments(images: np.ndarray, chunk: int = 1024) -> Tuple[int, np.ndarray, np.ndarray]:
  """(pixels per channel, per-channel sum, per-channel sum of squares) of uint8 NHWC images.

  Exact (int64 sums of integers), computed `chunk` images at a time so that no
  int64 copy of the whole array is made; moments of parts add up to the whole's.
  """
  images = np.asarray(images)
  c = images.shape[-1]
  sums, sums_sq = np.zeros(c, np.int64), np.zeros(c, np.int64)
  for start in range(0, len(images), chunk):
    part = images[start:start + chunk].reshape(-1, c).astype(np.int64)
    sums += part.sum(axis=0)
    sums_sq += (part * part).sum(axis=0)
  return int(np.prod(images.shape[:-1])), sums, sums_sq


def normalization_from_moments(pixels: int, sums, sums_sq, scale: float = 255.0
                               ) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """Per-channel (mean, std) on the [0, 1] scale from exact integer moments.

  The variance is formed exactly in integers (pixels * sum_sq - sum^2) and
  rounded once, so the result does not depend on the order the pixels were
  summed in. A std below 1e-3 (a constant channel) becomes 1.
  """
  mean, std = [], []
  for s, ss in zip(sums, sums_sq):
    s, ss = int(s), int(ss)
    mean.append(s / pixels / scale)
    sd = math.sqrt((pixels * ss - s * s) / (pixels * pixels)) / scale
    std.append(sd if sd >= 1e-3 else 1.0)
  return tuple(mean), tuple(std)
