"""Tests for m2m_tf.models: shapes, parameter counts, padding, heads, init."""

import math
import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf import models
from m2m_tf.models import resnet
from helpers import OFFICIAL_NPZ

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _trainable_params(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _conv_nchw(x, w, stride, pad):
  """float64 reference of PyTorch conv2d (no bias): x (N,C,H,W), w (O,C,k,k)."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = w.shape[-1]
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
  win = win[:, :, ::stride, ::stride]
  return np.einsum("nchwij,ocij->nohw", win, w)


def _bn_nchw(x, sd, key):
  g, b = sd[key + ".weight"], sd[key + ".bias"]
  m, v = sd[key + ".running_mean"], sd[key + ".running_var"]
  sh = (1, -1, 1, 1)
  return (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + 1e-5) * g.reshape(
      sh) + b.reshape(sh)


def numpy_resnet32(images_nhwc, sd):
  """float64 forward of the official ResNet-32 from a PyTorch state_dict."""
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  mean = np.array(resnet.CIFAR10_MEAN).reshape(1, 3, 1, 1)
  std = np.array(resnet.CIFAR10_STD).reshape(1, 3, 1, 1)
  x = (images_nhwc.astype(np.float64).transpose(0, 3, 1, 2) - mean) / std
  relu = lambda t: np.maximum(t, 0.0)
  x = relu(_bn_nchw(_conv_nchw(x, sd["conv_1_3x3.weight"], 1, 1), sd, "bn_1"))
  for stage in (1, 2, 3):
    for block in range(5):
      p = f"stage_{stage}.{block}"
      stride = 2 if (stage > 1 and block == 0) else 1
      out = relu(_bn_nchw(_conv_nchw(x, sd[p + ".conv_a.weight"], stride, 1),
                          sd, p + ".bn_a"))
      out = _bn_nchw(_conv_nchw(out, sd[p + ".conv_b.weight"], 1, 1), sd,
                     p + ".bn_b")
      if stride == 2:  # DownsampleA: subsample, then zero channels.
        sub = x[:, :, ::2, ::2]
        x = np.concatenate([sub, np.zeros_like(sub)], axis=1)
      x = relu(x + out)
  feat = x.mean(axis=(2, 3))
  return feat @ sd["linear.weight"].T + sd["linear.bias"]


class ModelShapesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("mlp", "mlp", (1000,), 36, False),
      ("mlp_normed", "mlp", (50,), 23, True),
      ("resnet32", "resnet32", (32, 32, 3), 10, False),
      ("resnet32_normed", "resnet32", (32, 32, 3), 100, True),
      ("preact_resnet18", "preact_resnet18", (32, 32, 3), 397, False),
      ("resnet50", "resnet50", (64, 64, 3), 7, True),
  )
  def test_output_shape_and_finite(self, arch, input_shape, k, normed):
    model = models.build_model(arch, input_shape, k, normed_head=normed)
    x = np.random.default_rng(0).random((2,) + input_shape, np.float32)
    y = model(x, training=False)
    self.assertEqual(tuple(y.shape), (2, k))
    self.assertTrue(np.all(np.isfinite(y.numpy())))
    if normed:
      self.assertIsInstance(model.layers[-1], models.NormedDense)
      self.assertAllInRange(y.numpy(), -1.0 - 1e-6, 1.0 + 1e-6)

  def test_unknown_arch(self):
    with self.assertRaisesRegex(ValueError, "unknown arch 'vgg16'.*resnet32"):
      models.build_model("vgg16", (32, 32, 3), 10)

  def test_mlp_needs_vector_input(self):
    with self.assertRaisesRegex(ValueError, "1-D input_shape"):
      models.build_model("mlp", (32, 32, 3), 10)

  def test_bad_channels(self):
    with self.assertRaisesRegex(ValueError, "1 channels but mean has 3"):
      models.resnet32(10, input_shape=(32, 32, 1))


class ParameterCountTest(tf.test.TestCase):

  def test_resnet32_matches_official_checkpoint(self):
    model = models.resnet32(10)
    count = _trainable_params(model)
    with np.load(OFFICIAL_NPZ) as d:
      official = sum(d[k].size for k in d.files
                     if not k.endswith(_RUNNING_STATS))
    print(f"ResNet-32 (K=10) trainable parameters: {count} "
          f"(official checkpoint: {official})")
    self.assertEqual(count, official)
    self.assertEqual(count, 464154)  # "0.46 M".
    self.assertEqual(_trainable_params(models.resnet32(100)),
                     464154 + 90 * 65)

  def test_preact_resnet18(self):
    count = _trainable_params(models.preact_resnet18(10))
    print(f"PreAct-ResNet-18 (K=10) trainable parameters: {count}")
    self.assertEqual(count, 11171146)  # kuangliu/pytorch-cifar value.

  def test_resnet50(self):
    count = _trainable_params(models.resnet50(1000))
    print(f"ResNet-50 (K=1000) trainable parameters: {count}")
    self.assertEqual(count, 25557032)  # torchvision value.

  def test_mlp(self):
    self.assertEqual(_trainable_params(models.mlp(1000, 36)),
                     1000 * 256 + 256 + 256 * 36 + 36)


class ResNet32ArchitectureTest(tf.test.TestCase):

  def test_layer_conventions(self):
    model = models.resnet32(10)
    self.assertIsInstance(model.layers[1], models.Standardize)
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        self.assertEqual(layer.epsilon, 1e-5)
        self.assertEqual(layer.momentum, 0.9)
      if isinstance(layer, keras.layers.Conv2D):
        self.assertFalse(layer.use_bias)
        # Symmetric padding 1: 'same' at stride 1, ZeroPadding2D + 'valid' at stride 2.
        self.assertEqual(layer.padding, "same" if layer.strides == (1, 1) else "valid")
        self.assertIsNone(layer.kernel_regularizer)
    self.assertIsNotNone(model.get_layer("linear").bias)

  def _conv_against_float64(self, conv_name, input_layer, stride):
    """A conv's output against a float64 conv with padding 1 on all sides."""
    keras.utils.set_random_seed(1)
    model = models.resnet32(10)
    x = np.random.default_rng(1).random((2, 32, 32, 3), np.float32)
    conv = model.get_layer(conv_name)
    feat_in = keras.Model(model.input, model.get_layer(input_layer).output)
    conv_out = keras.Model(model.input, conv.output)
    f = feat_in(x).numpy().astype(np.float64).transpose(0, 3, 1, 2)
    w = conv.kernel.numpy().astype(np.float64).transpose(3, 2, 0, 1)
    ref = _conv_nchw(f, w, stride=stride, pad=1).transpose(0, 2, 3, 1)
    got = conv_out(x).numpy()
    self.assertEqual(got.shape, (2, 16, 16, 32))
    # f and w are the model's own float32 values, so the conv's float32
    # rounding is the only difference. A float32 sum of n products, in ANY
    # order (blocked, FMA, AVX-512, AMX, oneDNN or Eigen), is within
    # gamma_n * sum |w f| of the exact value, gamma_n = n u / (1 - n u),
    # u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1).
    # n = 9 * C_in = 144 or 288: 8.6e-6 or 1.7e-5 of sum |w f| (up to 150
    # here); measured 3.8e-7 and 1.4e-7 of it. A wrong padding moves the border
    # outputs by whole terms |w f| (> 1e-2, see the stride-2 test).
    n = w.shape[1] * w.shape[2] * w.shape[3]
    gamma_n = n * 2.0**-24 / (1 - n * 2.0**-24)
    bound = gamma_n * _conv_nchw(np.abs(f), np.abs(w), stride=stride, pad=1).transpose(0, 2, 3, 1)
    self.assertTrue(np.all(np.abs(got - ref) <= bound),
                    f"max |error| / bound = {np.max(np.abs(got - ref) / bound):.3g}")
    return conv, f, ref

  def test_stride1_conv_pads_symmetrically(self):
    """stage_2.1.conv_b, a 'same' conv."""
    self._conv_against_float64("stage_2.1.conv_b", "stage_2.1.relu_a", stride=1)

  def test_stride2_conv_pads_symmetrically(self):
    """stage_2.0.conv_a, ZeroPadding2D(1) + 'valid'."""
    conv, f, ref = self._conv_against_float64("stage_2.0.conv_a", "stage_1.4.relu", stride=2)
    # Keras 'same' pads (0, 1) for stride 2, which this test must tell apart.
    same = tf.nn.conv2d(f.transpose(0, 2, 3, 1).astype(np.float32),
                        conv.kernel, strides=2, padding="SAME").numpy()
    self.assertGreater(np.max(np.abs(same - ref)), 1e-2)

  def test_forward_matches_numpy_reference_on_official_weights(self):
    model = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
    with np.load(OFFICIAL_NPZ) as d:
      sd = {k: d[k] for k in d.files}
    x = np.random.default_rng(2).random((3, 32, 32, 3), np.float32)
    ref = numpy_resnet32(x, sd)
    got = model(x, training=False).numpy()
    print(f"ResNet-32 vs NumPy float64 reference: max |diff| = "
          f"{np.max(np.abs(got - ref)):.3g} (max |logit| "
          f"{np.max(np.abs(ref)):.3g})")
    # float32 through 31 convs (fan-in <= 576, ~sqrt(n) u = 1.4e-6 each,
    # u = 2^-24) and BNs: ~sqrt(31) * 1.4e-6 = 8e-6 relative, ~5e-5 for
    # logits up to 6.5. Measured 2.0e-6. Keras' default BN epsilon (1e-3
    # instead of PyTorch's 1e-5) would move them by 8e-2.
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)

  def test_downsample_a(self):
    x = np.random.default_rng(3).random((2, 7, 5, 4), np.float32)
    y = models.DownsampleA()(x).numpy()
    self.assertEqual(y.shape, (2, 4, 3, 8))
    np.testing.assert_array_equal(y[..., :4], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 4:], 0.0)

  def test_standardize(self):
    x = np.random.default_rng(4).random((2, 3, 3, 3), np.float32)
    y = models.Standardize(resnet.CIFAR10_MEAN, resnet.CIFAR10_STD)(x).numpy()
    ref = (x.astype(np.float64) - np.array(resnet.CIFAR10_MEAN)) / np.array(
        resnet.CIFAR10_STD)
    # float32: mean and std rounded to float32 (3e-8 / 0.25 = 1.2e-7 of
    # output), the subtraction and the division (u = 6e-8 each, |y| <= 2.1):
    # <= ~5e-7; measured 1.9e-7.
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


class NormedDenseTest(tf.test.TestCase):

  def test_matches_numpy_cosine(self):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    x[0] = 0.0  # A zero row gives zero logits (F.normalize's eps), not NaN.
    layer = models.NormedDense(5)
    y = layer(x).numpy()
    w = layer.kernel.numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    xn = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    ref = xn @ wn
    # float32 cosine of d = 8 entries, u = 2^-24: each normalisation is a
    # sum of 8 squares (gamma_8 = 8u), an rsqrt (~half of that, plus a few ulp:
    # its AVX / AVX-512 approximation + Newton step differs per CPU) and a
    # product: <= ~9u per entry, 18u for both; the matmul adds gamma_8 sum
    # |x_n w_n| <= 8u. So |y - ref| <= 26u = 1.6e-6 (absolute: sum |x_n w_n|
    # <= 1), 3.1e-6 between two evaluations. Measured 1.2e-7 and 1.1e-7. Not
    # normalising x or W (scale 3 below) changes y by O(1).
    bound = 26 * 2.0**-24
    np.testing.assert_allclose(y, ref, rtol=0, atol=bound)
    self.assertAllInRange(y, -1.0 - bound, 1.0 + bound)
    self.assertAllEqual(y[0], np.zeros(5))
    # Scale invariance in x and in each column of W.
    np.testing.assert_allclose(layer(3.0 * x).numpy(), y, atol=2 * bound)

  def test_gradient_finite_at_zero_input(self):
    layer = models.NormedDense(3)
    x = tf.constant(np.zeros((2, 4), np.float32))
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = tf.reduce_sum(layer(x))
    grads = tape.gradient(y, [x, layer.kernel])
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g.numpy())))

  def test_columns_start_at_unit_norm_like_torch_renorm(self):
    # LDAM-DRW: W.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5) (PyTorch oracle).
    import torch
    layer = models.NormedDense(10)
    layer.build((None, 64))
    w = layer.kernel.numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, atol=1e-6)
    draw = np.random.default_rng(0).uniform(-1, 1, size=(64, 10)).astype(np.float32)
    ref = torch.from_numpy(draw.copy()).renorm_(2, 1, 1e-5).mul_(1e5).numpy()
    from m2m_tf.models.heads import unit_columns
    np.testing.assert_allclose(np.asarray(unit_columns(draw)), ref, rtol=1e-5)
    # Not merely normalised: still a U(-1, 1) direction (entries of both signs, not all equal).
    self.assertGreater(np.std(w), 0.05)
    self.assertTrue(np.any(w < 0) and np.any(w > 0))

  def test_config_roundtrip(self):
    layer = models.NormedDense(7, name="head")
    clone = models.NormedDense.from_config(layer.get_config())
    self.assertEqual(clone.units, 7)
    self.assertEqual(clone.name, "head")

  def test_bad_units(self):
    with self.assertRaisesRegex(ValueError, "units must be positive"):
      models.NormedDense(0)


class MlpInitTest(tf.test.TestCase):

  def test_torch_linear_init_bounds(self):
    keras.utils.set_random_seed(0)
    model = models.mlp(1000, 36)
    for name, fan_in in (("fc1", 1000), ("classifier", 256)):
      layer = model.get_layer(name)
      bound = 1.0 / math.sqrt(fan_in)
      for w in (layer.kernel.numpy(), layer.bias.numpy()):
        self.assertLessEqual(np.max(np.abs(w)), bound)
      k = layer.kernel.numpy()
      # Uniform on [-b, b]: fills the range, std b / sqrt(3).
      self.assertGreater(np.max(np.abs(k)), 0.99 * bound)
      # Statistical, not rounding: the sample std of N uniform draws has a
      # relative sd of sqrt(0.8 / N) / 2 (kurtosis 9/5): 9e-4 for fc1 (N = 256000),
      # 4.7e-3 for the classifier (N = 9216), so 0.05 is >= 10 sd (fixed seed).
      # Keras' default glorot_uniform would be off by > 2x.
      self.assertAllClose(np.std(k), bound / math.sqrt(3), rtol=0.05)
      self.assertGreater(np.max(np.abs(layer.bias.numpy())), 0.5 * bound)

  def test_hidden_layers_and_relu(self):
    model = models.mlp(4, 3, hidden_units=(5, 6))
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    self.assertEqual([l.units for l in dense], [5, 6, 3])
    x = np.random.default_rng(6).normal(size=(3, 4)).astype(np.float32)
    h = x.astype(np.float64)
    for i, l in enumerate(dense):
      h = h @ l.kernel.numpy() + l.bias.numpy()
      if i < 2:
        h = np.maximum(h, 0.0)
    # float32 4-5-6-3 MLP: three dot products of <= 6 terms, ~3 * 6 u = 1e-6
    # relative at worst (|h| < 1; the forward pass is continuous across ReLU
    # kinks); measured 1.8e-8. Skipping a ReLU changes h by O(0.1).
    np.testing.assert_allclose(model(x).numpy(), h, rtol=1e-5, atol=1e-5)

  def test_bad_args(self):
    with self.assertRaisesRegex(ValueError, "hidden_units"):
      models.mlp(10, 2, hidden_units=(0,))


class CompileAndSaveTest(tf.test.TestCase):

  def test_jit_compile(self):
    for model, shape in ((models.mlp(20, 4, normed_head=True), (3, 20)),
                         (models.resnet32(10), (2, 32, 32, 3))):
      x = np.random.default_rng(7).random(shape, np.float32)
      fn = tf.function(lambda t, m=model: m(t, training=False),
                       jit_compile=True)
      # XLA and the TF kernels sum in other orders: two float32 evaluations,
      # each ~sqrt(31) * sqrt(576) u = 8e-6 relative (see the float64 test
      # above). The untrained ResNet's logits reach ~460 (BN with initial
      # statistics), so rtol carries it; measured 1.8e-4 absolute = 4e-7 of
      # max |logit| (3e-8 for the MLP).
      np.testing.assert_allclose(fn(tf.constant(x)).numpy(),
                                 model(x, training=False).numpy(),
                                 rtol=1e-4, atol=1e-4)

  def test_keras_file_roundtrip(self):
    model = models.resnet32(5, normed_head=True)
    x = np.random.default_rng(8).random((2, 32, 32, 3), np.float32)
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "m.keras")
      model.save(path)
      loaded = keras.models.load_model(path)
    # Same weights, same kernels: measured bitwise equal (a lost weight or a
    # wrong head changes the logits by O(0.1)).
    np.testing.assert_allclose(loaded(x, training=False).numpy(),
                               model(x, training=False).numpy(), atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
