"""BatchNorm folding of the translation's inference passes (`m2m_tf.models.folding`, `conv_bn`).

Rounding units: u32 = 2^-24 = 6.0e-8, u64 = 2^-53 = 1.1e-16. A floating-point
sum of n products, in ANY order (blocked, FMA, AVX-512, AMX, oneDNN or Eigen),
is within gamma_n = n u / (1 - n u) of sum |terms| (Higham, Accuracy and
Stability of Numerical Algorithms, 3.1); that, not a measurement on one CPU,
sets the tolerances below.
"""

import json
import os
import tempfile

from absl.testing import parameterized
import h5py
import keras
import numpy as np
import tensorflow as tf

from m2m_tf import models
from m2m_tf.m2m import generation
from m2m_tf.models import conv_bn
from m2m_tf.models import folding

_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                        "model_weights_layout.json")
# K = 10; ResNet-50 at 32 px (its weights do not depend on the image size).
_BUILDERS = {
    "resnet32": lambda normed: models.resnet32(10, normed_head=normed),
    "preact_resnet18": lambda normed: models.preact_resnet18(10, normed_head=normed),
    "resnet50": lambda normed: models.resnet50(10, input_shape=(32, 32, 3), normed_head=normed),
}


def _all_layers(model):
  out = []
  for layer in model.layers:
    out.append(layer)
    if isinstance(layer, keras.Model):
      out.extend(_all_layers(layer))
  return out


def _batch_norms(model):
  return [l for l in _all_layers(model) if isinstance(l, keras.layers.BatchNormalization)]


def _randomise_batchnorm(model, seed=0):
  """Non-trivial running statistics and affine parameters, as after training."""
  rng = np.random.default_rng(seed)
  for layer in _batch_norms(model):
    c = layer.moving_mean.shape[0]
    layer.moving_mean.assign(rng.normal(0, 0.3, c))
    layer.moving_variance.assign(rng.uniform(0.3, 3.0, c))
    if layer.scale:
      layer.gamma.assign(rng.uniform(0.5, 1.5, c))
    if layer.center:
      layer.beta.assign(rng.normal(0, 0.3, c))


def _small_cnn(activation="tanh", name="cnn"):
  """Smooth activations (tanh), so input gradients can be compared tightly.

  Three conv_bn pairs: a conv with bias ('same'), ZeroPadding2D + stride-1
  'valid' conv with a BN without scale/center, ZeroPadding2D + stride-2 conv;
  then a Dense head. Fan-in of the convs: 27, 36, 45; of the head: 6.
  """
  def bn(name, **kw):
    return conv_bn.BatchNormalization(name=name, **kw)

  inputs = keras.Input((8, 8, 3))
  x = conv_bn.conv_bn(inputs, conv_bn.Conv2D(4, 3, padding="same", use_bias=True, name="c1"),
                      bn("bn1"))
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.ZeroPadding2D(1, name="p2")(x)
  x = conv_bn.conv_bn(x, conv_bn.Conv2D(5, 3, padding="valid", use_bias=False, name="c2"),
                      bn("bn2", scale=False, center=False, epsilon=1e-3))
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.ZeroPadding2D(1, name="p3")(x)
  x = conv_bn.conv_bn(x, conv_bn.Conv2D(6, 3, strides=2, use_bias=False, name="c3"), bn("bn3"))
  x = keras.layers.Activation(activation)(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name=name)


def _stock_small_cnn():
  """`_small_cnn` from Keras' own Conv2D and BatchNormalization (nothing to fold)."""
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="c1")(inputs)
  x = keras.layers.BatchNormalization(name="bn1")(x)
  x = keras.layers.Activation("tanh")(x)
  x = keras.layers.ZeroPadding2D(1, name="p2")(x)
  x = keras.layers.Conv2D(5, 3, padding="valid", use_bias=False, name="c2")(x)
  x = keras.layers.BatchNormalization(scale=False, center=False, epsilon=1e-3, name="bn2")(x)
  x = keras.layers.Activation("tanh")(x)
  x = keras.layers.ZeroPadding2D(1, name="p3")(x)
  x = keras.layers.Conv2D(6, 3, strides=2, use_bias=False, name="c3")(x)
  x = keras.layers.BatchNormalization(name="bn3")(x)
  x = keras.layers.Activation("tanh")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="stock")


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


def _fold_without_epsilon(model):
  """A wrong fold: `inference_fn` while every BatchNorm's epsilon is 0."""
  bns = _batch_norms(model)
  epsilons = [bn.epsilon for bn in bns]
  for bn in bns:
    bn.epsilon = 0.0
  try:
    return folding.inference_fn(model)
  finally:
    for bn, eps in zip(bns, epsilons):
      bn.epsilon = eps


def _layout(model):
  """The weight layout recorded in tests/fixtures/model_weights_layout.json.

  weights: [variable.path, shape] of model.weights (the get_weights() order);
  trainable: model.trainable_variables as indices into weights; h5: each
  dataset of a saved .weights.h5 file as [h5 path, index into weights] (found
  by filling weight i with the value i before saving).
  """
  weights = [[w.path, list(w.shape)] for w in model.weights]
  index = {id(w): i for i, w in enumerate(model.weights)}
  trainable = [index[id(v)] for v in model.trainable_variables]
  saved = model.get_weights()
  model.set_weights([np.full(w.shape, i, w.dtype) for i, w in enumerate(saved)])
  entries = []
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "m.weights.h5")
    model.save_weights(path)

    def visit(name, obj):
      if isinstance(obj, h5py.Dataset):
        v = np.asarray(obj)
        entries.append([name, int(v.flat[0]) if v.size and np.all(v == v.flat[0]) else -1])

    with h5py.File(path, "r") as f:
      f.visititems(visit)
  model.set_weights(saved)
  return {"weights": weights, "trainable": trainable, "h5": sorted(entries)}


class WeightLayoutTest(tf.test.TestCase, parameterized.TestCase):
  """Checkpoints of runs in progress need the layout of the stock-Keras models."""

  @parameterized.named_parameters(
      (f"{arch}{'_normed' if normed else ''}", arch, normed)
      for arch in _BUILDERS for normed in (False, True))
  def test_matches_fixture(self, arch, normed):
    with open(_FIXTURE, encoding="utf-8") as f:
      want = json.load(f)["models"][arch + ("_normed" if normed else "")]
    got = _layout(_BUILDERS[arch](normed))
    self.assertEqual(got["weights"], want["weights"])  # get_weights(): order, paths, shapes
    self.assertEqual(got["trainable"], want["trainable"])
    self.assertEqual(got["h5"], want["h5"])  # .weights.h5: same group per variable


class ModelPairsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("resnet32", 31), ("preact_resnet18", 8), ("resnet50", 53))
  def test_pairs_and_their_graph(self, arch, n_pairs):
    """Every linked conv's output is read by its BatchNorm alone (what makes the fold exact).

    The ResNet-32 and ResNet-50 convs are all followed by their BN; in the
    pre-activation ResNet-18 only conv1 -> bn2 of each block is (the stem's
    output also feeds the first shortcut; conv2 and shortcut convs feed adds).
    """
    model = _BUILDERS[arch](False)
    convs = [l for l in model.layers if isinstance(l, conv_bn.Conv2D)]
    self.assertLen(convs, n_pairs)
    readers = {}
    for layer in model.layers:
      if not isinstance(layer, keras.layers.InputLayer):
        for t in tf.nest.flatten(layer.input):
          readers.setdefault(id(t), []).append(layer)
    outputs = {id(t) for t in model.outputs}
    for conv in convs:
      bn = conv.batch_norm()
      self.assertIsInstance(bn, conv_bn.BatchNormalization)
      self.assertEqual(readers[id(conv.output)], [bn])
      self.assertNotIn(id(conv.output), outputs)
    self.assertLen(conv_bn.folded_weights(model.layers), n_pairs)


class FoldingTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(0)
    self.x = tf.constant(np.random.default_rng(1).random((4, 8, 8, 3), np.float32))
    self.y = tf.constant([0, 1, 2, 1])

  @parameterized.parameters("float32", "float64")
  def test_folded_weights_against_numpy(self, dtype):
    """k * s and (b - mu) * s + beta, s = gamma / sqrt(var + eps), against float64 NumPy.

    Folding rounds each value <= 4 times (var + eps, rsqrt, * gamma, * k; the
    bias: - mu + b, * s, + beta), each within u of its result: <= ~4 u of
    the largest term, i.e. 2.4e-7 (float32) or 4.4e-16 (float64) relative to
    max |k s| or to |b s| + |mu s| + |beta|. The bounds are 1e-6 and 4e-15.
    (Folding a float64 model with epsilon = 1e-5 rounded to float32 first
    errs by 6e-13: caught.)
    """
    build = lambda: _small_cnn()
    model32 = build()
    _randomise_batchnorm(model32)
    model = model32 if dtype == "float32" else _float64_copy(build, model32)
    weights = conv_bn.folded_weights(model.layers)
    self.assertEqual(sorted(c.name for c in weights), ["c1", "c2", "c3"])
    tol = 1e-6 if dtype == "float32" else 4e-15
    for conv, (kernel, bias) in weights.items():
      self.assertEqual((kernel.dtype, bias.dtype), (tf.as_dtype(dtype),) * 2)
      bn = conv.batch_norm()
      c = conv.filters
      gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else np.ones(c)
      beta = bn.beta.numpy().astype(np.float64) if bn.center else np.zeros(c)
      b = conv.bias.numpy().astype(np.float64) if conv.use_bias else np.zeros(c)
      mu = bn.moving_mean.numpy().astype(np.float64)
      s = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
      k = conv.kernel.numpy().astype(np.float64)
      self.assertLess(np.max(np.abs(kernel.numpy() - k * s)), tol * np.max(np.abs(k * s)))
      scale = np.abs(b * s) + np.abs(mu * s) + np.abs(beta)
      self.assertTrue(np.all(np.abs(bias.numpy() - ((b - mu) * s + beta)) <= tol * scale))

  @parameterized.parameters(False, True)
  def test_small_cnn_against_float64(self, jit):
    """Logits and d loss / d x of the folded float32 model against a float64 Keras model.

    float32, folded or not: each conv sums n <= 45 products, within gamma_45 =
    2.7e-6 of sum |terms|; folding rounds each weight and bias up to 3 more
    times (rsqrt, * gamma, * kernel: <= 3 u32 = 1.8e-7), and the unfolded BN
    rounds 2-3 times per output instead. The inputs of each layer are O(1)
    (tanh outputs in [-1, 1], weights |w| <= 0.6 from glorot_uniform, BN
    scales gamma / sqrt(var + eps) <= 1.5 / sqrt(0.3) = 2.7), so sum |terms|
    is at most ~ 45 * 0.6 * 2.7 = 73 times a layer's output scale and each
    layer adds <= 2e-4 of it at worst, typically sqrt(n) u32 = 4e-7; tanh and
    the mean pool do not amplify it. Hence rtol = atol = 1e-4 (worst case for
    one layer, 4 layers of typical error far below it), for the logits and
    for the gradient (the same sums, transposed). The float64 check is the
    sharp one: folded and unfolded agree to <= ~4 layers * gamma_45(u64) * 73 =
    1.5e-12, and forgetting epsilon (1e-3 against variances in [0.3, 3])
    moves the logits by ~1e-4 (asserted > 1e-9).
    """
    model = _small_cnn()
    _randomise_batchnorm(model)
    model64 = _float64_copy(_small_cnn, model)
    x64 = tf.cast(self.x, tf.float64)
    ref_logits = model64(x64, training=False)
    ref_grad = _input_grad(model64, x64, self.y)

    @tf.function(jit_compile=jit)
    def folded(x):
      fn = folding.inference_fn(model)
      return fn(x), _input_grad(fn, x, self.y)

    logits, grad = folded(self.x)
    self.assertEqual(logits.dtype, tf.float32)
    self.assertAllClose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    self.assertAllClose(grad, ref_grad, rtol=1e-4, atol=1e-4)
    fn64 = folding.inference_fn(model64)
    self.assertAllClose(fn64(x64), ref_logits, rtol=1e-11, atol=1e-11)
    self.assertAllClose(_input_grad(fn64, x64, self.y), ref_grad, rtol=1e-11, atol=1e-11)
    # The comparisons can fail: a fold without epsilon, and BN with batch statistics.
    self.assertGreater(float(tf.reduce_max(tf.abs(_fold_without_epsilon(model64)(x64) -
                                                  ref_logits))), 1e-9)
    self.assertGreater(float(tf.reduce_max(tf.abs(ref_logits - model64(x64, training=True)))),
                       1e-2)

  def test_resnet32_matches_model(self):
    """ResNet-32 with trained-like BN statistics, compared in float64.

    Why float64: a ReLU network's input gradient is discontinuous at every ReLU
    kink. ResNet-32 on 3 images has 909,312 ReLU inputs (31 ReLU layers); the
    one nearest its kink can sit within ~1e-8 of its layer's RMS. Folding
    changes the float32 rounding by ~u32 relative per weight and per conv
    output, which is enough to flip such a unit, and whether one flips depends
    on the CPU's summation order (oneDNN/Eigen kernels, AVX-512 or AMX): a
    flipped unit moves the float32 input gradient by ~1e-2 of its maximum in
    one receptive field, as much as a fold that forgets BatchNorm's epsilon. So
    no float32 gradient tolerance both holds on every x86-64 CPU and still
    catches a wrong fold.

    In float64 a flip needs a unit within ~1e-15 of its RMS of the kink: with
    ~1e6 units that is a chance of ~1e-9. Rounding then bounds the difference:
    a 3x3 conv sums n = 9 C <= 576 products (worst case gamma_n = n u64 =
    6.4e-14 relative to sum |terms|), folding adds <= 3 roundings per weight
    and bias, and 31 conv+BN layers plus 15 residual adds compound it to
    <= ~31 * 6.4e-14 = 2e-12 if the layers do not amplify it (in float32 they
    hardly do: logits agree to a few u32). tol = 1e-9 is 500x that bound,
    while forgetting epsilon (1e-5 against variances in [0.3, 3]) moves the
    logits and the gradient by ~1e-5..1e-2 of their maxima (asserted > 1e3 tol).
    """
    model32 = models.resnet32(10)
    _randomise_batchnorm(model32)
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
    wrong_logits_err, wrong_grad_err = rel_err(_fold_without_epsilon(model))
    self.assertGreater(wrong_logits_err, 1e3 * tol)
    self.assertGreater(wrong_grad_err, 1e3 * tol)

    # float32, the dtype M2m runs in: logits only (continuous in the rounding
    # even across ReLU kinks), against the float64 model. Each conv is within
    # gamma_n of sum |terms|, typically sqrt(n) u32 = 1.4e-6 of its output;
    # random-walk-compounded over 31 layers that is ~sqrt(31) * 1.4e-6 =
    # 8e-6 of max |logit|, so 1e-4 leaves >= 10x. It would not catch a
    # forgotten epsilon; the float64 check above does.
    got32 = folding.inference_fn(model32)(x32).numpy()
    self.assertLess(np.max(np.abs(got32 - ref)) / np.max(np.abs(ref)), 1e-4)

  def test_training_unchanged(self):
    """training=True is Keras' Conv2D + BatchNorm with batch statistics, folded scope or not.

    Reference: the same network from Keras' own layers with the same weights.
    The same ops in the same order give the same float32 results (measured
    bitwise equal); 1e-6 only allows for a kernel choosing another summation
    order (gamma_45 = 2.7e-6 of sum |terms| at worst). Moving statistics must
    be updated in the same way.
    """
    model, stock = _small_cnn(), _stock_small_cnn()
    _randomise_batchnorm(model)
    stock.set_weights(model.get_weights())
    ref = stock(self.x, training=True)
    weights = conv_bn.folded_weights(model.layers)
    self.assertLen(weights, 3)
    with conv_bn.folded(weights):
      got = model(self.x, training=True)
    self.assertAllClose(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(model.get_weights(), stock.get_weights()):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-6)  # moving statistics updated alike
    # It can fail: inference mode (running statistics) gives other logits.
    self.assertGreater(float(tf.reduce_max(tf.abs(ref - stock(self.x, training=False)))), 1e-2)
    with self.assertRaisesRegex(ValueError, "inference mode"):
      folding.inference_fn(model)(self.x, training=True)

  def test_reads_current_weights(self):
    """A fold reads the weights once, when made; the model itself never changes."""
    model = _small_cnn()
    before = [w.numpy().copy() for w in model.weights]
    fn = folding.inference_fn(model)
    out_before = fn(self.x)
    for w, b in zip(model.weights, before):
      np.testing.assert_array_equal(w.numpy(), b)
    bn = model.get_layer("bn1")
    bn.moving_mean.assign(bn.moving_mean + 1.0)
    # The same folded computation twice (measured bitwise equal); the change it
    # must not see (moving_mean + 1) moves the logits far more (assertNotAllClose below).
    self.assertAllClose(fn(self.x), out_before)
    refolded = folding.inference_fn(model)(self.x)
    # Float32 rounding of the small tanh CNN (test_small_cnn_against_float64).
    self.assertAllClose(refolded, model(self.x, training=False), rtol=1e-4, atol=1e-4)
    self.assertNotAllClose(refolded, out_before)

  def test_fold_ends_with_the_call(self):
    """Outside the folded call (also after an error in it) the model is not folded."""
    model = _small_cnn()
    _randomise_batchnorm(model)
    ref = model(self.x, training=False)
    wrong = _fold_without_epsilon(model)  # bn2's epsilon is 1e-3: visibly different
    self.assertGreater(float(tf.reduce_max(tf.abs(wrong(self.x) - ref))), 1e-4)
    with self.assertRaises(ValueError):
      wrong(tf.zeros((1, 8, 8, 4)))  # wrong channel count, raised inside the scope
    self.assertAllEqual(model(self.x, training=False), ref)

  def test_unchanged_without_our_pairs(self):
    """Stock Keras layers, the MLP and plain callables: nothing to fold."""
    stock = _stock_small_cnn()
    self.assertIs(folding.inference_fn(stock), stock)
    mlp = models.mlp(10, 3, hidden_units=(4,))
    self.assertIs(folding.inference_fn(mlp), mlp)
    fn = lambda x, training=False: x
    self.assertIs(folding.inference_fn(fn), fn)

  def test_pair_checks(self):
    with self.assertRaisesRegex(ValueError, "can only absorb"):
      conv_bn.Conv2D(2, 3).absorb(keras.layers.BatchNormalization())
    with self.assertRaisesRegex(ValueError, "activation"):
      conv_bn.Conv2D(2, 3, activation="relu").absorb(conv_bn.BatchNormalization())
    with self.assertRaisesRegex(ValueError, "axis"):
      conv_bn.Conv2D(2, 3).absorb(conv_bn.BatchNormalization(axis=1))
    conv = conv_bn.Conv2D(2, 3)
    bn = conv_bn.BatchNormalization()  # held: the link is a weak reference
    conv.absorb(bn)
    with self.assertRaisesRegex(ValueError, "already absorbs"):
      conv.absorb(conv_bn.BatchNormalization())
    used = conv_bn.Conv2D(2, 3)
    used(tf.zeros((1, 4, 4, 1)))
    with self.assertRaisesRegex(ValueError, "must be new"):
      conv_bn.conv_bn(keras.Input((4, 4, 1)), used, conv_bn.BatchNormalization())

  def test_nested_model(self):
    inner = _small_cnn(name="inner")
    _randomise_batchnorm(inner)
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Softmax()(inner(inputs)))
    fn = folding.inference_fn(outer)
    self.assertIsNot(fn, outer)
    # Float32 rounding of the small tanh CNN (test_small_cnn_against_float64).
    self.assertAllClose(fn(self.x), outer(self.x, training=False), rtol=1e-4, atol=1e-4)
    wrong = _fold_without_epsilon(outer)  # the fold reaches the inner model's pairs
    self.assertNotAllClose(wrong(self.x), outer(self.x, training=False), rtol=1e-5, atol=1e-5)

  def test_keras_file_gives_unlinked_layers(self):
    """A model rebuilt from a .keras file computes the same function, unfolded."""
    model = _small_cnn()
    _randomise_batchnorm(model)
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "m.keras")
      model.save(path)
      loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded.get_layer("c1"), conv_bn.Conv2D)
    self.assertIsNone(loaded.get_layer("c1").batch_norm())
    self.assertIs(folding.inference_fn(loaded), loaded)
    # Same weights, same kernels (measured bitwise equal).
    self.assertAllClose(loaded(self.x, training=False), model(self.x, training=False),
                        rtol=1e-6, atol=1e-6)

  def test_mixed_precision_compute_dtype(self):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      model = _small_cnn()
    finally:
      keras.mixed_precision.set_global_policy("float32")
    _randomise_batchnorm(model)
    ref = model(self.x, training=False)
    kernel, bias = conv_bn.folded_weights(model.layers)[model.get_layer("c1")]
    self.assertEqual((kernel.dtype, bias.dtype), (tf.bfloat16, tf.bfloat16))
    got = folding.inference_fn(model)(self.x)
    self.assertEqual(got.dtype, ref.dtype)
    # bfloat16 keeps 8 significant bits: every rounding is up to 2^-9 = 2e-3
    # relative. The folded weights are folded in float32 and rounded once; the
    # unfolded path rounds the conv output and the BN output instead: ~2 extra
    # roundings per layer, 3 conv layers and the head, each adding ~2e-3 of
    # the activations' size (<= 0.9): ~1e-2 at worst. Tolerance 0.05 + 0.05 |ref|.
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
    # Smooth (tanh) nets: folded and unfolded float32 gradients differ by
    # float32 rounding (test_small_cnn_against_float64); the normalised steps
    # move x by at most steps * step_size = 0.9 times that. (gamma = 0: no
    # acceptance threshold to flip.)
    self.assertAllClose(x1, x0, rtol=1e-4, atol=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(x1 - x))), 0.1)  # something was translated


if __name__ == "__main__":
  tf.test.main()
