"""launch/cifar/verdicts.py: bACC against scikit-learn, the paired bootstrap against its
normal approximation, stored predictions and their staleness, the verdict lines."""

import json
import os
import tempfile

from absl.testing import absltest
import numpy as np
from sklearn.metrics import balanced_accuracy_score

from launch.cifar import verdicts as cv
from launch.cifar.runs import Run

K = 10


def _balanced_labels(per_class: int) -> np.ndarray:
  return np.repeat(np.arange(K), per_class)


def _predictions_with_accuracy(y: np.ndarray, acc: float, rng) -> np.ndarray:
  """Predictions right on exactly `acc` of each class's examples, wrong (next class) elsewhere."""
  pred = (y + 1) % K
  for k in range(K):
    idx = np.flatnonzero(y == k)
    pred[rng.choice(idx, int(round(acc * len(idx))), replace=False)] = k
  return pred


def _run(root: str, stage: str, finished: bool = True, weights: bytes = b"w") -> Run:
  d = os.path.join(root, f"{stage}_s0")
  os.makedirs(d, exist_ok=True)
  if weights is not None:
    with open(os.path.join(d, "best_f.weights.h5"), "wb") as fh:
      fh.write(weights)
  return Run(stage, "ce", stage, d, results={} if finished else None)


class BalancedAccuracyTest(absltest.TestCase):

  def test_equals_scikit_learn_and_is_vectorised(self):
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, (4, 300))
    y[:, :K] = np.arange(K)  # every class present in every row
    pred = np.where(rng.random((4, 300)) < 0.6, y, rng.integers(0, K, (4, 300)))
    rows = cv.balanced_accuracy(y, pred, K, axis=-1)
    for i in range(4):
      self.assertAlmostEqual(rows[i], 100 * balanced_accuracy_score(y[i], pred[i]), places=10)


class PairedDifferenceTest(absltest.TestCase):

  def test_identical_predictions_have_no_difference(self):
    y = _balanced_labels(30)
    pred = _predictions_with_accuracy(y, 0.5, np.random.default_rng(1))
    self.assertEqual(cv.paired_difference(y, pred, pred, K), (0.0, 0.0, 0.0))

  def test_interval_matches_the_normal_approximation_of_a_paired_mean(self):
    rng = np.random.default_rng(2)
    y = _balanced_labels(100)
    a = _predictions_with_accuracy(y, 0.8, rng)
    b = _predictions_with_accuracy(y, 0.6, rng)
    d, lo, hi = cv.paired_difference(y, a, b, K, seed=0)
    self.assertAlmostEqual(d, 20.0, places=9)  # exact by construction
    # With equal class sizes bACC(a) - bACC(b) is the mean of per-image differences
    # (a right) - (b right); its 95% interval is about +-1.96 sd / sqrt(n). The bootstrap's
    # percentile endpoints carry ~3% Monte Carlo error at 2000 resamples and class sizes
    # vary in a resample, hence the 15% allowance on each half-width.
    diff = 100.0 * ((a == y).astype(float) - (b == y).astype(float))
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(y))
    self.assertLess(abs((d - lo) - half), 0.15 * half)
    self.assertLess(abs((hi - d) - half), 0.15 * half)
    self.assertGreater(lo, 0.0)
    # Seeded: the same call gives the same interval; swapping the rows negates it.
    self.assertEqual(cv.paired_difference(y, a, b, K, seed=0), (d, lo, hi))
    d2, lo2, hi2 = cv.paired_difference(y, b, a, K, seed=0)
    self.assertAlmostEqual(d2, -d)
    self.assertAlmostEqual(lo2, -hi, places=6)
    self.assertAlmostEqual(hi2, -lo, places=6)


class StoredPredictionsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.y = _balanced_labels(20)
    rng = np.random.default_rng(3)
    self.preds = {"erm": _predictions_with_accuracy(self.y, 0.5, rng),
                  "drs": _predictions_with_accuracy(self.y, 0.6, rng),
                  "m2m": _predictions_with_accuracy(self.y, 0.9, rng)}
    self.runs = [_run(self.root, "erm"), _run(self.root, "drs"),
                 _run(self.root, "m2m", weights=b"m"), _run(self.root, "ldam", finished=False)]
    self.path = os.path.join(self.root, cv.PREDICTIONS)

  def test_round_trip_and_stale_weights(self):
    made = cv.write_predictions(self.runs, self.y, lambda r: self.preds[r.stage], self.path)
    # By run key; the unfinished row is not predicted.
    self.assertEqual(sorted(made), ["drs_s0", "erm_s0", "m2m_s0"])
    y, preds, stale = cv.read_predictions(self.runs, self.path)
    np.testing.assert_array_equal(y, self.y)
    np.testing.assert_array_equal(preds["m2m_s0"], self.preds["m2m"])
    self.assertEqual(stale, [])
    with open(self.runs[2].weights, "wb") as fh:  # m2m's weights change after the predictions
      fh.write(b"retrained")
    _, preds, stale = cv.read_predictions(self.runs, self.path)
    self.assertEqual((sorted(preds), stale), (["drs_s0", "erm_s0"], ["m2m_s0"]))

  def test_current_predictions_are_kept_not_made_again(self):
    cv.write_predictions(self.runs, self.y, lambda r: self.preds[r.stage], self.path)
    with open(self.runs[2].weights, "wb") as fh:  # only m2m's weights change
      fh.write(b"retrained")
    again = []

    def predict_run(run):
      again.append(run.stage)
      return self.preds["erm"]

    made = cv.write_predictions(self.runs, self.y, predict_run, self.path)
    self.assertEqual(again, ["m2m"])
    np.testing.assert_array_equal(made["drs_s0"], self.preds["drs"])
    _, preds, stale = cv.read_predictions(self.runs, self.path)
    self.assertEqual((sorted(preds), stale), (["drs_s0", "erm_s0", "m2m_s0"], []))
    np.testing.assert_array_equal(preds["m2m_s0"], self.preds["erm"])

  def test_confusion_check_counts_disagreeing_images(self):
    run = self.runs[0]
    self.assertIsNone(cv.confusion_check(run, self.y, self.preds["erm"], K))
    cm = np.zeros((K, K), int)
    np.add.at(cm, (self.y, self.preds["erm"]), 1)
    with open(os.path.join(run.run_dir, "best_state.json"), "w") as fh:
      json.dump({"summaries": {"test": {"confusion_matrix": cm.tolist()}}}, fh)
    self.assertEqual(cv.confusion_check(run, self.y, self.preds["erm"], K), 0)
    moved = self.preds["erm"].copy()
    wrong = np.flatnonzero(moved != self.y)[:3]
    moved[wrong] = self.y[wrong]  # three images change cell
    self.assertEqual(cv.confusion_check(run, self.y, moved, K), 3)

  def test_verdict_lines(self):
    labels = {"erm": "ERM", "drs": "ERM-DRS", "m2m": "ERM-M2m", "ldam": "LDAM",
              "ldam_drw": "LDAM-DRW", "ldam_m2m": "LDAM-M2m"}
    lines = cv.verdict_lines(self.y, self.preds, ["ldam_drw"], K, labels)
    text = "\n".join(lines)
    self.assertIn("- ERM-M2m - ERM: +40.0 points [", text)
    self.assertIn("- ERM-M2m - ERM-DRS: +30.0 points [", text)
    self.assertRegex(text, r"ERM-M2m - ERM: \+40\.0 points \[\+\d+\.\d, \+\d+\.\d\]: holds")
    self.assertIn("- LDAM-M2m - LDAM: n/a (LDAM-M2m not finished, LDAM not finished)", text)
    self.assertIn("- LDAM-M2m - LDAM-DRW: n/a (LDAM-M2m not finished, LDAM-DRW predictions "
                  "stale)", text)
    self.assertIn("Stale predictions", text)
    self.assertNotIn("per-sample", text)  # rows the labels do not name are left out
    ablation = cv.verdict_lines(self.y, dict(self.preds, m2m_per_sample=self.preds["m2m"]), [],
                                K, dict(labels, m2m_per_sample="per-sample"))
    self.assertIn("- ERM-M2m - per-sample: +0.0 points [+0.0, +0.0]: unresolved",
                  "\n".join(ablation))
    reverse = dict(self.preds, m2m=self.preds["erm"], erm=self.preds["m2m"])
    self.assertRegex("\n".join(cv.verdict_lines(self.y, reverse, [], K, labels)),
                     r"ERM-M2m - ERM: -40\.0 points \[-\d+\.\d, -\d+\.\d\]: fails")


if __name__ == "__main__":
  absltest.main()
