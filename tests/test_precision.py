"""Tests of m2m_tf.training.precision (the --precision choices)."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf.m2m.generation import M2mConfig
from m2m_tf.models import build_model
from m2m_tf.training import precision
from m2m_tf.training.trainer import M2mTrainer

D, K = 64, 5
COUNTS = np.array([40, 20, 10, 6, 4])


class PrecisionTest(tf.test.TestCase, parameterized.TestCase):

  def tearDown(self):
    precision.reset_precision()
    super().tearDown()

  def test_scope_sets_then_restores_even_on_error(self):
    with self.assertRaises(RuntimeError):
      with precision.precision_scope("mixed_bfloat16"):
        self.assertEqual(keras.mixed_precision.global_policy().name, "mixed_bfloat16")
        raise RuntimeError("boom")
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")

  def test_unknown_precision_is_refused(self):
    with self.assertRaisesRegex(ValueError, "unknown precision 'bfloat16'"):
      with precision.precision_scope("bfloat16"):
        pass
    with self.assertRaisesRegex(ValueError, "unknown precision"):
      precision.wrap_optimizer(keras.optimizers.SGD(0.1), "float64")

  @parameterized.parameters(("float32", False), ("mixed_bfloat16", False),
                            ("mixed_float16", True))
  def test_loss_scaling_only_for_float16(self, name, scaled):
    opt = precision.wrap_optimizer(keras.optimizers.SGD(0.1), name)
    self.assertEqual(isinstance(opt, keras.optimizers.LossScaleOptimizer), scaled)

  def test_bfloat16_dense_within_its_rounding_bound(self):
    # A layer made inside the scope keeps bfloat16 compute (float32 variables) after it.
    with precision.precision_scope("mixed_bfloat16"):
      layer = keras.layers.Dense(K)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (32, D)).astype(np.float32)
    layer.build((None, D))
    self.assertEqual(layer.compute_dtype, "bfloat16")
    self.assertEqual(layer.kernel.dtype, "float32")
    layer.bias.assign(rng.normal(0, 1, K).astype(np.float32))
    z = np.asarray(tf.cast(layer(x), tf.float64))
    w, b = (v.numpy().astype(np.float64) for v in layer.weights)
    exact = x.astype(np.float64) @ w + b
    # Rounding x and w to bfloat16 (relative error <= 2^-9 each) gives each product
    # an error <= (2^-8 + 2^-18)|x||w|; the float32 accumulation adds <= D 2^-24 sum|x||w|;
    # rounding b, the sum and the result to bfloat16 adds <= 2^-9 (|b| + 2|z|) roughly.
    # 2^-7 (sum|x||w| + |b| + |z|) bounds all of it.
    bound = 2.0 ** -7 * (np.abs(x) @ np.abs(w) + np.abs(b) + np.abs(exact))
    self.assertTrue(np.all(np.abs(z - exact) <= bound))
    # And it is bfloat16: float32 would be within ~1e-6 of the exact value.
    self.assertGreater(np.abs(z - exact).max(), 1e-4)

  def test_bfloat16_m2m_step_keeps_loss_and_translation_float32(self):
    rng = np.random.default_rng(1)
    with precision.precision_scope("mixed_bfloat16"):
      f, g = (build_model("mlp", (D,), K, hidden_units=(16,), name=n) for n in ("f", "g"))
    trainer = M2mTrainer(f, g, class_counts=COUNTS, weight_decay=5e-4, seed=0,
                         m2m=M2mConfig(beta=0.99, gamma=0.0, steps=2, step_size=0.5))
    trainer.compile(optimizer=precision.wrap_optimizer(keras.optimizers.SGD(0.05),
                                                       "mixed_bfloat16"), jit_compile=False)
    trainer.build((None, D))
    trainer.phase2.assign(True)
    y = np.repeat(np.arange(K), COUNTS)
    x = rng.uniform(0, 1, (len(y), D)).astype(np.float32)
    hist = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    self.assertTrue(np.all(np.isfinite(hist.history["loss"])))
    self.assertGreater(hist.history["accepted"][-1], 0)
    dtypes = [layer.compute_dtype for layer in f.layers if layer.weights]
    # The hidden layer computes in bfloat16, the head in float32 (its logits are float32).
    self.assertEqual(dtypes, ["bfloat16", "float32"])
    self.assertTrue(all(v.dtype == "float32" for v in f.weights))
    self.assertEqual(f(x[:2]).dtype, "float32")
    x_new, _, _ = trainer.m2m_batch(tf.constant(x[:16]), tf.constant(y[:16], tf.int32))
    self.assertEqual(x_new.dtype, tf.float32)


if __name__ == "__main__":
  tf.test.main()
