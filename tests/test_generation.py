"""Statistical and exact tests of m2m_tf.m2m.generation (docs/method.md#phase-2-generation).

Most tests make the chosen seed observable: with steps=0 and no random start,
x* is the seed x_j itself, and every input row is unique, so an accepted slot
tells which row was its seed. With gamma=0 every candidate is accepted, so the
accepted mask is the candidate mask (generation slot & seed & Bernoulli).
Tolerances are 4 binomial standard deviations; the seeds are fixed, so the
tests are deterministic.

Numeric tolerances on x* (float32, u32 = 2^-24 = 6e-8): the same translation
computed with other batch shapes (buckets, dynamic shapes, a direct
`translate` call) or in a graph may round differently (kernels block by batch
size); as derived in test_translate, T normalised steps of size eta then
differ by <= ~T * eta * 1e-6 (<= 1e-6 here, T * eta <= 1). atol 1e-5 covers
it 10x over; a different seed, target or step moves x* by O(eta) = 0.1.
Measured on an AMD EPYC (oneDNN on and off): bitwise equal, or 1 ulp (5e-8).
The accept/reject decisions (p >= gamma) are compared exactly: that assumes no
candidate's p lies within ~1e-6 of gamma (chance ~1e-4 per test with ~100
candidates; deterministic for the fixed seeds).
"""

import itertools

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf.m2m import generation
from m2m_tf.m2m.generation import M2mConfig, generate
from m2m_tf.m2m.translate import translate

D = 6


def _model(num_classes, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(num_classes)])
  model.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()])
  return model


def _batch(per_class, seed=0):
  """Unique rows in [0, 1]^D; y has per_class[k] rows of class k, shuffled."""
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(len(per_class)), per_class)
  y = y[rng.permutation(len(y))]
  x = rng.uniform(0.0, 1.0, (len(y), D)).astype(np.float32)
  x[:, 0] = (np.arange(len(y)) + 0.5) / len(y)  # unique key
  return x, y.astype(np.int32)


def _identity_config(**kw):
  """x* = x_j exactly, every candidate accepted, seed j observable (clean mode)."""
  args = dict(beta=0.999, lam=0.5, gamma=0.0, steps=0, step_size=0.1, start_noise=0.0,
              accept_mode="clean", n_buckets=1)
  args.update(kw)
  return M2mConfig(**args)


def _run(g, f, x, y, counts, config, seed, **kw):
  xn, yn, stats = generate(g, f, x, y, counts, config, tf.constant(seed, tf.int64), **kw)
  return xn.numpy(), yn.numpy(), {k: float(v) for k, v in stats.items()}


def _seed_index(x, x_new):
  """Per slot: the row of x that x_new holds (-1 if none), via the unique key column."""
  key = {float(v): i for i, v in enumerate(x[:, 0])}
  return np.array([key.get(float(v), -1) for v in x_new[:, 0]])


def _within(test, k, n, p, sigmas=4.0, msg=""):
  """Asserts k successes of n are within `sigmas` binomial sd of n * p."""
  sd = np.sqrt(max(n * p * (1 - p), 1e-12))
  test.assertLessEqual(abs(k - n * p), sigmas * sd + 1e-9,
                       f"{msg}: {k}/{n} = {k / max(n, 1):.4f}, expected p={p:.4f}")


class ReferenceFunctionsTest(tf.test.TestCase):

  def test_generation_probability(self):
    # float64: 1 - N_k / N_max within a few u64.
    self.assertAllClose(generation.generation_probability([50, 500, 5]), [0.9, 0.0, 0.99])
    with self.assertRaisesRegex(ValueError, "positive"):
      generation.generation_probability([3, 0, 2])

  def test_seed_weights(self):
    nt = np.array([5.0, 50.0, 500.0])
    ns = np.array([500.0, 5.0, 50.0, 51.0])
    for beta in (0.999, 0.9, 0.0):
      w = generation.seed_weights(tf.constant(nt, tf.float32), tf.constant(ns, tf.float32),
                                  beta).numpy()
      diff = np.maximum(ns[None, :] - nt[:, None], 0)
      want = np.where(diff > 0, 1 - beta ** diff, 0.0)
      # float32 -expm1(diff * log(beta)): log(beta) rounded to float32 moves the
      # argument t (|t| <= 0.5) by <= 2 u32 |t|, expm1 adds a few ulp: <= ~2e-7.
      # Measured 2.5e-8.
      self.assertAllClose(w, want, atol=1e-6)

  def test_bucket_sizes(self):
    self.assertEqual(generation.bucket_sizes(64, 8), (0, 8, 16, 24, 32, 40, 48, 56, 64))
    self.assertEqual(generation.bucket_sizes(10, 4), (0, 3, 5, 8, 10))
    self.assertEqual(generation.bucket_sizes(3, 8), (0, 1, 2, 3))
    self.assertEqual(generation.bucket_sizes(7, 1), (0, 7))


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters(
      (dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"), (dict(lam=-1.0), "lam"),
      (dict(gamma=1.5), "gamma"), (dict(gamma=-0.1), "gamma"), (dict(steps=-1), "steps"),
      (dict(step_size=-0.1), "step_size"), (dict(start_noise=-1.0), "start_noise"),
      (dict(accept_mode="bogus"), "accept_mode"), (dict(n_buckets=0), "n_buckets"))
  def test_invalid(self, kwargs, word):
    with self.assertRaisesRegex(ValueError, word):
      M2mConfig(**kwargs)

  def test_valid_edges(self):
    M2mConfig(beta=0.0, gamma=1.0, lam=0.0, steps=0, n_buckets=1)


class GenerateStatisticsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*itertools.permutations([5, 50, 500]))
  def test_generation_slot_frequency(self, *counts):
    """(a)+(i): P(slot of class k generates) = 1 - N_k / N_max, whatever class is largest."""
    counts = np.array(counts)
    g = _model(3)
    x, y = _batch([600, 600, 600], seed=1)
    # No Bernoulli and beta small: every non-largest slot has a seed with w ~ 1.
    config = _identity_config(reject=False, beta=0.5)
    xn, yn, stats = _run(g, g, x, y, counts, config, [11, 3])
    accepted = np.any(xn != x, axis=1)
    self.assertAllEqual(yn, y)
    p = 1 - counts / counts.max()
    for k in range(3):
      n_k = int(np.sum(y == k))
      a_k = int(np.sum(accepted[y == k]))
      if p[k] == 0:
        self.assertEqual(a_k, 0)
      else:
        _within(self, a_k, n_k, p[k], msg=f"class {k} (N={counts[k]})")
    self.assertEqual(stats["accepted"], accepted.sum())
    self.assertEqual(stats["candidates"], accepted.sum())
    self.assertEqual(stats["gen_slots"], accepted.sum())

  @parameterized.parameters(
      (0.98, [1000, 60, 2], 2, 1),   # class 0 largest but not in the batch
      (0.999, [300, 20, 900], 1, 0),
      (0.9, [12, 5, 40], 1, 0),
  )
  def test_bernoulli_acceptance_rate(self, beta, counts, target, seed_class):
    """(b): P(candidate | slot of t) = p_gen(t) * (1 - beta^(N_s - N_t)), one seed class only."""
    counts = np.array(counts)
    g = _model(3)
    per_class = [0, 0, 0]
    per_class[target], per_class[seed_class] = 2500, 500
    x, y = _batch(per_class, seed=2)
    xn, _, stats = _run(g, g, x, y, counts, _identity_config(beta=beta), [5, 7])
    accepted = np.any(xn != x, axis=1)
    p_gen = 1 - counts[target] / counts.max()
    w = 1 - beta ** (counts[seed_class] - counts[target])
    _within(self, int(accepted[y == target].sum()), 2500, p_gen * w, msg="Bernoulli")
    self.assertEqual(int(accepted[y == seed_class].sum()), 0)  # nothing larger to seed from
    self.assertTrue(np.all(y[_seed_index(x, xn)[accepted]] == seed_class))
    self.assertEqual(stats["accepted"], accepted.sum())

  def test_bernoulli_rate_with_gamma_zero_is_candidates_over_slots(self):
    # Same as above read from the statistics: candidates / gen_slots = w when
    # the seed class is the largest (its own slots never generate).
    counts = np.array([30, 80])
    g = _model(2)
    x, y = _batch([2000, 200], seed=3)
    _, _, stats = _run(g, g, x, y, counts, _identity_config(beta=0.99), [1, 1])
    w = 1 - 0.99 ** 50
    _within(self, stats["candidates"], int(stats["gen_slots"]), w, msg="candidates/gen_slots")
    _within(self, stats["gen_slots"], 2000, 1 - 30 / 80, msg="gen_slots")

  def test_seed_choice_proportional_to_w(self):
    """(c): seed class c is chosen with probability sum_{j in c} w_ij / sum_j w_ij."""
    counts = np.array([200, 5, 60, 20, 5])  # class 0 largest, class 4 ties the target
    beta = 0.99
    g = _model(5)
    per_class = [300, 2000, 300, 300, 300]
    x, y = _batch(per_class, seed=4)
    xn, _, _ = _run(g, g, x, y, counts, _identity_config(beta=beta, reject=False), [9, 9])
    accepted = np.any(xn != x, axis=1)
    src = _seed_index(x, xn)
    target_slots = (y == 1) & accepted
    n = int(target_slots.sum())
    _within(self, n, 2000, 1 - 5 / 200, msg="gen slots of class 1")
    seed_cls = y[src[target_slots]]
    w = np.where(counts > 5, 1 - beta ** np.maximum(counts - 5, 0), 0.0) * np.array(per_class)
    p = w / w.sum()
    self.assertEqual(int(np.sum((seed_cls == 1) | (seed_cls == 4))), 0)
    for c in (0, 2, 3):
      _within(self, int(np.sum(seed_cls == c)), n, p[c], msg=f"seed class {c}")
    # Every seed is a real batch row of a larger class.
    all_src = src[accepted]
    self.assertAllGreaterEqual(all_src, 0)
    self.assertTrue(np.all(counts[y[all_src]] > counts[y[accepted]]))

  def test_gamma_one_accepts_nothing(self):
    """(d): softmax never reaches 1.0 here, so nothing is accepted and x is returned."""
    counts = np.array([500, 50, 5])
    g = _model(3, scale=0.3)
    x, y = _batch([40, 40, 40], seed=5)
    config = M2mConfig(gamma=1.0, steps=3, start_noise=0.5, n_buckets=4)
    xn, yn, stats = _run(g, g, x, y, counts, config, [2, 2])
    self.assertAllEqual(xn, x)
    self.assertAllEqual(yn, y)
    self.assertEqual(stats["accepted"], 0)
    self.assertGreater(stats["candidates"], 0)

  def test_single_class_batch_has_no_candidates(self):
    counts = np.array([500, 50, 5])
    g = _model(3)
    x, y = _batch([0, 0, 32], seed=6)
    for n_buckets in (1, 8):
      xn, yn, stats = _run(g, g, x, y, counts, _identity_config(n_buckets=n_buckets), [3, 3])
      self.assertAllEqual(xn, x)
      self.assertAllEqual(yn, y)
      self.assertEqual(stats["candidates"], 0)
      self.assertGreater(stats["gen_slots"], 20)

  def _accept_setup(self):
    counts = np.array([400, 10, 100, 40])
    g = _model(4, seed=7)
    f = _model(4, seed=8)
    x, y = _batch([32, 32, 32, 32], seed=9)
    return counts, g, f, x, y

  def test_accepted_slots_hold_translated_seed_and_target_label(self):
    """(e): accepted -> (x*, y_i) with x* = translate(x_j); rejected -> (x, y) exactly."""
    counts, g, f, x, y = self._accept_setup()
    seed = [4, 2]
    # Which seed each candidate slot got: clean mode, gamma = 0 (same random draws).
    xc, _, _ = _run(g, f, x, y, counts, _identity_config(), seed)
    candidate = np.any(xc != x, axis=1)
    src = _seed_index(x, xc)
    self.assertGreater(candidate.sum(), 20)
    config = M2mConfig(beta=0.999, lam=0.5, gamma=0.2, steps=5, step_size=0.2, start_noise=0.0,
                       n_buckets=1)
    xn, yn, stats = _run(g, f, x, y, counts, config, seed)
    idx = np.flatnonzero(candidate)
    x_star = translate(g, f, x[src[idx]], y[src[idx]], y[idx], lam=0.5, step_size=0.2,
                       steps=5).numpy()
    p = tf.nn.softmax(g(x_star)).numpy()[np.arange(len(idx)), y[idx]]
    want_acc = np.zeros(len(x), bool)
    want_acc[idx[p >= 0.2]] = True
    self.assertGreater(want_acc.sum(), 3)
    self.assertGreater((candidate & ~want_acc).sum(), 3)
    accepted = np.any(xn != x, axis=1)
    self.assertAllEqual(accepted, want_acc)
    self.assertAllEqual(yn, y)  # translate mode: the slot keeps its own label y_i
    self.assertAllClose(xn[idx[p >= 0.2]], x_star[p >= 0.2], atol=1e-5)  # module docstring
    self.assertAllEqual(xn[~accepted], x[~accepted])
    self.assertEqual(stats["accepted"], want_acc.sum())
    self.assertEqual(stats["candidates"], candidate.sum())

    # (h) clean: the same slots are accepted but hold the clean seed x_j.
    clean = M2mConfig(beta=0.999, lam=0.5, gamma=0.2, steps=5, step_size=0.2, start_noise=0.0,
                      n_buckets=1, accept_mode="clean")
    xcl, ycl, _ = _run(g, f, x, y, counts, clean, seed)
    self.assertAllEqual(xcl[accepted], x[src[accepted]])
    self.assertAllEqual(xcl[~accepted], x[~accepted])
    self.assertAllEqual(ycl, y)

    # (h) random_label: x* with a label that is neither y_i nor y_j.
    rand = M2mConfig(beta=0.999, lam=0.5, gamma=0.2, steps=5, step_size=0.2, start_noise=0.0,
                     n_buckets=1, accept_mode="random_label")
    xr, yr, _ = _run(g, f, x, y, counts, rand, seed)
    self.assertAllClose(xr, xn, atol=0, rtol=0)
    self.assertAllEqual(yr[~accepted], y[~accepted])
    self.assertTrue(np.all(yr[accepted] != y[accepted]))
    self.assertTrue(np.all(yr[accepted] != y[src[accepted]]))

  def test_random_label_distribution(self):
    """(h): the random label is uniform over the K - 2 classes other than y_i and y_j."""
    counts = np.array([400, 10, 100, 40, 40])
    g = _model(5)
    x, y = _batch([500, 3000, 0, 0, 0], seed=10)
    config = _identity_config(accept_mode="random_label", beta=0.9, reject=False)
    xn, yn, _ = _run(g, g, x, y, counts, config, [8, 1])
    accepted = np.any(xn != x, axis=1)
    self.assertAllEqual(y[_seed_index(x, xn)[accepted]], np.zeros(accepted.sum()))
    labels = yn[accepted]
    n = len(labels)
    self.assertGreater(n, 2000)
    self.assertEqual(int(np.sum((labels == 0) | (labels == 1))), 0)
    for c in (2, 3, 4):
      _within(self, int(np.sum(labels == c)), n, 1 / 3, msg=f"random label {c}")

  @parameterized.parameters(0.0, 0.2)
  def test_buckets_match_single_bucket(self, gamma):
    """(f): bucketing changes only which rows are translated, not the result."""
    counts, g, f, x, y = self._accept_setup()
    base = dict(beta=0.999, lam=0.5, gamma=gamma, steps=5, step_size=0.2, start_noise=0.0)
    for seed in ([1, 2], [3, 4]):
      x1, y1, s1 = _run(g, f, x, y, counts, M2mConfig(n_buckets=1, **base), seed)
      for n_buckets in (8, 3):
        x8, y8, s8 = _run(g, f, x, y, counts, M2mConfig(n_buckets=n_buckets, **base), seed)
        self.assertAllEqual(np.any(x1 != x, axis=1), np.any(x8 != x, axis=1))
        self.assertAllClose(x1, x8, atol=1e-5, rtol=0)  # module docstring
        self.assertAllEqual(y1, y8)
        self.assertEqual(s1, s8)

  def test_buckets_inside_tf_function(self):
    counts, g, f, x, y = self._accept_setup()
    config = M2mConfig(beta=0.999, lam=0.5, gamma=0.3, steps=5, step_size=0.2, start_noise=0.5,
                       n_buckets=2)
    seed = tf.constant([2, 9], tf.int64)
    eager = generate(g, f, x, y, counts, config, seed)
    graph = tf.function(lambda a, b: generate(g, f, a, b, counts, config, seed))(
        tf.constant(x), tf.constant(y))
    # The same kernels eagerly and in a graph (measured bitwise equal).
    self.assertAllClose(eager[0], graph[0], atol=1e-6)
    self.assertAllEqual(eager[1], graph[1])
    self.assertGreater(float(eager[2]["accepted"]), 0)

  @parameterized.parameters(0.0, 0.5)
  def test_dynamic_buckets_match_static(self, start_noise):
    """static_shapes=False (exactly the candidates) gives the static bucketed result."""
    counts, g, f, x, y = self._accept_setup()
    for n_buckets in (8, 3):
      config = M2mConfig(beta=0.999, lam=0.5, gamma=0.2, steps=3, step_size=0.2,
                         start_noise=start_noise, n_buckets=n_buckets)
      for seed in ([1, 2], [7, 7]):
        seed_t = tf.constant(seed, tf.int64)
        xs, ys, ss = generate(g, f, x, y, counts, config, seed_t)
        xd, yd, sd = generate(g, f, x, y, counts, config, seed_t, static_shapes=False)
        # Other batch shapes: module docstring (measured 1 ulp, 5.2e-8; the
        # derived bound, T * eta * 1e-6 = 6e-7, is too close to 1e-6).
        self.assertAllClose(xs, xd, atol=1e-5, rtol=0)
        self.assertAllEqual(ys, yd)
        self.assertEqual({k: float(v) for k, v in ss.items()}, {k: float(v) for k, v in sd.items()})
    # Also with an unknown batch size inside a graph.
    fn = tf.function(lambda a, b: generate(g, f, a, b, counts, config, seed_t, static_shapes=False),
                     input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([None], tf.int32)])
    xg, yg, _ = fn(tf.constant(x), tf.constant(y))
    self.assertAllClose(xg, xd, atol=1e-5, rtol=0)  # module docstring
    self.assertAllEqual(yg, yd)

  def test_bucket_layout_does_not_change_the_batch_with_start_noise(self):
    # The random start is drawn per row of the whole batch, so x* (and hence the
    # accepted set) is the same whether rows are translated in buckets of 8,
    # all at once, or exactly (static_shapes=False).
    counts, g, f, x, y = self._accept_setup()
    base = dict(beta=0.999, lam=0.5, gamma=0.2, steps=2, step_size=0.2, start_noise=0.5)
    for seed in ([1, 2], [7, 7]):
      seed_t = tf.constant(seed, tf.int64)
      x1, y1, s1 = generate(g, f, x, y, counts, M2mConfig(n_buckets=1, **base), seed_t)
      x8, y8, s8 = generate(g, f, x, y, counts, M2mConfig(n_buckets=8, **base), seed_t)
      xd, yd, sd = generate(g, f, x, y, counts, M2mConfig(n_buckets=8, **base), seed_t,
                            static_shapes=False)
      for xo, yo, so in ((x8, y8, s8), (xd, yd, sd)):
        self.assertAllClose(x1, xo, atol=1e-5, rtol=0)  # module docstring
        self.assertAllEqual(y1, yo)
        self.assertEqual({k: float(v) for k, v in s1.items()}, {k: float(v) for k, v in so.items()})
      self.assertGreater(float(s1["accepted"]), 0)

  def test_seed_pool(self):
    counts = np.array([400, 10, 100])
    g = _model(3)
    x, y = _batch([0, 200, 0], seed=11)
    px, py = _batch([5, 0, 5], seed=12)
    px[:, 0] += 2.0  # keys distinct from x's (no clipping in this identity config)
    config = _identity_config(clip_range=None, reject=False)
    xn, _, stats = _run(g, g, x, y, counts, config, [1, 5], seed_x=px, seed_y=py)
    accepted = np.any(xn != x, axis=1)
    self.assertGreater(accepted.sum(), 150)
    src = _seed_index(px, xn)
    self.assertAllGreaterEqual(src[accepted], 0)
    w = np.array([1 - 0.999 ** 390, 0, 1 - 0.999 ** 90])
    _within(self, int(np.sum(py[src[accepted]] == 0)), int(accepted.sum()),
            w[0] / (w[0] + w[2]), msg="pool seed class 0")


  def test_seed_pool_keeps_the_class_mix_of_step_2(self):
    # Pools of very different sizes (50 of class 0, 2 of class 2): the seed class
    # must still be drawn with probability proportional to w, not to |pool| * w,
    # and the member uniformly within its class's pool.
    counts = np.array([400, 10, 100])
    g = _model(3)
    x, y = _batch([0, 2000, 0], seed=13)
    px, py = _batch([50, 0, 2], seed=14)
    px[:, 0] += 2.0
    config = _identity_config(clip_range=None, reject=False)
    xn, _, _ = _run(g, g, x, y, counts, config, [2, 7], seed_x=px, seed_y=py)
    accepted = np.any(xn != x, axis=1)
    src = _seed_index(px, xn)[accepted]
    self.assertAllGreaterEqual(src, 0)
    w = np.array([1 - 0.999 ** 390, 0, 1 - 0.999 ** 90])
    n = int(accepted.sum())
    _within(self, int(np.sum(py[src] == 0)), n, w[0] / (w[0] + w[2]), msg="pool seed class 0")
    members2 = np.flatnonzero(py == 2)
    n2 = int(np.sum(py[src] == 2))
    _within(self, int(np.sum(src == members2[0])), n2, 0.5, msg="uniform member of class 2")


if __name__ == "__main__":
  tf.test.main()
