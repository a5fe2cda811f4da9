"""A frozen ensemble classifier for the M2m-Ensemble ablation (g = mean of several ERM models)."""

import keras
import tensorflow as tf


class ProbabilityEnsemble(keras.Model):
  """Logits log(mean_m softmax(member_m(x))): their softmax is the members' mean probability.

  Raises ValueError without members. See docs/method.md#ablations (M2m-Ensemble).
  """

  def __init__(self, members, **kwargs):
    super().__init__(**kwargs)
    if len(members) < 1:
      raise ValueError("ProbabilityEnsemble needs at least one member.")
    self.members = list(members)

  def call(self, x, training=False):
    probs = [tf.nn.softmax(tf.cast(m(x, training=training), tf.float32)) for m in self.members]
    return tf.math.log(tf.add_n(probs) / len(probs) + 1e-12)

  def build(self, input_shape):
    for m in self.members:
      m.build(input_shape)
    super().build(input_shape)
