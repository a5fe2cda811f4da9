"""Inference forward passes with BatchNorm folded into the convolution before it.

M2m's translation (paper eq. 3) runs T forward and input-gradient passes
through g and through f on every phase-2 batch, all in inference mode:
BatchNorm uses its running statistics, so it is a fixed affine map per channel,

    BN(conv(x; k) + b) = conv(x; k * s) + (b - mu) * s + beta,
    s = gamma / sqrt(var + eps),

and folding it into the convolution removes the BatchNorm's elementwise ops
from every forward and backward pass (`python -m benchmarks.bench` measures the
whole M2m step).

The fold is a property of the model's own layers: the ResNets of
`m2m_tf.models.resnet` build every convolution whose output only a BatchNorm
reads as a `m2m_tf.models.conv_bn` pair, and `inference_fn` runs the model
with those pairs folded (`conv_bn.folded`). Only public Keras API is used; a
model without such pairs (the MLP, stock Keras layers, any callable) is
returned unchanged.

The official M2m code calls the PyTorch modules as they are; this is a pure
speed-up with the same function up to float32 rounding: each folded weight and
bias is rounded once more (~2^-24 relative) and the convolution sums other
float32 numbers, so logits agree to ~1e-6 relative; input gradients agree
likewise except where that rounding pushes a ReLU input lying within rounding
distance of zero across it (whether one does depends on the CPU's summation
order); in float64 the two agree to ~1e-15 (tests/test_folding.py).
Training (`training=True`) is never folded: there BatchNorm uses batch
statistics.
"""

from typing import Callable

import keras

from m2m_tf.models import conv_bn


def _layers(model):
  """Every layer of a Keras model, descending into nested models; [] for other callables."""
  if not isinstance(model, keras.Model):
    return []
  out = []
  for layer in model.layers:
    out.append(layer)
    out.extend(_layers(layer))
  return out


def inference_fn(model) -> Callable:
  """`model(x, training=False)` with BatchNorm folded into the preceding convolution.

  Reads the model's current weights when called (call it inside the traced
  step, once per step, so that a model that is being trained is folded with
  its current weights and running statistics; the folded weights are then
  computed once, outside M2m's translation loop, and reused by every call of
  the returned function).

  Args:
    model: a Keras model (nested models included) whose `conv_bn` pairs are
      folded, or any callable `model(x, training=False)` (returned unchanged
      when there is nothing to fold).
  Returns:
    `call(x, training=False) -> model(x, training=False)`, computed with the
    folded pairs; other layers run as they are with training=False.
  """
  weights = conv_bn.folded_weights(_layers(model))
  if not weights:
    return model

  def call(x, training=False):
    if training:
      raise ValueError("inference_fn: the folded model only runs in inference mode "
                       "(training=False).")
    with conv_bn.folded(weights):
      return model(x, training=False)

  return call
