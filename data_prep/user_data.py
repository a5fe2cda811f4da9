"""Your own long-tailed data: `KIND:PATH` sources (npz:, csv:, folder:, tfds:, tfrecord:) ->
`DatasetSplits`. The readers return what the files hold; `finish` applies the same rules to every
source. Errors are one-line `DataError`s. See docs/data.md#your-own-data.
"""

import dataclasses
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np

from data_prep import splits
from data_prep import tfrecord_dir
from data_prep import user_images
from data_prep import user_sources
from data_prep import user_splits
from data_prep import user_tfds
from data_prep.errors import ConfigError, DataError

SOURCE_KINDS = ("csv", "folder", "npz", "tfds", "tfrecord")
_COMMON = ("val_fraction", "test_fraction", "split_seed", "imbalance_ratio",
           "imbalance_profile", "n_max", "clip")
_IMAGE = ("image_size", "channels", "use_cache", "cache_dir")
KIND_OPTIONS = {
    "npz": _COMMON,
    "csv": _COMMON + ("label_column", "header"),
    "folder": _COMMON + _IMAGE,
    "tfds": _COMMON + _IMAGE + ("tfds_data_dir", "train_split", "val_split", "test_split",
                                "input_key", "label_key"),
    "tfrecord": _COMMON + ("cache_dir",),
}


class UnknownSourceError(DataError):
  """A `KIND:PATH` source whose KIND is not one of SOURCE_KINDS."""


@dataclasses.dataclass(frozen=True)
class UserDataOptions:
  """The options of a user source, with their defaults; docs/data.md#your-own-data ("Options
  and defaults") says what each does and for which kinds."""

  val_fraction: float = 0.1
  test_fraction: float = 0.2
  split_seed: int = 0
  imbalance_ratio: Optional[float] = None
  imbalance_profile: str = "exp"
  n_max: Optional[int] = None
  clip: str = "auto"
  label_column: Any = None
  header: Optional[bool] = None
  image_size: Optional[int] = None
  channels: Optional[int] = None
  use_cache: bool = True
  cache_dir: Optional[str] = None
  tfds_data_dir: Optional[str] = None
  train_split: Optional[str] = None
  val_split: Optional[str] = None
  test_split: Optional[str] = None
  input_key: Optional[str] = None
  label_key: Optional[str] = None

  def __post_init__(self):
    checks = (
        (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
        (0 <= self.test_fraction < 1, "test_fraction must be in [0, 1)"),
        (self.imbalance_ratio is None or self.imbalance_ratio >= 1,
         "imbalance_ratio must be >= 1"),
        (self.imbalance_profile in user_splits.IMBALANCE_PROFILES,
         f"imbalance_profile must be one of {list(user_splits.IMBALANCE_PROFILES)}"),
        (self.n_max is None or self.n_max >= 1, "n_max must be >= 1"),
        (self.clip in user_splits.CLIP_MODES, f"clip must be one of "
         f"{list(user_splits.CLIP_MODES)}"),
        (self.image_size is None or self.image_size >= 1, "image_size must be >= 1"),
        (self.channels in (None, 1, 3), "channels must be 1 or 3"),
    )
    for ok, message in checks:
      if not ok:
        raise ConfigError(message)


def is_spec(name: str) -> bool:
  """Whether a dataset name is a `KIND:PATH` source rather than a registered name."""
  return ":" in str(name)


def parse_spec(spec: str) -> Tuple[str, str]:
  """"KIND:TARGET" -> (kind, target), without touching any file.

  Raises:
    UnknownSourceError: KIND is not one of SOURCE_KINDS.
    DataError: no target.
  """
  kind, sep, target = str(spec).partition(":")
  if not sep:
    raise DataError(f"{spec!r} is not a KIND:PATH source")
  kind = kind.strip().lower()
  if kind not in SOURCE_KINDS:
    raise UnknownSourceError(f"{spec}: unknown source kind {kind!r}; known: "
                             f"{', '.join(SOURCE_KINDS)} (e.g. npz:data.npz)")
  if not target.strip():
    raise DataError(f"{spec}: no path after '{kind}:'")
  return kind, target.strip()


def short_name(spec: str) -> str:
  """A file-name-safe name for a source, e.g. "npz:data/my.npz" -> "npz_my" (for run folders)."""
  kind, target = parse_spec(spec)
  if kind == "tfds":
    stem = target.replace(":", "_").replace("/", "_")
  else:  # the (first) file's or the folder's name, without its extension
    stem = target.split(",")[0].rstrip("/").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] or stem
  return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem).strip('-') or 'data'}"


_NUMBER_OPTIONS = {"val_fraction": float, "test_fraction": float, "imbalance_ratio": float,
                   "split_seed": int, "n_max": int, "image_size": int, "channels": int}


def parse_options(kind: str, options: Dict[str, Any]) -> UserDataOptions:
  """Checks the option names against the kind's and builds `UserDataOptions` (numbers given as
  strings are converted; None means the default)."""
  unknown = sorted(set(options) - set(KIND_OPTIONS[kind]))
  if unknown:
    raise ConfigError(f"{kind}: source does not take option(s) {unknown}; valid options: "
                      f"{sorted(KIND_OPTIONS[kind])}")
  values = {}
  for name, value in options.items():
    if value is None:
      continue
    convert = _NUMBER_OPTIONS.get(name)
    try:
      values[name] = convert(value) if convert else value
    except (TypeError, ValueError):
      raise ConfigError(f"{kind}: option {name} must be a number, got {value!r}") from None
  return UserDataOptions(**values)


def _read(kind: str, target: str, data_dir, o: UserDataOptions):
  """The kind's reader: `user_sources.RawData` of the source's splits."""
  if kind == "npz":
    return user_sources.read_npz(target, data_dir)
  if kind == "csv":
    files = [t.strip() for t in target.split(",")]
    return user_sources.read_csv(files, data_dir, label_column=o.label_column, header=o.header)
  image = dict(image_size=o.image_size, channels=o.channels, use_cache=o.use_cache,
               cache_dir=o.cache_dir)
  if kind == "folder":
    return user_images.read_folder(target, data_dir, **image)
  if kind == "tfrecord":
    return tfrecord_dir.read_tfrecord_dir(target, data_dir)
  return user_tfds.read_tfds(target, data_dir, tfds_data_dir=o.tfds_data_dir,
                             train_split=o.train_split, val_split=o.val_split,
                             test_split=o.test_split, input_key=o.input_key,
                             label_key=o.label_key, **image)


def build_user_dataset(spec: str, data_dir=None, **options) -> splits.DatasetSplits:
  """Builds the `DatasetSplits` of a `KIND:PATH` source (docs/data.md#your-own-data).

  Args:
    spec: "npz:PATH", "csv:TRAIN[,TEST]" or "csv:TRAIN,VAL,TEST",
      "folder:DIR", "tfds:NAME[:CONFIG]", "tfrecord:DIR".
    data_dir: relative paths not found from the working directory are looked
      up under it; tfds: the data root whose tensorflow_datasets/ is searched.
    **options: `UserDataOptions` fields valid for the kind (`KIND_OPTIONS`).

  Raises:
    UnknownSourceError, DataError, MissingFileError: bad input (one line).
    ConfigError: an unknown or invalid option.
  """
  kind, target = parse_spec(spec)
  opts = parse_options(kind, options)
  raw = _read(kind, target, data_dir, opts)
  return finish(spec, raw, opts)


def _check_inputs(raw) -> Dict[str, np.ndarray]:
  """Rule 1 (docs/data.md#your-own-data): typed, finite inputs of one shape."""
  x = {}
  for s in raw.x:
    user_splits.check_pair(np.asarray(raw.x[s]), np.asarray(raw.y[s]), raw.where[s])
    x[s] = (user_splits.as_images(raw.x[s], raw.where[s]) if raw.input_kind == "image"
            else user_splits.as_features(raw.x[s], raw.where[s]))
  user_splits.check_same_shape(x, raw.where)
  return x


def _hold_out(x, y, names, o: UserDataOptions, where: str):
  """Step 3: test, then validation, held out of training when the source lacks them."""
  keep, held = user_splits.hold_out_indices(y["train"], list(x), names, o.test_fraction,
                                            o.val_fraction, o.split_seed, where)
  for split, rows in held.items():
    x[split], y[split] = x["train"][rows], y["train"][rows]
  x["train"], y["train"] = x["train"][keep], y["train"][keep]


def finish(spec: str, raw, o: UserDataOptions) -> splits.DatasetSplits:
  """A reader's `RawData` -> `DatasetSplits` by the rules of docs/data.md#your-own-data."""
  x = _check_inputs(raw)
  y, names = user_splits.encode_labels(raw.y, raw.where, raw.class_names)
  _hold_out(x, y, names, o, raw.where["train"])
  label = f"user data {spec}"
  if o.imbalance_ratio is not None and o.imbalance_ratio > 1:
    keep = user_splits.long_tail_indices(y["train"], names, o.imbalance_ratio,
                                         o.imbalance_profile, o.n_max, raw.where["train"])
    x["train"], y["train"] = x["train"][keep], y["train"][keep]
    label += f", {o.imbalance_profile} long tail, ratio {o.imbalance_ratio:g}"
  return splits.DatasetSplits(
      name=spec, x_train=x["train"], y_train=y["train"], x_val=x["val"], y_val=y["val"],
      x_test=x["test"], y_test=y["test"], class_names=names, input_kind=raw.input_kind,
      clip_range=user_splits.clip_range_for(x["train"], raw.input_kind, o.clip), label=label)
