"""BatchNormalization that normalises with the global batch's statistics on several replicas.

See docs/method.md#the-batchnorm-layers.
"""

import contextlib
import contextvars
from typing import Iterator, Optional, Sequence, Tuple

import keras
import tensorflow as tf

# None: synchronized exactly when the strategy in scope has several replicas (tests force it).
_FORCED = contextvars.ContextVar("m2m_tf_batch_norm_synchronized", default=None)


def default_synchronized() -> bool:
  """Whether a BatchNormalization built now synchronizes: R > 1 replicas in scope, or as forced."""
  forced = _FORCED.get()
  if forced is not None:
    return forced
  return tf.distribute.get_strategy().num_replicas_in_sync > 1


@contextlib.contextmanager
def synchronization(enabled: Optional[bool]) -> Iterator[None]:
  """Within: layers built without `synchronized=` take `enabled` (None: the default rule)."""
  token = _FORCED.set(enabled)
  try:
    yield
  finally:
    _FORCED.reset(token)


def global_moments(x: tf.Tensor, axes: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
  """(mean, variance) of `x` over `axes` and every replica: `tf.nn.moments` of the global batch.

  With R > 1 replicas it is a collective every replica must call; else `tf.nn.moments(x, axes)`.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return tf.nn.moments(x, axes)
  axes = list(axes)
  count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
  local = tf.concat([tf.reduce_sum(x, axes), count[None]], axis=0)
  total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
  n = tf.stop_gradient(total[-1])
  mean = total[:-1] / n
  # As tf.nn.moments: the squared deviations from the (gradient-stopped) mean.
  centre = tf.stop_gradient(mean)
  for a in sorted(a % x.shape.rank for a in axes):
    centre = tf.expand_dims(centre, a)
  squares = tf.reduce_sum(tf.math.squared_difference(x, centre), axes)
  variance = ctx.all_reduce(tf.distribute.ReduceOp.SUM, squares) / n
  return mean, variance


@keras.saving.register_keras_serializable(package="m2m_tf.batch_norm")
class BatchNormalization(keras.layers.BatchNormalization):
  """Keras' BatchNormalization whose `synchronized` (default `default_synchronized()`) training
  statistics are `global_moments`; all else is Keras'."""

  def __init__(self, *args, synchronized: Optional[bool] = None, **kwargs):
    if synchronized is None:
      synchronized = default_synchronized()
    super().__init__(*args, synchronized=bool(synchronized), **kwargs)

  def _moments(self, inputs, mask):
    # Keras' hook for the batch statistics of `call(training=True)`.
    if not self.synchronized or mask is not None:
      return super()._moments(inputs, mask)
    return global_moments(inputs, self._reduction_axes)
