"""Inference forward passes with BatchNorm folded into the convolution before it.

A speed-up of M2m's translation with the same function up to float32 rounding; see
docs/method.md#how-the-phase-2-step-is-computed and docs/method.md#the-batchnorm-layers.
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
  """`model(x, training=False)` with its `conv_bn` pairs folded, from the weights read now.

  Returns `model` itself when it has nothing to fold; the returned call raises ValueError for
  training=True. Call it once per (traced) step, outside the translation loop.
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
