"""Dataset name -> builder, and `load_dataset`.

Your own data need no registration: `load_dataset("npz:my.npz")` (or csv:,
folder:, tfds:) reads it (data_prep/user_data.py).

Adding a dataset is one line: `register_dataset("name", builder)` (or an entry
in `DATASETS`), where `builder(data_dir=None, **options) -> DatasetSplits`.
A builder without a `data_dir` parameter (e.g. synthetic data) is called
without it.
"""

import inspect
import os
from typing import Callable, Dict, Optional, Tuple, Union

from data_prep import cifar_jpeg
from data_prep import reuters
from data_prep import splits
from data_prep import synthetic
from data_prep import twitter
from data_prep import user_data

Builder = Callable[..., splits.DatasetSplits]

DATASETS: Dict[str, Builder] = {
    "reuters": reuters.build_reuters,
    "twitter": twitter.build_twitter,
    "synthetic_lt": synthetic.build_synthetic_lt,
    "cifar10_jpeg_lt": cifar_jpeg.build_cifar10_jpeg_lt,
}


def register_dataset(name: str, builder: Builder, *,
                     overwrite: bool = False) -> None:
  """Adds `builder` under `name` (ValueError if taken, unless overwrite)."""
  if name in DATASETS and not overwrite:
    raise ValueError(f"Dataset {name!r} is already registered.")
  DATASETS[name] = builder


def available_datasets() -> Tuple[str, ...]:
  """The registered dataset names, sorted."""
  return tuple(sorted(DATASETS))


def load_dataset(name: str,
                 data_dir: Optional[Union[str, os.PathLike]] = None,
                 **options) -> splits.DatasetSplits:
  """Builds the dataset registered as `name`.

  Args:
    name: a registered name (see `available_datasets()`).
    data_dir: passed to builders that read files (see
      `paths.resolve_data_dir`); ignored by builders that take none.
    **options: builder keyword options, e.g. imbalance_ratio=10.

  A name of the form KIND:PATH (npz:, csv:, folder:, tfds:) is the user's own
  data, built by `data_prep.user_data.build_user_dataset`
  (docs/data.md#your-own-data).

  Raises:
    ValueError: unknown name (listing the valid ones) or an option the
      builder does not take (listing the ones it does).
  """
  if name not in DATASETS and user_data.is_spec(name):
    return user_data.build_user_dataset(name, data_dir, **options)
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: "
                     f"{', '.join(available_datasets())}, or your own data as KIND:PATH "
                     f"with KIND one of {', '.join(user_data.SOURCE_KINDS)}")
  builder = DATASETS[name]
  params = inspect.signature(builder).parameters
  takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
  if not takes_kwargs:
    unknown = sorted(set(options) - set(params))
    if unknown:
      valid = sorted(p for p in params if p != "data_dir")
      raise ValueError(f"Dataset {name!r} does not take option(s) {unknown}; "
                       f"valid options: {valid}")
  if "data_dir" in params or takes_kwargs:
    return builder(data_dir=data_dir, **options)
  return builder(**options)


# --- Image datasets on tensorflow-datasets (owned by data_prep/tfds_images.py) ---
from data_prep import tfds_images  # pylint: disable=g-import-not-at-top,g-bad-import-order
tfds_images.register(register_dataset)
