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


def _float64_copy(build, model):
  """`build()` under the float64 dtype policy, with `model`'s weights."""
  keras.config.set_dtype_policy("float64")
  try:
    copy = build()
  finally:
    keras.config.set_dtype_policy("float32")
  copy.set_weights([w.astype(np.float64) for w in model.get_weights()])
  return copy


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
    # float32, u32 = 6e-8. tanh is smooth, so rounding cannot flip anything:
    # three convs of fan-in <= 45, each within ~sqrt(45) u32 = 4e-7 relative
    # (45 u32 = 2.7e-6 worst case), compounded over 3 layers and the head:
    # ~1e-6 relative in logits of size <= 0.6 and in gradients (|g| <= 1.4e-2).
    # Measured (XLA or not, oneDNN on or off): 6e-8 in the logits, 5e-9 in the
    # gradient, 100x inside the tolerances. (A fold that forgets bn2's epsilon
    # moves the logits by 3.7e-5, only 2x the tolerance: the float64 ResNet-32
    # test below is the sharp one.)
    self.assertAllClose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    self.assertAllClose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    # The comparison can fail: unfolded BN statistics would give other logits.
    self.assertGreater(float(tf.reduce_max(tf.abs(ref_logits - model(self.x, training=True)))),
                       1e-2)

  def test_resnet32_matches_model(self):
    """ResNet-32 with trained-like BN statistics, compared in float64.

    Why float64: a ReLU network's input gradient is discontinuous at every ReLU
    kink. ResNet-32 on 3 images has 909,312 ReLU inputs (31 ReLU layers); here
    the one nearest its kink sits at 2.3e-8 of its layer's RMS, the next at
    1.8e-7. Folding changes the float32 rounding by ~u32 = 2^-24 = 6e-8
    relative per weight and per conv output, which is enough to flip such a
    unit: measured on an AMD EPYC, the folded float32 input gradient differs
    from the unfolded one by 3.9e-3 in relative norm (1.7e-2 of max |g|, in
    one patch of image 0: one unit's receptive field), while the unfolded
    float32 gradient agrees with the float64 model's to 5e-7. Whether a unit
    flips depends on the CPU's summation order (oneDNN/Eigen kernels, AVX-512
    or AMX), so no float32 gradient tolerance both holds on every x86-64 CPU
    and still catches a wrong fold (a fold that forgets BatchNorm's epsilon
    moves the gradient by only 1.0e-2 in relative norm).

    In float64 (u64 = 2^-53 = 1.1e-16) a flip needs a unit within ~1e-15 of
    its RMS of the kink: with ~1e6 units that is a chance of ~1e-9. Rounding
    then bounds the difference: a 3x3 conv sums n = 9 C <= 576 products
    (worst case gamma_n = n u64 = 6.4e-14 relative to sum |terms|, typically
    sqrt(n) u64 = 2.7e-15), folding adds <= 3 roundings per weight and bias,
    and 31 conv+BN layers plus 15 residual adds compound it to <= ~31 *
    6.4e-14 = 2e-12 if the layers do not amplify it (float32 shows they
    hardly do: 3e-7 = 5 u32 in the logits, 5e-7 = 9 u32 in the gradient).
    Measured: 5e-16 of max |logit| in the logits and 0 in the gradient (a
    fold computed in float32 for this float64 model gives 3.7e-7 and 1.7e-2).
    tol = 1e-9 is 500x that pessimistic bound, while forgetting epsilon
    (1e-5 against variances in [0.3, 3]) moves the logits by 7e-5 and the
    gradient by 4e-2 of their maxima (checked below); forgetting the BN shift
    or the mean moves them by O(0.1-1).
    """
    model32 = models.resnet32(10)
    _randomise_batchnorm(model32)
    convs, _ = folding._plan(model32)  # pylint: disable=protected-access
    self.assertLen(convs, 31)  # every conv of ResNet-32 is followed by its BN
    self.assertTrue(all(e["bn"] is not None for e in convs.values()))
    model = _float64_copy(lambda: models.resnet32(10), model32)
    x32 = np.random.default_rng(2).random((3, 32, 32, 3), np.float32)
    x = tf.constant(x32.astype(np.float64))
    y = tf.constant([1, 5, 9])
    ref, g_ref = model(x, training=False).numpy(), _input_grad(model, x, y).numpy()

    def rel_err(fn):
      """max |error| / max |reference| of the logits and of the input gradient."""
      logits, grad = fn(x).numpy(), _input_grad(fn, x, y).numpy()
      return (np.max(np.abs(logits - ref)) / np.max(np.abs(ref)),
              np.max(np.abs(grad - g_ref)) / np.max(np.abs(g_ref)))

    tol = 1e-9
    fn = folding.inference_fn(model)
    self.assertEqual(fn(x).dtype, tf.float64)
    logits_err, grad_err = rel_err(fn)
    self.assertLess(logits_err, tol)
    self.assertLess(grad_err, tol)
    # The comparison can fail: a fold that forgets BatchNorm's epsilon.
    bns = [l for l in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(l, keras.layers.BatchNormalization)]
    epsilons = [bn.epsilon for bn in bns]
    for bn in bns:
      bn.epsilon = 0.0
    try:
      wrong = folding.inference_fn(model)
    finally:
      for bn, eps in zip(bns, epsilons):
        bn.epsilon = eps
    wrong_logits_err, wrong_grad_err = rel_err(wrong)
    self.assertGreater(wrong_logits_err, 1e3 * tol)
    self.assertGreater(wrong_grad_err, 1e3 * tol)

    # float32, the dtype M2m runs in: logits only (continuous in the rounding
    # even across ReLU kinks). Each float32 evaluation is within ~sqrt(n) u32 =
    # 1.4e-6 per conv, random-walk-compounded over 31 layers to ~sqrt(31) *
    # 1.4e-6 = 8e-6 of max |logit|; measured 3e-7 each and 2.4e-7 between
    # them. 1e-4 covers the sum of two such errors 6x over. It would not
    # catch a forgotten epsilon (7e-5); the float64 check above does.
    ref32 = model32(x32, training=False).numpy()
    got32 = folding.inference_fn(model32)(x32).numpy()
    self.assertLess(np.max(np.abs(got32 - ref32)) / np.max(np.abs(ref32)), 1e-4)

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
    # The same folded computation twice (measured bitwise equal); the change it
    # must not see (moving_mean + 1) moves the logits far more (assertNotAllClose below).
    self.assertAllClose(fn(self.x), out_before)  # folded weights were read at creation
    refolded = folding.inference_fn(model)(self.x)
    # float32 rounding of the small tanh CNN (see test_matches_model_and_input_gradient).
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
      # float32 rounding of small convs (test_matches_model_and_input_gradient);
      # measured ~2e-7.
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
    # bfloat16 keeps 8 significant bits: every rounding is up to 2^-9 = 2e-3
    # relative. The folded weights are rounded once, the unfolded path rounds
    # the conv output and the BN output instead: ~2 extra roundings per layer,
    # 3 conv layers and the head, each adding ~2e-3 of the activations' size
    # (<= 0.9): ~1e-2 at worst; measured 3.9e-3 (one bf16 ulp at 0.5..1).
    # The tolerance is 0.05 + 0.05 |ref|.
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
    # Smooth (tanh) nets, so the folded and unfolded float32 gradients differ
    # by ~1e-6 relative (test_matches_model_and_input_gradient); the
    # normalised steps move x by at most steps * step_size = 0.9 times that.
    # Measured ~1e-7. (gamma = 0: no acceptance threshold to flip.)
    self.assertAllClose(x1, x0, rtol=1e-4, atol=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(x1 - x))), 0.1)  # something was translated


if __name__ == "__main__":
  tf.test.main()
