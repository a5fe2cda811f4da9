"""`M2mTrainer`: a keras.Model whose train_step trains f, optionally with M2m against a frozen g.

Like the keras-io knowledge-distillation example, the trainer holds a frozen
classifier g beside the trained classifier f. `model.fit` runs phase 1 (plain
training with the chosen loss) until a callback (`PhaseSchedule`) switches
`phase2` on; from then on each class-balanced batch is rewritten by
`m2m_tf.m2m.generate` before the ordinary training step (docs/method.md#phase-2-generation).

Optimisation follows the paper's PyTorch recipe:
  * weight decay is coupled L2 (`wd * w` added to every gradient, biases and
    BatchNorm included, as torch.optim.SGD(model.parameters(), weight_decay=wd));
    Keras' own `weight_decay` argument is decoupled and not used;
  * the batch loss is `m2m_tf.losses.weighted_mean` over the GLOBAL batch, so
    summing replica gradients (tf.distribute) gives the single-device gradient.
Known difference: Keras' SGD keeps lr inside the momentum buffer, PyTorch's
applies lr after it; the two agree while lr is constant and differ only for
the few steps after an lr change.

Mixed precision (`keras.mixed_precision.set_global_policy("mixed_float16")`
before building f and g, and a `keras.optimizers.LossScaleOptimizer`): f's
layers compute in float16, the loss, the logits used by the loss and the whole
M2m translation stay float32 (x is float32; logits are cast), and the coupled
L2 term is multiplied by the loss scale so the optimizer's unscaling leaves wd * w.

Randomness inside the step is stateless (philox), seeded by (seed,
optimizer.iterations), so a seeded run is deterministic and a resumed run
(RunCheckpoint restores the iteration count) continues identically.
"""

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from m2m_tf import losses as losses_lib
from m2m_tf.m2m.generation import M2mConfig, generate

M2M_STATS = ("gen_slots", "candidates", "accepted")


class M2mTrainer(keras.Model):
  """Trains f with a loss, optional class weights and optional M2m (phase 2).

  Args:
    f: the classifier to train (a Keras model returning logits).
    g: the frozen classifier used by M2m (trained with ERM beforehand). It is
      set non-trainable and always called with training=False. None when M2m
      is off, or for M2m-Self (`self_translation=True`, g := f).
    class_counts: N_k of the imbalanced training set.
    loss: a loss name of `m2m_tf.losses.LOSSES` or a callable
      (labels, logits) -> per-example loss.
    loss_reduction: "batch" or "weights", see `m2m_tf.losses.weighted_mean`.
    m2m: an `M2mConfig` to enable M2m in phase 2, or None.
    self_translation: M2m-Self ablation (translate with f instead of g).
    seed_pool: optional (x, y) arrays, a fixed pool of seeds (seed-pool ablation).
    weight_decay: coupled L2 coefficient.
    class_weight: initial per-class loss weights (length K), default ones.
    seed: integer seed of the in-step randomness.
  """

  def __init__(self, f: keras.Model, g: Optional[keras.Model] = None, *,
               class_counts: Sequence[int], loss="ce", loss_reduction: str = "batch",
               m2m: Optional[M2mConfig] = None, self_translation: bool = False,
               seed_pool=None, weight_decay: float = 0.0,
               class_weight: Optional[Sequence[float]] = None, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    counts = np.asarray(class_counts, np.int64)
    if counts.ndim != 1 or np.any(counts <= 0):
      raise ValueError(f"class_counts must be positive per class, got {counts.tolist()}.")
    if m2m is not None and g is None and not self_translation:
      raise ValueError("M2m needs a frozen classifier g (or self_translation=True).")
    self.f = f
    self.g = g
    if g is not None:
      g.trainable = False
    self.class_counts = counts
    self.num_classes = len(counts)
    self.loss_fn = (losses_lib.make_loss(loss, counts) if isinstance(loss, str) else loss)
    self.loss_reduction = loss_reduction
    self.m2m_config = m2m
    self.self_translation = self_translation
    self.seed_pool = None
    if seed_pool is not None:
      px, py = seed_pool
      self.seed_pool = (tf.constant(np.asarray(px, np.float32)), tf.constant(np.asarray(py, np.int32)))
    self.weight_decay = float(weight_decay)
    self.seed = int(seed)
    cw = np.ones(self.num_classes, np.float32) if class_weight is None else np.asarray(class_weight, np.float32)
    if cw.shape != (self.num_classes,):
      raise ValueError(f"class_weight must have length {self.num_classes}, got shape {cw.shape}.")
    self.class_weight = tf.Variable(cw, trainable=False, name="class_weight")
    self.phase2 = tf.Variable(False, trainable=False, name="phase2")
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    self.m2m_trackers = {k: keras.metrics.Sum(name=k) for k in M2M_STATS}

  @property
  def metrics(self):
    out = [self.loss_tracker, self.acc_tracker]
    if self.m2m_config is not None:
      out += [self.m2m_trackers[k] for k in M2M_STATS]
    return out

  def call(self, x, training=False):
    return self.f(x, training=training)

  def build(self, input_shape):
    self.f.build(input_shape)
    if self.g is not None:
      self.g.build(input_shape)
    super().build(input_shape)

  def _step_seed(self):
    return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])

  def m2m_batch(self, x, y):
    """Phase-2 rewrite of a batch (identity with zero statistics in phase 1)."""
    config = self.m2m_config
    g = self.f if self.self_translation else self.g
    seed_x, seed_y = self.seed_pool if self.seed_pool is not None else (None, None)

    def rewrite():
      # Static bucket shapes only under XLA; default kernels take the run-time
      # bucket size (same rows translated, one traced translation loop).
      xn, yn, stats = generate(g, self.f, x, y, self.class_counts, config, self._step_seed(),
                               seed_x=seed_x, seed_y=seed_y,
                               static_shapes=bool(self.jit_compile))
      return xn, yn, [stats[k] for k in M2M_STATS]

    def identity():
      return x, tf.cast(y, tf.int32), [tf.constant(0.0) for _ in M2M_STATS]

    return tf.cond(self.phase2, rewrite, identity)

  def train_step(self, data):
    x, y = data[0], data[1]
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.int32)
    if self.m2m_config is not None:
      x, y, stats = self.m2m_batch(x, y)
      for k, v in zip(M2M_STATS, stats):
        self.m2m_trackers[k].update_state(v)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    global_batch = tf.cast(tf.shape(y)[0] * replicas, tf.float32)
    with tf.GradientTape() as tape:
      logits = tf.cast(self.f(x, training=True), tf.float32)
      per_example = self.loss_fn(y, logits)
      loss = losses_lib.weighted_mean(per_example, y, self.class_weight, global_batch,
                                      reduction=self.loss_reduction)
      # Identity, except under a LossScaleOptimizer (mixed_float16), whose
      # apply_gradients divides the gradients by the same dynamic scale.
      scaled = self.optimizer.scale_loss(loss)
    variables = self.f.trainable_variables
    grads = tape.gradient(scaled, variables)
    if self.weight_decay:
      # Coupled L2: + wd * w (wd / R per replica: the replica sum is wd * w),
      # times the loss scale under a LossScaleOptimizer, which unscales it.
      wd = tf.constant(self.weight_decay / replicas, tf.float32)
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        wd = wd * tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
      grads = [gr + tf.cast(wd, gr.dtype) * v for gr, v in zip(grads, variables)]
    self.optimizer.apply_gradients(zip(grads, variables))
    self.loss_tracker.update_state(loss * replicas)
    self.acc_tracker.update_state(y, logits)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    x, y = data[0], data[1]
    logits = self.f(tf.cast(x, tf.float32), training=False)
    self.acc_tracker.update_state(tf.cast(y, tf.int32), logits)
    return {"accuracy": self.acc_tracker.result()}
