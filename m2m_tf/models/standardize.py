"""The input standardisation layer that the models build in (it has no weights)."""

import keras
from keras import ops
import numpy as np


@keras.saving.register_keras_serializable(package="m2m_tf")
class Standardize(keras.layers.Layer):
  """(x - mean) / std over the last axis; no weights (docs/method.md#the-networks).

  Raises ValueError for mean and std of different lengths, a std <= 0, or another channel count.
  """

  def __init__(self, mean, std, **kwargs):
    super().__init__(**kwargs)
    self.mean = tuple(float(m) for m in mean)
    self.std = tuple(float(s) for s in std)
    if len(self.mean) != len(self.std):
      raise ValueError(
          f"Standardize: mean has {len(self.mean)} entries but std has "
          f"{len(self.std)}")
    if any(s <= 0 for s in self.std):
      raise ValueError(f"Standardize: std must be positive, got {self.std}")

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels is not None and channels != len(self.mean):
      raise ValueError(
          f"Standardize: input has {channels} channels but mean/std have "
          f"{len(self.mean)} entries")

  def call(self, inputs):
    mean = ops.convert_to_tensor(np.asarray(self.mean, np.float32))
    std = ops.convert_to_tensor(np.asarray(self.std, np.float32))
    return (inputs - ops.cast(mean, inputs.dtype)) / ops.cast(
        std, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"mean": list(self.mean), "std": list(self.std)})
    return config
