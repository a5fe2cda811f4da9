"""`tfds:NAME[:CONFIG]` sources: a TFDS dataset already prepared on this machine, found in the
data dirs of `tfds_images.tfds_dir_candidates` and never downloaded (docs/data.md#your-own-data).
"""

import dataclasses
import os
import pathlib
from typing import Any, Dict, Optional, Tuple

import numpy as np

from data_prep import cache as cache_lib
from data_prep import tfds_images
from data_prep import user_images
from data_prep import user_sources
from data_prep.errors import DataError

TFDS_VERSION = "user-tfds-v1"


def parse_name(target: str) -> str:
  """"NAME", "NAME:CONFIG" or "NAME/CONFIG" -> TFDS's "NAME/CONFIG" form."""
  name = target.strip().replace(":", "/")
  if not name or name.startswith("/") or name.count("/") > 2:
    raise DataError(f"tfds:{target}: expected tfds:NAME or tfds:NAME:CONFIG")
  return name


def find_prepared(name: str, data_dir=None, tfds_data_dir=None):
  """The prepared builder of `name` in the first TFDS data dir that has it.

  Raises:
    MissingFileError: prepared nowhere (one line listing where it looked).
  """
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  tried = tfds_images.tfds_dir_candidates(data_dir, tfds_data_dir)
  for cand in tried:
    try:
      builder = tfds.builder(name, data_dir=cand)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, OSError):
      continue
    if builder.is_prepared():
      return builder
  where = ", ".join(t or "TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
                    for t in tried)
  raise user_sources.MissingFileError(
      f"tfds:{name}: not prepared in {where}; nothing is downloaded here: prepare it once on a "
      f"machine with internet (tfds.builder({name!r}, data_dir=DIR).download_and_prepare()) "
      "and pass DIR as --data_dir or tfds_data_dir")


def _keys(builder, input_key, label_key) -> Tuple[str, str]:
  keys = builder.info.supervised_keys
  default = tuple(keys) if (isinstance(keys, (tuple, list)) and len(keys) == 2 and
                            all(isinstance(k, str) for k in keys)) else ("image", "label")
  input_key, label_key = input_key or default[0], label_key or default[1]
  features = builder.info.features
  for key in (input_key, label_key):
    if key not in features:
      raise DataError(f"tfds:{builder.name}: no feature {key!r} (features: "
                      f"{sorted(features.keys())}); set input_key / label_key")
  return input_key, label_key


def _split_names(builder, train_split, val_split, test_split) -> Dict[str, str]:
  """split -> TFDS split name: the options, else "train", "validation" / "test" if present."""
  available = set(builder.info.splits.keys())
  chosen = {"train": train_split or "train",
            "val": val_split or ("validation" if "validation" in available else None),
            "test": test_split or ("test" if "test" in available else None)}
  out = {s: n for s, n in chosen.items() if n}
  for s, n in out.items():
    if n.split("[")[0] not in available:
      raise DataError(f"tfds:{builder.name}: no split {n!r} (splits: {sorted(available)})")
  return out


def convert_image(image, channels: int, side: Optional[int]):
  """A decoded uint8 image with `channels` channels, centre-cropped and resized to `side`
  (None: kept); TensorFlow ops, for tf.data maps."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  have = image.shape[-1]
  if channels == 3 and have == 1:
    image = tf.image.grayscale_to_rgb(image)
  elif channels == 1 and have == 3:
    image = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
  if side is not None:
    image = tfds_images.center_crop_resize(image, side)
  return image


def _image_stream(ds, input_key, label_key, channels, side):
  """Examples as {"x": uint8 image (converted, resized), "y": label}."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used

  def fn(ex):
    return {"x": convert_image(ex[input_key], channels, side), "y": ex[label_key]}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _read_split(builder, split, input_key, label_key, is_image, image_opts):
  """(x, y) arrays of one TFDS split; images are converted and resized by `image_opts`."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if is_image:
    ds = _image_stream(ds, input_key, label_key, *image_opts)
  else:
    ds = ds.map(lambda ex: {"x": ex[input_key], "y": ex[label_key]})
  parts = [(b["x"], b["y"]) for b in ds.batch(1024).as_numpy_iterator()]
  if not parts:
    raise DataError(f"tfds:{builder.name}: split {split!r} is empty")
  y = np.concatenate([p[1] for p in parts])
  if y.dtype.kind in "OS":  # text labels: str arrays can be cached without pickles
    y = np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in y.tolist()])
  return np.concatenate([p[0] for p in parts]), y


def _image_options(builder, input_key, names, image_size, channels):
  """(channels, side) for the image feature: sizes read from the data when they vary."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  feature = builder.info.features[input_key]
  h, w, c = feature.shape
  channels = int(channels or c or 3)
  if image_size is not None or (h and w):
    return channels, user_images.choose_image_size([(h, w)], image_size)
  sizes = []
  for split in names.values():
    ds = builder.as_dataset(split=split, shuffle_files=False)
    shapes = ds.map(lambda ex: tf.shape(ex[input_key])[:2]).as_numpy_iterator()
    sizes += [tuple(int(d) for d in hw) for hw in shapes]
  return channels, user_images.choose_image_size(sizes)


def _build_arrays(builder, names, input_key, label_key, image_size, channels):
  feature = builder.info.features[input_key]
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  is_image = isinstance(feature, tfds.features.Image)
  if not is_image and len(feature.shape) != 1:
    raise DataError(f"tfds:{builder.name}: feature {input_key!r} is neither an image nor a "
                    f"1-D vector (shape {feature.shape})")
  opts = _image_options(builder, input_key, names, image_size, channels) if is_image else None
  arrays = {}
  for s, split in names.items():
    arrays[f"x_{s}"], arrays[f"y_{s}"] = _read_split(builder, split, input_key, label_key,
                                                     is_image, opts)
  return arrays


def _stamps(builder) -> Dict[str, str]:
  """file -> "size:mtime_ns" of the prepared files (the cache key's view of the data)."""
  root = pathlib.Path(builder.data_dir)
  return {os.fspath(p.relative_to(root)): f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
          for p in sorted(root.rglob("*")) if p.is_file()}


def read_tfds(target: str, data_dir=None, *, tfds_data_dir=None,
              train_split: Optional[str] = None, val_split: Optional[str] = None,
              test_split: Optional[str] = None, input_key: Optional[str] = None,
              label_key: Optional[str] = None, image_size: Optional[int] = None,
              channels: Optional[int] = None, use_cache: bool = True,
              cache_dir=None) -> user_sources.RawData:
  """Reads a prepared TFDS dataset, in TFDS's stored order; never downloads.

  Args:
    target: "NAME" or "NAME:CONFIG".
    data_dir, tfds_data_dir: where to look (`tfds_images.tfds_dir_candidates`).
    train_split, val_split, test_split: TFDS split names (slices such as
      "train[:90%]" work); defaults "train", and "validation" / "test" when
      the dataset has them (otherwise they are held out).
    input_key, label_key: feature names (default: the supervised keys, else "image" and
      "label"); an `Image` feature gives images, a 1-D tensor features.
    image_size, channels: as for `user_images.read_folder`.
    use_cache, cache_dir: images are cached (`data_prep.cache`), keyed by the
      prepared files' sizes and modification times and the options.

  Raises:
    MissingFileError: not prepared; DataError: unknown split or feature.
  """
  builder = find_prepared(parse_name(target), data_dir, tfds_data_dir)
  input_key, label_key = _keys(builder, input_key, label_key)
  names = _split_names(builder, train_split, val_split, test_split)
  options = {"name": builder.info.full_name, "splits": names, "keys": [input_key, label_key],
             "image_size": image_size, "channels": channels}
  arrays = cache_lib.cached_arrays(
      "user_tfds", TFDS_VERSION, _stamps(builder), options,
      lambda: _build_arrays(builder, names, input_key, label_key, image_size, channels),
      cache_dir=cache_dir, use_cache=use_cache)
  where = {s: f"tfds:{builder.info.full_name} ({n})" for s, n in names.items()}
  x = {s: arrays[f"x_{s}"] for s in names}
  y = {s: arrays[f"y_{s}"] for s in names}
  label_feature = builder.info.features[label_key]
  class_names = tuple(label_feature.names) if hasattr(label_feature, "names") else None
  kind = "image" if x["train"].ndim >= 3 else "features"
  return user_sources.RawData(x, y, where, kind, class_names)


# ---------------------------------------------------------------------------
# Streaming access (data_prep/streamed.py): the same reading, split by split.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreparedTfds:
  """A prepared TFDS source as `read_tfds` reads it: the builder, the input and label keys,
  our split -> TFDS split names, and (channels, side) for images (None for features)."""

  builder: Any
  input_key: str
  label_key: str
  names: Dict[str, str]
  image_opts: Optional[Tuple[int, Optional[int]]]


def open_prepared(target: str, data_dir=None, *, tfds_data_dir=None, train_split=None,
                  val_split=None, test_split=None, input_key=None, label_key=None,
                  image_size=None, channels=None) -> PreparedTfds:
  """Finds and describes a prepared TFDS source (the arguments of `read_tfds`); reads no
  example unless the image sizes vary and no image_size is given."""
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  builder = find_prepared(parse_name(target), data_dir, tfds_data_dir)
  input_key, label_key = _keys(builder, input_key, label_key)
  names = _split_names(builder, train_split, val_split, test_split)
  is_image = isinstance(builder.info.features[input_key], tfds.features.Image)
  opts = _image_options(builder, input_key, names, image_size, channels) if is_image else None
  return PreparedTfds(builder, input_key, label_key, names, opts)


def split_labels(p: PreparedTfds, split: str) -> np.ndarray:
  """The raw labels of one of our splits ("train", ...) in stored order; images are not
  decoded."""
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  ds = p.builder.as_dataset(split=p.names[split], shuffle_files=False,
                            decoders={p.input_key: tfds.decode.SkipDecoding()})
  parts = [b for b in ds.map(lambda ex: ex[p.label_key]).batch(4096).as_numpy_iterator()]
  if not parts:
    raise DataError(f"tfds:{p.builder.name}: split {p.names[split]!r} is empty")
  y = np.concatenate(parts)
  if y.dtype.kind in "OS":
    y = np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in y.tolist()])
  return y


def read_split_arrays(p: PreparedTfds, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """(x, y) of one of our splits in memory, as `read_tfds` reads it."""
  return _read_split(p.builder, p.names[split], p.input_key, p.label_key,
                     p.image_opts is not None, p.image_opts)


def image_batches(p: PreparedTfds, split: str, mask: np.ndarray, batch_size: int = 256):
  """(stored positions, uint8 images) of the examples of `split` where `mask` is true, in
  stored order, batch by batch; only those images are decoded."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  feature = p.builder.info.features[p.input_key]
  ds = p.builder.as_dataset(split=p.names[split], shuffle_files=False,
                            decoders={p.input_key: tfds.decode.SkipDecoding()})
  keep = tf.constant(np.asarray(mask, bool))
  ds = ds.enumerate().filter(lambda i, ex: keep[i])
  ds = ds.map(lambda i, ex: (i, convert_image(feature.decode_example(ex[p.input_key]),
                                              *p.image_opts)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size).as_numpy_iterator()


def prepared_stamps(p: PreparedTfds) -> Dict[str, str]:
  """file -> "size:mtime_ns" of the prepared files (a cache key's view of the data)."""
  return _stamps(p.builder)
