"""The datasets: one `DatasetSpec` (builder and recipe) per name, and `load_dataset`.

Your own data need no entry: `load_dataset("npz:my.npz")` (or csv:, folder:, tfds:, tfrecord:)
reads it (data_prep/user_data.py). Adding a dataset is one entry in `DATASETS` (or
`register_dataset`): docs/data.md#adding-a-dataset.
"""

import dataclasses
import inspect
import os
from typing import Callable, Dict, Optional, Tuple, Union

from data_prep import cifar_jpeg
from data_prep import normalization
from data_prep import reuters
from data_prep import splits
from data_prep import synthetic
from data_prep import tfds_images
from data_prep import twitter
from data_prep import user_data
from data_prep.errors import ConfigError
from data_prep.recipes import Recipe

Builder = Callable[..., splits.DatasetSplits]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset: how it is built and how it trains.

  Attributes:
    builder: `builder(data_dir=None, **options) -> DatasetSplits`; a builder without a
      `data_dir` parameter (generated data) is called without it.
    recipe: the defaults of a run's unset fields (None: the dataset cannot be trained by name).
  """

  builder: Builder
  recipe: Optional[Recipe] = None

  @property
  def options(self) -> Optional[Tuple[str, ...]]:
    """The data options the builder takes (its keyword parameters), None if it takes any."""
    params = inspect.signature(self.builder).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
      return None
    return tuple(sorted(p for p in params if p != "data_dir"))


_CIFAR_LT = Recipe("resnet32", 200, 128, 2e-4, (160, 180), (0.01, 0.01), 160, augment=True,
                   cb_beta=0.999)

DATASETS: Dict[str, DatasetSpec] = {
    # Reuters' and Twitter's (beta, lam, gamma): ERM-M2m's equal-budget selection on validation
    # bACC (results/budgets_<dataset>.md), so that the defaults run the table's ERM-M2m row.
    "reuters": DatasetSpec(reuters.build_reuters, Recipe(
        "mlp", 15, 64, 5e-5, (10,), (0.1,), 10, step_size=1.0, beta=0.9, lam=0.1, gamma=0.9,
        start_noise_mode="per_sample")),
    "twitter": DatasetSpec(twitter.build_twitter, Recipe(
        "mlp", 15, 64, 5e-5, (10,), (0.1,), 10, substitute="ngram", beta=0.999, lam=0.5,
        gamma=0.99, start_noise_mode="per_sample")),
    "synthetic_lt": DatasetSpec(synthetic.build_synthetic_lt, Recipe(
        "mlp", 6, 32, 5e-5, (4,), (0.1,), 3, step_size=0.5, warmup_epochs=1, hidden_units=(64,),
        start_noise_mode="per_sample")),
    "cifar10_jpeg_lt": DatasetSpec(cifar_jpeg.build_cifar10_jpeg_lt, _CIFAR_LT),
    "cifar10_lt": DatasetSpec(tfds_images.build_cifar10_lt, _CIFAR_LT),
    "cifar100_lt": DatasetSpec(tfds_images.build_cifar100_lt, _CIFAR_LT),
    "celeba5": DatasetSpec(tfds_images.build_celeba5, Recipe(
        "resnet32", 90, 128, 2e-4, (30, 60), (0.1, 0.1), 60, augment=True)),
    "sun397": DatasetSpec(tfds_images.build_sun397, Recipe(
        "preact_resnet18", 90, 128, 2e-4, (30, 60), (0.1, 0.1), 60, augment=True)),
    "imagenet_lt": DatasetSpec(tfds_images.build_imagenet_lt, Recipe(
        "resnet50", 200, 256, 1e-4, (160, 180), (0.1, 0.1), 160, augment=True)),
}


def register_dataset(name: str, spec: Union[DatasetSpec, Builder], *,
                     overwrite: bool = False) -> None:
  """Adds `spec` (or a bare builder, with no recipe) under `name` (ValueError if taken, unless
  overwrite)."""
  if name in DATASETS and not overwrite:
    raise ValueError(f"Dataset {name!r} is already registered.")
  DATASETS[name] = spec if isinstance(spec, DatasetSpec) else DatasetSpec(spec)


def available_datasets() -> Tuple[str, ...]:
  """The registered dataset names, sorted."""
  return tuple(sorted(DATASETS))


def is_dataset(name: str) -> bool:
  """Whether `name` is a registered dataset or your own data (KIND:PATH)."""
  return name in DATASETS or user_data.is_spec(name)


def dataset_choices() -> str:
  """What a dataset name may be, in words (for error messages)."""
  return (f"{list(available_datasets())} or KIND:PATH with KIND in "
          f"{list(user_data.SOURCE_KINDS)}")


def get_recipe(name: str) -> Recipe:
  """The recipe of a registered dataset.

  Raises:
    ConfigError (a ValueError): no recipe, listing the datasets that have one.
  """
  spec = DATASETS.get(name)
  if spec is None or spec.recipe is None:
    known = sorted(n for n, s in DATASETS.items() if s.recipe is not None)
    raise ConfigError(f"No recipe for dataset {name!r}; known: {known}.")
  return spec.recipe


def file_stem(name: str) -> str:
  """A file-name-safe name of a dataset, for run folders (`npz:data/my.npz` -> `npz_my`)."""
  return user_data.short_name(name) if user_data.is_spec(name) else name


def model_normalization(name: str, data) -> Optional[normalization.Normalization]:
  """The (mean, std) a run's models standardise their input with: the training data's for your
  own data (`normalization.input_normalization`), None for registered datasets."""
  return normalization.input_normalization(data) if user_data.is_spec(name) else None


def _check_options(name: str, spec: DatasetSpec, options) -> None:
  """ValueError naming the options `spec`'s builder does not take."""
  valid = spec.options
  unknown = [] if valid is None else sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"Dataset {name!r} does not take option(s) {unknown}; "
                     f"valid options: {list(valid)}")


def load_dataset(name: str, data_dir: Optional[Union[str, os.PathLike]] = None,
                 **options) -> splits.DatasetSplits:
  """Builds dataset `name`: a registered name, or your own data as KIND:PATH.

  Args:
    name: see `available_datasets()`, or docs/data.md#your-own-data.
    data_dir: the raw data root (`paths.resolve_data_dir`), for builders that read files.
    **options: the builder's keyword options, e.g. imbalance_ratio=10.
  Raises:
    ValueError: an unknown name or an option the builder does not take (listing the valid).
  """
  if name not in DATASETS and user_data.is_spec(name):
    return user_data.build_user_dataset(name, data_dir, **options)
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: "
                     f"{', '.join(available_datasets())}, or your own data as KIND:PATH "
                     f"with KIND one of {', '.join(user_data.SOURCE_KINDS)}")
  spec = DATASETS[name]
  _check_options(name, spec, options)
  if "data_dir" in inspect.signature(spec.builder).parameters or spec.options is None:
    return spec.builder(data_dir=data_dir, **options)
  return spec.builder(**options)
