"""Compute precision of f and g: Keras' global dtype policy and the optimizer it needs.

`float32` is the reproduction's precision. `mixed_bfloat16` computes the layers in
bfloat16 with float32 variables; bfloat16 has float32's exponent range, so no loss
scaling is needed. `mixed_float16` (GPUs) needs dynamic loss scaling, so its optimizer
is wrapped in a `keras.optimizers.LossScaleOptimizer`. In every case the loss, the
logits it reads and the translated inputs x* with their updates stay float32; g's
layers, like f's, compute in the policy's dtype (docs/runs.md#precision).
"""

import contextlib

from absl import logging
import keras
import tensorflow as tf

from m2m_tf.config import PRECISIONS


def _check(precision: str) -> None:
  if precision not in PRECISIONS:
    raise ValueError(f"unknown precision {precision!r}")


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, precision: str
                   ) -> keras.optimizers.Optimizer:
  """The optimizer to use under `precision`: loss-scaled under mixed_float16, else itself.

  Args:
    optimizer: the run's optimizer.
    precision: float32, mixed_bfloat16 or mixed_float16.
  """
  _check(precision)
  if precision == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def reset_precision() -> None:
  """Back to float32 models (the global policy is process-wide: later runs share it)."""
  keras.mixed_precision.set_global_policy("float32")


@contextlib.contextmanager
def precision_scope(precision: str):
  """Models built inside compute in `precision` (a layer keeps the policy it was made
  under); the policy is float32 again on exit.

  Args:
    precision: float32, mixed_bfloat16 or mixed_float16.
  """
  _check(precision)
  if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
    logging.warning("mixed_float16 on a CPU is slow; it is meant for GPUs.")
  keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    reset_precision()
