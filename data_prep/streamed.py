"""Image datasets whose training split stays on disk, the data side of `--streaming`:
`load_streamed` (a `DatasetSplits` whose x_train is a `StreamedArray`) and `export`, with the
`python -m data_prep.streamed --dataset NAME --out DIR | --verify DIR` command.
See docs/data.md#streaming-input.
"""

import argparse
import dataclasses
import json
import pathlib
import shutil
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from data_prep import cache as cache_lib
from data_prep import registry
from data_prep import splits
from data_prep import tfrecord_dir
from data_prep import user_data
from data_prep import user_sources
from data_prep import user_splits
from data_prep import user_tfds
from data_prep.errors import DataError

SPOOL_VERSION = "tfrecord-spool-v1"


@dataclasses.dataclass(frozen=True)
class _Source:
  """What a streamed user source must provide (labels first, images on demand).

  Attributes:
    where: split -> what error messages name.
    labels: () -> raw labels of every split the source has (train always); may read
      the source (a label pass), so it is called only when a selection is made.
    class_names: the source's class names, or None (sorted labels).
    image_shape: (H, W, C) of the images as they will be stored.
    eval_arrays: split -> (x, raw y) of a given validation / test split (in memory).
    train_batches: mask -> iterator of (source rows, uint8 images) of the training
      examples where mask is true, in source order.
    stamps: the cache key's view of the source files.
  """

  where: Dict[str, str]
  labels: Callable[[], Dict[str, np.ndarray]]
  class_names: Optional[Tuple[str, ...]]
  image_shape: Tuple[int, int, int]
  eval_arrays: Callable[[str], Tuple[np.ndarray, np.ndarray]]
  train_batches: Callable[[np.ndarray], Iterator[Tuple[np.ndarray, np.ndarray]]]
  stamps: Dict[str, str]


def _tfds_source(target: str, data_dir, o: user_data.UserDataOptions) -> _Source:
  p = user_tfds.open_prepared(target, data_dir, tfds_data_dir=o.tfds_data_dir,
                              train_split=o.train_split, val_split=o.val_split,
                              test_split=o.test_split, input_key=o.input_key,
                              label_key=o.label_key, image_size=o.image_size, channels=o.channels)
  name = p.builder.info.full_name
  if p.image_opts is None:
    raise DataError(f"tfds:{name}: streaming reads images; feature {p.input_key!r} is not one")
  channels, side = p.image_opts
  h, w = (side, side) if side else p.builder.info.features[p.input_key].shape[:2]
  label_feature = p.builder.info.features[p.label_key]
  return _Source(
      where={s: f"tfds:{name} ({n})" for s, n in p.names.items()},
      labels=lambda: {s: user_tfds.split_labels(p, s) for s in p.names},
      class_names=tuple(label_feature.names) if hasattr(label_feature, "names") else None,
      image_shape=(int(h), int(w), int(channels)),
      eval_arrays=lambda s: user_tfds.read_split_arrays(p, s),
      train_batches=lambda mask: user_tfds.image_batches(p, "train", mask),
      stamps=user_tfds.prepared_stamps(p))


def _dir_batches(tdir: tfrecord_dir.TFRecordDir, mask: np.ndarray, chunk: int = 512):
  """(rows, images) of a TFRecord directory's training rows where mask is true."""
  rows = np.flatnonzero(mask)
  index, shape = tdir.indexes["train"], tdir.image_shape
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  for start in range(0, len(rows), chunk):
    part = rows[start:start + chunk]
    images, _, _ = tfrecord_dir.decode_records(
        tf.constant(tfrecord_dir.read_rows(index, part)), shape, tdir.meta["encoding"])
    yield part, images.numpy()


def _dir_source(tdir: tfrecord_dir.TFRecordDir) -> _Source:
  where = {s: f"{tdir.directory} ({s})" for s in tdir.indexes}
  stamps = {p.name: f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(tdir.directory.iterdir()) if p.is_file()}
  return _Source(where=where, labels=lambda: {s: i.labels for s, i in tdir.indexes.items()},
                 class_names=tdir.class_names, image_shape=tdir.image_shape,
                 eval_arrays=lambda s: tfrecord_dir.load_split(tdir, s),
                 train_batches=lambda mask: _dir_batches(tdir, mask), stamps=stamps)


@dataclasses.dataclass(frozen=True)
class _Selection:
  """The rules of `user_data.finish` applied to labels: which source rows train (sorted), which
  are held out for a missing split, the encoded labels and the class names."""

  labels: Dict[str, np.ndarray]
  names: Tuple[str, ...]
  keep: np.ndarray
  held: Dict[str, np.ndarray]
  label: str


def _label(spec: str, o: user_data.UserDataOptions) -> str:
  """The data label `user_data.finish` gives the same source and options."""
  if o.imbalance_ratio is not None and o.imbalance_ratio > 1:
    return f"user data {spec}, {o.imbalance_profile} long tail, ratio {o.imbalance_ratio:g}"
  return f"user data {spec}"


def _select(spec: str, src: _Source, o: user_data.UserDataOptions) -> _Selection:
  y, names = user_splits.encode_labels(src.labels(), src.where, src.class_names)
  keep, held = user_splits.hold_out_indices(y["train"], list(y), names, o.test_fraction,
                                            o.val_fraction, o.split_seed, src.where["train"])
  if o.imbalance_ratio is not None and o.imbalance_ratio > 1:
    keep = keep[user_splits.long_tail_indices(y["train"][keep], names, o.imbalance_ratio,
                                              o.imbalance_profile, o.n_max, src.where["train"])]
  return _Selection(y, names, keep, held, _label(spec, o))


def _write_selection(directory, spec: str, src: _Source, sel: _Selection,
                     encoding: str = "raw") -> pathlib.Path:
  """One pass over the source: kept rows to train, held-out rows to their split."""
  # dest[i]: where source row i goes: -1 nowhere, 0 train, k the k-th held-out split; one
  # lookup per batch (np.isin against the whole split per batch would be O(N^2 / batch)).
  dest = np.full(len(sel.labels["train"]), -1, np.int64)
  dest[sel.keep] = 0
  held_x = {}
  for k, (split, rows) in enumerate(sel.held.items(), 1):
    dest[rows] = k
    held_x[split] = np.zeros((len(rows),) + src.image_shape, np.uint8)
  mask = dest >= 0
  with tfrecord_dir.Writer(directory, image_shape=src.image_shape, class_names=sel.names,
                           encoding=encoding) as writer:
    for rows, images in src.train_batches(mask):
      if images.shape[1:] != src.image_shape:
        raise DataError(f"{src.where['train']}: images have shape {images.shape[1:]}, "
                        f"expected {src.image_shape} (set image_size)")
      train = dest[rows] == 0
      writer.add("train", images[train], sel.labels["train"][rows[train]])
      for k, (split, out) in enumerate(sel.held.items(), 1):
        at = dest[rows] == k
        held_x[split][np.searchsorted(out, rows[at])] = images[at]
    for split in ("val", "test"):
      if split in sel.held:
        writer.add(split, held_x[split], sel.labels["train"][sel.held[split]])
      else:
        writer.add(split, user_splits.as_images(src.eval_arrays(split)[0], src.where[split]),
                   sel.labels[split])
    return writer.finish(name=spec, label=sel.label)


def _cached_dir(kind: str, key: str, cache_dir, write: Callable[[pathlib.Path], None]
                ) -> tfrecord_dir.TFRecordDir:
  """The TFRecord directory cached under `key`, written by `write(path)` when missing or
  unreadable (a concurrent writer that finished first wins)."""
  path = cache_lib.resolve_cache_dir(cache_dir) / "tfrecord" / f"{kind}-{key[:32]}"
  if (path / tfrecord_dir.META_FILE).is_file():
    try:
      return tfrecord_dir.read_dir(path)
    except DataError:
      shutil.rmtree(path, ignore_errors=True)  # damaged: written again below
  try:
    write(path)
  except OSError:
    if not (path / tfrecord_dir.META_FILE).is_file():
      raise
  return tfrecord_dir.read_dir(path)


def _finish(spec: str, tdir: tfrecord_dir.TFRecordDir, label: str, clip: str
            ) -> splits.DatasetSplits:
  """The `DatasetSplits` of a complete directory: val / test in memory, train on disk."""
  source = tdir.train_source()
  x_val, y_val = tfrecord_dir.load_split(tdir, "val")
  x_test, y_test = tfrecord_dir.load_split(tdir, "test")
  return splits.DatasetSplits(
      name=spec, x_train=tfrecord_dir.StreamedArray((len(source.index),) + source.image_shape,
                                                    spec),
      y_train=source.index.labels.copy(), x_val=x_val, y_val=y_val, x_test=x_test,
      y_test=y_test, class_names=tdir.class_names, input_kind="image",
      clip_range=user_splits.clip_range_for(None, "image", clip), label=label,
      train_source=source)


def _user_source(spec: str, data_dir, options) -> splits.DatasetSplits:
  """`tfrecord:DIR` and `tfds:NAME`, streamed (docs/data.md#streaming-input)."""
  kind, target = user_data.parse_spec(spec)
  o = user_data.parse_options(kind, options)
  if kind == "tfrecord":
    tdir = tfrecord_dir.read_dir(user_sources.resolve_path(target, data_dir, folder=True))
    src = _dir_source(tdir)
    sel = _select(spec, src, o)  # labels only: the index holds them
    if not sel.held and len(sel.keep) == len(sel.labels["train"]):
      return _finish(spec, tdir, sel.label, o.clip)  # the directory as it is
  else:
    src, sel = _tfds_source(target, data_dir, o), None

  def write(path):
    # For tfds the label pass runs here, only when the copy is not cached yet.
    _write_selection(path, spec, src, sel or _select(spec, src, o))

  fields = dataclasses.asdict(o)
  for unused in ("use_cache", "cache_dir", "clip"):
    fields.pop(unused)
  key = cache_lib.cache_key(f"stream_{kind}", SPOOL_VERSION, src.stamps,
                            {"spec": spec, **fields})
  tdir = _cached_dir(user_data.short_name(spec), key, o.cache_dir, write)
  return _finish(spec, tdir, _label(spec, o), o.clip)


def _in_memory_source(name: str, data_dir, options) -> splits.DatasetSplits:
  """Any other image dataset: built in memory, its training split written once to the cache."""
  options = dict(options)
  cache_dir = options.get("cache_dir")
  data = registry.load_dataset(name, data_dir, **options)
  x = data.x_train
  if data.input_kind != "image" or getattr(x, "dtype", None) != np.uint8:
    raise DataError(f"{name}: streaming reads uint8 images; this dataset has {data.input_kind} "
                    f"inputs of dtype {getattr(x, 'dtype', None)}")
  digests = {"x_train": cache_lib.array_digest(x),
             "y_train": cache_lib.array_digest(np.asarray(data.y_train, np.int64))}
  key = cache_lib.cache_key("stream_arrays", SPOOL_VERSION, digests,
                            {"class_names": list(data.class_names)})
  tdir = _cached_dir(registry.file_stem(name), key, cache_dir,
                     lambda path: tfrecord_dir.write_splits(path, data, splits=("train",)))
  source = tdir.train_source()
  return dataclasses.replace(data, x_train=tfrecord_dir.StreamedArray(x.shape, name),
                             train_source=source)


def load_streamed(name: str, data_dir=None, **options) -> splits.DatasetSplits:
  """The dataset `name` (as `registry.load_dataset` takes it) with its training split on disk.

  Raises:
    DataError: not an image dataset of uint8 pixels, or malformed files (one line).
  """
  if user_data.is_spec(name) and user_data.parse_spec(name)[0] in ("tfrecord", "tfds"):
    return _user_source(name, data_dir, options)
  return _in_memory_source(name, data_dir, options)


def export(name: str, out, data_dir=None, *, encoding: str = "raw", **options) -> pathlib.Path:
  """Writes dataset `name` (its train, val and test splits) as a TFRecord directory `out`.

  `tfds:` and `tfrecord:` sources are streamed (their training split is never
  held whole); other datasets are built in memory first.
  """
  if user_data.is_spec(name) and user_data.parse_spec(name)[0] in ("tfrecord", "tfds"):
    kind, target = user_data.parse_spec(name)
    o = user_data.parse_options(kind, options)
    if kind == "tfrecord":
      src = _dir_source(tfrecord_dir.read_dir(
          user_sources.resolve_path(target, data_dir, folder=True)))
    else:
      src = _tfds_source(target, data_dir, o)
    return _write_selection(out, name, src, _select(name, src, o), encoding)
  return tfrecord_dir.write_splits(out, registry.load_dataset(name, data_dir, **options),
                                   encoding=encoding)

def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes a dataset as a TFRecord directory (--dataset, --out) or verifies one (--verify)."""
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("--dataset", help="a registered image dataset or tfds:NAME / folder:DIR")
  parser.add_argument("--out", help="the directory to write (must not exist)")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--encoding", default="raw", choices=tfrecord_dir.ENCODINGS)
  parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="a builder option (numbers are parsed), e.g. imbalance_ratio=10")
  parser.add_argument("--verify", metavar="DIR", help="read every record of DIR")
  args = parser.parse_args(argv)
  if args.verify:
    print(f"{args.verify}: {tfrecord_dir.verify(args.verify)} records read, all valid")
    return 0
  if not (args.dataset and args.out):
    parser.error("--dataset and --out (or --verify DIR) are required")
  options = dict(o.split("=", 1) for o in args.option)
  options = {k: json.loads(v) if v[:1].isdigit() else v for k, v in options.items()}
  out = export(args.dataset, args.out, args.data_dir, encoding=args.encoding, **options)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
