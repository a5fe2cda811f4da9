"""Inference forward passes with BatchNorm folded into the convolution before it.

M2m's translation (paper eq. 3) runs T forward and input-gradient passes
through g and through f on every phase-2 batch, all in inference mode:
BatchNorm uses its running statistics, so it is a fixed affine map per channel,

    BN(conv(x; k) + b) = conv(x; k * s) + (b - mu) * s + beta,
    s = gamma / sqrt(var + eps),

and folding it into the convolution removes the BatchNorm's elementwise ops
from every forward and backward pass. Likewise a `ZeroPadding2D((p, p))`
feeding a stride-1 'valid' convolution with a (2p + 1)-wide kernel is that
convolution's 'SAME' padding, which avoids materialising the padded tensor
(and its slice in the backward pass). On the 2-core CPU this makes one
forward + input-gradient pass of ResNet-32 about 1.4x faster
(`python -m m2m_tf.bench` measures the whole M2m step).

The official M2m code calls the PyTorch modules as they are; this is a pure
speed-up with the same function up to float32 rounding (logits agree to
~1e-6 relative; input gradients agree except where the changed rounding
(~6e-8 relative) pushes a ReLU input that lies within rounding distance of
zero across it, which happens on some CPUs and not others; in float64 the
two agree to ~1e-15). Training (`training=True`) is never folded:
there BatchNorm uses batch statistics.

`inference_fn(model)` walks a Keras functional model's graph once (Python,
at trace time) and returns a callable. Layers it does not recognise are called
as they are with `training=False`, so any model works; a non-functional
model (subclassed, or a plain callable) is returned unchanged.
"""

from typing import Callable, Dict

import keras
from keras.src.models import functional as keras_functional
import tensorflow as tf


def _functional(model):
  """The functional graph behind `model`, or None (subclassed models, callables)."""
  if isinstance(model, keras.Sequential):
    model = getattr(model, "_functional", None)
  if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and hasattr(
      model, "_run_through_graph"):
    return model
  return None


def _foldable_conv(conv) -> bool:
  return (type(conv) is keras.layers.Conv2D  # pylint: disable=unidiomatic-typecheck
          and conv.data_format == "channels_last"
          and tuple(conv.dilation_rate) == (1, 1)
          and conv.groups == 1
          and getattr(conv, "quantization_mode", None) is None
          and not getattr(conv, "lora_enabled", False))


def _foldable_bn(bn) -> bool:
  return (type(bn) is keras.layers.BatchNormalization  # pylint: disable=unidiomatic-typecheck
          and bn.axis in (-1, 3))


def _plan(model):
  """Which convolutions absorb a BatchNorm and/or a zero padding.

  Returns (convs, skipped): convs maps id(conv) -> {"conv", "bn", "same"} and
  skipped holds the ids of the BatchNorm and ZeroPadding2D layers that became
  part of a convolution (they pass their input through).
  """
  nodes = [n for depth in model._nodes_by_depth.values() for n in depth]  # pylint: disable=protected-access
  calls: Dict[int, int] = {}
  producer: Dict[int, object] = {}
  consumers: Dict[int, list] = {}
  for node in nodes:
    if not node.operation or node.is_input:
      continue
    calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    for t in node.outputs:
      producer[id(t)] = node
    for t in node.input_tensors:
      consumers.setdefault(id(t), []).append(node)
  outputs = {id(t) for t in model.outputs}

  def sole_link(t, consumer):
    """t is produced by a layer called once here and read only by `consumer`."""
    src = producer.get(id(t))
    return (src is not None and calls[id(src.operation)] == 1 and id(t) not in outputs
            and consumers.get(id(t)) == [consumer])

  convs, skipped = {}, set()
  for node in nodes:
    op = node.operation
    if not op or node.is_input or not _foldable_conv(op) or calls[id(op)] != 1:
      continue
    if len(node.input_tensors) != 1 or len(node.outputs) != 1:
      continue
    entry = {"conv": op, "bn": None, "same": False}
    out = node.outputs[0]
    reader = consumers.get(id(out), [None])[0]
    if (reader is not None and op.activation is keras.activations.linear
        and _foldable_bn(reader.operation) and sole_link(out, reader)
        and calls[id(reader.operation)] == 1):
      entry["bn"] = reader.operation
    t = node.input_tensors[0]
    src = producer.get(id(t))
    kh, kw = op.kernel_size
    if (src is not None and isinstance(src.operation, keras.layers.ZeroPadding2D)
        and src.operation.data_format == "channels_last" and sole_link(t, node)
        and op.padding == "valid" and tuple(op.strides) == (1, 1)
        and tuple(map(tuple, src.operation.padding)) == (((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2)
        and kh % 2 == 1 and kw % 2 == 1):
      entry["same"] = True
      skipped.add(id(src.operation))
    if entry["bn"] is not None or entry["same"]:
      convs[id(op)] = entry
      if entry["bn"] is not None:
        skipped.add(id(entry["bn"]))
  return convs, skipped


def _folded_conv(entry) -> Callable[[tf.Tensor], tf.Tensor]:
  """conv (+ BN in inference mode) as one convolution with folded weights, read now."""
  conv, bn = entry["conv"], entry["bn"]
  dtype = conv.compute_dtype
  # The fold is computed in float32 (also for mixed-precision models, whose
  # variables are float32), or in float64 for a float64 model: folding in
  # float32 there would round its weights to float32.
  fold = tf.float64 if tf.as_dtype(conv.kernel.dtype) == tf.float64 else tf.float32
  kernel = tf.cast(conv.kernel, fold)
  bias = tf.cast(conv.bias, fold) if conv.use_bias else None
  if bn is not None:
    scale = tf.math.rsqrt(tf.cast(bn.moving_variance, fold) + bn.epsilon)
    if bn.scale:
      scale = scale * tf.cast(bn.gamma, fold)
    kernel = kernel * scale
    shift = -tf.cast(bn.moving_mean, fold)
    if bias is not None:
      shift = shift + bias
    bias = shift * scale
    if bn.center:
      bias = bias + tf.cast(bn.beta, fold)
  kernel = tf.cast(kernel, dtype)
  bias = None if bias is None else tf.cast(bias, dtype)
  padding = "SAME" if entry["same"] else conv.padding.upper()
  activation = conv.activation

  @tf.autograph.experimental.do_not_convert
  def call(x, *args, **kwargs):
    del args, kwargs
    y = tf.nn.conv2d(tf.cast(x, dtype), kernel, strides=tuple(conv.strides), padding=padding)
    if bias is not None:
      y = tf.nn.bias_add(y, bias)
    return activation(y)

  return call


def _passthrough(x, *args, **kwargs):
  del args, kwargs
  return x


def inference_fn(model) -> Callable:
  """`model(x, training=False)` with BatchNorm folded into the preceding convolution.

  Reads the model's current weights when called (call it inside the traced
  step, once per step, so that a model that is being trained is folded with
  its current weights and running statistics; the folded weights are then
  computed once, outside M2m's translation loop).

  Args:
    model: a Keras functional or Sequential model, or any callable
      `model(x, training=False)` (returned unchanged when there is nothing to
      fold).
  Returns:
    `call(x, training=False) -> model(x, training=False)`. Nested functional
    models are folded too; other layers run as they are with training=False.
  """
  functional = _functional(model)
  if functional is None:
    return model
  convs, skipped = _plan(functional)
  # Folded weights are read here, once, not on every call.
  replaced = {key: _folded_conv(entry) for key, entry in convs.items()}
  for op in functional.operations:
    inner = inference_fn(op) if _functional(op) is not None else op
    if inner is not op:  # A nested functional model with something folded.
      replaced[id(op)] = lambda x, *a, inner=inner, **k: inner(x)
  if not replaced:
    return model

  def operation_fn(op):
    if id(op) in skipped:
      return _passthrough
    if id(op) in replaced:
      return replaced[id(op)]
    # What `Functional.call(x, training=False)` does for every other layer.
    return keras_functional.operation_fn(op, training=False)

  @tf.autograph.experimental.do_not_convert
  def call(x, training=False):
    if training:
      raise ValueError("inference_fn: the folded model only runs in inference mode "
                       "(training=False).")
    inputs = functional._standardize_inputs(x)  # pylint: disable=protected-access
    out = functional._run_through_graph(inputs, operation_fn=operation_fn)  # pylint: disable=protected-access
    if isinstance(out, (list, tuple)) and len(out) == 1:
      out = out[0]
    return out

  return call
