"""launch.momentum_forms: pairing, intervals, loss jumps at the lr drop, the report."""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import pandas as pd
from scipy import stats

from launch import momentum_forms as mf


def _runs(bacc, gm, rows=("erm", "m2m"), seeds=(0, 1, 2)):
  return pd.DataFrame([{"row": r, "seed": s, "test_bacc": bacc[i][j], "test_gm": gm[i][j]}
                       for i, r in enumerate(rows) for j, s in enumerate(seeds)])


def _history(jump_by_run, epochs=6, drop=4):
  """lr 0.1 then 0.01 from epoch `drop`; loss falls 0.1 an epoch except the jump at the drop."""
  rows = []
  for (row, seed), jump in jump_by_run.items():
    loss = 1.0
    for e in range(epochs):
      loss += jump if e == drop else -0.1 if e else 0.0
      rows.append({"row": row, "seed": seed, "epoch": e, "lr": 0.1 if e < drop else 0.01,
                   "loss": loss})
  return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter


class MomentumFormsTest(absltest.TestCase):

  def test_paired_interval_against_scipy(self):
    keras = _runs([[60, 62, 61], [65, 66, 64]], [[30, 31, 29], [40, 41, 39]])
    torch = _runs([[61, 64, 61.5], [65, 66, 64]], [[30, 31, 29], [39, 40, 38]])
    jumps = {f: mf.loss_jumps(_history({("erm", 0): 0.3, ("m2m", 0): 0.0})) for f in mf.FORMS}
    df = mf.summary(mf.paired(keras, torch), jumps).set_index("row")
    d = np.array([1.0, 2.0, 0.5])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    self.assertAlmostEqual(df.loc["erm", "test_bacc_diff"], d.mean())
    self.assertAlmostEqual(df.loc["erm", "test_bacc_diff_low"], d.mean() - half)
    self.assertAlmostEqual(df.loc["erm", "test_bacc_diff_high"], d.mean() + half)
    self.assertAlmostEqual(df.loc["erm", "test_bacc_keras"], 61.0)
    self.assertAlmostEqual(df.loc["m2m", "test_gm_diff"], -1.0)
    self.assertEqual(df.loc["m2m", "seeds"], 3)
    self.assertAlmostEqual(df.loc["erm", "loss_jump_keras"], 0.3)

  def test_loss_jump_is_taken_at_the_first_drop(self):
    hist = _history({("erm", 0): 0.25, ("erm", 1): -0.05})
    jumps = mf.loss_jumps(hist).set_index("seed")["loss_jump"]
    self.assertAlmostEqual(jumps[0], 0.25)
    self.assertAlmostEqual(jumps[1], -0.05)
    steady = hist.assign(lr=0.1)
    self.assertTrue(mf.loss_jumps(steady)["loss_jump"].isna().all())

  def test_direction(self):
    self.assertEqual(mf.direction(0.1, 0.5), "higher")
    self.assertEqual(mf.direction(-0.5, -0.1), "lower")
    self.assertEqual(mf.direction(-0.1, 0.5), "no clear difference")

  def test_cli_writes_the_report_and_names_unpaired_runs(self):
    tmp = tempfile.mkdtemp()
    keras_dir = os.path.join(tmp, "momentum_keras")
    os.makedirs(keras_dir)
    keras = _runs([[60, 62, 61], [65, 66, 64]], [[30, 31, 29], [40, 41, 39]])
    torch = keras[~((keras.row == "m2m") & (keras.seed == 2))]
    keras.to_csv(os.path.join(keras_dir, "reuters.csv"), index=False)
    torch.to_csv(os.path.join(tmp, "reuters.csv"), index=False)
    runs = {(r, s): 0.1 for r in ("erm", "m2m") for s in (0, 1, 2)}
    for d in (tmp, keras_dir):
      _history(runs).to_csv(os.path.join(d, "reuters_history.csv"), index=False)
    self.assertEqual(mf.main(["--dataset=reuters", f"--results_dir={tmp}"]), 0)
    with open(os.path.join(tmp, "momentum_forms_reuters.md")) as fh:
      md = fh.read()
    self.assertIn("| ERM | 3 | 61.0 / 61.0 | +0.00 [+0.00, +0.00] no clear difference |", md)
    self.assertIn("| ERM-M2m | 2 |", md)
    self.assertIn("Runs in only one of the two tables (left out): m2m_s2.", md)
    self.assertEqual(mf.main(["--dataset=twitter", f"--results_dir={tmp}"]), 1)


if __name__ == "__main__":
  absltest.main()
