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
import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from m2m_tf.m2m import generation
from m2m_tf.m2m.generation import M2mConfig, generate
from m2m_tf.m2m.translation import official_start
from m2m_tf.m2m.translation import translate

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


def _run(g, f, x, y, counts, config, seed, *args, **kw):
  xn, yn, stats = generate(g, f, x, y, counts, config, tf.constant(seed, tf.int64), *args, **kw)
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
    config = _identity_config(no_reject=True, beta=0.5)
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
    xn, _, _ = _run(g, g, x, y, counts, _identity_config(beta=beta, no_reject=True), [9, 9])
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
    config = _identity_config(accept_mode="random_label", beta=0.9, no_reject=True)
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
    config = _identity_config(clip_range=None, no_reject=True)
    xn, _, stats = _run(g, g, x, y, counts, config, [1, 5], generation.make_seed_pool(px, py, 3))
    accepted = np.any(xn != x, axis=1)
    self.assertGreater(accepted.sum(), 150)
    src = _seed_index(px, xn)
    self.assertAllGreaterEqual(src[accepted], 0)
    w = np.array([1 - 0.999 ** 390, 0, 1 - 0.999 ** 90])
    _within(self, int(np.sum(py[src[accepted]] == 0)), int(accepted.sum()),
            w[0] / (w[0] + w[2]), msg="pool seed class 0")


def _candidates(**kw):
  """A `Candidates` of the given arrays (the fields accept does not read default to zeros)."""
  b = len(kw["candidate"])
  fields = dict(gen=np.ones(b, bool), j=np.zeros(b, np.int32), w=np.ones(b, np.float32),
                has_seed=np.ones(b, bool))
  fields.update(kw)
  return generation.Candidates(**{k: tf.constant(v) for k, v in fields.items()})


class ChooseCandidatesTest(tf.test.TestCase, parameterized.TestCase):
  """Steps 1-3 (`choose_candidates`) against a float64 NumPy reference of the same draws."""

  def _numpy(self, cand):
    return {k: v.numpy() for k, v in cand._asdict().items()}

  def _uniform(self, streams, stream, n):
    """The uniforms of one of the step's streams (philox: exact on every device)."""
    return tf.random.stateless_uniform([n], seed=streams[stream], alg="philox").numpy()

  @parameterized.parameters(False, True)
  def test_batch_seeds_agree_with_reference(self, no_reject):
    counts = np.array([400, 10, 100, 40])
    x, y = _batch([50, 50, 50, 50], seed=20)
    streams = generation.random_streams(tf.constant([3, 8], tf.int64))
    c = self._numpy(generation.choose_candidates(x, y, counts, M2mConfig(beta=0.99,
                                                                         no_reject=no_reject),
                                                 streams))
    diff = np.maximum(counts[y][None, :] - counts[y][:, None], 0)
    w = np.where(diff > 0, 1 - 0.99 ** diff, 0.0)  # float64 w_ij, [B, B]
    # Step 1 compares a float32 uniform with 1 - N_y / N_max; a flip needs u within
    # ~1e-7 of it (chance ~2e-5 here; deterministic for the fixed seed).
    self.assertAllEqual(c["gen"], self._uniform(streams, generation.STREAM_SLOTS, 200)
                        < 1 - counts[y] / counts.max())
    self.assertAllEqual(c["has_seed"], y != 0)  # class 0 is the largest: nothing to seed from
    rows = np.flatnonzero(c["has_seed"])
    self.assertAllGreater(w[rows, c["j"][rows]], 0.0)  # a seed of a larger class
    # seed_weights in float32: <= ~2e-7 (ReferenceFunctionsTest.test_seed_weights).
    self.assertAllClose(c["w"][rows], w[rows, c["j"][rows]], atol=1e-6)
    passed = self._uniform(streams, generation.STREAM_BERNOULLI, 200) < c["w"]
    if no_reject:
      passed[:] = True
    else:
      self.assertGreater(np.sum(c["gen"] & c["has_seed"] & ~passed), 5)  # rejections happen
    self.assertAllEqual(c["candidate"], c["gen"] & c["has_seed"] & passed)
    self.assertGreater(c["candidate"].sum(), 20)
    self.assertAllEqual(c["x_seed"], x[c["j"]])
    self.assertAllEqual(c["y_seed"], y[c["j"]])

  def test_seed_class_proportional_to_w(self):
    """Step 2 over the batch: seed class c with probability sum_{j in c} w_ij / sum_j w_ij."""
    counts = np.array([200, 5, 60, 20, 5])  # class 0 largest, class 4 ties the target
    per_class = [300, 2000, 300, 300, 300]
    x, y = _batch(per_class, seed=4)
    streams = generation.random_streams(tf.constant([9, 9], tf.int64))
    c = self._numpy(generation.choose_candidates(x, y, counts, M2mConfig(beta=0.99), streams))
    seed_cls = c["y_seed"][y == 1]
    w = np.where(counts > 5, 1 - 0.99 ** np.maximum(counts - 5, 0), 0.0) * np.array(per_class)
    self.assertEqual(int(np.sum((seed_cls == 1) | (seed_cls == 4))), 0)
    for k in (0, 2, 3):
      _within(self, int(np.sum(seed_cls == k)), 2000, w[k] / w.sum(), msg=f"seed class {k}")

  def test_pool_seeds(self):
    counts = np.array([400, 10, 100, 40])
    x, y = _batch([30, 100, 100, 100], seed=21)
    px, py = _batch([4, 0, 3, 0], seed=22)  # no pool members of classes 1 and 3
    pool = generation.make_seed_pool(px, py, 4)
    streams = generation.random_streams(tf.constant([1, 1], tf.int64))
    c = self._numpy(generation.choose_candidates(x, y, counts, M2mConfig(beta=0.99), streams,
                                                 pool))
    self.assertAllEqual(c["has_seed"], y != 0)
    rows = c["has_seed"]
    self.assertTrue(np.all(counts[py[c["j"][rows]]] > counts[y[rows]]))
    w = 1 - 0.99 ** np.maximum(counts[py[c["j"]]] - counts[y], 0)
    self.assertAllClose(c["w"][rows], w[rows], atol=1e-6)  # as in the batch test
    self.assertAllEqual(c["x_seed"], px[c["j"]])
    self.assertAllEqual(c["y_seed"], py[c["j"]])

  def test_pool_keeps_the_class_mix_of_step_2(self):
    # Pools of very different sizes (50 of class 0, 2 of class 2): the seed class
    # must still be drawn with probability proportional to w, not to |pool| * w,
    # and the member uniformly within its class's pool.
    counts = np.array([400, 10, 100])
    x, y = _batch([0, 2000, 0], seed=13)
    px, py = _batch([50, 0, 2], seed=14)
    streams = generation.random_streams(tf.constant([2, 7], tf.int64))
    c = self._numpy(generation.choose_candidates(
        x, y, counts, M2mConfig(no_reject=True), streams, generation.make_seed_pool(px, py, 3)))
    self.assertTrue(np.all(c["has_seed"]))
    w = np.array([1 - 0.999 ** 390, 0, 1 - 0.999 ** 90])
    seed_cls = py[c["j"]]
    _within(self, int(np.sum(seed_cls == 0)), 2000, w[0] / (w[0] + w[2]), msg="pool class 0")
    members2 = np.flatnonzero(py == 2)
    _within(self, int(np.sum(c["j"] == members2[0])), int(np.sum(seed_cls == 2)), 0.5,
            msg="uniform member of class 2")

  def test_each_step_draws_from_its_own_stream(self):
    counts = np.array([400, 10, 100, 40])
    x, y = _batch([50, 50, 50, 50], seed=23)
    config = M2mConfig(beta=0.99)
    streams = generation.random_streams(tf.constant([5, 6], tf.int64))
    base = self._numpy(generation.choose_candidates(x, y, counts, config, streams))
    other = tf.tensor_scatter_nd_update(streams, [[generation.STREAM_BERNOULLI]],
                                        tf.constant([[77, 78]], tf.int64))
    moved = self._numpy(generation.choose_candidates(x, y, counts, config, other))
    self.assertAllEqual(base["gen"], moved["gen"])
    self.assertAllEqual(base["j"], moved["j"])
    self.assertNotAllEqual(base["candidate"], moved["candidate"])

  def test_make_seed_pool_index(self):
    py = np.array([2, 0, 2, 3, 0, 2])
    pool = generation.make_seed_pool(np.arange(12.0).reshape(6, 2), py, 5)
    self.assertEqual(pool.x.dtype, tf.float32)
    self.assertAllEqual(pool.y, py)
    self.assertAllEqual(pool.count, [2, 0, 3, 1, 0])
    self.assertAllEqual(pool.start, [0, 2, 2, 5, 6])
    self.assertAllEqual(pool.order, [1, 4, 0, 2, 5, 3])  # by class, stable within a class
    for bad in ([0, 5], [-1, 0], []):
      with self.assertRaisesRegex(ValueError, "pool labels"):
        generation.make_seed_pool(np.zeros((len(bad), 2)), bad, 5)


class TranslationStageTest(tf.test.TestCase, parameterized.TestCase):
  """Step 4: random starts, and the rows `translate_candidates` translates on each path."""

  def test_random_starts(self):
    x = np.random.default_rng(0).uniform(0.2, 0.8, (64, D)).astype(np.float32)
    seed = tf.constant([4, 4], tf.int64)
    self.assertAllEqual(generation.random_starts(x, M2mConfig(start_noise=0.0), seed), x)
    per_sample = dict(start_noise=0.5, start_noise_mode="per_sample")
    free = generation.random_starts(x, M2mConfig(clip_range=None, **per_sample), seed).numpy()
    radius = np.linalg.norm(free.astype(np.float64) - x, axis=1)
    self.assertAllLessEqual(radius, 0.5 + 1e-6)  # float32 rounding of x + delta
    self.assertGreater(radius.max() - radius.min(), 0.3)  # radius 0.5 * U(0, 1)
    clipped = generation.random_starts(x, M2mConfig(clip_range=(0.3, 0.7), **per_sample), seed)
    self.assertAllEqual(clipped, np.clip(free, 0.3, 0.7))

  def test_official_start_spans_the_slots_with_a_seed_before_the_rejection(self):
    # T = 0 and gamma = 0: an accepted slot holds its start x_j + delta. The official law scales
    # each column over the rows the official code translates: the generation slots with a seed,
    # including those the Bernoulli draw rejects afterwards (w about 0.5 here).
    counts = np.array([500, 100, 50])
    g = _model(3)
    x, y = _batch([60, 60, 60], seed=3)
    config = M2mConfig(beta=0.998, gamma=0.0, steps=0, start_noise=0.5, clip_range=None,
                       n_buckets=4)
    seed = tf.constant([5, 6], tf.int64)
    xn, _, stats = _run(g, g, x, y, counts, config, [5, 6])
    streams = generation.random_streams(seed)
    cand = generation.choose_candidates(x, y, counts, config, streams)
    rows = (cand.gen & cand.has_seed).numpy()
    accepted = cand.candidate.numpy()
    self.assertGreater(rows.sum() - accepted.sum(), 10)
    self.assertEqual(stats["accepted"], accepted.sum())
    x_seed = cand.x_seed.numpy()
    noise = official_start(tf.zeros_like(x_seed), 1e9, streams[generation.STREAM_START]).numpy()
    for set_, close in ((rows, True), (accepted, False)):
      inside = noise[set_].astype(np.float64)
      norm = np.sqrt(np.sum(inside ** 2, axis=0))
      delta = noise * (0.5 / (norm + 1e-7))
      # test_translate.OfficialStartTest: within 2e-4 of delta, plus x's rounding.
      err = np.abs(xn - x_seed - delta)[accepted] - 2e-4 * np.abs(delta)[accepted]
      self.assertEqual(err.max() <= 1e-7, close, f"max excess error {err.max()}")

  def test_inference_models(self):
    g, f = _model(3, seed=1), _model(3, seed=2)
    self.assertEqual(generation.inference_models(g, f, M2mConfig(fold_batchnorm=False)), (g, f))
    g_inf, f_inf = generation.inference_models(g, g, M2mConfig(fold_batchnorm=True))
    self.assertIs(g_inf, f_inf)  # M2m-Self: folded once
    x = np.random.default_rng(1).uniform(0, 1, (5, D)).astype(np.float32)
    g_inf, f_inf = generation.inference_models(g, f, M2mConfig(fold_batchnorm=True))
    # No BatchNorm here: the same Dense layers (measured bitwise equal).
    self.assertAllClose(g_inf(x, training=False), g(x, training=False), atol=1e-6)
    self.assertAllClose(f_inf(x, training=False), f(x, training=False), atol=1e-6)

  def _setup(self, candidate_rows):
    counts_k = 4
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (16, D)).astype(np.float32)
    y = rng.integers(0, counts_k, 16).astype(np.int32)
    y_seed = ((y + 1) % counts_k).astype(np.int32)
    candidate = np.zeros(16, bool)
    candidate[candidate_rows] = True
    g, f = _Recorder(_model(counts_k, seed=7)), _Recorder(_model(counts_k, seed=8))
    return x, y, y_seed, candidate, g, f

  def _reference(self, g, f, x, y, y_seed, config):
    """x* and g's target probability of every row, translated alone (float64 softmax)."""
    xs = np.concatenate([translate(g.model, f.model, x[i:i + 1], y_seed[i:i + 1], y[i:i + 1],
                                   lam=config.lam, step_size=config.step_size,
                                   steps=config.steps).numpy() for i in range(len(x))])
    z = g.model(xs).numpy().astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return xs, (p / p.sum(axis=1, keepdims=True))[np.arange(len(x)), y]

  @parameterized.parameters(
      # (n_buckets, static_shapes, translated batch size): 5 candidates of 16 rows.
      (4, True, 8),     # buckets (0, 4, 8, 12, 16): the smallest holding 5
      (4, False, 5),    # run-time size: exactly the candidates
      (1, True, 16),    # one bucket: the whole batch
      (1, False, 16))
  def test_translated_rows(self, n_buckets, static_shapes, size):
    rows = [1, 4, 5, 9, 14]
    x, y, y_seed, candidate, g, f = self._setup(rows)
    config = M2mConfig(steps=2, step_size=0.2, n_buckets=n_buckets)
    x_star, p = generation.translate_candidates(g, f, x, y_seed, y, candidate, config,
                                                static_shapes=static_shapes)
    x_star, p = x_star.numpy(), p.numpy()
    self.assertEqual(set(g.sizes), {size})  # every pass of g (T steps and the final softmax)
    self.assertEqual(set(f.sizes), {size})
    self.assertLen(g.sizes, config.steps + 1)
    # Candidates first, then the other rows in order: the padded rows of a bucket.
    translated = np.concatenate([rows, np.flatnonzero(~candidate)])[:size]
    xs_ref, p_ref = self._reference(g, f, x, y, y_seed, config)
    # Other batch shapes: module docstring.
    self.assertAllClose(x_star[translated], xs_ref[translated], atol=1e-5, rtol=0)
    self.assertAllClose(p[translated], p_ref[translated], atol=1e-5, rtol=0)
    rest = np.setdiff1d(np.arange(16), translated)
    self.assertAllEqual(x_star[rest], np.zeros_like(x_star[rest]))
    self.assertAllEqual(p[rest], np.zeros_like(p[rest]))

  @parameterized.parameters(True, False)
  def test_no_candidate_translates_nothing(self, static_shapes):
    x, y, y_seed, candidate, g, f = self._setup([])
    x_star, p = generation.translate_candidates(g, f, x, y_seed, y, candidate,
                                                M2mConfig(steps=2, n_buckets=4),
                                                static_shapes=static_shapes)
    self.assertEqual(g.sizes + f.sizes, [])
    self.assertAllEqual(x_star, np.zeros_like(x))
    self.assertAllEqual(p, np.zeros(16))

  def test_unknown_batch_size_with_static_shapes_translates_every_row(self):
    x, y, y_seed, candidate, g, f = self._setup([2, 3])
    config = M2mConfig(steps=2, step_size=0.2, n_buckets=4)
    fn = tf.function(lambda a: generation.translate_candidates(g.model, f.model, a, y_seed, y,
                                                               candidate, config),
                     input_signature=[tf.TensorSpec([None, D])])
    xs_ref, p_ref = self._reference(g, f, x, y, y_seed, config)
    x_star, p = fn(tf.constant(x))
    self.assertAllClose(x_star, xs_ref, atol=1e-5, rtol=0)  # module docstring
    self.assertAllClose(p, p_ref, atol=1e-5, rtol=0)


class _Recorder:
  """Wraps a classifier and records the batch sizes it is called with (eagerly)."""

  def __init__(self, model):
    self.model = model
    self.sizes = []

  def __call__(self, x, training=False):
    self.sizes.append(int(x.shape[0]))
    return self.model(x, training=training)


class AcceptTest(tf.test.TestCase, parameterized.TestCase):
  """Step 5 (`accept`) on hand-made candidates, x* and probabilities."""

  def _case(self, shape=(D,)):
    y = np.array([0, 1, 2, 3, 1, 2], np.int32)
    x = np.arange(6 * np.prod(shape), dtype=np.float32).reshape((6,) + shape)
    cand = _candidates(candidate=np.array([1, 1, 1, 0, 1, 1], bool), x_seed=x + 200.0,
                       y_seed=np.array([1, 0, 0, 0, 3, 0], np.int32))
    # gamma = 0.25: p == gamma is accepted; row 3 is no candidate, whatever its p.
    p = np.array([0.5, 0.25, 0.2499, 0.9, 0.25, 0.1], np.float32)
    return x, y, cand, x + 100.0, p, np.array([1, 1, 0, 0, 1, 0], bool)

  @parameterized.parameters(((D,),), ((4, 4, 3),))
  def test_translate_and_clean(self, shape):
    x, y, cand, x_star, p, want = self._case(shape)
    for mode, x_acc in (("translate", x_star), ("clean", x + 200.0)):
      x_new, y_new, accepted = generation.accept(x, y, cand, x_star, p,
                                                 M2mConfig(gamma=0.25, accept_mode=mode),
                                                 tf.constant([1, 2], tf.int64), 4)
      self.assertAllEqual(accepted, want)
      self.assertAllEqual(x_new[want], x_acc[want])
      self.assertAllEqual(x_new[~want], x[~want])
      self.assertAllEqual(y_new, y)  # the slot keeps its own label y_i

  def test_random_label(self):
    n, k = 3000, 5
    y = np.full(n, 1, np.int32)
    y[::2] = 3
    x = np.zeros((n, D), np.float32)
    cand = _candidates(candidate=np.arange(n) % 3 != 0, x_seed=x, y_seed=np.zeros(n, np.int32))
    x_star = np.ones((n, D), np.float32)
    x_new, y_new, accepted = generation.accept(x, y, cand, x_star, np.ones(n, np.float32),
                                               M2mConfig(gamma=0.5, accept_mode="random_label"),
                                               tf.constant([3, 1], tf.int64), k)
    accepted, y_new = accepted.numpy(), y_new.numpy()
    self.assertAllEqual(accepted, np.arange(n) % 3 != 0)
    self.assertAllEqual(x_new[accepted], x_star[accepted])  # x*, with another label
    self.assertAllEqual(y_new[~accepted], y[~accepted])
    for target in (1, 3):  # y_i = target, y_j = 0: uniform over the three other classes
      labels = y_new[accepted & (y == target)]
      for c in set(range(k)) - {0, target}:
        _within(self, int(np.sum(labels == c)), len(labels), 1 / 3, msg=f"label {c}")
      self.assertEqual(int(np.sum((labels == 0) | (labels == target))), 0)


# generate() before its split into stages (commit c646442), recorded on these inputs: the
# composition of the stages must give the same batch. REGRESSION_CASES name the configurations.
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "generation_regression.npz")
# The fixture was recorded with the per-sample random start (then the only one).
REGRESSION_CASES = {
    "buckets": (dict(beta=0.99, gamma=0.3, steps=3, step_size=0.2, n_buckets=3,
                     start_noise_mode="per_sample"), True, False),
    "run_time_size": (dict(beta=0.99, gamma=0.3, steps=3, step_size=0.2, n_buckets=4,
                           start_noise_mode="per_sample"), False, False),
    "pool_random_label": (dict(beta=0.99, gamma=0.2, steps=2, step_size=0.2, n_buckets=1,
                               no_reject=True, accept_mode="random_label",
                               start_noise_mode="per_sample"), True, True),
    "clean_unfolded": (dict(beta=0.9, gamma=0.3, steps=2, step_size=0.2, n_buckets=8,
                            accept_mode="clean", fold_batchnorm=False, start_noise=0.0), True,
                       False),
}


def regression_inputs(data):
  """(g, f, x, y, counts, pool) of the fixture (`data` maps its arrays)."""
  models = []
  for name in ("g", "f"):
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Dense(4)])
    model.set_weights([data[f"{name}_{i}"] for i in range(len(model.weights))])
    models.append(model)
  pool = generation.make_seed_pool(data["pool_x"], data["pool_y"], 4)
  return models[0], models[1], data["x"], data["y"], data["counts"], pool


class RegressionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*((name, name) for name in REGRESSION_CASES))
  def test_same_batch_as_before_the_split(self, case):
    kwargs, static_shapes, pooled = REGRESSION_CASES[case]
    with np.load(FIXTURE) as data:
      data = dict(data)
    g, f, x, y, counts, pool = regression_inputs(data)
    x_new, y_new, stats = generate(g, f, x, y, counts, M2mConfig(**kwargs), data["seed"],
                                   pool if pooled else None, static_shapes=static_shapes)
    self.assertAllEqual(y_new, data[f"{case}/y_new"])
    self.assertAllEqual([stats[k] for k in ("gen_slots", "candidates", "accepted")],
                        data[f"{case}/stats"])
    self.assertAllEqual(np.any(x_new.numpy() != x, axis=1),
                        np.any(data[f"{case}/x_new"] != x, axis=1))
    self.assertGreater(float(stats["accepted"]), 0)
    # Bitwise equal on the machine that recorded it; other CPUs' kernels may round
    # x* differently (module docstring).
    self.assertAllClose(x_new, data[f"{case}/x_new"], atol=1e-5, rtol=0)


if __name__ == "__main__":
  tf.test.main()
