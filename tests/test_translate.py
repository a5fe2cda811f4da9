"""Tests of m2m_tf.m2m.translate (m2m_tf/m2m/translation.py) against a float64 NumPy
reimplementation.

The reference recomputes the M2m translation (paper eq. 3)

    x <- clip(x - eta * d / ||d||_2),  d = grad_x [CE(g(x), y_i) + lam * f(x)[y_j]]

with the analytic gradient of a one-hidden-layer ReLU MLP written by hand.

Tolerances (float32 TF against the float64 reference, u32 = 2^-24 = 6e-8):
one step computes two 6-8-3 MLPs forward and backward, each entry of d a sum
of <= 8 products of sums of <= 6, so d has a relative error of ~(6 + 8 + 3) u32
= 1e-6 before normalisation; the step moves x by eta times that, and T steps
add up to T * eta * 1e-6 (<= 1e-6 for the T * eta <= 1.5 used here, <= 1e-5
for the unclipped T * eta = 10), plus its growth through the step map's
Jacobian (mild: a ReLU MLP's gradient is piecewise constant in x, only the
softmax of g varies). Measured on an AMD EPYC, oneDNN on and off: <=
5.5e-7 against atol 1e-5 (1.5e-6 against 1e-4 unclipped). A wrong step (sign,
norm, lam, a missed clip) moves x by O(eta) = 1e-2..1.
Premise: no ReLU pre-activation on the reference trajectory is so close to its
kink that float32 rounding could flip it (a flip changes d discontinuously);
`_np_translate` asserts a margin of 1e-5 of sum |terms|, several times the
float32 error of a pre-activation (6 u32 = 4e-7 of sum |terms| for its own dot
product, plus the error x has accumulated, measured <= 1.5e-6). The
trajectories here keep >= 3.9e-5 (unclipped) and >= 2.2e-4 otherwise.
"""

from absl.testing import parameterized
import keras
import numpy as np
from scipy import stats as scipy_stats
import tensorflow as tf

from m2m_tf import m2m
from m2m_tf.m2m.translation import official_start
from m2m_tf.m2m.translation import random_start
from m2m_tf.m2m.translation import START_NOISE_MODES
from m2m_tf.m2m.translation import translate
from m2m_tf.m2m.params import START_NOISE_MODES as CONFIG_START_NOISE_MODES
from m2m_tf.models import mlp

D, H, K = 6, 8, 3


def _make_mlp(rng, scale=1.0, name="net"):
  """A 6-8-3 ReLU MLP with fixed N(0, scale^2) weights; returns (model, float64 params)."""
  model = mlp(D, K, hidden_units=(H,), name=name)
  params = [rng.normal(0.0, scale, w.shape) for w in model.get_weights()]
  model.set_weights([p.astype(np.float32) for p in params])
  # Round-trip through float32 so the reference uses the model's exact weights.
  return model, [p.astype(np.float32).astype(np.float64) for p in params]


def _np_forward(params, x):
  w1, b1, w2, b2 = params
  pre = x @ w1 + b1
  return pre, np.maximum(pre, 0.0) @ w2 + b2


def _np_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def _np_objective(gp, fp, x, y_seed, y_target, lam):
  """Per-sample CE(g(x), y_i) + lam * f(x)[y_j], float64 [B]."""
  _, zg = _np_forward(gp, x)
  zg = zg - zg.max(axis=1, keepdims=True)
  logp = zg - np.log(np.exp(zg).sum(axis=1, keepdims=True))
  _, zf = _np_forward(fp, x)
  rows = np.arange(len(x))
  return -logp[rows, y_target] + lam * zf[rows, y_seed]


def _np_grad(gp, fp, x, y_seed, y_target, lam):
  """Analytic d/dx of the per-sample objective (ReLU MLP backprop by hand)."""
  rows = np.arange(len(x))
  pre_g, zg = _np_forward(gp, x)
  dz_g = _np_softmax(zg)
  dz_g[rows, y_target] -= 1.0
  grad = ((dz_g @ gp[2].T) * (pre_g > 0)) @ gp[0].T
  pre_f, _ = _np_forward(fp, x)
  dz_f = np.zeros((len(x), K))
  dz_f[rows, y_seed] = lam
  grad += ((dz_f @ fp[2].T) * (pre_f > 0)) @ fp[0].T
  return grad


def _kink_margin(params, x):
  """min |pre-activation| / sum |terms|: how far the hidden ReLUs are from a kink."""
  w1, b1 = params[0], params[1]
  return float(np.min(np.abs(x @ w1 + b1) / (np.abs(x) @ np.abs(w1) + np.abs(b1))))


def _np_translate(gp, fp, x0, y_seed, y_target, lam, eta, steps, clip=(0.0, 1.0)):
  x = np.asarray(x0, np.float64)
  for _ in range(steps):
    # float32 rounding (<~1e-6 of sum |terms|) must not flip a ReLU (module docstring).
    margin = min(_kink_margin(gp, x), _kink_margin(fp, x))
    assert margin > 1e-5, f"a ReLU is {margin:.2g} from its kink: choose other test data"
    d = _np_grad(gp, fp, x, y_seed, y_target, lam)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    x = x - eta * d
    if clip is not None:
      x = np.clip(x, *clip)
  return x


class TranslateTest(tf.test.TestCase, parameterized.TestCase):

  def test_public_name_is_the_function(self):
    # The documented API is the function m2m_tf.m2m.translate, not a module of that name.
    self.assertIs(m2m.translate, translate)
    self.assertTrue(callable(m2m.translate))

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(123)
    self.g, self.gp = _make_mlp(rng, name="g")
    self.f, self.fp = _make_mlp(rng, name="f")
    self.x0 = rng.uniform(0.1, 0.9, (16, D)).astype(np.float32)
    self.y_seed = rng.integers(0, K, 16)
    self.y_target = (self.y_seed + 1 + rng.integers(0, K - 1, 16)) % K

  def _tf(self, **kw):
    args = dict(lam=0.5, step_size=0.1, steps=10)
    args.update(kw)
    return translate(self.g, self.f, self.x0, self.y_seed, self.y_target, **args).numpy()

  def _finite_difference_grad(self, x, lam, eps=1e-6):
    """Central differences of the float64 objective, one input coordinate at a time."""
    num = np.zeros_like(x)
    for k in range(D):
      e = np.zeros(D)
      e[k] = eps
      up = _np_objective(self.gp, self.fp, x + e, self.y_seed, self.y_target, lam)
      down = _np_objective(self.gp, self.fp, x - e, self.y_seed, self.y_target, lam)
      num[:, k] = (up - down) / (2 * eps)
    return num

  def test_reference_gradient_matches_finite_differences(self):
    # Validates the hand-written NumPy gradient the other tests rely on.
    x = self.x0.astype(np.float64)
    grad = _np_grad(self.gp, self.fp, x, self.y_seed, self.y_target, 0.7)
    num = self._finite_difference_grad(x, 0.7)
    # float64 central differences, eps = 1e-6: truncation error ~eps^2 |f'''| ~ 1e-12
    # (zero inside a linear ReLU region; no kink is within eps: margin 2.3e-2
    # of sum |terms| here), cancellation ~u64 |f| / eps ~ 1e-10 (|f| ~ 1). Measured 1.7e-9.
    np.testing.assert_allclose(grad, num, atol=1e-6)

  def test_one_step_direction_is_normalised_finite_difference_gradient(self):
    x1 = self._tf(lam=0.7, step_size=0.01, steps=1, clip_min=None, clip_max=None)
    direction = (self.x0 - x1) / 0.01
    # x1 = x0 - 0.01 d is rounded to float32 (half an ulp <= 3e-8 for |x| < 1),
    # so (x0 - x1) / 0.01 is off by <= 3e-6 per entry (plus d's ~1e-6), <= ~1e-5
    # in the norm of 6 entries; measured 3.2e-6.
    np.testing.assert_allclose(np.linalg.norm(direction, axis=1), np.ones(16), atol=1e-4)
    x = self.x0.astype(np.float64)
    num = self._finite_difference_grad(x, 0.7)
    num /= np.linalg.norm(num, axis=1, keepdims=True)
    # The same <= ~4e-6 per entry in `direction` (FD error ~1e-9); measured 2.9e-6.
    np.testing.assert_allclose(direction, num, atol=2e-4)

  @parameterized.parameters((0.5, 0.1, 10), (0.0, 0.05, 7), (2.0, 0.3, 5), (0.5, 0.1, 0))
  def test_matches_numpy_float64(self, lam, eta, steps):
    got = self._tf(lam=lam, step_size=eta, steps=steps)
    want = _np_translate(self.gp, self.fp, self.x0, self.y_seed, self.y_target, lam, eta, steps)
    self.assertAllClose(got, want, atol=1e-5, rtol=0)  # module docstring: measured <= 2e-7
    self.assertAllInRange(got, 0.0, 1.0)
    if steps:
      self.assertGreater(np.abs(got - self.x0).max(), 1e-2)

  def test_large_steps_hit_the_clip_range(self):
    got = self._tf(step_size=2.0, steps=5)
    want = _np_translate(self.gp, self.fp, self.x0, self.y_seed, self.y_target, 0.5, 2.0, 5)
    self.assertAllClose(got, want, atol=1e-5, rtol=0)  # module docstring: measured 5.5e-7
    self.assertTrue(np.any(got == 0.0) or np.any(got == 1.0))

  def test_no_clip_leaves_x_unclipped(self):
    got = self._tf(step_size=2.0, steps=5, clip_min=None, clip_max=None)
    want = _np_translate(self.gp, self.fp, self.x0, self.y_seed, self.y_target, 0.5, 2.0, 5,
                         clip=None)
    # Unclipped, T * eta = 10: ~10x the clipped error (module docstring); measured 1.5e-6.
    self.assertAllClose(got, want, atol=1e-4, rtol=0)
    self.assertTrue(np.any(got < 0.0) or np.any(got > 1.0))
    # Unclipped T steps of length eta move each sample at most T * eta (+ float32
    # rounding of x, ~1e-6 over 5 steps).
    self.assertAllLessEqual(np.linalg.norm(got - self.x0, axis=1), 10.0 + 1e-4)

  def test_one_clip_bound_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "clip_min and clip_max"):
      self._tf(clip_min=0.0, clip_max=None)

  def test_negative_steps_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "steps"):
      self._tf(steps=-1)

  def test_start_noise_needs_seed(self):
    with self.assertRaisesRegex(ValueError, "seed"):
      self._tf(start_noise=0.5)

  def test_eager_function_and_xla_agree(self):
    eager = self._tf()

    def fn(x, ys, yt):
      return translate(self.g, self.f, x, ys, yt, lam=0.5, step_size=0.1, steps=10)

    args = (tf.constant(self.x0), tf.constant(self.y_seed), tf.constant(self.y_target))
    graph = tf.function(fn)(*args).numpy()
    xla = tf.function(fn, jit_compile=True)(*args).numpy()
    # Eager and tf.function run the same kernels (measured: bitwise equal);
    # XLA fuses and reorders the float32 sums, so it differs like the float64
    # reference does (module docstring; measured 2.4e-7).
    self.assertAllClose(eager, graph, atol=1e-6, rtol=0)
    self.assertAllClose(eager, xla, atol=1e-5, rtol=0)

  def test_function_agrees_with_eager_with_start_noise(self):
    seed = tf.constant([3, 4], tf.int64)
    eager = self._tf(start_noise=0.5, seed=seed, start_noise_mode="per_sample")

    def fn(x, ys, yt):
      return translate(self.g, self.f, x, ys, yt, lam=0.5, step_size=0.1, steps=10,
                       start_noise=0.5, seed=seed, start_noise_mode="per_sample")

    args = (tf.constant(self.x0), tf.constant(self.y_seed), tf.constant(self.y_target))
    # The same kernels eagerly and in a graph: measured bitwise equal.
    self.assertAllClose(eager, tf.function(fn)(*args).numpy(), atol=1e-6, rtol=0)
    # NOTE: on CPU, XLA's philox stateless_normal/uniform give different
    # numbers than the TF kernels for the same seed (measured here), so the
    # XLA random start is a different (equally distributed) draw: compare its
    # radius, not its value.
    x0 = tf.constant(np.full((300, D), 0.5, np.float32))
    xla = tf.function(lambda x: random_start(x, 0.3, seed), jit_compile=True)(x0)
    norms = np.linalg.norm(xla.numpy() - 0.5, axis=1)
    # radius * u with u <= 1, in float32: the norm is off by a few u32 = ~2e-7 relative.
    self.assertAllLessEqual(norms, 0.3 * (1 + 1e-5))
    self.assertGreater(scipy_stats.kstest(norms / 0.3, "uniform").pvalue, 1e-3)

  def test_start_noise_radius_and_determinism(self):
    radius = 0.3
    x0 = np.full((2000, 5), 0.5, np.float32)
    noisy = random_start(tf.constant(x0), radius, tf.constant([7, 1], tf.int64)).numpy()
    norms = np.linalg.norm(noisy - x0, axis=1)
    # radius * u with u <= 1, in float32: the norm is off by a few u32 = ~2e-7 relative.
    self.assertAllLessEqual(norms, radius * (1 + 1e-5))
    # ||delta_b|| = radius * u_b with u_b ~ U(0, 1) PER SAMPLE (the official
    # code normalised over the batch axis, which makes every norm tiny).
    ks = scipy_stats.kstest(norms / radius, "uniform")
    self.assertGreater(ks.pvalue, 1e-3)
    again = random_start(tf.constant(x0), radius, tf.constant([7, 1], tf.int64)).numpy()
    self.assertAllEqual(noisy, again)
    other = random_start(tf.constant(x0), radius, tf.constant([8, 1], tf.int64)).numpy()
    self.assertGreater(np.abs(other - noisy).max(), 1e-3)

  def test_translate_with_start_noise_and_zero_steps(self):
    x0 = np.full((500, 5), 0.5, np.float32)
    g = keras.Sequential([keras.Input((5,)), keras.layers.Dense(K)])
    y = np.zeros(500, np.int32)
    seed = tf.constant([1, 2], tf.int64)
    args = dict(lam=0.5, step_size=0.1, steps=0, start_noise=0.4, seed=seed,
                start_noise_mode="per_sample")
    out = translate(g, g, x0, y, y, clip_min=None, clip_max=None, **args).numpy()
    self.assertAllLessEqual(np.linalg.norm(out - x0, axis=1), 0.4 * (1 + 1e-5))
    self.assertGreater(np.linalg.norm(out - x0, axis=1).max(), 0.3)
    self.assertAllEqual(out, translate(g, g, x0, y, y, clip_min=None, clip_max=None,
                                       **args).numpy())
    # With clipping the start is clipped into [0, 1].
    far = np.full((500, 5), 0.99, np.float32)
    out = translate(g, g, far, y, y, **args).numpy()
    self.assertAllInRange(out, 0.0, 1.0)
    # The official law (the default) over these 500 rows: each of the 5 columns has norm 0.4.
    official = translate(g, g, x0, y, y, clip_min=None, clip_max=None,
                         **dict(args, start_noise_mode="official")).numpy()
    self.assertAllClose(np.linalg.norm(official - x0, axis=0), [0.4] * 5, rtol=1e-4)

  @parameterized.parameters("official", "per_sample")
  def test_reference_with_start_noise(self, mode):
    # The random start is x0 + delta; the steps then follow the reference from there.
    seed = tf.constant([5, 9], tf.int64)
    law = official_start if mode == "official" else random_start
    start = np.clip(law(tf.constant(self.x0), 0.5, seed).numpy(), 0, 1)
    got = self._tf(start_noise=0.5, seed=seed, start_noise_mode=mode)
    want = _np_translate(self.gp, self.fp, start, self.y_seed, self.y_target, 0.5, 0.1, 10)
    self.assertAllClose(got, want, atol=1e-5, rtol=0)  # module docstring: measured 1.7e-7


class TranslationEffectTest(tf.test.TestCase):
  """The translation does what M2m needs: g predicts the target, f's seed logit drops."""

  def test_raises_g_target_probability_and_lam_lowers_f_seed_logit(self):
    rng = np.random.default_rng(0)
    d, k, b = 10, 4, 200
    g = keras.Sequential([keras.Input((d,)), keras.layers.Dense(k)])
    g.set_weights([rng.normal(0, 1.0, (d, k)).astype(np.float32), np.zeros(k, np.float32)])
    f = keras.Sequential([keras.Input((d,)), keras.layers.Dense(k)])
    f.set_weights([rng.normal(0, 1.0, (d, k)).astype(np.float32), np.zeros(k, np.float32)])
    x0 = rng.uniform(0.2, 0.8, (b, d)).astype(np.float32)
    y_seed = rng.integers(0, k, b)
    y_target = (y_seed + rng.integers(1, k, b)) % k
    rows = np.arange(b)

    def g_prob(x):
      return tf.nn.softmax(g(x)).numpy()[rows, y_target]

    x_lam0 = translate(g, f, x0, y_seed, y_target, lam=0.0, step_size=0.1, steps=10).numpy()
    x_lam1 = translate(g, f, x0, y_seed, y_target, lam=1.0, step_size=0.1, steps=10).numpy()
    p0, p_lam0 = g_prob(x0), g_prob(x_lam0)
    self.assertGreater(p_lam0.mean(), p0.mean() + 0.2)
    self.assertGreater(np.mean(p_lam0 > p0), 0.95)
    self.assertGreater(g_prob(x_lam1).mean(), p0.mean() + 0.1)
    f_seed = lambda x: f(x).numpy()[rows, y_seed]
    self.assertLess(f_seed(x_lam1).mean(), f_seed(x_lam0).mean() - 0.1)


if __name__ == "__main__":
  tf.test.main()


def _np_renorm(noise, rows, radius):
  """float64 transcription of the official `noise.renorm(p=2, dim=1, maxnorm=radius)` on the
  rows `rows` of a channels-last array: each channel's slice over those rows is scaled by
  radius / (norm + 1e-7) where its L2 norm exceeds radius (PyTorch's renorm), else kept."""
  inside = noise[rows].astype(np.float64)
  norm = np.sqrt(np.sum(inside ** 2, axis=tuple(range(inside.ndim - 1))))
  factor = np.where(norm > radius, radius / (norm + 1e-7), 1.0)
  return noise.astype(np.float64) * factor


class OfficialStartTest(tf.test.TestCase, parameterized.TestCase):
  """The official random start against a float64 NumPy transcription of PyTorch's renorm.

  Tolerance: the float32 norm of a channel sums at most n*H*W = 96*64 = 6144 squares; a
  recursive float32 sum errs by at most (N-1) u32 = 3.7e-4 of the total (a pairwise one far
  less), the square root halves it, so each delta is within 2e-4 of its own size; adding it to
  x0 in [0, 1] rounds by u32 = 6e-8. A wrong row set (the candidates instead of the slots with a
  seed) or a wrong axis changes the factor by sqrt(n'/n), tens of percent here.
  """

  def test_the_transcription_is_torch_renorm(self):
    torch = __import__("torch")
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (7, 3, 4, 4))  # NCHW, as PyTorch's
    want = torch.from_numpy(noise).renorm(2, 1, 0.5).numpy()
    got = _np_renorm(noise.transpose(0, 2, 3, 1), np.ones(7, bool), 0.5).transpose(0, 3, 1, 2)
    self.assertAllClose(got, want, rtol=1e-12, atol=0)

  @parameterized.parameters(((96, 8, 8, 3), 96), ((96, 8, 8, 3), 37), ((20, 8, 8, 3), 1),
                            ((40, 6), 13))
  def test_matches_the_transcription(self, shape, n):
    rng = np.random.default_rng(n)
    x0 = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    rows = np.zeros(shape[0], bool)
    rows[rng.choice(shape[0], n, replace=False)] = True
    seed = tf.constant([3, n], tf.int64)
    # With a radius no norm exceeds, the start from zeros is the raw U(-0.5, 0.5) noise.
    noise = official_start(tf.zeros(shape), 1e9, seed).numpy()
    self.assertAllInRange(noise, -0.5, 0.5)
    got = official_start(tf.constant(x0), 0.5, seed, tf.constant(rows)).numpy()
    want = _np_renorm(noise, rows, 0.5)
    self.assertAllClose(got - x0, want, rtol=2e-4, atol=1e-7)
    # The translated rows' channels now have norm 0.5: each start ~0.5 sqrt(C / n) away.
    inside = (got - x0)[rows].astype(np.float64)
    norms = np.sqrt(np.sum(inside ** 2, axis=tuple(range(inside.ndim - 1))))
    self.assertAllClose(norms, [0.5] * shape[-1], rtol=2e-4)
    if n < shape[0]:  # the row set matters: all rows would give a smaller start
      every = _np_renorm(noise, np.ones(shape[0], bool), 0.5)
      self.assertGreater(np.abs(every - want).max(), 0.2 * np.abs(want).max())

  def test_modes_are_the_configs(self):
    self.assertEqual(START_NOISE_MODES, CONFIG_START_NOISE_MODES)
    with self.assertRaisesRegex(ValueError, "start_noise_mode must be one of"):
      translate(None, None, np.zeros((2, 3), np.float32), [0, 0], [1, 1], lam=0.5,
                step_size=0.1, steps=0, start_noise=0.5, seed=[1, 2], start_noise_mode="gauss")
