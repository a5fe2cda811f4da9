"""Streaming training input (`--streaming`): the in-memory stream's batches, bit for bit, read by
byte range from a TFRecord directory's shards instead of holding the split; records are
checked against the index, not their CRCs. See docs/data.md#streaming-input.
"""

import os
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from data_prep import tfrecord_dir
from m2m_tf.data import pipeline

AUTOTUNE = tf.data.AUTOTUNE
READERS = ("auto", "pread", "tf")
_MISMATCH = "m2m_tf streaming: a record is not the one its index names (files changed?)"


class PreadReader:
  """Reads records by row with os.pread; the shard files stay open while it lives."""

  def __init__(self, index: tfrecord_dir.SplitIndex):
    self._index = index
    self._fds = {}
    weakref.finalize(self, _close_all, self._fds)

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    """The serialised records of `rows`, as an object array of bytes."""
    index, out = self._index, np.empty(len(rows), object)
    for j, i in enumerate(rows):
      s = int(index.shard[i])
      fd = self._fds.get(s)
      if fd is None:
        fd = self._fds[s] = os.open(index.files[s], os.O_RDONLY)
      out[j] = os.pread(fd, int(index.length[i]), int(index.offset[i]))
      if len(out[j]) != index.length[i]:
        raise ValueError(f"m2m_tf streaming: {index.files[s]}: short read at byte "
                         f"{index.offset[i]} (the file changed after it was indexed)")
    return out


def _close_all(fds: dict) -> None:
  for fd in fds.values():
    os.close(fd)
  fds.clear()


def _checked(source: tfrecord_dir.TrainSource, serialized, idx, labels_const):
  """Decoded images and labels of the records of rows `idx`, checked against the index."""
  images, labels, rows = tfrecord_dir.decode_records(serialized, source.image_shape,
                                                      source.encoding)
  want = tf.gather(labels_const, idx)
  checks = [tf.debugging.assert_equal(rows, tf.cast(idx, tf.int64), message=_MISMATCH),
            tf.debugging.assert_equal(labels, want, message=_MISMATCH)]
  with tf.control_dependencies(checks):
    return tf.identity(images), tf.cast(want, tf.int32)


def _pread_batches(source, ds, seed: int, augment: bool, layout):
  reader = PreadReader(source.index)
  labels_const = tf.constant(source.index.labels)

  def load(epoch, step, idx):
    serialized = tf.numpy_function(reader, [idx], tf.string, stateful=False)
    serialized = tf.ensure_shape(serialized, idx.shape)
    images, labels = _checked(source, serialized, idx, labels_const)
    return pipeline.batch_inputs(images, epoch, step, seed=seed, augment=augment,
                                 layout=layout), labels

  return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def _tf_batches(source, ds, seed: int, augment: bool, layout, cycle_length: int = 16):
  index = source.index
  files = tf.constant(list(index.files))
  sizes = tf.constant(np.asarray(index.file_bytes, np.int64))
  shard, offset = tf.constant(index.shard.astype(np.int64)), tf.constant(index.offset)
  length, labels_const = tf.constant(index.length), tf.constant(index.labels)
  per_batch = int(ds.element_spec[2].shape[0])

  def one(epoch, step, i):
    s, off, n = shard[i], offset[i], length[i]
    records = tf.data.FixedLengthRecordDataset(files[s], n, header_bytes=off,
                                               footer_bytes=sizes[s] - off - n, buffer_size=n)
    return records.map(lambda r: (epoch, step, i, r))

  ds = ds.flat_map(lambda e, s, idx: tf.data.Dataset.from_tensor_slices(
      (tf.fill(tf.shape(idx), e), tf.fill(tf.shape(idx), s), tf.cast(idx, tf.int64))))
  ds = ds.interleave(one, cycle_length=cycle_length, num_parallel_calls=AUTOTUNE,
                     deterministic=True).batch(per_batch, drop_remainder=True)

  def load(epoch, step, idx, serialized):
    images, labels = _checked(source, serialized, idx, labels_const)
    return pipeline.batch_inputs(images, epoch[0], step[0], seed=seed, augment=augment,
                                 layout=layout), labels

  return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def resolve_reader(reader: str) -> str:
  """"auto" is "pread" where the OS has os.pread, else "tf"."""
  if reader not in READERS:
    raise ValueError(f"reader must be one of {list(READERS)}, got {reader!r}")
  if reader == "auto":
    return "pread" if hasattr(os, "pread") else "tf"
  return reader


def train_dataset(source: tfrecord_dir.TrainSource, *, num_classes: int, batch_size: int,
                  seed: int, epochs: int, start_epoch: int = 0,
                  balanced_from_epoch: Optional[int] = None, epoch_size: Optional[int] = None,
                  augment: bool = False,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  reader: str = "auto") -> tf.data.Dataset:
  """The training stream of `pipeline.train_dataset`, read from disk.

  Args:
    source: the training split on disk (`DatasetSplits.train_source`).
    num_classes, batch_size, seed, epochs, start_epoch, balanced_from_epoch,
      epoch_size, augment, input_context: as for `pipeline.train_dataset`
      (N is the split's size).
    reader: "auto", "pread" (os.pread in a `tf.numpy_function`) or "tf" (pure graph,
      slower); the batches are the same.
  Returns:
    A `tf.data.Dataset` of (x float32, y int32) batches, `pipeline.steps_per_epoch`
    of them per epoch.
  """
  ds = pipeline.index_batches(source.index.labels, num_classes=num_classes,
                              batch_size=batch_size, seed=seed, epochs=epochs,
                              start_epoch=start_epoch, balanced_from_epoch=balanced_from_epoch,
                              epoch_size=epoch_size, input_context=input_context)
  layout = pipeline.shard_layout(batch_size, input_context)
  if resolve_reader(reader) == "pread":
    ds = _pread_batches(source, ds, seed, augment, layout)
  else:
    ds = _tf_batches(source, ds, seed, augment, layout)
  return ds.prefetch(AUTOTUNE)
