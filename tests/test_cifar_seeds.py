"""launch.cifar.seeds: the CIFAR-10-LT table over seeds and its paired verdicts."""

import math

from absl.testing import absltest
import numpy as np
import pandas as pd
from scipy import stats

from launch.cifar import seeds


def _runs(values):
  """A per-run table: {stage: [bACC or None per seed]} (None: unfinished)."""
  rows = []
  for stage, per_seed in values.items():
    for seed, v in enumerate(per_seed):
      rows.append({"stage": stage, "method": stage.upper(), "seed": seed,
                   "status": "done" if v is not None else "12 of 200 epochs",
                   "epochs": "200/200" if v is not None else "12/200",
                   "test_bacc": math.nan if v is None else v,
                   "test_gm": math.nan if v is None else v - 1.0,
                   "recall_a": math.nan if v is None else v + 2, "recall_b":
                   math.nan if v is None else v - 2, "paper_bacc": 70.0, "paper_gm": 69.0})
  return pd.DataFrame(rows)


class SeedsTest(absltest.TestCase):

  def test_summary_mean_and_sample_std_over_finished_seeds(self):
    df = _runs({"erm": [65.0, 66.5, None], "m2m": [73.0, 74.0, 72.5]})
    s = seeds.summary(df).set_index("stage")
    self.assertEqual(s.loc["erm", "seeds_done"], 2)
    self.assertEqual(s.loc["erm", "seeds_planned"], 3)
    self.assertAlmostEqual(s.loc["m2m", "test_bacc_mean"], np.mean([73.0, 74.0, 72.5]))
    self.assertAlmostEqual(s.loc["m2m", "test_bacc_std"], np.std([73.0, 74.0, 72.5], ddof=1))
    self.assertIn("s2 12/200", s.loc["erm", "per_seed"])
    self.assertEqual(seeds.mean_std([65.0, 66.5]), "65.8 ± 1.1")
    self.assertEqual(seeds.mean_std([65.0]), "65.0")
    self.assertEqual(seeds.mean_std([]), "n/a")

  def test_verdict_interval_is_scipys_t_interval_of_the_paired_differences(self):
    df = _runs({"erm": [65.0, 66.5, 64.0], "m2m": [73.0, 74.0, 72.5]})
    (v,) = seeds.seed_verdicts(df, pairs=(("m2m", "erm"),))
    diffs = [8.0, 7.5, 8.5]
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    self.assertEqual(v["seeds"], [0, 1, 2])
    self.assertAlmostEqual(v["diff"], 8.0)
    self.assertAlmostEqual(v["low"], ci.low)
    self.assertAlmostEqual(v["high"], ci.high)
    self.assertEqual(v["verdict"], "holds")

  def test_only_seeds_both_rows_finished_are_paired(self):
    df = _runs({"erm": [65.0, None, 64.0], "m2m": [73.0, 74.0, None]})
    (v,) = seeds.seed_verdicts(df, pairs=(("m2m", "erm"),))
    self.assertEqual(v["seeds"], [0])
    self.assertEqual(v["verdict"], "unresolved")
    (line,) = seeds.seed_verdict_lines([v], {"m2m": "ERM-M2m", "erm": "ERM"})[2:]
    self.assertIn("n/a (1 shared finished seed: s0 +8.0)", line)

  def test_a_pair_with_a_row_the_table_lacks_is_left_out(self):
    df = _runs({"erm": [65.0, 66.0]})
    self.assertEqual(seeds.seed_verdicts(df, pairs=(("m2m", "erm"),)), [])

  def test_recall_is_averaged_over_finished_seeds(self):
    df = _runs({"erm": [60.0, 70.0, None]})
    r = seeds.recall_over_seeds(df)
    self.assertEqual(int(r["seeds"][0]), 2)
    self.assertAlmostEqual(r["recall_a"][0], 67.0)
    self.assertAlmostEqual(r["recall_b"][0], 63.0)


if __name__ == "__main__":
  absltest.main()
