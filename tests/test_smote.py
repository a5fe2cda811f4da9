"""Tests of m2m_tf.smote with imbalanced-learn as the oracle."""

from absl.testing import absltest
from absl.testing import parameterized
from imblearn.over_sampling import SMOTE
import numpy as np
from sklearn.base import clone

from m2m_tf import smote as smote_lib


def _data(seed=0, d=3):
  """Imbalanced 2-D/3-D data; the largest class is class 2, not class 0."""
  rng = np.random.default_rng(seed)
  counts = {0: 12, 1: 7, 2: 30, 3: 9}
  x = np.concatenate([rng.normal(loc=3 * c, size=(n, d))
                      for c, n in counts.items()]).astype(np.float32)
  y = np.concatenate([np.full(n, c) for c, n in counts.items()]).astype(np.int64)
  perm = rng.permutation(y.size)
  return x[perm], y[perm]


def _fitted_smote(x, y, k):
  """An imblearn SMOTE after fit_resample, so that its `nn_k_` exists."""
  sm = SMOTE(k_neighbors=k, random_state=0)
  sm.fit_resample(x, y)
  return sm


def _imblearn_neighbours(sm, x_class):
  """Neighbour indices from imblearn's own fitted nn_k_ (self column dropped)."""
  nn = clone(sm.nn_k_).fit(x_class)
  return nn.kneighbors(x_class, return_distance=False)[:, 1:]


class SmoteTest(parameterized.TestCase):

  @parameterized.parameters(0, 1)
  def test_counts_match_imblearn(self, seed):
    x, y = _data(seed)
    x_res, y_res = smote_lib.smote(x, y, k_neighbors=5, seed=seed)
    xi, yi = SMOTE(k_neighbors=5, random_state=seed).fit_resample(x, y)
    np.testing.assert_array_equal(np.bincount(y_res), np.bincount(yi))
    np.testing.assert_array_equal(np.bincount(y_res), [30, 30, 30, 30])
    self.assertEqual(x_res.dtype, np.float32)
    self.assertEqual(x_res.shape, xi.shape)
    # Originals first, unchanged and in order; then the synthetic ones by class.
    np.testing.assert_array_equal(x_res[:len(x)], x)
    np.testing.assert_array_equal(y_res[:len(y)], y)
    np.testing.assert_array_equal(y_res[len(y):],
                                  np.repeat([0, 1, 3], [18, 23, 21]))

  def test_target_counts_match_imblearn(self):
    x, y = _data(2)
    target = {0: 20, 1: 15, 3: 9}
    _, y_res = smote_lib.smote(x, y, target_counts=target)
    _, yi = SMOTE(sampling_strategy=target, random_state=0).fit_resample(x, y)
    np.testing.assert_array_equal(np.bincount(y_res), np.bincount(yi))
    np.testing.assert_array_equal(np.bincount(y_res), [20, 15, 30, 9])
    _, y_arr = smote_lib.smote(x, y, target_counts=[20, 15, 30, 9])
    np.testing.assert_array_equal(np.bincount(y_arr), [20, 15, 30, 9])

  def test_synthetic_points_lie_on_neighbour_segments(self):
    x, y = _data(3)
    k = 5
    x_res, y_res = smote_lib.smote(x, y, k_neighbors=k, seed=3)
    sm = _fitted_smote(x, y, k)
    n_orig = len(y)
    for c in np.unique(y):
      xc = x[y == c].astype(np.float64)
      nbrs = _imblearn_neighbours(sm, xc)
      self.assertEqual(nbrs.shape, (len(xc), k))
      synth = x_res[n_orig:][y_res[n_orig:] == c].astype(np.float64)
      for s in synth:
        found = False
        for i in range(len(xc)):
          base = xc[i]
          for j in nbrs[i]:
            d = xc[j] - base
            u = np.dot(s - base, d) / np.dot(d, d)
            resid = np.linalg.norm(s - (base + u * d))
            if resid < 1e-4 and -1e-6 <= u <= 1 + 1e-6:
              found = True
              break
          if found:
            break
        self.assertTrue(found, msg=f"class {c}: {s} is on no neighbour segment")

  def test_neighbours_match_imblearn(self):
    x, y = _data(4)
    sm = _fitted_smote(x, y, 5)
    for c in range(4):
      xc = x[y == c]
      ours = np.sort(smote_lib.neighbours(xc, 5), axis=1)
      ref = np.sort(_imblearn_neighbours(sm, xc), axis=1)
      np.testing.assert_array_equal(ours, ref)

  def test_interpolation_matches_imblearn_generate_samples(self):
    x, y = _data(5)
    xc = x[y == 1].astype(np.float64)
    sm = _fitted_smote(x, y, 5)
    nbrs = _imblearn_neighbours(sm, xc)
    rng = np.random.default_rng(0)
    rows, cols, steps = smote_lib.draws(rng, len(xc), nbrs.shape[1], 50)
    ref = sm._generate_samples(xc, xc, nbrs, rows, cols, steps[:, None])
    ours = smote_lib.interpolate(xc, nbrs, rows, cols, steps)
    # The same float64 formula x + u (x' - x) (|x| <~ 12): equal up to a few
    # u64 * 12 = ~3e-15 (measured bitwise equal).
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # And the documented formula, written out in float64.
    by_hand = xc[rows] + steps[:, None] * (xc[nbrs[rows, cols]] - xc[rows])
    np.testing.assert_allclose(ours, by_hand, rtol=1e-12, atol=1e-12)

  def test_smote_uses_these_draws(self):
    # smote() = the draws of `draws` (one default_rng stream, classes in
    # increasing order) fed to `interpolate`.
    x, y = _data(6)
    x_res, _ = smote_lib.smote(x, y, seed=11)
    rng = np.random.default_rng(11)
    parts = []
    for c, n_new in ((0, 18), (1, 23), (3, 21)):
      xc = x[y == c]
      nbrs = smote_lib.neighbours(xc, 5)
      parts.append(smote_lib.interpolate(
          xc, nbrs, *smote_lib.draws(rng, len(xc), 5, n_new)))
    # smote() returns float32: the float64 values rounded, <= u32 |x| =
    # 6e-8 |x|, inside 1e-6 + 1e-6 |x|. Measured 5% of the tolerance.
    np.testing.assert_allclose(x_res[len(y):], np.concatenate(parts),
                               rtol=1e-6, atol=1e-6)

  def test_gaps_in_unit_interval(self):
    _, _, steps = smote_lib.draws(np.random.default_rng(0), 4, 3, 1000)
    self.assertTrue(np.all((steps >= 0) & (steps < 1)))

  def test_deterministic_in_seed(self):
    x, y = _data(7)
    a = smote_lib.smote(x, y, seed=5)
    b = smote_lib.smote(x, y, seed=5)
    c = smote_lib.smote(x, y, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    self.assertFalse(np.array_equal(a[0], c[0]))

  def test_small_classes(self):
    # Class 1 has 3 examples (<= k = 5: uses 2 neighbours); class 2 has one.
    x = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0], [5, 0],
                  [0, 10], [0, 11], [0, 13], [7, 7]], np.float32)
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    x_res, y_res = smote_lib.smote(x, y, k_neighbors=5)
    np.testing.assert_array_equal(np.bincount(y_res), [6, 6, 6])
    np.testing.assert_array_equal(x_res[y_res == 2], np.tile([[7, 7]], (6, 1)))
    new1 = x_res[10:][y_res[10:] == 1]
    np.testing.assert_array_equal(new1[:, 0], 0)   # on the x = 0 line
    self.assertTrue(np.all((new1[:, 1] >= 10) & (new1[:, 1] <= 13)))
    self.assertEqual(smote_lib.neighbours(x[6:9], 5).shape, (3, 2))

  def test_images(self):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(9, 4, 4, 3)).astype(np.uint8)
    y = np.array([0] * 6 + [1] * 3)
    x_res, y_res = smote_lib.smote(x, y, k_neighbors=2)
    self.assertEqual(x_res.shape, (12, 4, 4, 3))
    self.assertEqual(x_res.dtype, np.float32)
    self.assertTrue(np.all((x_res >= 0) & (x_res <= 255)))

  def test_errors(self):
    x, y = _data(8)
    with self.assertRaisesRegex(ValueError, "must be >= the current"):
      smote_lib.smote(x, y, target_counts={2: 10})
    with self.assertRaisesRegex(ValueError, "no example"):
      smote_lib.smote(x, y, target_counts={5: 10})
    with self.assertRaisesRegex(ValueError, "k_neighbors"):
      smote_lib.smote(x, y, k_neighbors=0)
    with self.assertRaisesRegex(ValueError, "integer"):
      smote_lib.smote(x, y.astype(np.float32))
    with self.assertRaisesRegex(ValueError, r"x must be \[N"):
      smote_lib.smote(x[:3], y)


if __name__ == "__main__":
  absltest.main()
