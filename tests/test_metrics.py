"""Tests of m2m_tf.metrics against scikit-learn, imbalanced-learn and hand values.

Tolerances: everything here is float64 arithmetic on integer counts (a few
divisions, means, a product and a root; values <= 100), within a few
u64 = 1e-15 relative of each other whatever the CPU or libm; places=12,
rtol=1e-12 and assertAlmostEqual's default places=7 leave >= 1000x. No float32
or TF kernel is involved. Measured: bitwise equal or within 1e-16.
"""

import json
import math

from absl.testing import absltest
from absl.testing import parameterized
from imblearn.metrics import geometric_mean_score
import numpy as np
import sklearn.metrics

from m2m_tf import metrics


def _random_preds(k, n, seed, acc=0.6):
  rng = np.random.default_rng(seed)
  y_true = np.repeat(np.arange(k), n // k)
  y_pred = np.where(rng.random(y_true.size) < acc, y_true,
                    rng.integers(0, k, y_true.size))
  return y_true, y_pred


class BasicMetricsTest(parameterized.TestCase):

  @parameterized.parameters((3, 30, 0), (10, 200, 1), (36, 720, 2))
  def test_confusion_matrix_and_bacc_vs_sklearn(self, k, n, seed):
    y_true, y_pred = _random_preds(k, n, seed)
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(
        cm, sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(k)))
    rec = metrics.per_class_recall(cm)
    np.testing.assert_allclose(
        rec, sklearn.metrics.recall_score(y_true, y_pred, average=None,
                                          labels=range(k)), rtol=1e-12)
    self.assertAlmostEqual(
        metrics.balanced_accuracy(rec),
        sklearn.metrics.balanced_accuracy_score(y_true, y_pred), places=12)

  @parameterized.parameters(0, 1, 2)
  def test_gm_vs_imblearn(self, seed):
    y_true, y_pred = _random_preds(8, 160, seed)
    rec = metrics.per_class_recall(metrics.confusion_matrix(y_true, y_pred, 8))
    self.assertAlmostEqual(
        metrics.geometric_mean(rec),
        geometric_mean_score(y_true, y_pred, average="multiclass",
                             correction=0.001), places=12)

  def test_gm_with_zero_recall_vs_imblearn(self):
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 0, 0, 2, 2, 2, 0, 0])  # classes 1, 3: recall 0
    rec = metrics.per_class_recall(metrics.confusion_matrix(y_true, y_pred, 4))
    np.testing.assert_allclose(rec, [2 / 3, 0, 3 / 4, 0])
    self.assertEqual(metrics.n_zero_recall(rec), 2)
    ours = metrics.geometric_mean(rec, correction=0.001)
    ref = geometric_mean_score(y_true, y_pred, average="multiclass",
                               correction=0.001)
    self.assertAlmostEqual(ours, ref, places=12)
    self.assertAlmostEqual(ours, (2 / 3 * 0.001 * 3 / 4 * 0.001) ** 0.25,
                           places=12)
    self.assertEqual(metrics.geometric_mean(rec, correction=0.0), 0.0)
    self.assertAlmostEqual(
        metrics.geometric_mean(rec, correction=0.0),
        geometric_mean_score(y_true, y_pred, average="multiclass"))

  def test_absent_class_is_nan_and_excluded(self):
    # Class 2 has no test example (only predicted once).
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])
    rec = metrics.per_class_recall(metrics.confusion_matrix(y_true, y_pred, 3))
    self.assertTrue(math.isnan(rec[2]))
    self.assertAlmostEqual(metrics.balanced_accuracy(rec), 0.75)
    self.assertAlmostEqual(metrics.geometric_mean(rec), math.sqrt(0.5))
    self.assertEqual(metrics.n_zero_recall(rec), 0)

  def test_bad_labels(self):
    with self.assertRaisesRegex(ValueError, "outside"):
      metrics.confusion_matrix([0, 3], [0, 1], 3)
    with self.assertRaisesRegex(ValueError, "length"):
      metrics.confusion_matrix([0, 1], [0], 3)


class GroupsTest(parameterized.TestCase):

  def test_majority_unsorted_counts(self):
    # Sorted: class 3 (500), 1 (300), 0 (100), 4 (60), 2 (40); total 1000.
    # Cumulative: 500 (= 50%, not > 50%), 800 (> 50%) -> majority {3, 1}.
    counts = np.array([100, 300, 40, 500, 60])
    np.testing.assert_array_equal(metrics.majority_classes(counts),
                                  [False, True, False, True, False])
    recalls = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    major, minor = metrics.major_minor_accuracy(recalls, counts)
    self.assertAlmostEqual(major, (0.2 + 0.4) / 2)
    self.assertAlmostEqual(minor, (0.1 + 0.3 + 0.5) / 3)

  def test_majority_single_dominant_class_not_first(self):
    counts = np.array([10, 10, 900, 80])
    np.testing.assert_array_equal(metrics.majority_classes(counts),
                                  [False, False, True, False])

  def test_shot_groups_by_hand(self):
    counts = np.array([19, 20, 100, 101, 5, 3000])
    g = metrics.shot_groups(counts)
    np.testing.assert_array_equal(g["many"], [0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(g["medium"], [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(g["few"], [1, 0, 0, 0, 1, 0])
    recalls = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    many, medium, few = metrics.shot_accuracy(recalls, counts)
    self.assertAlmostEqual(many, 0.5)
    self.assertAlmostEqual(medium, 0.25)
    self.assertAlmostEqual(few, 0.3)

  def test_empty_shot_group_is_nan(self):
    many, medium, few = metrics.shot_accuracy([0.5, 0.7], [500, 300])
    self.assertAlmostEqual(many, 0.6)
    self.assertTrue(math.isnan(medium) and math.isnan(few))

  def test_cumulative_false_positives(self):
    # cm rows true, cols pred. FP per predicted class: col sums - diag.
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [4, 0, 6]])
    # FP = [6, 1, 1]. Training counts: class 2 most frequent, then 0, then 1.
    out = metrics.cumulative_false_positives(cm, [50, 10, 90])
    np.testing.assert_array_equal(out, [1, 7, 8])


class SummarizeTest(absltest.TestCase):

  def test_summary_is_json_and_percent(self):
    counts = [5, 200, 50]   # class 1 largest
    y_true = np.array([0, 0, 1, 1, 1, 1])
    y_pred = np.array([1, 1, 1, 1, 1, 0])  # class 2 absent from the test set
    s = metrics.summarize(y_true, y_pred, counts)
    text = json.dumps(s, allow_nan=False)
    self.assertIn("bacc", text)
    self.assertEqual(s["per_class_recall"], [0.0, 75.0, None])
    self.assertAlmostEqual(s["bacc"], 37.5)
    self.assertAlmostEqual(
        s["bacc"],
        100 * sklearn.metrics.balanced_accuracy_score(y_true, y_pred))
    self.assertAlmostEqual(s["gm"], 100 * math.sqrt(0.001 * 0.75))
    self.assertEqual(s["n_zero_recall"], 1)
    self.assertEqual(s["confusion_matrix"], [[0, 2, 0], [1, 3, 0], [0, 0, 0]])
    # Majority: class 1 (200 of 255 > 50%).
    self.assertAlmostEqual(s["major_acc"], 75.0)
    self.assertAlmostEqual(s["minor_acc"], 0.0)   # class 2 NaN, excluded
    self.assertAlmostEqual(s["many_acc"], 75.0)
    self.assertIsNone(s["medium_acc"])           # only class 2, no test data
    self.assertAlmostEqual(s["few_acc"], 0.0)
    # FP = [1, 2, 0] ordered (1, 2, 0) -> [2, 2, 3].
    self.assertEqual(s["cumulative_fp"], [2, 2, 3])
    self.assertAlmostEqual(s["acc"], 50.0)
    self.assertEqual(
        set(s), {"acc", "bacc", "gm", "n_zero_recall", "per_class_recall",
                 "confusion_matrix", "major_acc", "minor_acc", "many_acc",
                 "medium_acc", "few_acc", "cumulative_fp"})


if __name__ == "__main__":
  absltest.main()
