"""BatchNormalization that normalises with the global batch's statistics on several replicas.

Under a `tf.distribute` strategy with R > 1 replicas, Keras' BatchNormalization
normalises each replica's rows with that replica's own batch statistics by default
(`synchronized=False`), so an R-replica step is not the one-device step on the same
global batch. Our `BatchNormalization` is built synchronized whenever the strategy in
scope has more than one replica (`default_synchronized`). Its training statistics are
then `global_moments`: the one-device formula of `tf.nn.moments` (the mean, then the
mean squared deviation from it) with every sum over the batch split into the replicas'
partial sums and an all-reduce, so the step equals the one-device step up to float32
reassociation (docs/distributed.md, "Equality with one device"). Keras' own
`synchronized=True` computes E[x^2] - E[x]^2 instead, a different formula that loses
digits where the mean is large against the spread.

One replica (every one-device run) keeps `synchronized=False` and Keras' computation
unchanged. The class keeps Keras' class name, so the layers, their order, the variables
and weight files are those of stock BatchNormalization (m2m_tf/models/conv_bn.py says
why that matters).
"""

import contextlib
import contextvars
from typing import Iterator, Optional, Sequence, Tuple

import keras
import tensorflow as tf

# None: synchronized exactly when the strategy in scope has several replicas (tests force it).
_FORCED = contextvars.ContextVar("m2m_tf_batch_norm_synchronized", default=None)


def default_synchronized() -> bool:
  """Whether a BatchNormalization built now synchronizes: R > 1 replicas in scope, unless
  `synchronization(...)` forces a value."""
  forced = _FORCED.get()
  if forced is not None:
    return forced
  return tf.distribute.get_strategy().num_replicas_in_sync > 1


@contextlib.contextmanager
def synchronization(enabled: Optional[bool]) -> Iterator[None]:
  """Within: BatchNormalization layers built without `synchronized=` take `enabled` (None:
  the default rule). For tests and measurements of the unsynchronized computation."""
  token = _FORCED.set(enabled)
  try:
    yield
  finally:
    _FORCED.reset(token)


def global_moments(x: tf.Tensor, axes: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
  """(mean, variance) of `x` over `axes` and over every replica's `x`: `tf.nn.moments` of the
  concatenated global batch, its sums split by replica (keepdims=False).

  In a replica context of R > 1 replicas it is a collective: every replica must call it.
  Elsewhere it is `tf.nn.moments(x, axes)`. Gradients flow through the all-reduces (the
  gradient of an all-sum is an all-sum), as through the one-device sums.
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
  """Keras' BatchNormalization; `synchronized` (default: `default_synchronized()`) trains with
  `global_moments` instead of Keras' E[x^2] - E[x]^2 all-reduce.

  Only the training statistics change, and only across several replicas; inference, the
  moving statistics' update rule and the variables are Keras'.
  """

  def __init__(self, *args, synchronized: Optional[bool] = None, **kwargs):
    if synchronized is None:
      synchronized = default_synchronized()
    super().__init__(*args, synchronized=bool(synchronized), **kwargs)

  def _moments(self, inputs, mask):
    # Keras' hook for the batch statistics of `call(training=True)`.
    if not self.synchronized or mask is not None:
      return super()._moments(inputs, mask)
    return global_moments(inputs, self._reduction_axes)
