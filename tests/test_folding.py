"""BatchNorm folding of the translation's inference passes (`m2m_tf.models.folding`)."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf import models
from m2m_tf.m2m import generation
from m2m_tf.models import folding


def _randomise_batchnorm(model, seed=0):
  """Non-trivial running statistics and affine parameters, as after training."""
  rng = np.random.default_rng(seed)
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.moving_mean.shape[0]
      layer.moving_mean.assign(rng.normal(0, 0.3, c).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.3, 3.0, c).astype(np.float32))
      if layer.scale:
        layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
      if layer.center:
        layer.beta.assign(rng.normal(0, 0.3, c).astype(np.float32))


def _small_cnn(activation="tanh", name="cnn"):
  """Smooth activations (tanh), so input gradients can be compared tightly.

  Covers: conv with bias + BN, ZeroPadding2D + stride-1 'valid' conv + BN
  (becomes 'same'), ZeroPadding2D + stride-2 conv (kept), BN without
  scale/center, and a Dense head.
  """
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="c1")(inputs)
  x = keras.layers.BatchNormalization(name="bn1")(x)
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.ZeroPadding2D(1, name="p2")(x)
  x = keras.layers.Conv2D(5, 3, padding="valid", use_bias=False, name="c2")(x)
  x = keras.layers.BatchNormalization(scale=False, center=False, epsilon=1e-3, name="bn2")(x)
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.ZeroPadding2D(1, name="p3")(x)
  x = keras.layers.Conv2D(6, 3, strides=2, padding="valid", use_bias=False, name="c3")(x)
  x = keras.layers.BatchNormalization(name="bn3")(x)
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name=name)


def _input_grad(fn, x, y):
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, fn(x, training=False)))
  return tape.gradient(loss, x)


class FoldingTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(0)
    self.x = tf.constant(np.random.default_rng(1).random((4, 8, 8, 3), np.float32))
    self.y = tf.constant([0, 1, 2, 1])

  def test_plan_of_small_cnn(self):
    """Every conv absorbs its BN; only the stride-1 padding becomes 'same'."""
    model = _small_cnn()
    convs, skipped = folding._plan(model)  # pylint: disable=protected-access
    by_name = {e["conv"].name: e for e in convs.values()}
    self.assertEqual(sorted(by_name), ["c1", "c2", "c3"])
    self.assertEqual([by_name[n]["bn"].name for n in ("c1", "c2", "c3")], ["bn1", "bn2", "bn3"])
    self.assertEqual([by_name[n]["same"] for n in ("c1", "c2", "c3")], [False, True, False])
    skipped_names = {l.name for l in model.layers if id(l) in skipped}
    self.assertEqual(skipped_names, {"bn1", "bn2", "bn3", "p2"})

  @parameterized.parameters(False, True)
  def test_matches_model_and_input_gradient(self, jit):
    """Logits and d loss / d x equal the Keras model's in inference mode."""
    model = _small_cnn()
    _randomise_batchnorm(model)
    ref_logits = model(self.x, training=False)
    ref_grad = _input_grad(model, self.x, self.y)

    @tf.function(jit_compile=jit)
    def folded(x):
      fn = folding.inference_fn(model)
      return fn(x), _input_grad(fn, x, self.y)

    logits, grad = folded(self.x)
    self.assertAllClose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    self.assertAllClose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    # The comparison can fail: unfolded BN statistics would give other logits.
    self.assertGreater(float(tf.reduce_max(tf.abs(ref_logits - model(self.x, training=True)))),
                       1e-2)

  def test_resnet32_matches_model(self):
    """ResNet-32 with trained-like BN statistics: logits equal, gradients nearly."""
    model = models.resnet32(10)
    _randomise_batchnorm(model)
    convs, _ = folding._plan(model)  # pylint: disable=protected-access
    self.assertLen(convs, 31)  # every conv of ResNet-32 is followed by its BN
    self.assertTrue(all(e["bn"] is not None for e in convs.values()))
    x = tf.constant(np.random.default_rng(2).random((3, 32, 32, 3), np.float32))
    y = tf.constant([1, 5, 9])
    fn = folding.inference_fn(model)
    ref = model(x, training=False)
    self.assertAllClose(fn(x), ref, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(ref))))
    g_ref = _input_grad(model, x, y).numpy()
    g_fold = _input_grad(fn, x, y).numpy()
    # ReLU kinks: a rounding-level change can flip a unit sitting exactly at 0,
    # so compare the whole gradient, not each entry.
    rel = np.linalg.norm(g_fold - g_ref) / np.linalg.norm(g_ref)
    self.assertLess(rel, 1e-3)

  def test_reads_current_weights(self):
    """A new fold after a weight change sees it; the model itself never changes."""
    model = _small_cnn()
    before = [w.numpy().copy() for w in model.weights]
    fn = folding.inference_fn(model)
    out_before = fn(self.x)
    bn = model.get_layer("bn1")
    for w, b in zip(model.weights, before):
      np.testing.assert_array_equal(w.numpy(), b)
    bn.moving_mean.assign(bn.moving_mean + 1.0)
    self.assertAllClose(fn(self.x), out_before)  # folded weights were read at creation
    refolded = folding.inference_fn(model)(self.x)
    self.assertAllClose(refolded, model(self.x, training=False), rtol=1e-5, atol=1e-5)
    self.assertNotAllClose(refolded, out_before)

  def test_not_folded_when_unsafe(self):
    """Conv with an activation, a conv output read twice, and a shared BN stay as they are."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="act_conv")(inputs)
    a = keras.layers.BatchNormalization(name="bn_after_act")(a)
    b = keras.layers.Conv2D(3, 3, padding="same", name="two_readers")(inputs)
    b_bn = keras.layers.BatchNormalization(name="bn_b")(b)
    shared = keras.layers.BatchNormalization(name="shared")
    c = keras.layers.Conv2D(3, 1, name="c")(inputs)
    out = keras.layers.Concatenate()([a, b_bn, b, shared(c), shared(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(out)))
    _randomise_batchnorm(model)
    convs, skipped = folding._plan(model)  # pylint: disable=protected-access
    self.assertEqual(convs, {})
    self.assertEqual(skipped, set())
    self.assertIs(folding.inference_fn(model), model)

  def test_unchanged_without_batchnorm_or_graph(self):
    mlp = models.mlp(10, 3, hidden_units=(4,))
    self.assertIs(folding.inference_fn(mlp), mlp)
    fn = lambda x, training=False: x  # pylint: disable=unnecessary-lambda-assignment
    self.assertIs(folding.inference_fn(fn), fn)

  def test_nested_and_sequential(self):
    inner = _small_cnn(name="inner")
    _randomise_batchnorm(inner)
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Softmax()(inner(inputs)))
    seq = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="sc"),
                            keras.layers.BatchNormalization(name="sbn"),
                            keras.layers.Flatten(), keras.layers.Dense(2)])
    _randomise_batchnorm(seq, seed=3)
    for model in (outer, seq):
      fn = folding.inference_fn(model)
      self.assertIsNot(fn, model)
      self.assertAllClose(fn(self.x), model(self.x, training=False), rtol=1e-5, atol=1e-5)

  def test_training_mode_refused(self):
    fn = folding.inference_fn(_small_cnn())
    with self.assertRaisesRegex(ValueError, "inference mode"):
      fn(self.x, training=True)

  def test_mixed_precision_compute_dtype(self):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      model = _small_cnn()
    finally:
      keras.mixed_precision.set_global_policy("float32")
    _randomise_batchnorm(model)
    ref = model(self.x, training=False)
    got = folding.inference_fn(model)(self.x)
    self.assertEqual(got.dtype, ref.dtype)
    self.assertAllClose(tf.cast(got, tf.float32), tf.cast(ref, tf.float32), rtol=0.05, atol=0.05)


class GenerateFoldingTest(tf.test.TestCase):

  def test_same_rewrite_with_and_without_folding(self):
    """generate(): same slots, seeds and candidates; x* equal up to rounding."""
    keras.utils.set_random_seed(0)
    g, f = _small_cnn(name="g"), _small_cnn(name="f")
    _randomise_batchnorm(g, 1)
    _randomise_batchnorm(f, 2)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((24, 8, 8, 3), np.float32))
    y = tf.constant(np.tile([0, 1, 2], 8))
    counts = [100, 20, 4]
    out = {}
    for fold in (True, False):
      cfg = generation.M2mConfig(steps=3, step_size=0.3, gamma=0.0, beta=0.9,
                                 fold_batchnorm=fold)
      out[fold] = generation.generate(g, f, x, y, counts, cfg, tf.constant([3, 4]))
    (x1, y1, s1), (x0, y0, s0) = out[True], out[False]
    self.assertAllEqual(y1, y0)
    for k in s0:
      self.assertEqual(float(s1[k]), float(s0[k]))
    self.assertGreater(float(s1["accepted"]), 0)
    self.assertAllClose(x1, x0, rtol=1e-4, atol=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(x1 - x))), 0.1)  # something was translated


if __name__ == "__main__":
  tf.test.main()
