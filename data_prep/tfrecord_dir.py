"""TFRecord directories: image datasets on disk, read whole (`tfrecord:DIR`) or by byte range
(the streaming input): `Writer`, `read_dir` (cheap checks), `verify` (every CRC). The layout is in
docs/data.md#streaming-input; `python -m data_prep.streamed` writes and verifies them.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

from data_prep import normalization
from data_prep import user_sources
from data_prep.errors import DataError

META_FILE = "m2m_tfrecord.json"
FORMAT = "m2m_tf.tfrecord_dir"
VERSION = 1
ENCODINGS = ("raw", "png")
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_BYTES = 64 << 20
_HEADER, _FOOTER = 12, 4  # TFRecord framing: length (8) + its CRC (4) | data | data CRC (4)


class MissingDirError(DataError, FileNotFoundError):
  """A TFRecord directory, or a file it lists, does not exist."""


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """Where every example of one split lies: row i is bytes [offset[i], offset[i] + length[i])
  of files[shard[i]], with label labels[i]."""

  files: Tuple[str, ...]
  file_bytes: Tuple[int, ...]
  shard: np.ndarray
  offset: np.ndarray
  length: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TrainSource:
  """A training split that stays on disk: what the streaming input reads.

  Attributes:
    directory: the TFRecord directory.
    index: the split's `SplitIndex`.
    image_shape: (H, W, C) of every image (uint8).
    encoding: "raw" or "png".
    normalization: per-channel (mean, std) on the [0, 1] scale, from the exact
      pixel sums (`normalization.normalization_from_moments`).
  """

  directory: str
  index: SplitIndex
  image_shape: Tuple[int, int, int]
  encoding: str
  normalization: Tuple[Tuple[float, ...], Tuple[float, ...]]


class StreamedArray:
  """Stands in for `DatasetSplits.x_train` when the split is streamed: it has the split's
  length, shape and dtype but no values, so code that would load the split fails loudly."""

  def __init__(self, shape: Sequence[int], where: str):
    self.shape = tuple(int(d) for d in shape)
    self.dtype = np.dtype(np.uint8)
    self.ndim = len(self.shape)
    self._where = where

  def __len__(self) -> int:
    return self.shape[0]

  def __array__(self, dtype=None, copy=None):
    raise DataError(f"{self._where}: the training split is streamed from disk (--streaming) and "
                    "has no in-memory array")


# ---------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------


def _example(image_bytes: bytes, label: int, index: int) -> bytes:
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
             "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
             "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index)]))}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _SplitWriter:
  """Appends one split's records to rolling shards and remembers where each one went."""

  def __init__(self, folder: pathlib.Path, split: str, shard_bytes: int, channels: int):
    self.folder, self.split, self.shard_bytes = folder, split, shard_bytes
    self.files: List[str] = []
    self.file_bytes: List[int] = []
    self.rows: List[Tuple[int, int, int, int]] = []  # shard, offset, length, label
    self.pixels, self.sums = 0, np.zeros(channels, np.int64)
    self.sums_sq = np.zeros(channels, np.int64)
    self._writer, self._pos = None, 0

  def add(self, record: bytes, label: int) -> None:
    """Appends one serialised record, opening the next shard when this one is full."""
    import tensorflow as tf  # lazy: TensorFlow loads only when used
    if self._writer is None or self._pos >= self.shard_bytes:
      self.close()
      self.files.append(f"{self.split}-{len(self.files):05d}.tfrecord")
      self._writer, self._pos = tf.io.TFRecordWriter(str(self.folder / self.files[-1])), 0
    self._writer.write(record)
    self.rows.append((len(self.files) - 1, self._pos + _HEADER, len(record), int(label)))
    self._pos += _HEADER + len(record) + _FOOTER

  def close(self) -> None:
    """Closes the open shard and records its size."""
    if self._writer is not None:
      self._writer.close()
      self.file_bytes.append(self._pos)
      self._writer = None

  def moments(self, image: np.ndarray) -> None:
    """Adds one image to the exact per-channel pixel sums."""
    pixels, sums, sums_sq = normalization.pixel_moments(image[None])
    self.pixels += pixels
    self.sums += sums
    self.sums_sq += sums_sq


class Writer:
  """Writes a TFRecord directory atomically (a temporary sibling folder, renamed to `directory` by
  `finish`). Use as a context manager; an exception inside it leaves nothing behind.

  Args:
    directory: the folder to create (must not exist, or be empty).
    image_shape: (H, W, C) of every image.
    class_names: the K class names (labels index them).
    encoding: "raw" (uint8 bytes; fastest to read) or "png" (lossless, smaller).
    shard_bytes: a shard is closed once it holds this many bytes.
  """

  def __init__(self, directory, *, image_shape: Sequence[int], class_names: Sequence[str],
               encoding: str = "raw", shard_bytes: int = DEFAULT_SHARD_BYTES):
    if encoding not in ENCODINGS:
      raise DataError(f"encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    self.directory = pathlib.Path(directory)
    if self.directory.exists() and any(self.directory.iterdir()):
      raise DataError(f"{self.directory}: exists and is not empty; a TFRecord directory is "
                      "written once")
    self.directory.parent.mkdir(parents=True, exist_ok=True)
    self._tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.",
                                              dir=self.directory.parent))
    self.image_shape = tuple(int(d) for d in image_shape)
    self.class_names = tuple(str(c) for c in class_names)
    self.encoding, self.shard_bytes = encoding, int(shard_bytes)
    self._splits: Dict[str, _SplitWriter] = {}

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self.abort()

  def add(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Appends uint8 images [n, H, W, C] with int labels in [0, K) to `split`, in order."""
    if split not in SPLITS:
      raise DataError(f"split must be one of {list(SPLITS)}, got {split!r}")
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise DataError(f"{split}: images must be uint8 {list(self.image_shape)}, got "
                      f"{images.dtype} {list(images.shape[1:])}")
    if len(labels) != len(images) or (len(labels) and (
        labels.min() < 0 or labels.max() >= len(self.class_names))):
      raise DataError(f"{split}: need one label in [0, {len(self.class_names)}) per image")
    out = self._splits.setdefault(split, _SplitWriter(self._tmp, split, self.shard_bytes,
                                                      self.image_shape[-1]))  # even if empty
    for image, label in zip(images, labels):
      out.add(_example(self._encode(image), label, len(out.rows)), label)
      if split == "train":
        out.moments(image)

  def _encode(self, image: np.ndarray) -> bytes:
    if self.encoding == "raw":
      return image.tobytes()
    import tensorflow as tf  # lazy: TensorFlow loads only when used
    return tf.io.encode_png(image).numpy()

  def finish(self, **info) -> pathlib.Path:
    """Closes the shards, writes the indexes and the metadata (with `info`, e.g. name and
    label), and moves the folder into place. Returns the directory."""
    if "train" not in self._splits:
      raise DataError(f"{self.directory}: no training example was written")
    splits = {}
    for name, out in self._splits.items():
      out.close()
      rows = np.asarray(out.rows, np.int64).reshape(-1, 4)
      np.savez(self._tmp / f"{name}.index.npz", shard=rows[:, 0].astype(np.int32),
               offset=rows[:, 1], length=rows[:, 2], label=rows[:, 3])
      splits[name] = {"count": len(rows), "files": out.files, "file_bytes": out.file_bytes,
                      "class_counts": np.bincount(rows[:, 3], minlength=len(
                          self.class_names)).tolist()}
    train = self._splits["train"]
    splits["train"]["pixel_moments"] = {"pixels": train.pixels, "sum": train.sums.tolist(),
                                        "sum_sq": train.sums_sq.tolist()}
    meta = {"format": FORMAT, "version": VERSION, "image_shape": list(self.image_shape),
            "encoding": self.encoding, "class_names": list(self.class_names),
            "splits": splits, **info}
    with open(self._tmp / META_FILE, "w", encoding="utf-8") as fh:
      json.dump(meta, fh)
    os.replace(self._tmp, self.directory)  # an empty target is replaced atomically
    return self.directory

  def abort(self) -> None:
    """Deletes what was written (nothing is left at `directory`)."""
    shutil.rmtree(self._tmp, ignore_errors=True)


def write_splits(directory, data, *, encoding: str = "raw",
                 shard_bytes: int = DEFAULT_SHARD_BYTES, splits: Sequence[str] = SPLITS,
                 chunk: int = 1024) -> pathlib.Path:
  """Writes a `DatasetSplits` of uint8 images (the given `splits`) as a TFRecord directory."""
  if data.input_kind != "image" or getattr(data.x_train, "dtype", None) != np.uint8:
    raise DataError(f"{data.name}: a TFRecord directory holds uint8 images; this dataset has "
                    f"{data.input_kind} inputs")
  with Writer(directory, image_shape=data.input_shape, class_names=data.class_names,
              encoding=encoding, shard_bytes=shard_bytes) as writer:
    for split in splits:
      x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
      writer.add(split, np.asarray(x[:0]), y[:0])  # an empty split is still recorded
      for start in range(0, len(y), chunk):
        writer.add(split, np.asarray(x[start:start + chunk]), y[start:start + chunk])
    return writer.finish(name=data.name, label=data.label)


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------


def _load_meta(directory: pathlib.Path) -> dict:
  """The metadata JSON, with the checks that need no other file."""
  if not directory.is_dir():
    raise MissingDirError(f"{directory}: no such TFRecord directory")
  path = directory / META_FILE
  if not path.is_file():
    raise DataError(f"{directory}: no {META_FILE}: not a complete TFRecord directory (write one "
                    "with python -m data_prep.streamed)")
  try:
    with open(path, encoding="utf-8") as fh:
      meta = json.load(fh)
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: cannot be read as JSON ({type(e).__name__})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise DataError(f"{path}: not a {FORMAT} version {VERSION} file")
  shape, names = meta.get("image_shape"), meta.get("class_names")
  if not (isinstance(shape, list) and len(shape) == 3 and all(
      isinstance(d, int) and d > 0 for d in shape)):
    raise DataError(f"{path}: image_shape must be 3 positive integers, got {shape!r}")
  if meta.get("encoding") not in ENCODINGS or not isinstance(names, list) or not names:
    raise DataError(f"{path}: needs an encoding in {list(ENCODINGS)} and class_names")
  if "train" not in meta.get("splits", {}):
    raise DataError(f"{path}: has no training split")
  return meta


def _check_files(directory: pathlib.Path, split: str, info: dict) -> Tuple[str, ...]:
  """The split's shard paths; each must exist with its recorded size (a truncated or
  rewritten shard is caught here, by its size)."""
  files = info.get("files", [])
  sizes = info.get("file_bytes", [])
  if len(files) != len(sizes):
    raise DataError(f"{directory / META_FILE}: split {split} lists {len(files)} files and "
                    f"{len(sizes)} sizes")
  out = []
  for name, size in zip(files, sizes):
    path = directory / name
    if not path.is_file():
      raise MissingDirError(f"{path}: missing (listed in {META_FILE})")
    if path.stat().st_size != size:
      raise DataError(f"{path}: {path.stat().st_size} bytes, {META_FILE} says {size} "
                      "(truncated or changed after it was written)")
    out.append(str(path))
  return tuple(out)


def _load_index(directory: pathlib.Path, split: str, info: dict, num_classes: int) -> SplitIndex:
  """The split's index, checked against its metadata and file sizes."""
  files = _check_files(directory, split, info)
  path = directory / f"{split}.index.npz"
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in ("shard", "offset", "length", "label")}
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e})".split("\n")[0]) from None
  sizes = np.asarray(info["file_bytes"], np.int64)
  shard, offset, length, labels = (arrays[k].astype(np.int64) for k in
                                   ("shard", "offset", "length", "label"))
  ok = (len(shard) == len(offset) == len(length) == len(labels) == info.get("count") and
        (not len(shard) or (shard.min() >= 0 and shard.max() < len(files))))
  if ok and len(shard):
    ok = (offset.min() >= _HEADER and np.all(offset + length + _FOOTER <= sizes[shard]) and
          labels.min() >= 0 and labels.max() < num_classes)
  if not ok or np.bincount(labels, minlength=num_classes).tolist() != info.get("class_counts"):
    raise DataError(f"{path}: does not match {META_FILE} (counts, files or byte ranges)")
  return SplitIndex(files, tuple(int(s) for s in sizes), shard.astype(np.int32), offset,
                    length, labels)


@dataclasses.dataclass(frozen=True)
class TFRecordDir:
  """A checked TFRecord directory: its metadata and the index of every split."""

  directory: pathlib.Path
  meta: dict
  indexes: Dict[str, SplitIndex]

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    """(H, W, C) of every image."""
    return tuple(self.meta["image_shape"])

  @property
  def class_names(self) -> Tuple[str, ...]:
    """The K class names."""
    return tuple(str(c) for c in self.meta["class_names"])

  def train_source(self) -> TrainSource:
    """The training split as the streaming input reads it."""
    m = self.meta["splits"]["train"]["pixel_moments"]
    return TrainSource(str(self.directory), self.indexes["train"], self.image_shape,
                       self.meta["encoding"], normalization.normalization_from_moments(
                           m["pixels"], m["sum"], m["sum_sq"]))


def read_dir(directory) -> TFRecordDir:
  """Opens and cheaply checks a TFRecord directory (metadata, file sizes, index, first and last
  training record); no image is loaded.

  Raises:
    MissingDirError: the directory or a listed file is missing.
    DataError: anything malformed, in one line naming the file.
  """
  directory = pathlib.Path(directory)
  meta = _load_meta(directory)
  k = len(meta["class_names"])
  indexes = {s: _load_index(directory, s, meta["splits"][s], k) for s in SPLITS
             if s in meta["splits"]}
  tdir = TFRecordDir(directory, meta, indexes)
  train = indexes["train"]
  if not len(train):
    raise DataError(f"{directory}: the training split is empty")
  _check_rows(tdir, [0, len(train) - 1])
  return tdir


def read_rows(index: SplitIndex, rows: Sequence[int]) -> List[bytes]:
  """The serialised records of `rows`, each read by its byte range (os.pread).

  Raises:
    DataError: a short read (the file shrank after it was checked).
  """
  out = []
  fds: Dict[int, int] = {}
  try:
    for i in rows:
      s = int(index.shard[i])
      fd = fds.get(s)
      if fd is None:
        fd = fds[s] = os.open(index.files[s], os.O_RDONLY)
      data = os.pread(fd, int(index.length[i]), int(index.offset[i]))
      if len(data) != index.length[i]:
        raise DataError(f"{index.files[s]}: short read at byte {index.offset[i]} (the file "
                        "changed after it was indexed)")
      out.append(data)
  finally:
    for fd in fds.values():
      os.close(fd)
  return out


def _record_fields(record: bytes) -> Tuple[bytes, int, int]:
  """(image bytes, label, row) of one serialised record, parsed in Python (no TF op errors,
  whose messages would carry the record's bytes)."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  feature = tf.train.Example.FromString(record).features.feature
  image = feature["image"].bytes_list.value
  label, row = feature["label"].int64_list.value, feature["index"].int64_list.value
  if len(image) != 1 or len(label) != 1 or len(row) != 1:
    raise ValueError("missing image, label or index")
  return image[0], label[0], row[0]


def _check_rows(tdir: TFRecordDir, rows: Sequence[int]) -> None:
  """Parses training `rows` and compares them with the index (format and byte ranges)."""
  index, (h, w, c) = tdir.indexes["train"], tdir.image_shape
  for row, record in zip(rows, read_rows(index, rows)):
    try:
      image, label, got = _record_fields(record)
    except Exception as e:  # protobuf's DecodeError and ours
      raise DataError(f"{index.files[index.shard[row]]}: the record of row {row} cannot be "
                      f"parsed ({type(e).__name__})") from None
    raw_ok = tdir.meta["encoding"] != "raw" or len(image) == h * w * c
    if (label, got) != (index.labels[row], row) or not raw_ok:
      raise DataError(f"{index.files[index.shard[row]]}: the record of row {row} is not the "
                      "one the index names (or has the wrong image size)")


def decode_records(serialized, image_shape: Sequence[int], encoding: str):
  """(images uint8 [n, H, W, C], labels int64 [n], rows int64 [n]) of serialised records
  (TensorFlow ops; usable inside tf.data). A record of another size fails with a message
  that names the problem."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  features = {"image": tf.io.FixedLenFeature([], tf.string),
              "label": tf.io.FixedLenFeature([], tf.int64),
              "index": tf.io.FixedLenFeature([], tf.int64)}
  parsed = tf.io.parse_example(serialized, features)
  h, w, c = (int(d) for d in image_shape)
  if encoding == "raw":
    size = tf.strings.length(parsed["image"])
    check = tf.debugging.assert_equal(size, tf.fill(tf.shape(size), h * w * c), message=(
        "m2m_tf tfrecord: an image has the wrong number of bytes for its directory's shape"))
    with tf.control_dependencies([check]):
      images = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), [-1, h, w, c])
  else:
    images = tf.map_fn(lambda b: tf.ensure_shape(tf.io.decode_png(b, channels=c), [h, w, c]),
                       parsed["image"], fn_output_signature=tf.uint8)
  return images, parsed["label"], parsed["index"]


def load_split(tdir: TFRecordDir, split: str, batch_size: int = 1024
               ) -> Tuple[np.ndarray, np.ndarray]:
  """(x, y) of one split in memory, read sequentially (its rows are in file order)."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  index = tdir.indexes[split]
  shape, encoding = tdir.image_shape, tdir.meta["encoding"]
  if not len(index):
    return np.zeros((0,) + shape, np.uint8), index.labels.copy()
  ds = tf.data.TFRecordDataset(list(index.files)).batch(batch_size)
  ds = ds.map(lambda r: decode_records(r, shape, encoding), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  x = np.zeros((len(index),) + shape, np.uint8)
  seen = 0
  try:
    for images, labels, rows in ds.as_numpy_iterator():
      if not (np.array_equal(rows, np.arange(seen, seen + len(rows))) and
              np.array_equal(labels, index.labels[rows])):
        raise DataError(f"{tdir.directory}: {split} records are out of order or mislabelled")
      x[rows] = images
      seen += len(rows)
  except (tf.errors.OpError, UnicodeDecodeError) as e:
    # Not the op's message: it can hold the record's raw bytes.
    raise DataError(f"{tdir.directory}: {split} cannot be read ({type(e).__name__}; "
                    "a damaged or changed shard)") from None
  if seen != len(index):
    raise DataError(f"{tdir.directory}: {split} holds {seen} records, its index {len(index)}")
  return x, index.labels.copy()


def verify(directory) -> int:
  """Reads every record of every split (TFRecord CRCs included); returns the record count.

  Raises:
    DataError: the first problem, in one line.
  """
  tdir = read_dir(directory)
  return sum(len(load_split(tdir, s)[1]) for s in tdir.indexes)


def read_tfrecord_dir(target: str, data_dir=None):
  """`tfrecord:DIR` in memory: a `user_sources.RawData` of the directory's splits."""
  path = user_sources.resolve_path(target, data_dir, folder=True)
  tdir = read_dir(path)
  x, y, where = {}, {}, {}
  for split in tdir.indexes:
    x[split], y[split] = load_split(tdir, split)
    where[split] = f"{path} ({split})"
  return user_sources.RawData(x, y, where, "image", tdir.class_names)
