"""Tests of m2m_tf.training.trainer.M2mTrainer and its callbacks."""

import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf import losses as losses_lib
from m2m_tf.data import pipeline
from m2m_tf.m2m.generation import M2mConfig
from m2m_tf.training import callbacks as cb
from m2m_tf.training.trainer import M2mTrainer

D, K = 8, 3
COUNTS = np.array([20, 80, 6])


def _data(seed=0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(K), COUNTS)
  protos = rng.uniform(0.2, 0.8, (K, D))
  x = np.clip(protos[y] + 0.2 * rng.standard_normal((len(y), D)), 0, 1).astype(np.float32)
  return x, y


def _mlp(seed, batchnorm=False, name=None):
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((D,)), keras.layers.Dense(16)]
  if batchnorm:
    layers.append(keras.layers.BatchNormalization())
  layers += [keras.layers.ReLU(), keras.layers.Dense(K)]
  return keras.Sequential(layers, name=name)


def _all_weights(model):
  return [v.numpy().copy() for v in model.weights]


class TrainerTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_g_frozen_f_trained_with_m2m(self, jit_compile):
    x, y = _data()
    f = _mlp(1, batchnorm=True, name="f")
    g = _mlp(2, batchnorm=True, name="g")
    # Non-trivial BatchNorm statistics in g, so an update would show.
    g.layers[1].moving_mean.assign(np.linspace(-0.5, 0.5, 16))
    g_before = _all_weights(g)
    f_before = _all_weights(f)
    config = M2mConfig(beta=0.99, gamma=0.0, steps=3, step_size=0.2, n_buckets=2)
    trainer = M2mTrainer(f, g, class_counts=COUNTS, m2m=config, weight_decay=1e-3, seed=3)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit_compile)
    trainer.build((None, D))
    b = 16
    steps = pipeline.steps_per_epoch(len(y), b)
    ds = pipeline.train_dataset(x, y, num_classes=K, batch_size=b, seed=0, epochs=2,
                                balanced_from_epoch=1)
    history = trainer.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0,
                          callbacks=[cb.PhaseSchedule(1), cb.M2mStatistics(steps * b)])
    for a, b_ in zip(g_before, _all_weights(g)):
      self.assertAllEqual(a, b_)
    self.assertFalse(g.trainable)
    changed = [not np.array_equal(a, b_) for a, b_ in zip(f_before, _all_weights(f))]
    self.assertTrue(all(changed[:2]) and changed[-1])
    h = history.history
    for key in ("m2m_accept_rate", "m2m_gen_rate", "m2m_candidate_rate", "m2m_accepted",
                "accepted", "candidates", "gen_slots", "loss", "accuracy"):
      self.assertIn(key, h)
    self.assertEqual(h["gen_slots"][0], 0.0)  # phase 1
    self.assertEqual(h["accepted"][0], 0.0)
    self.assertGreater(h["accepted"][1], 0.0)  # gamma = 0: every candidate accepted
    self.assertEqual(h["accepted"][1], h["candidates"][1])
    self.assertEqual(h["m2m_accept_rate"][1], 1.0)
    # A float32 ratio of counts (exact integers): within u32 = 6e-8 relative.
    self.assertAllClose(h["m2m_gen_rate"][1], h["gen_slots"][1] / (steps * b))
    self.assertTrue(bool(trainer.phase2.numpy()))

  def test_self_translation_needs_no_g(self):
    f = _mlp(1)
    trainer = M2mTrainer(f, None, class_counts=COUNTS, m2m=M2mConfig(), self_translation=True)
    self.assertIsNone(trainer.g)

  def test_missing_g_raises(self):
    with self.assertRaisesRegex(ValueError, "frozen classifier g"):
      M2mTrainer(_mlp(1), None, class_counts=COUNTS, m2m=M2mConfig())

  def test_bad_class_counts_and_weights(self):
    with self.assertRaisesRegex(ValueError, "class_counts"):
      M2mTrainer(_mlp(1), class_counts=[3, 0, 2])
    with self.assertRaisesRegex(ValueError, "class_weight"):
      M2mTrainer(_mlp(1), class_counts=COUNTS, class_weight=[1.0, 2.0])
    with self.assertRaisesRegex(ValueError, "loss_reduction"):
      M2mTrainer(_mlp(1), class_counts=COUNTS, loss_reduction="mean")

  def _linear_step(self, wd, class_weight=None, lr=0.3, loss_reduction="batch", loss="ce"):
    """One trainer SGD step on a linear f; returns (W, b) before, after, and the batch."""
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(0)
    f = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    w0 = rng.normal(0, 0.5, (D, K)).astype(np.float32)
    b0 = rng.normal(0, 0.5, K).astype(np.float32)
    f.set_weights([w0, b0])
    trainer = M2mTrainer(f, class_counts=COUNTS, weight_decay=wd, class_weight=class_weight,
                         loss_reduction=loss_reduction, loss=loss)
    trainer.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.0), jit_compile=False)
    trainer.build((None, D))
    xb = rng.uniform(0, 1, (12, D)).astype(np.float32)
    yb = rng.integers(0, K, 12).astype(np.int32)
    logs = trainer.train_on_batch(xb, yb, return_dict=True)
    w1, b1 = f.get_weights()
    return (w0, b0), (w1, b1), (xb, yb), logs

  def _np_grad(self, w, b, xb, yb, cw, denominator=None, shift=0.0):
    """float64 gradient of sum_i cw[y_i] CE_i / denominator (default B) for logits = x W + b,
    CE taken on the logits + `shift` (the logit-adjusted loss: tau log pi)."""
    w, b, xb = (np.asarray(a, np.float64) for a in (w, b, xb))
    z = xb @ w + b + shift
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    ce = -np.log(p[np.arange(len(yb)), yb])
    wi = np.asarray(cw, np.float64)[yb]
    dz = p.copy()
    dz[np.arange(len(yb)), yb] -= 1.0
    denominator = len(yb) if denominator is None else denominator
    dz *= wi[:, None] / denominator
    return xb.T @ dz, dz.sum(axis=0), np.sum(wi * ce) / denominator

  def test_coupled_weight_decay_sgd_step(self):
    wd, lr = 0.05, 0.3
    (w0, b0), (w1, b1), (xb, yb), logs = self._linear_step(wd, lr=lr)
    gw, gb, loss = self._np_grad(w0, b0, xb, yb, np.ones(K))
    # float32 step of a linear softmax model on B = 12 examples (D = 8, K = 3):
    # each gradient entry is a mean of 12 products of size <= 1 (x and softmax
    # in [0, 1]) of logits that are 8-term sums, so it is off by <= ~(12 + 8 +
    # 3) u32 = 1.4e-6; lr = 0.3 scales that, and w (|w| ~ 1) is rounded to
    # 6e-8: <= ~5e-7 at worst; measured 2.3e-8. Decoupled decay is off by
    # > 1e-3 (asserted below). The loss (~1) is a log-sum-exp and a 12-term
    # mean: <= ~20 u32 = 1.2e-6; measured 1.2e-8.
    self.assertAllClose(w1, w0 - lr * (gw + wd * w0), atol=1e-6)
    self.assertAllClose(b1, b0 - lr * (gb + wd * b0), atol=1e-6)  # biases decay too (PyTorch)
    self.assertAllClose(logs["loss"], loss, atol=1e-5)
    # And it is not decoupled decay w(1 - lr wd) - lr g with a different grad scale.
    self.assertGreater(np.abs((w0 - lr * (gw + wd * w0)) - (w0 - lr * gw)).max(), 1e-3)

  def test_loss_scale_optimizer_keeps_coupled_weight_decay(self):
    # Under a LossScaleOptimizer (mixed precision) the loss is scaled by 2^15 and the
    # gradients unscaled again: the L2 term must come out as wd * w, not wd * w / 2^15.
    wd, lr = 0.05, 0.3
    rng = np.random.default_rng(0)
    f = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    w0 = rng.normal(0, 0.5, (D, K)).astype(np.float32)
    b0 = rng.normal(0, 0.5, K).astype(np.float32)
    f.set_weights([w0, b0])
    trainer = M2mTrainer(f, class_counts=COUNTS, weight_decay=wd)
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr, momentum=0.0))
    trainer.compile(optimizer=opt, jit_compile=False)
    trainer.build((None, D))
    xb = rng.uniform(0, 1, (12, D)).astype(np.float32)
    yb = rng.integers(0, K, 12).astype(np.int32)
    trainer.train_on_batch(xb, yb)
    gw, _, _ = self._np_grad(w0, b0, xb, yb, np.ones(K))
    self.assertGreater(float(opt.dynamic_scale.numpy()), 1.0)
    # As in test_coupled_weight_decay_sgd_step (<= ~5e-7; scaling by 2^15 and
    # back is exact in float32); measured 3.5e-8. wd * w / 2^15 instead of
    # wd * w is off by lr * wd * |w| ~ 1e-2.
    self.assertAllClose(f.get_weights()[0], w0 - lr * (gw + wd * w0), atol=1e-5)

  def test_mixed_float16_m2m_fit_is_finite(self):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      f, g = _mlp(1), _mlp(2)
      self.assertEqual(f.layers[0].compute_dtype, "float16")
      trainer = M2mTrainer(f, g, class_counts=COUNTS, weight_decay=5e-4,
                           m2m=M2mConfig(beta=0.99, gamma=0.0, steps=2, step_size=0.5))
      trainer.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)),
                      jit_compile=False)
      trainer.build((None, D))
      trainer.phase2.assign(True)
      x, y = _data()
      hist = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertTrue(np.isfinite(hist.history["loss"][0]))
    self.assertGreater(hist.history["accepted"][0], 0)
    self.assertEqual(f.weights[0].dtype, "float32")

  def test_class_weighted_step(self):
    cw = np.array([2.0, 0.5, 3.0])
    (w0, b0), (w1, b1), (xb, yb), _ = self._linear_step(0.0, class_weight=cw)
    gw, gb, _ = self._np_grad(w0, b0, xb, yb, cw)
    # As in test_coupled_weight_decay_sgd_step, with class weights up to 3:
    # <= 3 * 0.3 * 1.4e-6 = 1.3e-6 at worst; measured 3e-8. Ignoring the
    # weights moves W by 9e-2.
    self.assertAllClose(w1, w0 - 0.3 * gw, atol=2e-6)
    self.assertAllClose(b1, b0 - 0.3 * gb, atol=2e-6)

  def test_weights_reduction_step(self):
    cw = np.array([2.0, 0.5, 3.0])
    (w0, b0), (w1, b1), (xb, yb), logs = self._linear_step(0.0, class_weight=cw,
                                                           loss_reduction="weights")
    gw, gb, loss = self._np_grad(w0, b0, xb, yb, cw, denominator=cw[yb].sum())
    # As in test_class_weighted_step: sum_i w_i = O(B), so the bounds are the same;
    # measured 5.8e-8. Dividing by B instead moves W by 3.5e-2 (sum_i w_i = 16.5, B = 12).
    self.assertAllClose(w1, w0 - 0.3 * gw, atol=2e-6)
    self.assertAllClose(b1, b0 - 0.3 * gb, atol=2e-6)
    self.assertAllClose(logs["loss"], loss, atol=1e-5)
    self.assertGreater(abs(cw[yb].sum() - len(yb)), 1.0)

  @parameterized.parameters("batch", "weights")
  def test_logit_adjusted_class_weighted_step(self, reduction):
    # The logit-adjusted loss takes the trainer's per-example path like CE: class weights and
    # both reductions apply to it unchanged.
    cw, tau = np.array([2.0, 0.5, 3.0]), 1.5
    loss = losses_lib.make_loss("logit_adjusted", COUNTS, tau=tau)
    (w0, b0), (w1, b1), (xb, yb), logs = self._linear_step(
        0.0, class_weight=cw, loss_reduction=reduction, loss=loss)
    shift = tau * np.log(COUNTS / COUNTS.sum())
    denominator = cw[yb].sum() if reduction == "weights" else None
    gw, gb, value = self._np_grad(w0, b0, xb, yb, cw, denominator, shift=shift)
    # As in test_class_weighted_step (logits shifted by <= 1.5 * 2.9: the same bounds);
    # measured <= 4.8e-8 (the loss 2.8e-7). Plain CE instead moves W by 5.5e-2 or more.
    self.assertAllClose(w1, w0 - 0.3 * gw, atol=2e-6)
    self.assertAllClose(b1, b0 - 0.3 * gb, atol=2e-6)
    self.assertAllClose(logs["loss"], value, atol=1e-5)
    gw_ce, _, _ = self._np_grad(w0, b0, xb, yb, cw, denominator)
    self.assertGreater(np.abs(0.3 * (gw - gw_ce)).max(), 1e-2)

  def test_fit_on_a_dataset_does_not_ask_keras_to_shuffle_it(self):
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    trainer = M2mTrainer(_mlp(1), class_counts=COUNTS)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      trainer.fit(ds, epochs=1, verbose=0)
      keras.Model.fit(trainer, ds, epochs=1, verbose=0)  # Keras' own default: it warns
    shuffle = [str(w.message) for w in caught if "shuffle" in str(w.message)]
    self.assertLen(shuffle, 1)

  @parameterized.parameters(False, True)
  def test_epoch_learning_rate(self, loss_scale):
    x, y = _data()
    trainer = M2mTrainer(_mlp(1), class_counts=COUNTS)
    optimizer = keras.optimizers.SGD(1.0)
    if loss_scale:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=False)
    trainer.build((None, D))
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(trainer.optimizer.learning_rate)))
    schedule = cb.EpochLearningRate(0.1, 2, [3], [0.1])
    self.assertIsInstance(schedule, keras.callbacks.LearningRateScheduler)
    history = trainer.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[schedule, probe])
    # float64: warm-up (e + 1) / 2 epochs, then x 0.1 from epoch 3.
    want = [0.1 * 1 / 2, 0.1 * 2 / 2, 0.1, 0.1 * 0.1]
    # The "lr" column of the history holds the schedule's float64 values, as it always did
    # (histories in checkpoints); no "learning_rate" column is added.
    self.assertEqual(history.history["lr"], want)
    self.assertNotIn("learning_rate", history.history)
    # The optimizer runs each epoch with the float32 value of the schedule.
    self.assertEqual(seen, [float(np.float32(v)) for v in want])

  @parameterized.parameters(False, True)
  def test_pytorch_momentum_form_matches_a_float64_reference(self, loss_scale):
    # A linear softmax model, two fixed batches an epoch, warm-up then a x0.01 drop: Keras'
    # SGD with the rescaling callback against PyTorch's update (b <- 0.9 b + g, w -= lr b) in
    # float64 NumPy. float32 rounding over 12 steps of O(1) values stays far below 1e-5; the
    # stock Keras form (no rescaling) must miss the reference by far more after the drop.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    w0 = rng.normal(size=(5, 3)).astype(np.float32) * 0.3
    lrs = [0.5 * 1 / 2, 0.5, 0.5, 0.5, 0.5 * 0.01, 0.5 * 0.01]

    def keras_weights(rescale):
      model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
      model.layers[0].kernel.assign(w0)
      optimizer = keras.optimizers.SGD(0.5, momentum=0.9)
      if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      model.compile(optimizer=optimizer, jit_compile=False,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      schedule = cb.EpochLearningRate(0.5, 2, [4], [0.01], rescale_momentum=rescale)
      model.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0, callbacks=[schedule])
      return np.asarray(model.layers[0].kernel)

    w, b = w0.astype(np.float64), np.zeros((5, 3))
    for lr in lrs:
      for i in (0, 16):
        xb, yb = x[i:i + 16].astype(np.float64), y[i:i + 16]
        z = xb @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(16), yb] -= 1.0
        b = 0.9 * b + xb.T @ p / 16
        w = w - lr * b
    np.testing.assert_allclose(keras_weights(True), w, atol=1e-5)
    self.assertGreater(np.abs(keras_weights(False) - w).max(), 1e-3)

  def test_nan_loss_raises(self):
    # (Inf inputs are not used: in graph mode the fused MatMul+BiasAdd+ReLU on
    # this CPU maps the NaN pre-activations to 0, so the loss stays finite.)
    x, y = _data()
    f = _mlp(1)
    f.layers[-1].bias.assign([np.nan, 0.0, 0.0])
    trainer = M2mTrainer(f, class_counts=COUNTS)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    trainer.build((None, D))
    ds = pipeline.train_dataset(x, y, num_classes=K, batch_size=16, seed=0, epochs=1)
    guard = cb.RaiseOnNaN()
    self.assertIsInstance(guard, keras.callbacks.TerminateOnNaN)
    with self.assertRaisesRegex(FloatingPointError, r"loss became nan at epoch 0, batch 0"):
      trainer.fit(ds, epochs=1, steps_per_epoch=6, verbose=0, callbacks=[guard])

  def test_huge_lr_raises(self):
    x, y = _data()
    f = _mlp(1)
    trainer = M2mTrainer(f, class_counts=COUNTS)
    trainer.compile(optimizer=keras.optimizers.SGD(1e30), jit_compile=False)
    trainer.build((None, D))
    ds = pipeline.train_dataset(x, y, num_classes=K, batch_size=16, seed=0, epochs=3)
    with self.assertRaisesRegex(FloatingPointError, "loss became"):
      trainer.fit(ds, epochs=3, steps_per_epoch=6, verbose=0, callbacks=[cb.RaiseOnNaN()])

  def test_phase_schedule_class_weights(self):
    f = _mlp(1)
    trainer = M2mTrainer(f, class_counts=COUNTS)
    schedule = cb.PhaseSchedule(None, weights_from=2, phase2_class_weight=[1.0, 2.0, 3.0])
    schedule.set_model(trainer)
    schedule.on_epoch_begin(1)
    self.assertAllEqual(trainer.class_weight.numpy(), np.ones(K))
    self.assertFalse(bool(trainer.phase2.numpy()))
    schedule.on_epoch_begin(2)
    self.assertAllEqual(trainer.class_weight.numpy(), [1.0, 2.0, 3.0])


if __name__ == "__main__":
  tf.test.main()
