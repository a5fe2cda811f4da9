"""Tests of m2m_tf.losses against NumPy float64 formulas.

Tolerances: u32 = 2^-24 = 6e-8, u64 = 2^-53 = 1.1e-16. float64 computations
are compared at rtol 1e-10..1e-12 (a handful of operations, each within a few
u64: ~1e-15 relative); float32 ones at a tolerance derived next to each
assertion. Measured margins are from an AMD EPYC, oneDNN on and off.
"""

import json
import os
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from m2m_tf import losses

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Deliberately unsorted: the largest class is not class 0.
_COUNTS = np.array([50, 5000, 7, 300, 1, 1200], np.int64)


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(axis=1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _np_ce(y, z):
  return -_np_log_softmax(z)[np.arange(len(y)), y]


def _np_focal(y, z, gamma):
  ce = _np_ce(y, z)
  p = np.exp(-ce)
  return (1.0 - p) ** gamma * ce


def _np_ldam(y, z, counts, max_m=0.5, s=30.0):
  m = np.asarray(counts, np.float64) ** -0.25
  m = m / m.max() * max_m
  z = np.array(z, np.float64)
  z[np.arange(len(y)), y] -= m[y]
  return _np_ce(y, s * z)


def _np_logit_adjusted(y, z, counts, tau):
  """Menon et al. (2021) eq. 10 in float64: -log(e^{z_y + tau log pi_y} / sum_j e^{z_j + tau
  log pi_j}), pi = N / sum N, written out term by term (no log-softmax helper)."""
  z = np.asarray(z, np.float64)
  pi = np.asarray(counts, np.float64) / np.sum(np.asarray(counts, np.float64))
  a = z + tau * np.log(pi)
  m = a.max(axis=1, keepdims=True)  # the same value, computed without overflow
  return -(a[np.arange(len(y)), y] - m[:, 0]) + np.log(np.sum(np.exp(a - m), axis=1))


def _data(b=16, k=len(_COUNTS), scale=1.0, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, k)) * scale
  y = rng.integers(0, k, size=b)
  return y, z


class ClassWeightsTest(tf.test.TestCase, parameterized.TestCase):

  def test_none(self):
    self.assertAllEqual(losses.class_weights("none", _COUNTS), np.ones(6))

  def test_rw(self):
    w = losses.class_weights("rw", _COUNTS)
    self.assertEqual(w.dtype, np.float32)
    expected = (1.0 / _COUNTS) / np.sum(1.0 / _COUNTS) * len(_COUNTS)
    # w is a float64 result rounded to float32 (<= u32 = 6e-8 relative); its
    # float32 mean adds <= 6 u32 more. Measured: 1.2% of the tolerance.
    self.assertAllClose(w, expected, rtol=1e-6)
    self.assertAllClose(w.mean(), 1.0, rtol=1e-6)
    # The smallest class (index 4, one example) gets the largest weight.
    self.assertEqual(int(np.argmax(w)), 4)
    self.assertEqual(int(np.argmin(w)), 1)

  @parameterized.parameters(0.9999, 0.99, 0.9)
  def test_cb(self, beta):
    w = losses.class_weights("cb", _COUNTS, beta=beta)
    eff = (1.0 - np.power(beta, _COUNTS.astype(np.float64))) / (1.0 - beta)
    expected = (1.0 / eff) / np.sum(1.0 / eff) * len(_COUNTS)
    # float64 (expm1 keeps 1 - beta^N accurate) rounded to float32: <= u32
    # relative; the float32 sum of 6 weights adds <= 5 u32 of 6: <= 2e-6
    # absolute against 7e-6. Measured: 0.5% of the tolerance, and 4.8e-7 for the sum.
    self.assertAllClose(w, expected, rtol=1e-5)
    self.assertAllClose(w.sum(), len(_COUNTS), rtol=1e-6)

  def test_cb_hand_value(self):
    # K = 2, N = (1, 2), beta = 0.5: raw weights 0.5/0.5 = 1 and 0.5/0.75 = 2/3;
    # normalised to sum 2: (1.2, 0.8); float32, so within u32 = 6e-8 relative.
    self.assertAllClose(losses.class_weights("cb", [1, 2], beta=0.5), [1.2, 0.8])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "unknown kind"):
      losses.class_weights("inverse", _COUNTS)
    with self.assertRaisesRegex(ValueError, r"classes \[1\]"):
      losses.class_weights("rw", [3, 0, 2])
    with self.assertRaisesRegex(ValueError, "beta"):
      losses.class_weights("cb", _COUNTS, beta=1.0)


class LossValuesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1.0, 30.0, 1e3)
  def test_cross_entropy(self, scale):
    y, z = _data(scale=scale)
    got = losses.cross_entropy(y, tf.constant(z, tf.float64))
    self.assertEqual(got.shape, (16,))
    self.assertAllClose(got, _np_ce(y, z), rtol=1e-12, atol=1e-12)
    got32 = losses.cross_entropy(y, tf.constant(z, tf.float32))
    # Rounding z to float32 moves each logit by <= u32 |z| and CE by <= 2 u32
    # max |z|; the float32 log-sum-exp of 6 terms adds ~(6 + 4) u32 max |z|:
    # ~1e-6 * scale at worst (max |z| ~ 2.5 scale). Measured: 0.15% of the tolerance.
    self.assertAllClose(got32, _np_ce(y, z), rtol=1e-5, atol=1e-4 * scale)
    self.assertTrue(np.all(np.isfinite(got32.numpy())))

  @parameterized.product(gamma=[0.0, 0.5, 1.0, 2.0], scale=[1.0, 50.0])
  def test_focal(self, gamma, scale):
    y, z = _data(scale=scale, seed=1)
    got = losses.focal(y, tf.constant(z, tf.float64), gamma=gamma)
    self.assertAllClose(got, _np_focal(y, z, gamma), rtol=1e-10, atol=1e-12)

  def test_focal_gamma_zero_is_ce_and_alpha_is_one(self):
    y, z = _data(seed=2)
    self.assertAllClose(losses.focal(y, z, gamma=0.0), losses.cross_entropy(y, z))
    # gamma = 1 by hand on one example: z = (0, log 3) -> p_0 = 1/4,
    # CE = log 4, FL = 3/4 * log 4 (alpha = 1, not Keras' 0.25).
    z1 = np.array([[0.0, np.log(3.0)]])
    self.assertAllClose(losses.focal([0], z1, gamma=1.0), [0.75 * np.log(4.0)])

  def test_focal_gradient_matches_finite_differences(self):
    y, z = _data(b=5, k=4, scale=2.0, seed=3)
    for gamma in (1.0, 2.0, 0.5):
      fn = lambda t, g=gamma: tf.reduce_sum(
          losses.focal(y, t, gamma=g) * tf.constant(
              np.arange(1, 6, dtype=np.float64)))
      theo, num = tf.test.compute_gradient(fn, [tf.constant(z, tf.float64)],
                                           delta=1e-6)
      # float64 central differences: truncation delta^2 |f'''| / 6 ~ 1e-12,
      # cancellation ~u64 |f| / delta ~ 1e-9 (|f| <= ~10). Measured: 2.5% of the tolerance.
      self.assertAllClose(theo[0], num[0], rtol=1e-6, atol=1e-7)

  def test_focal_gradient_is_finite_where_p_rounds_to_one(self):
    # Margin 200: CE is exactly 0 in float32, so 1 - p = 0; for gamma < 1 the naive
    # d/dx x^gamma there is inf and inf * 0 a NaN. The limit of FL ~ CE^(1 + gamma) is 0.
    z = tf.constant([[200.0, 0.0, 0.0], [0.5, 0.2, 0.1]], tf.float32)
    y = tf.constant([0, 2])
    for gamma in (0.5, 1.0, 2.0):
      with tf.GradientTape() as tape:
        tape.watch(z)
        fl = losses.focal(y, z, gamma=gamma)
        total = tf.reduce_sum(fl)
      grad = tape.gradient(total, z).numpy()
      self.assertTrue(np.isfinite(grad).all(), (gamma, grad))
      np.testing.assert_array_equal(grad[0], 0.0)
      self.assertEqual(float(fl[0]), 0.0)
      np.testing.assert_allclose(fl[1], _np_focal(np.array([2]), np.array([[0.5, 0.2, 0.1]]),
                                                  gamma)[0], rtol=1e-6)

  def test_focal_gradient_hand(self):
    # d/dz FL for gamma = 1 by the chain rule, in float64.
    y, z = _data(b=6, k=3, seed=4)
    t = tf.constant(z, tf.float64)
    with tf.GradientTape() as tape:
      tape.watch(t)
      loss = tf.reduce_sum(losses.focal(y, t, gamma=1.0))
    grad = tape.gradient(loss, t).numpy()
    p = np.exp(_np_log_softmax(z))
    py = p[np.arange(6), y]
    ce = -np.log(py)
    onehot = np.eye(3)[y]
    dce = p - onehot                           # d CE / dz
    dfl_dce = (1 - py) + py * ce               # d[(1 - e^-ce) ce] / d ce
    self.assertAllClose(grad, dfl_dce[:, None] * dce, rtol=1e-10)

  def test_ldam_margins(self):
    m = losses.ldam_margins(_COUNTS, 0.5)
    self.assertEqual(m.max(), 0.5)                  # exactly
    self.assertEqual(int(np.argmax(m)), 4)          # the smallest class
    self.assertEqual(m[4], 0.5)
    # m_i / m_j = (N_j / N_i)^(1/4).
    self.assertAllClose(m[1] / m[0], (50 / 5000) ** 0.25, rtol=1e-12)
    self.assertAllClose(losses.ldam_margins([16, 1, 81], 0.3),
                        [0.3 / 2, 0.3, 0.3 / 3])

  @parameterized.parameters((0.5, 30.0), (0.3, 10.0))
  def test_ldam(self, max_m, s):
    y, z = _data(seed=5)
    z = np.tanh(z)  # cosine logits
    got = losses.ldam(y, tf.constant(z, tf.float64), _COUNTS, max_m, s)
    self.assertAllClose(got, _np_ldam(y, z, _COUNTS, max_m, s), rtol=1e-10)
    got32 = losses.ldam(y, tf.constant(z, tf.float32), _COUNTS, max_m, s)
    # As in test_cross_entropy with logits s (z - m) up to 45: rounding z and
    # m to float32 moves them by <= u32 * 45 = 2.7e-6, the log-sum-exp adds
    # ~10 u32 * 45: <= ~3e-5 absolute. Measured ~2e-7 (relative to 1 + |loss|).
    self.assertAllClose(got32, _np_ldam(y, z, _COUNTS, max_m, s), rtol=1e-4,
                        atol=1e-4)

  def test_ldam_only_true_class_shifted(self):
    # K = 2, counts (1, 16): m = (0.5, 0.25). Label 1: logits (a, b - 0.25) * s.
    z = np.array([[0.2, 0.7]])
    expected = _np_ce(np.array([1]), 30.0 * np.array([[0.2, 0.7 - 0.25]]))
    self.assertAllClose(losses.ldam([1], z, [1, 16]), expected)

  def test_ldam_class_count_mismatch(self):
    with self.assertRaisesRegex(ValueError, "classes"):
      losses.ldam([0], np.zeros((1, 3)), [1, 2])

  def test_mixed_precision_logits(self):
    y, z = _data(seed=6)
    got = losses.cross_entropy(y, tf.constant(z, tf.float16))
    self.assertEqual(got.dtype, tf.float32)
    # Rounding z (|z| <= ~3) to float16 (u16 = 2^-11 = 4.9e-4) moves CE by
    # <= 2 u16 max |z| = 3e-3; the rest is float32. Measured 1.3e-4 (relative
    # to 1 + CE). Computing the softmax in float16 would not be finite-safe.
    self.assertAllClose(got, _np_ce(y, z), rtol=1e-2, atol=1e-2)


class LogitAdjustedTest(tf.test.TestCase, parameterized.TestCase):
  """The logit-adjusted loss (Menon et al. 2021) and Balanced Softmax (Ren et al. 2020)."""

  def test_tau_zero_is_cross_entropy_bit_for_bit(self):
    y, z = _data(seed=10, scale=5.0)
    for dtype in (tf.float32, tf.float64, tf.float16):
      t = tf.constant(z, dtype)
      la = losses.logit_adjusted(y, t, _COUNTS, tau=0.0).numpy()
      ce = losses.cross_entropy(y, t).numpy()
      self.assertEqual(la.dtype, ce.dtype)
      np.testing.assert_array_equal(la, ce)  # exact: z + 0 * log pi == z
    made = losses.make_loss("logit_adjusted", _COUNTS, tau=0.0)
    np.testing.assert_array_equal(made(y, z.astype(np.float32)).numpy(),
                                  losses.cross_entropy(y, z.astype(np.float32)).numpy())
    # And tau > 0 does change it (else the test above would prove nothing).
    self.assertGreater(np.abs(losses.logit_adjusted(y, z, _COUNTS, 1.0).numpy() -
                              losses.cross_entropy(y, z).numpy()).max(), 1.0)

  @parameterized.product(tau=[0.25, 1.0, 1.5, 2.0], scale=[1.0, 30.0])
  def test_matches_the_published_formula_in_float64(self, tau, scale):
    y, z = _data(seed=11, scale=scale)
    got = losses.logit_adjusted(y, tf.constant(z, tf.float64), _COUNTS, tau)
    # A handful of float64 operations on logits up to ~61 + tau * 8.5 (|log pi| <= 8.5): ~10
    # u64 of ~80 = 1e-14. Measured 7e-15 (6e-5 of the tolerance).
    self.assertAllClose(got, _np_logit_adjusted(y, z, _COUNTS, tau), rtol=1e-11, atol=1e-11)
    got32 = losses.logit_adjusted(y, tf.constant(z, tf.float32), _COUNTS, tau)
    # As test_cross_entropy, on logits shifted by tau log pi: rounding z and the shift to
    # float32 and the 6-term log-sum-exp, ~10 u32 of max |z + shift| <= 80: <= 5e-5.
    # Measured 7.2e-6 (1.1% of the tolerance).
    self.assertAllClose(got32, _np_logit_adjusted(y, z, _COUNTS, tau), rtol=1e-5, atol=1e-4)

  def test_hand_value(self):
    # K = 2, counts (3, 1): pi = (3/4, 1/4). z = (0, 0), label 1, tau = 1:
    # softmax(log pi)[1] = 1/4, loss = log 4. Label 0: log(4/3).
    self.assertAllClose(losses.logit_adjusted([1, 0], np.zeros((2, 2)), [3, 1], 1.0),
                        [np.log(4.0), np.log(4.0 / 3.0)], rtol=1e-12)

  def test_balanced_softmax_is_logit_adjusted_at_tau_one(self):
    y, z = _data(seed=12, scale=3.0)
    bs = losses.make_loss("balanced_softmax", _COUNTS)
    la = losses.make_loss("logit_adjusted", _COUNTS, tau=1.0)
    for dtype in (np.float32, np.float64):
      np.testing.assert_array_equal(bs(y, z.astype(dtype)).numpy(), la(y, z.astype(dtype)).numpy())
    self.assertEqual(bs.name, "balanced_softmax")  # recorded under its own name
    self.assertEqual(bs.hparams["tau"], 1.0)
    self.assertEqual(losses.LOSS_ALIASES["balanced_softmax"], ("logit_adjusted", {"tau": 1.0}))
    # Ren et al.'s form: -log(N_y e^{z_y} / sum_j N_j e^{z_j}).
    n = _COUNTS.astype(np.float64)
    ren = -np.log(n[y] * np.exp(z[np.arange(len(y)), y]) / (np.exp(z) @ n))
    self.assertAllClose(bs(y, z), ren, rtol=1e-10)
    with self.assertRaisesRegex(ValueError, "unknown.*tau"):
      losses.make_loss("balanced_softmax", _COUNTS, tau=0.5)  # tau is what the alias fixes

  def test_gradient_is_finite_and_exact_where_the_prior_is_tiny(self):
    counts = np.array([1e6, 1.0])
    z = tf.constant([[3.0, -2.0], [0.5, 0.1], [-1.0, 40.0]], tf.float32)
    y = tf.constant([1, 1, 0])
    for tau in (1.0, 2.0):
      with tf.GradientTape() as tape:
        tape.watch(z)
        loss = losses.logit_adjusted(y, z, counts, tau)
        total = tf.reduce_sum(loss)
      grad = tape.gradient(total, z).numpy()
      self.assertTrue(np.isfinite(loss.numpy()).all(), (tau, loss))
      self.assertTrue(np.isfinite(grad).all(), (tau, grad))
      # d/dz = softmax(z + tau log pi) - onehot(y), in float64.
      a = z.numpy().astype(np.float64) + tau * np.log(counts / counts.sum())
      p = np.exp(a - a.max(axis=1, keepdims=True))
      p /= p.sum(axis=1, keepdims=True)
      # float32 softmax of logits up to ~68: ~10 u32 of 1 (the gradient's size) = 6e-7.
      # Measured 4.5e-8; the loss (13 to 33) 5e-8 relative.
      self.assertAllClose(grad, p - np.eye(2)[y.numpy()], atol=1e-6)
      self.assertAllClose(loss, _np_logit_adjusted(y.numpy(), z.numpy(), counts, tau),
                          rtol=1e-5)
    self.assertGreater(float(loss[0]), 25.0)  # the rare class's examples cost ~2 * 13.8 more

  def test_refuses_bad_tau_and_counts(self):
    for tau in (-0.5, float("nan"), float("inf")):
      with self.assertRaisesRegex(ValueError, "tau must be a finite number >= 0"):
        losses.logit_adjusted([0], np.zeros((1, 2)), [1, 2], tau)
      with self.assertRaisesRegex(ValueError, "tau must be a finite number >= 0"):
        losses.make_loss("logit_adjusted", [1, 2], tau=tau)
    with self.assertRaisesRegex(ValueError, "classes"):
      losses.logit_adjusted([0], np.zeros((1, 3)), [1, 2])
    with self.assertRaisesRegex(ValueError, "at least one"):
      losses.make_loss("logit_adjusted", [3, 0])
    with self.assertRaisesRegex(ValueError, "class_counts"):
      losses.make_loss("balanced_softmax")


class MakeLossTest(tf.test.TestCase, parameterized.TestCase):

  def test_names(self):
    self.assertEqual(losses.LOSSES,
                     ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax"))

  @parameterized.parameters("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax")
  def test_xla_and_eager_agree(self, name):
    fn = losses.make_loss(name, _COUNTS)
    y, z = _data(seed=7)
    z = np.tanh(z).astype(np.float32)
    eager = fn(y, z)
    xla = tf.function(fn, jit_compile=True)(tf.constant(y), tf.constant(z))
    self.assertEqual(eager.shape, (16,))
    # The elementwise ops are correctly rounded in both; only exp/log (a few
    # ulp, implementation-specific) and the 6-term sum differ: ~10 u32 of
    # max(|loss|, |z|). Losses here are 1.2..60: measured <= 1 ulp (3.8e-6 at 60).
    self.assertAllClose(eager, xla, rtol=1e-5, atol=1e-6)
    expected = {"ce": _np_ce(y, z), "focal": _np_focal(y, z, 1.0),
                "ldam": _np_ldam(y, z, _COUNTS),
                "logit_adjusted": _np_logit_adjusted(y, z, _COUNTS, 1.0),
                "balanced_softmax": _np_logit_adjusted(y, z, _COUNTS, 1.0)}[name]
    # float32 against float64 on the same float32 z: <= ~10 u32 of the logits'
    # size (<= 45 for LDAM: 3e-5, against 1e-5 + 1e-4 |loss| >= 4e-4). Measured 4.3e-6.
    self.assertAllClose(eager, expected, rtol=1e-4, atol=1e-5)

  def test_hparams(self):
    # float64 logits are computed in float64: the tolerances are loose.
    y, z = _data(seed=8)
    self.assertAllClose(losses.make_loss("focal", gamma=2.0)(y, z),
                        _np_focal(y, z, 2.0), rtol=1e-5)
    self.assertAllClose(
        losses.make_loss("ldam", _COUNTS, max_margin=0.3, scale=10.0)(y, z),
        _np_ldam(y, z, _COUNTS, 0.3, 10.0), rtol=1e-4)
    self.assertAllClose(losses.make_loss("logit_adjusted", _COUNTS, tau=0.5)(y, z),
                        _np_logit_adjusted(y, z, _COUNTS, 0.5), rtol=1e-10)
    self.assertEqual(losses.make_loss("logit_adjusted", _COUNTS).hparams["tau"], 1.0)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, r"'hinge'.*\('ce', 'focal', 'ldam', "
                                r"'logit_adjusted', 'balanced_softmax'\)"):
      losses.make_loss("hinge", _COUNTS)
    with self.assertRaisesRegex(ValueError, "unknown.*gama"):
      losses.make_loss("focal", _COUNTS, gama=2.0)
    with self.assertRaisesRegex(ValueError, "class_counts"):
      losses.make_loss("ldam")
    with self.assertRaisesRegex(ValueError, "at least one"):
      losses.make_loss("ldam", [3, 0])


class WeightedMeanTest(tf.test.TestCase, parameterized.TestCase):

  def test_reductions(self):
    rng = np.random.default_rng(9)
    l = rng.random(10)
    y = rng.integers(0, 3, 10)
    cw = np.array([0.5, 1.0, 3.0])
    w = cw[y]
    batch = losses.weighted_mean(tf.constant(l), y, cw, 10)
    self.assertAllClose(batch, np.sum(w * l) / 10, rtol=1e-12)
    default_b = losses.weighted_mean(tf.constant(l), y, cw)
    self.assertAllClose(default_b, np.sum(w * l) / 10, rtol=1e-12)
    weights = losses.weighted_mean(tf.constant(l), y, cw, reduction="weights")
    self.assertAllClose(weights, np.sum(w * l) / np.sum(w), rtol=1e-12)
    # The global batch size is what "batch" divides by.
    self.assertAllClose(losses.weighted_mean(tf.constant(l), y, cw, 40),
                        np.sum(w * l) / 40, rtol=1e-12)
    self.assertAllClose(
        losses.weighted_mean(tf.constant(l), y, cw, reduction="weights",
                             global_weight_sum=7.0),
        np.sum(w * l) / 7.0, rtol=1e-12)
    self.assertAllClose(losses.weighted_mean(tf.constant(l), y), l.mean())

  def test_unit_weights_agree(self):
    l = tf.constant([1.0, 2.0, 4.0])
    y = [0, 1, 1]
    self.assertAllClose(losses.weighted_mean(l, y, [1.0, 1.0], 3),
                        losses.weighted_mean(l, y, [1.0, 1.0],
                                             reduction="weights"))

  def test_xla(self):
    l = tf.constant([1.0, 2.0, 4.0, 8.0])
    y = tf.constant([0, 1, 1, 2])
    cw = losses.class_weights("rw", [10, 5, 1])
    f = tf.function(lambda l, y: (
        losses.weighted_mean(l, y, cw, 4),
        losses.weighted_mean(l, y, cw, reduction="weights")), jit_compile=True)
    b, w = f(l, y)
    wy = cw[[0, 1, 1, 2]]
    # float32 sums of 4 products: <= ~6 u32 = 4e-7 relative. Measured 8e-9.
    self.assertAllClose(b, np.sum(wy * [1, 2, 4, 8]) / 4, rtol=1e-6)
    self.assertAllClose(w, np.sum(wy * [1, 2, 4, 8]) / wy.sum(), rtol=1e-6)

  def test_bad_reduction(self):
    with self.assertRaisesRegex(ValueError, "reduction"):
      losses.weighted_mean([1.0], [0], None, 1, reduction="mean")

  def test_two_replicas_match_single_device(self):
    """MirroredStrategy over 2 logical CPUs, in a fresh process."""
    script = textwrap.dedent("""
      import json, sys
      import numpy as np
      import tensorflow as tf
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from m2m_tf import losses
      strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
      rng = np.random.default_rng(0)
      B, D, K = 8, 3, 4
      x = rng.normal(size=(B, D)).astype(np.float32)
      # Replica 0 gets only class 0 (small weight), replica 1 the others:
      # their local weight sums differ a lot.
      y = np.array([0, 0, 0, 0, 1, 2, 3, 3], np.int32)
      cw = np.array([0.2, 1.0, 2.0, 3.0], np.float32)
      w0 = rng.normal(size=(D, K)).astype(np.float32)

      def single(reduction):
        v = tf.Variable(w0)
        with tf.GradientTape() as tape:
          loss = losses.weighted_mean(losses.cross_entropy(y, x @ v), y, cw, B,
                                      reduction=reduction)
        return loss.numpy(), tape.gradient(loss, v).numpy()

      def mirrored(reduction, gbs, wrong=False):
        with strategy.scope():
          v = tf.Variable(w0)
        xs = strategy.experimental_distribute_values_from_function(
            lambda c: x[4 * c.replica_id_in_sync_group:][:4])
        ys = strategy.experimental_distribute_values_from_function(
            lambda c: y[4 * c.replica_id_in_sync_group:][:4])
        def step(xb, yb):
          with tf.GradientTape() as tape:
            kw = {}
            if wrong:  # replica-local sum times R: NOT exact
              kw["global_weight_sum"] = 2.0 * tf.reduce_sum(tf.gather(cw, yb))
            loss = losses.weighted_mean(losses.cross_entropy(yb, xb @ v), yb,
                                        cw, gbs, reduction=reduction, **kw)
          return loss, tape.gradient(loss, v)
        @tf.function
        def run():
          loss, g = strategy.run(step, args=(xs, ys))
          return (strategy.reduce("SUM", loss, axis=None),
                  strategy.reduce("SUM", g, axis=None))
        loss, g = run()
        return loss.numpy(), g.numpy()

      out = {}
      for name, red, gbs, wrong in [("batch", "batch", B, False),
                                    ("batch_auto", "batch", None, False),
                                    ("weights", "weights", None, False),
                                    ("weights_wrong", "weights", None, True)]:
        l1, g1 = single(red)
        l2, g2 = mirrored(red, gbs, wrong)
        out[name] = [float(abs(l1 - l2)), float(np.abs(g1 - g2).max()),
                     float(np.abs(g1).max())]
      print("RESULT" + json.dumps(out))
    """)
    env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, env=env, cwd=_REPO, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    self.assertTrue(lines, msg=proc.stdout[-2000:] + proc.stderr[-4000:])
    out = json.loads(lines[-1][len("RESULT"):])
    # Splitting the 8-example float32 sums into 4 + 4 and all-reducing them
    # only reassociates them: <= ~8 u32 = 5e-7 of the summed magnitudes
    # (|loss| and |grad| ~ 1..3). Measured 2.4e-7 (loss) and 6e-8 (grad).
    for name in ("batch", "batch_auto", "weights"):
      dloss, dgrad, gmax = out[name]
      self.assertLess(dloss, 1e-5, msg=name)
      self.assertLess(dgrad, 1e-5 * max(1.0, gmax), msg=name)
    # The replica-local approximation is measurably different (the test can
    # tell a wrong denominator apart).
    self.assertGreater(out["weights_wrong"][1], 1e-3)


if __name__ == "__main__":
  tf.test.main()
