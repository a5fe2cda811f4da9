"""Training recipes: the `Recipe` type, and the recipe suggested from the data for your own
datasets (docs/data.md#your-own-data). The named datasets' recipes are their entries in
`data_prep.registry` (docs/method.md#training-recipes). Plain data and NumPy: no training code.
"""

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np

DEFERRED_FRACTION = 0.8
SECOND_MILESTONE_FRACTION = 0.9
IMAGE_EPOCHS = 200
FEATURE_EPOCHS = 30
WARMUP_EPOCHS = 5


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One dataset's architecture and schedule: the values of a run's unset fields.

  lr follows `warmup_step_lr(lr, warmup_epochs, milestones, factors)`; SGD with momentum 0.9
  and coupled L2 weight decay; M2m's phase 2 (and DRS / DRW) from `deferred_epoch`. beta, lam,
  gamma, start_noise_mode and cb_beta are M2m's and the CB weights' defaults; substitute is
  Twitter's offline embedding substitute (docs/method.md#training-recipes).
  """

  arch: str
  epochs: int
  batch_size: int
  weight_decay: float
  milestones: Tuple[int, ...]
  factors: Tuple[float, ...]
  deferred_epoch: int
  step_size: float = 0.1
  lr: float = 0.1
  warmup_epochs: int = 5
  augment: bool = False
  hidden_units: Tuple[int, ...] = (256,)
  beta: float = 0.999
  lam: float = 0.5
  gamma: float = 0.9
  start_noise_mode: str = "official"
  cb_beta: float = 0.9999
  substitute: Optional[str] = None


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


def suggest_recipe(data) -> Recipe:
  """The recipe suggested for a `DatasetSplits` of your own (docs/data.md#your-own-data)."""
  image = data.input_kind == "image"
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
  return Recipe(
      arch=arch, epochs=epochs, batch_size=_batch(batch, len(data.x_train)),
      weight_decay=weight_decay,
      milestones=(deferred, int(round(SECOND_MILESTONE_FRACTION * epochs))),
      factors=factors, deferred_epoch=deferred, step_size=step_size, lr=0.1,
      warmup_epochs=WARMUP_EPOCHS, augment=image, hidden_units=(256,),
      start_noise_mode="official" if image else "per_sample")


def with_epochs(recipe: Recipe, epochs: Optional[int]) -> Recipe:
  """`recipe` trained for `epochs` (None: as it is): warm-up, milestones and deferral keep their
  fraction of training, the deferral before the last epoch."""
  if epochs is None or epochs == recipe.epochs:
    return recipe
  def scale(e):
    return int(round(e * epochs / recipe.epochs))
  return dataclasses.replace(recipe, epochs=epochs, warmup_epochs=scale(recipe.warmup_epochs),
                             milestones=tuple(scale(m) for m in recipe.milestones),
                             deferred_epoch=min(scale(recipe.deferred_epoch), epochs - 1))


def suggested_recipe(data, epochs: Optional[int] = None) -> Recipe:
  """The recipe suggested for your own data, trained for `epochs` when given (`with_epochs`)."""
  return with_epochs(suggest_recipe(data), epochs)
