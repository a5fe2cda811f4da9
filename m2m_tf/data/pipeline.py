"""tf.data pipelines: per-epoch shuffled or class-balanced batches, a pure function of
(seed, epoch), so a resumed run sees the same batches (docs/platform.md#input-pipeline,
docs/method.md#phases).
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def _epoch_seed(seed: int, epoch, salt: int) -> tf.Tensor:
  return tf.stack([tf.cast(seed, tf.int64) * 1000003 + salt, tf.cast(epoch, tf.int64)])


def uniform_indices(num_examples: int, epoch_size: int, seed: int, epoch) -> tf.Tensor:
  """Indices of one uniform epoch: a permutation (repeated if epoch_size > N)."""
  reps = -(-epoch_size // num_examples)
  keys = tf.random.stateless_uniform([reps, num_examples], seed=_epoch_seed(seed, epoch, 1),
                                     alg="philox")
  perm = tf.argsort(keys, axis=1, stable=True)
  return tf.reshape(perm, [-1])[:epoch_size]


class BalancedSampler:
  """Draws indices with P(n) proportional to 1/N_{y_n}: class uniform, then example uniform."""

  def __init__(self, labels: np.ndarray, num_classes: int):
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
      raise ValueError(f"Cannot balance: classes {empty.tolist()} have no training example.")
    self.num_classes = num_classes
    self._sorted = tf.constant(np.argsort(labels, kind="stable").astype(np.int32))
    self._start = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32))
    self._count = tf.constant(counts.astype(np.float32))

  def indices(self, epoch_size: int, seed: int, epoch) -> tf.Tensor:
    """The `epoch_size` indices of one balanced epoch, a function of (seed, epoch)."""
    s = tf.random.experimental.stateless_split(_epoch_seed(seed, epoch, 2), 2)
    cls = tf.random.stateless_uniform([epoch_size], seed=s[0], minval=0, maxval=self.num_classes,
                                      dtype=tf.int32, alg="philox")
    u = tf.random.stateless_uniform([epoch_size], seed=s[1], alg="philox")
    count = tf.gather(self._count, cls)
    pos = tf.minimum(tf.cast(tf.floor(u * count), tf.int32), tf.cast(count, tf.int32) - 1)
    return tf.gather(self._sorted, tf.gather(self._start, cls) + pos)


def augment_images(images: tf.Tensor, seed: tf.Tensor, pad: int = 4,
                   rows: Optional[Tuple[tf.Tensor, int]] = None) -> tf.Tensor:
  """Random crop with zero padding `pad` and horizontal flip, vectorised over a batch.

  Args:
    images: [B, H, W, C] float32 in [0, 1].
    seed: stateless seed [2].
    rows: (first, total): `images` are rows [first, first + B) of a batch of `total` rows,
      and get that batch's draws for those rows (a shard of a global batch is augmented as
      the whole batch is). None: the batch is all of `images`.
  """
  shape = tf.shape(images)
  b, h, w = shape[0], images.shape[1], images.shape[2]
  first, total = (0, b) if rows is None else rows

  def draw(stream, **kw):
    return tf.random.stateless_uniform([total], seed=stream, alg="philox", **kw)[first:first + b]

  s = tf.random.experimental.stateless_split(seed, 3)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  dy = draw(s[0], maxval=2 * pad + 1, dtype=tf.int32)
  dx = draw(s[1], maxval=2 * pad + 1, dtype=tf.int32)
  rows_ = dy[:, None] + tf.range(h)[None, :]  # [B, H]
  cols = dx[:, None] + tf.range(w)[None, :]  # [B, W]
  out = tf.gather(padded, rows_, axis=1, batch_dims=1)
  out = tf.gather(out, cols, axis=2, batch_dims=1)
  flip = draw(s[2]) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


def to_model_input(x: tf.Tensor) -> tf.Tensor:
  """uint8 images become float32 in [0, 1]; float inputs pass through as float32."""
  if x.dtype == tf.uint8:
    return tf.cast(x, tf.float32) / 255.0
  return tf.cast(x, tf.float32)


def nonfinite_rows(x: np.ndarray) -> np.ndarray:
  """Indices of the examples of `x` holding NaN or Inf (none for integer inputs)."""
  dtype = getattr(x, "dtype", None)
  if dtype is not None and not np.issubdtype(dtype, np.floating):
    return np.zeros(0, np.int64)  # integers hold no NaN (and a streamed split is not loaded)
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating) or np.all(np.isfinite(x)):
    return np.zeros(0, np.int64)
  return np.flatnonzero(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1))


def _checked_arrays(x, y, num_classes: int):
  """x and y as arrays (y int64); ValueError for lengths, emptiness, NaN/Inf or labels."""
  x = np.asarray(x)
  y = np.asarray(y, np.int64)
  if len(x) != len(y):
    raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}.")
  if len(y) == 0:
    raise ValueError("Empty training set.")
  bad = nonfinite_rows(x)
  if bad.size:
    raise ValueError(f"Training inputs contain NaN/Inf in {bad.size} examples (first: index "
                     f"{bad[0]}); clean the data before training.")
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"Labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}].")
  return x, y


def _shard_layout(batch_size: int, input_context) -> Tuple[int, int, int, int]:
  """(input pipelines, this pipeline's id, replicas per pipeline, per-replica batch)."""
  if input_context is None:
    return 1, 0, 1, batch_size
  pipelines = input_context.num_input_pipelines
  local_replicas = input_context.num_replicas_in_sync // pipelines
  if batch_size % input_context.num_replicas_in_sync:
    raise ValueError(f"batch_size {batch_size} is not divisible by the "
                     f"{input_context.num_replicas_in_sync} replicas.")
  return (pipelines, input_context.input_pipeline_id, local_replicas,
          batch_size // (pipelines * local_replicas))


def train_dataset(x: np.ndarray, y: np.ndarray, *, num_classes: int, batch_size: int, seed: int,
                  epochs: int, start_epoch: int = 0, balanced_from_epoch: Optional[int] = None,
                  epoch_size: Optional[int] = None, augment: bool = False,
                  input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """The training stream for epochs [start_epoch, epochs): `steps_per_epoch(...)` (x, y)
  batches per epoch, for `model.fit(..., steps_per_epoch=...)`.

  Args:
    x, y: the training arrays (y int in [0, num_classes)).
    num_classes: K.
    batch_size: the global batch size.
    seed: data seed; epoch e's batches are a function of (seed, e) only.
    epochs: the last epoch (exclusive).
    start_epoch: first epoch (a resumed run passes the epoch it restarts at).
    balanced_from_epoch: epochs >= this are class-balanced (0: RS, the
      deferred epoch: DRS / M2m phase 2, None: never).
    epoch_size: examples per epoch (default N = len(x)).
    augment: random crop (pad 4) and flip, for images.
    input_context: from `strategy.distribute_datasets_from_function`; each pipeline takes
      its slice of every global batch, so the shards' union is the single-host stream.
  Returns:
    A `tf.data.Dataset` of (x, y) with x float32 and y int32.
  """
  x, y = _checked_arrays(x, y, num_classes)
  ds = index_batches(y, num_classes=num_classes, batch_size=batch_size, seed=seed, epochs=epochs,
                     start_epoch=start_epoch, balanced_from_epoch=balanced_from_epoch,
                     epoch_size=epoch_size, input_context=input_context)
  x_const = tf.constant(x)
  y_const = tf.constant(y.astype(np.int32))
  layout = shard_layout(batch_size, input_context)

  def load(epoch, step, idx):
    xb = batch_inputs(tf.gather(x_const, idx), epoch, step, seed=seed, augment=augment,
                      layout=layout)
    return xb, tf.gather(y_const, idx)

  ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.prefetch(AUTOTUNE)


def batch_inputs(xb: tf.Tensor, epoch, step, *, seed: int, augment: bool,
                 layout: Optional[Tuple[int, int, int, int]] = None) -> tf.Tensor:
  """A gathered batch as the model takes it: scaled to float32, augmented with the stateless
  seed of (seed, epoch, step) when `augment` (shared by the in-memory and streaming paths).

  `layout`: `shard_layout(...)` of a sharded stream (`step` counts per-replica batches), whose
  rows are augmented as in the unsharded stream.
  """
  xb = to_model_input(xb)
  if not augment:
    return xb
  if layout is None:
    return augment_images(xb, tf.stack([epoch * 100003 + seed, step]))
  pipelines, shard, local_replicas, per_replica = layout
  global_step = step // local_replicas
  first = (shard * local_replicas + step % local_replicas) * per_replica
  return augment_images(xb, tf.stack([epoch * 100003 + seed, global_step]),
                        rows=(tf.cast(first, tf.int32), pipelines * local_replicas * per_replica))


def shard_layout(batch_size: int, input_context) -> Optional[Tuple[int, int, int, int]]:
  """`batch_inputs`' layout of a stream made for `input_context` (None: unsharded)."""
  return None if input_context is None else _shard_layout(batch_size, input_context)


def index_batches(y: np.ndarray, *, num_classes: int, batch_size: int, seed: int, epochs: int,
                  start_epoch: int = 0, balanced_from_epoch: Optional[int] = None,
                  epoch_size: Optional[int] = None,
                  input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """The example indices of `train_dataset`'s batches: (epoch, step, idx) with idx int32 [b].

  The arguments are those of `train_dataset` (N = len(y)); b is the global batch size, or the
  per-replica one under an `input_context`.
  """
  y = np.asarray(y, np.int64)
  n = len(y)
  epoch_size = int(epoch_size or n)
  if batch_size < 1 or epoch_size < batch_size:
    raise ValueError(f"batch_size {batch_size} must be in [1, epoch_size={epoch_size}].")
  n_batches = epoch_size // batch_size
  pipelines, shard, local_replicas, per_replica = _shard_layout(batch_size, input_context)
  sampler = BalancedSampler(y, num_classes) if balanced_from_epoch is not None else None
  balanced_from = -1 if balanced_from_epoch is None else int(balanced_from_epoch)

  def epoch_batches(epoch):
    if sampler is None:
      idx = uniform_indices(n, epoch_size, seed, epoch)
    else:
      idx = tf.cond(epoch >= balanced_from,
                    lambda: sampler.indices(epoch_size, seed, epoch),
                    lambda: uniform_indices(n, epoch_size, seed, epoch))
    # [step, pipeline, local replica, example]: pipeline `shard` yields its
    # replicas' per-replica batches in order (the single-pipeline case is the
    # plain global batch, which Keras splits over replicas itself).
    idx = tf.reshape(idx[:n_batches * batch_size],
                     [n_batches, pipelines, local_replicas, per_replica])[:, shard]
    if input_context is None:
      idx = tf.reshape(idx, [n_batches, batch_size])
      steps = tf.range(n_batches, dtype=tf.int64)
    else:
      idx = tf.reshape(idx, [n_batches * local_replicas, per_replica])
      steps = tf.range(n_batches * local_replicas, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((tf.fill(tf.shape(steps), epoch), steps, idx))

  return tf.data.Dataset.range(start_epoch, epochs).flat_map(epoch_batches)


def steps_per_epoch(num_examples: int, batch_size: int, epoch_size: Optional[int] = None) -> int:
  """Batches per epoch of `train_dataset` (remainder dropped)."""
  return int(epoch_size or num_examples) // batch_size


def eval_dataset(x: np.ndarray, y: Optional[np.ndarray] = None, *,
                 batch_size: int) -> tf.data.Dataset:
  """Plain ordered batches for evaluation (images scaled to [0, 1])."""
  ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
  ds = ds.batch(batch_size)
  if y is None:
    ds = ds.map(to_model_input, num_parallel_calls=AUTOTUNE)
  else:
    ds = ds.map(lambda a, b: (to_model_input(a), b), num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def class_frequencies(labels: Sequence[int], num_classes: int) -> np.ndarray:
  """Empirical class frequencies of a label sequence (for balance checks)."""
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes) / max(len(labels), 1)
