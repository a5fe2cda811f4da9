"""Conv2D -> BatchNormalization pairs that can run as one convolution in inference.

`conv_bn` links a pair, `folded_weights` reads folded kernels and biases, and inference calls
within `folded(weights)` run folded (docs/method.md#the-batchnorm-layers).
"""

import contextlib
import contextvars
import dataclasses
from typing import Dict, FrozenSet, Iterable, Iterator, Mapping, Optional, Tuple
import weakref

import keras
from keras import ops
import tensorflow as tf

from m2m_tf.models import batch_norm

FoldedWeights = Mapping["Conv2D", Tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class _Scope:
  """The folds active in this context: conv id -> (kernel, bias); absorbed BN ids."""
  convs: Dict[int, Tuple[tf.Tensor, tf.Tensor]]
  batch_norms: FrozenSet[int]


# A context variable (not a global): each thread (e.g. each tf.distribute
# replica) sees only the folds entered in that thread.
_ACTIVE = contextvars.ContextVar("m2m_tf_conv_bn_folds", default=_Scope({}, frozenset()))


@keras.saving.register_keras_serializable(package="m2m_tf.conv_bn")
class BatchNormalization(batch_norm.BatchNormalization):
  """`m2m_tf.models.batch_norm`'s BatchNormalization; the identity while its conv runs folded."""

  def call(self, inputs, training=None, mask=None):
    if not training and id(self) in _ACTIVE.get().batch_norms:
      return inputs  # Its conv already applied it (folded kernel and bias).
    return super().call(inputs, training=training, mask=mask)


@keras.saving.register_keras_serializable(package="m2m_tf.conv_bn")
class Conv2D(keras.layers.Conv2D):
  """Keras' Conv2D; linked by `conv_bn` and inside `folded(weights)` with training false or None,
  it computes `bn(conv(x))` as one convolution with `weights[self]`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._batch_norm_ref = None  # weakref.ref to the absorbed BatchNormalization

  def batch_norm(self) -> Optional[BatchNormalization]:
    """The BatchNormalization this conv absorbs when folded, or None (unlinked)."""
    return None if self._batch_norm_ref is None else self._batch_norm_ref()

  def absorb(self, bn: BatchNormalization) -> None:
    """Links `bn`, which must read this conv's output and nothing else.

    Raises ValueError: `bn` is not ours or not on the channel axis, this conv has an activation
    or is not channels_last, or a link exists already.
    """
    if not isinstance(bn, BatchNormalization):
      raise ValueError(f"Conv2D {self.name!r} can only absorb m2m_tf.models.conv_bn."
                       f"BatchNormalization, got {type(bn).__name__}")
    if self.activation is not keras.activations.linear:
      raise ValueError(f"Conv2D {self.name!r} has an activation; BatchNorm {bn.name!r} "
                       "cannot be folded into it")
    if self.data_format != "channels_last" or bn.axis not in (-1, self.rank + 1):
      raise ValueError(f"Conv2D {self.name!r} / BatchNorm {bn.name!r}: folding needs "
                       f"channels_last and BatchNorm axis -1 (got {self.data_format!r}, "
                       f"axis {bn.axis})")
    if self.batch_norm() is not None:
      raise ValueError(f"Conv2D {self.name!r} already absorbs {self.batch_norm().name!r}")
    self._batch_norm_ref = weakref.ref(bn)

  def folded_kernel_and_bias(self) -> Tuple[tf.Tensor, tf.Tensor]:
    """(k * s, (b - mu) * s + beta), s = gamma / sqrt(var + eps), in the compute dtype.

    Computed in float32 (float64 for a float64 model) from the current weights; call it outside
    the layer's own call. Raises ValueError if the conv is unlinked or not built.
    """
    bn = self.batch_norm()
    if bn is None or not self.built or not bn.built:
      raise ValueError(f"Conv2D {self.name!r}: nothing to fold (unlinked or not built)")
    fold = "float64" if keras.backend.standardize_dtype(self.kernel.dtype) == "float64" else (
        "float32")
    # epsilon straight to `fold`: a Python float would become float32 first.
    eps = ops.convert_to_tensor(bn.epsilon, dtype=fold)
    scale = ops.rsqrt(ops.cast(bn.moving_variance, fold) + eps)
    if bn.scale:
      scale = scale * ops.cast(bn.gamma, fold)
    shift = -ops.cast(bn.moving_mean, fold)
    if self.use_bias:
      shift = shift + ops.cast(self.bias, fold)
    bias = shift * scale
    if bn.center:
      bias = bias + ops.cast(bn.beta, fold)
    kernel = ops.cast(self.kernel, fold) * scale  # kernel (kh, kw, in, out): scale per out
    return ops.cast(kernel, self.compute_dtype), ops.cast(bias, self.compute_dtype)

  def call(self, inputs, training=None):
    weights = None if training else _ACTIVE.get().convs.get(id(self))
    if weights is None:
      return super().call(inputs)
    kernel, bias = weights
    # Linear activation (checked in `absorb`); BiasAdd lets TF fuse it into the conv.
    return tf.nn.bias_add(self.convolution_op(inputs, kernel), bias)


def conv_bn(x, conv: Conv2D, bn: BatchNormalization):
  """`bn(conv(x))`, with `conv` linked to absorb `bn`; call neither layer anywhere else.

  Raises ValueError if a layer was called before or `Conv2D.absorb` refuses the pair.
  """
  if conv.built or bn.built:
    raise ValueError(f"conv_bn: {conv.name!r} and {bn.name!r} must be new layers")
  conv.absorb(bn)
  return bn(conv(x))


def folded_weights(layers: Iterable[keras.layers.Layer]) -> Dict[Conv2D, Tuple[tf.Tensor,
                                                                              tf.Tensor]]:
  """Folded (kernel, bias) of every linked, built `Conv2D` among `layers`, read now."""
  return {layer: layer.folded_kernel_and_bias() for layer in layers
          if isinstance(layer, Conv2D) and layer.batch_norm() is not None and layer.built}


@contextlib.contextmanager
def folded(weights: FoldedWeights) -> Iterator[None]:
  """Within: each conv in `weights` runs folded (training false/None); read at call/trace time.

  Nests: folds entered further out stay active.
  """
  outer = _ACTIVE.get()
  convs = dict(outer.convs)
  convs.update({id(conv): kb for conv, kb in weights.items()})
  absorbed = {id(conv.batch_norm()) for conv in weights}
  token = _ACTIVE.set(_Scope(convs, outer.batch_norms | frozenset(absorbed)))
  try:
    yield
  finally:
    _ACTIVE.reset(token)
