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
  """PyTorch's default nn.Linear / nn.Conv2d weight initialiser.

  PyTorch uses kaiming_uniform_(a=sqrt(5)), i.e. U(-b, b) with
  b = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in), which is Keras'
  VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")
  (limit sqrt(3 * scale / fan_in)).
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
  """Rescales every column of a (in_features, units) kernel to unit L2 norm.

  The same as PyTorch's `W.renorm_(2, 1, 1e-5).mul_(1e5)` on a kernel whose
  columns are all longer than 1e-5 (true for U(-1, 1) draws of any useful size).
  """
  return w / ops.sqrt(ops.sum(ops.square(w), axis=0, keepdims=True))


@keras.saving.register_keras_serializable(package="m2m_tf")
class UnitColumnUniform(keras.initializers.Initializer):
  """U(-1, 1), then every class column rescaled to unit norm: LDAM-DRW's `NormedLinear` start.

  Args:
    seed: optional seed, as for Keras' own initialisers.
  """

  def __init__(self, seed=None):
    self.seed = seed
    self._uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)

  def __call__(self, shape, dtype=None):
    return unit_columns(self._uniform(shape, dtype=dtype))

  def get_config(self):
    return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="m2m_tf")
class NormedDense(keras.layers.Layer):
  """Cosine-similarity classifier: the official LDAM-DRW / M2m `NormedLinear`.

  logits = normalize(x, axis=1) @ normalize(W, axis=0), W of shape
  (in_features, units), so every logit lies in [-1, 1]. No bias. The LDAM
  scale s (30 in the paper's code) is applied by the loss, not here.

  Initialisation is the official code's
  `W.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)`: U(-1, 1), then every
  class column rescaled to unit norm (`UnitColumnUniform`). The scale matters
  although the forward pass normalises the columns: the gradient through the
  normalisation shrinks as 1/||w_k||, so columns of norm ~sqrt(d/3) (9.2 for
  d = 256) would turn about 80x more slowly per SGD step (docs/method.md#ldam-and-the-cosine-head).
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

  It computes in float32 under a mixed-precision policy: there, logits
  rounded to bfloat16 (8 significant bits) would tie often enough to bias the
  argmax towards low class indices, and the loss and the exported model want
  float32 logits anyway (docs/runs.md#precision). Other policies (float32,
  float64) apply as they are.
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
