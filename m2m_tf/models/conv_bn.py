"""Conv2D -> BatchNormalization pairs that can run as one convolution in inference.

In inference mode BatchNorm uses its running statistics, so it is a fixed
affine map per channel and can be folded into the convolution before it:

    BN(conv(x; k) + b) = conv(x; k * s) + (b - mu) * s + beta,
    s = gamma / sqrt(var + eps).

M2m's translation runs 2T inference passes (forward and input gradient) through
g and f per batch; folding removes BatchNorm's elementwise ops from all of them
(docs/method.md, "BatchNorm folding"). The fold is a property of these layers:

- `conv_bn(x, conv, bn)` builds `bn(conv(x))` and links the two layers: `conv`
  (our `Conv2D`) absorbs `bn` (our `BatchNormalization`), whose only input is
  `conv`'s output.
- `folded_weights(layers)` reads the folded kernel and bias of every linked
  conv among `layers`, once (`Conv2D.folded_kernel_and_bias`).
- Inside `with folded(weights):`, calls with `training=False` (or None) run
  each of those convs with its folded kernel and bias, and its BatchNorm passes
  its input through. Outside it, and always with `training=True`, both layers
  are exactly Keras' Conv2D and BatchNormalization (batch statistics in
  training).

Why a context manager, read when the layers are called (at trace time under
`tf.function`), and not a flag stored on the layers: the fold then holds only
for the calls made inside the `with` block, so nothing else that calls the
same model (the training step's own forward pass, evaluation, a Keras
predict function traced later, another replica's thread) can run folded by
mistake, and folded weights read once per M2m step are reused by all T
translation steps (the `with` block sits inside the T-step loop, the read
outside it). `m2m_tf.models.folding.inference_fn` wraps this for a model.

Why the two layers keep Keras' class names (`Conv2D`, `BatchNormalization`)
and stay two layers of the functional model instead of one `ConvBN` layer:
Keras names each layer's group in a `.weights.h5` file after the snake-cased
class name and its rank among the model's layers of that class
(`layers/conv2d_7/vars/0`, `layers/batch_normalization_7/vars/0..3`), and
`get_weights()` lists each layer's variables in turn. With the same class
names, the same layers in the same order, and the same variables, weight files
and weight lists written by the earlier stock-Keras models (checkpoints of
runs in progress) load unchanged, and new ones are identical to them. They
are registered for `.keras` files under the package "m2m_tf.conv_bn", so they
do not clash with Keras' own classes. A model rebuilt from a `.keras` file
(or by `keras.models.clone_model`) has unlinked layers: it computes the same
function, just never folded.

The link is a weak reference, not a Keras-tracked attribute and not a public
attribute that returns a layer: Keras saves every layer it finds among a
layer's attributes under that layer's path, which would move `bn`'s weights in
the file.
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
  """Keras' BatchNormalization (synchronized across replicas: `m2m_tf.models.batch_norm`);
  the identity while its conv runs folded.

  Only the `Conv2D` it was linked to by `conv_bn` makes it the identity, and
  only inside `folded(...)` with `training` false or None.
  """

  def call(self, inputs, training=None, mask=None):
    if not training and id(self) in _ACTIVE.get().batch_norms:
      return inputs  # Its conv already applied it (folded kernel and bias).
    return super().call(inputs, training=training, mask=mask)


@keras.saving.register_keras_serializable(package="m2m_tf.conv_bn")
class Conv2D(keras.layers.Conv2D):
  """Keras' Conv2D that can absorb the BatchNormalization reading its output.

  Unlinked, or outside `folded(...)`, or with `training=True`, it is exactly
  `keras.layers.Conv2D`. Linked by `conv_bn` and inside `folded(weights)` with
  `training` false or None, it computes `bn(conv(x))` as one convolution with
  the kernel and bias of `weights[self]`.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._batch_norm_ref = None  # weakref.ref to the absorbed BatchNormalization

  def batch_norm(self) -> Optional[BatchNormalization]:
    """The BatchNormalization this conv absorbs when folded, or None (unlinked).

    A method, not a property: see the module docstring.
    """
    return None if self._batch_norm_ref is None else self._batch_norm_ref()

  def absorb(self, bn: BatchNormalization) -> None:
    """Links `bn`, which must read this conv's output and nothing else.

    Raises:
      ValueError: `bn` is not our BatchNormalization, does not normalise the
        channel axis, this conv has an activation (BN would follow it, not the
        convolution) or is not channels_last, or a link exists already.
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
    """(k * s, (b - mu) * s + beta) from the current weights, in the compute dtype.

    s = gamma / sqrt(var + eps) per output channel (gamma = 1 and beta = 0 when
    the BatchNorm has no scale or center; b = 0 without a conv bias). Computed
    in float32 (also for mixed-precision models, whose variables are float32),
    or in float64 for a float64 model, where float32 would round its weights.
    Call it outside the layer's own call: there, Keras would already have cast
    the variables to a mixed-precision compute dtype.

    Raises:
      ValueError: the conv is unlinked or not built.
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
  """`bn(conv(x))`, with `conv` linked to absorb `bn` in folded inference.

  Both layers must be new (not yet called): the pair is then exactly one conv
  call whose output only `bn` reads, which is what makes the fold exact. Do
  not call either layer again elsewhere.

  Raises:
    ValueError: a layer was called before, or `Conv2D.absorb` refuses the pair.
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
  """Within: each conv in `weights` runs folded with those weights (training false/None).

  Nests: folds entered further out stay active. The layers read this when
  they are called, i.e. at trace time under `tf.function`.
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
