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
  * the batch loss is divided by the GLOBAL batch (`tf.nn.compute_average_loss`)
    or the global sum of the class weights (`m2m_tf.losses.weighted_mean`), so
    summing replica gradients (tf.distribute) gives the single-device gradient.
Known difference: Keras' SGD keeps lr inside the momentum buffer, PyTorch's
applies lr after it; the two agree while lr is constant and differ for the
few steps after an lr change, which at a 100x drop is a large overshoot
(docs/method.md, deliberate difference 9).

Mixed precision (`m2m_tf.training.precision`: a mixed global policy while f and g
are built, and for mixed_float16 a `keras.optimizers.LossScaleOptimizer`): f's
layers compute in bfloat16 or float16; the loss, the logits used by the loss and
the translated inputs stay float32 (x is float32; logits are cast), and under loss
scaling the coupled L2 term is multiplied by the scale so the optimizer's
unscaling leaves wd * w.

Randomness inside the step is stateless (philox), seeded by (seed,
optimizer.iterations), so a seeded run is deterministic and a resumed run
(RunCheckpoint restores the iteration count) continues identically.
"""

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from m2m_tf import losses as losses_lib
from m2m_tf.m2m.generation import M2mConfig, generate, make_seed_pool
from m2m_tf.training import collectives

M2M_STATS = ("gen_slots", "candidates", "accepted")


def _gather_global(x, y):
  """The global batch (replicas' batches in replica order) in a replica context."""
  return collectives.all_gather_rows(x), collectives.all_gather_rows(y)


def _own_slice(t, local):
  """This replica's rows [r * local, (r + 1) * local) of a gathered global tensor (a gather,
  so that a static `local` keeps the static shape XLA needs)."""
  r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
  return tf.gather(t, r * local + tf.range(local))


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
    if loss_reduction not in losses_lib.REDUCTIONS:
      raise ValueError(f"loss_reduction must be one of {losses_lib.REDUCTIONS}, "
                       f"got {loss_reduction!r}.")
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
    # The pool's class index is built here, once, not in every step.
    self.seed_pool = (None if seed_pool is None
                      else make_seed_pool(*seed_pool, num_classes=self.num_classes))
    self.weight_decay = float(weight_decay)
    self.seed = int(seed)
    cw = np.ones(self.num_classes, np.float32)
    if class_weight is not None:
      cw = np.asarray(class_weight, np.float32)
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

  def fit(self, *args, shuffle=False, **kwargs):
    """`keras.Model.fit`, with `shuffle` False by default: the training stream
    (`m2m_tf.data.train_dataset`) is already shuffled per epoch, and Keras warns when asked
    to shuffle a `tf.data.Dataset`."""
    return super().fit(*args, shuffle=shuffle, **kwargs)

  def call(self, x, training=False):
    return self.f(x, training=training)

  def build(self, input_shape):
    self.f.build(input_shape)
    if self.g is not None:
      self.g.build(input_shape)
    super().build(input_shape)

  def _step_seed(self):
    return tf.stack([tf.constant(self.seed, tf.int64),
                     tf.cast(self.optimizer.iterations, tf.int64)])

  def m2m_batch(self, x, y):
    """Phase-2 rewrite of a batch (identity with zero statistics in phase 1).

    Under a strategy with several replicas, M2m's choices are made over the
    GLOBAL batch, as on one device: every replica gathers the global batch,
    rewrites it with the same random draws (the step's seed) and keeps its own
    slice. The rewrite is thus the single-device one on any number of replicas
    (docs/method.md, "Several devices"), at the price of every replica
    translating the whole batch's candidates.
    """
    config = self.m2m_config
    g = self.f if self.self_translation else self.g
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # Gathered outside the tf.cond: a cross-replica step cannot sit inside control flow.
    xs, ys = (x, y) if replicas == 1 else _gather_global(x, y)

    def rewrite():
      # Static bucket shapes only under XLA; default kernels take the run-time
      # bucket size (same rows translated, one traced translation loop).
      xn, yn, stats = generate(g, self.f, xs, ys, self.class_counts, config, self._step_seed(),
                               self.seed_pool, static_shapes=bool(self.jit_compile))
      if replicas > 1:  # this replica's slice; the statistics are the global batch's, counted once
        local = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        xn, yn = _own_slice(xn, local), _own_slice(yn, local)
        stats = {k: v / replicas for k, v in stats.items()}
      return xn, yn, [stats[k] for k in M2M_STATS]

    def identity():
      return x, tf.cast(y, tf.int32), [tf.constant(0.0) for _ in M2M_STATS]

    return tf.cond(self.phase2, rewrite, identity)

  def batch_loss(self, y, logits):
    """The replica's share of the step's loss (docs/method.md#loss-reduction).

    With w_i = class_weight[y_i] and l_i the per-example loss:
    "batch": sum_i w_i l_i / global batch (`tf.nn.compute_average_loss`);
    "weights": sum_i w_i l_i / global sum_i w_i (`m2m_tf.losses.weighted_mean`).
    Summing the replicas' gradients gives the single-device gradient.
    """
    per_example = self.loss_fn(y, logits)
    if self.loss_reduction == "weights":
      return losses_lib.weighted_mean(per_example, y, self.class_weight, reduction="weights")
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.nn.compute_average_loss(per_example, sample_weight=tf.gather(self.class_weight, y),
                                      global_batch_size=tf.shape(y)[0] * replicas)

  def coupled_l2(self, grads, variables):
    """grads + wd * w, PyTorch's coupled weight decay (wd / R per replica, summing to wd * w)."""
    if not self.weight_decay:
      return grads
    wd = tf.constant(self.weight_decay / tf.distribute.get_strategy().num_replicas_in_sync,
                     tf.float32)
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      # The optimizer unscales the gradients, this term included: scale it like the loss.
      wd = wd * tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    return [gr + tf.cast(wd, gr.dtype) * v for gr, v in zip(grads, variables)]

  def train_step(self, data):
    x, y = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
    if self.m2m_config is not None:
      x, y, stats = self.m2m_batch(x, y)
      for k, v in zip(M2M_STATS, stats):
        self.m2m_trackers[k].update_state(v)
    with tf.GradientTape() as tape:
      logits = tf.cast(self.f(x, training=True), tf.float32)
      loss = self.batch_loss(y, logits)
      # Identity, except under a LossScaleOptimizer (mixed_float16), whose
      # apply_gradients divides the gradients by the same dynamic scale.
      scaled = self.optimizer.scale_loss(loss)
    variables = self.f.trainable_variables
    grads = self.coupled_l2(tape.gradient(scaled, variables), variables)
    self.optimizer.apply_gradients(zip(grads, variables))
    # The replica's loss is its share of the global mean: times R, the loss of its batch.
    self.loss_tracker.update_state(loss * tf.distribute.get_strategy().num_replicas_in_sync)
    self.acc_tracker.update_state(y, logits)
    return self.step_logs()

  def step_logs(self):
    """The running metrics as one replica reports them after a step (the progress bar's logs).

    `fit` and `fit_distributed` show the mean of the replicas' step logs. Every replica's M2m
    counters hold 1/R of the global batch's counts (`m2m_batch`), so they are reported times
    R: the mean is then the global count, which the epoch logs (the counters summed over the
    replicas) also give.
    """
    logs = {m.name: m.result() for m in self.metrics}
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if self.m2m_config is not None and replicas > 1:
      logs.update({k: logs[k] * replicas for k in M2M_STATS})
    return logs

  def test_step(self, data):
    x, y = data[0], data[1]
    logits = self.f(tf.cast(x, tf.float32), training=False)
    self.acc_tracker.update_state(tf.cast(y, tf.int32), logits)
    return {"accuracy": self.acc_tracker.result()}
