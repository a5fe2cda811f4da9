"""Bit-reproducible seeded runs on a CPU: one inter-op thread (docs/runs.md#determinism).

With several inter-op threads, TensorFlow runs a step's independent ops concurrently, and a
ResNet step's results then depend on the schedule in their last bits (measured: a train step that
returns its logs differs between two processes after a few steps, with oneDNN's kernels and with
Eigen's alike; the same step run on one inter-op thread is bit-identical every time).
"""

from absl import logging
import tensorflow as tf


def limit_inter_op_threads(n: int) -> bool:
  """Makes TensorFlow run independent ops one at a time when `n` is 1 (0 leaves its default).

  Must come before TensorFlow's first op; later it cannot change, and a warning says so.

  Args:
    n: inter-op threads, >= 0 (0: TensorFlow's default, one per core).
  Returns:
    Whether TensorFlow now uses `n` threads (True for 0).
  """
  if n == 0 or tf.config.threading.get_inter_op_parallelism_threads() == n:
    return True
  try:
    tf.config.threading.set_inter_op_parallelism_threads(n)
  except RuntimeError:  # the thread pools already exist
    logging.warning("TensorFlow is already running: its inter-op threads stay at %d, not %d, so "
                    "a conv-net run may not be bit-reproducible (docs/runs.md#determinism).",
                    tf.config.threading.get_inter_op_parallelism_threads(), n)
    return False
  return True
