"""Classifier heads and PyTorch-default initialisers shared by the models."""

import math

import keras
from keras import ops

# F.normalize(x, dim) divides by max(||x||_2, eps) with eps = 1e-12. Using
# rsqrt(max(sum x^2, eps^2)) is the same function and has a finite gradient
# at x = 0 (sqrt does not).
_NORMALIZE_EPS_SQ = 1e-24


def l2_normalize(x, axis):
  """x / max(||x||_2, 1e-12) along `axis`, as PyTorch's `F.normalize`."""
  sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
  return x * ops.rsqrt(ops.maximum(sq, ops.cast(_NORMALIZE_EPS_SQ, x.dtype)))


def torch_kernel_initializer():
  """PyTorch's default nn.Linear / nn.Conv2d weight initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  See docs/method.md#training-recipes.
  """
  return keras.initializers.VarianceScaling(
      scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias_initializer(fan_in):
  """PyTorch's default bias initialiser: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  if fan_in <= 0:
    raise ValueError(f"fan_in must be positive, got {fan_in}")
  bound = 1.0 / math.sqrt(fan_in)
  return keras.initializers.RandomUniform(minval=-bound, maxval=bound)


def unit_columns(w):
  """Rescales every column of a (in_features, units) kernel to unit L2 norm."""
  return w / ops.sqrt(ops.sum(ops.square(w), axis=0, keepdims=True))


@keras.saving.register_keras_serializable(package="m2m_tf")
class UnitColumnUniform(keras.initializers.Initializer):
  """U(-1, 1) (optional `seed`), then every class column rescaled to unit norm."""

  def __init__(self, seed=None):
    self.seed = seed
    self._uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)

  def __call__(self, shape, dtype=None):
    return unit_columns(self._uniform(shape, dtype=dtype))

  def get_config(self):
    return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="m2m_tf")
class NormedDense(keras.layers.Layer):
  """Cosine head: logits normalize(x, axis=1) @ normalize(W, axis=0) in [-1, 1], no bias.

  W is (in_features, units), initialised by `UnitColumnUniform` by default
  (docs/method.md#ldam-and-the-cosine-head).
  """

  def __init__(self, units, kernel_initializer=None, **kwargs):
    super().__init__(**kwargs)
    units = int(units)
    if units <= 0:
      raise ValueError(f"NormedDense: units must be positive, got {units}")
    self.units = units
    self.kernel_initializer = keras.initializers.get(
        kernel_initializer or UnitColumnUniform())

  def build(self, input_shape):
    if len(input_shape) != 2:
      raise ValueError(
          f"NormedDense expects inputs of shape (batch, features), got "
          f"{tuple(input_shape)}")
    self.kernel = self.add_weight(
        name="kernel",
        shape=(int(input_shape[-1]), self.units),
        initializer=self.kernel_initializer,
        trainable=True)

  def call(self, inputs):
    x = l2_normalize(inputs, axis=1)
    w = l2_normalize(ops.cast(self.kernel, x.dtype), axis=0)
    return ops.matmul(x, w)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.units)

  def get_config(self):
    config = super().get_config()
    config.update({
        "units": self.units,
        "kernel_initializer":
            keras.initializers.serialize(self.kernel_initializer),
    })
    return config


def classifier_head(num_classes, *, normed_head, kernel_initializer,
                    bias_initializer, name):
  """The last layer: `NormedDense` if `normed_head` else a Dense with bias.

  float32 under a mixed-precision policy (docs/runs.md#precision), else the global policy.
  """
  if num_classes <= 0:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  mixed = keras.mixed_precision.global_policy().name.startswith("mixed_")
  dtype = "float32" if mixed else None
  if normed_head:
    return NormedDense(num_classes, name=name, dtype=dtype)
  return keras.layers.Dense(
      num_classes, use_bias=True, kernel_initializer=kernel_initializer,
      bias_initializer=bias_initializer, name=name, dtype=dtype)
