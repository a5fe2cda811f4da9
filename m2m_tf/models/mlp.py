"""Multi-layer perceptron for the vector datasets (Reuters, Twitter POS)."""

import keras

from m2m_tf.models import heads
from m2m_tf.models.standardize import Standardize


def mlp(input_dim, num_classes, *, hidden_units=(256,), normed_head=False,
        name="mlp", mean=None, std=None):
  """Dense-ReLU MLP, (batch, input_dim) -> (batch, num_classes) logits, PyTorch's initialisation.

  Args:
    hidden_units: widths of the hidden layers, each followed by ReLU.
    normed_head: the cosine `NormedDense` head (LDAM) instead of a Dense with bias.
    mean, std: per-feature standardisation applied first (None: none).
  Raises:
    ValueError: a non-positive size.
  """
  input_dim = int(input_dim)
  num_classes = int(num_classes)
  if input_dim <= 0:
    raise ValueError(f"mlp: input_dim must be positive, got {input_dim}")
  if num_classes <= 0:
    raise ValueError(f"mlp: num_classes must be positive, got {num_classes}")
  hidden_units = tuple(int(u) for u in hidden_units)
  if any(u <= 0 for u in hidden_units):
    raise ValueError(
        f"mlp: hidden_units must all be positive, got {hidden_units}")

  inputs = keras.Input(shape=(input_dim,), name="features")
  x = inputs
  if mean is not None:
    x = Standardize(mean, std, name="standardize")(x)
  fan_in = input_dim
  for i, units in enumerate(hidden_units):
    x = keras.layers.Dense(
        units,
        kernel_initializer=heads.torch_kernel_initializer(),
        bias_initializer=heads.torch_bias_initializer(fan_in),
        name=f"fc{i + 1}")(x)
    x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
    fan_in = units
  logits = heads.classifier_head(
      num_classes,
      normed_head=normed_head,
      kernel_initializer=heads.torch_kernel_initializer(),
      bias_initializer=heads.torch_bias_initializer(fan_in),
      name="classifier")(x)
  return keras.Model(inputs, logits, name=name)
