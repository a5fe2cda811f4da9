"""launch/selection_ties.py: first and last best-validation epochs, per run and per table."""

import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pandas as pd

from launch import selection_ties

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _history(row, seed, val, test):
  return pd.DataFrame({"row": row, "seed": seed, "epoch": range(len(val)), "val_bacc": val,
                       "test_bacc": test})


class TiesTest(absltest.TestCase):

  def test_tie_epochs(self):
    self.assertEqual(selection_ties.tie_epochs([1.0, 3.0, 2.0, 3.0, math.nan]), (1, 3))
    self.assertEqual(selection_ties.tie_epochs([5.0, 1.0]), (0, 0))
    # Floating-point noise below 1e-9 is a tie; a real difference is not.
    self.assertEqual(selection_ties.tie_epochs([2.0, 2.0 + 1e-12, 2.0 - 1e-6]), (0, 1))

  def test_runs_and_summary(self):
    hist = pd.concat([
        _history("erm", 0, [1.0, 4.0, 4.0, 2.0], [10.0, 20.0, 23.0, 30.0]),  # moves: +3
        _history("erm", 1, [1.0, 4.0, 3.0, 4.0], [10.0, 20.0, 30.0, 20.0]),  # moves, same test
        _history("drs", 0, [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]),  # no tie
    ])
    runs = selection_ties.run_rows(hist).set_index(["row", "seed"])
    self.assertEqual(tuple(runs.loc[("erm", 0), ["epoch_first", "epoch_last"]]), (1, 2))
    self.assertEqual(tuple(runs.loc[("erm", 1), ["epoch_first", "epoch_last"]]), (1, 3))
    self.assertEqual(tuple(runs.loc[("drs", 0), ["epoch_first", "epoch_last"]]), (3, 3))
    s = selection_ties.summary_row("t", runs.reset_index())
    self.assertEqual((s["runs"], s["epoch_moves"], s["test_changes"]), (3, 2, 1))
    self.assertAlmostEqual(s["mean_change"], 1.0)
    self.assertAlmostEqual(s["largest_change"], 3.0)

  def test_cli_writes_both_files_and_refuses_an_empty_folder(self):
    out = tempfile.mkdtemp()
    cmd = [sys.executable, "-m", "launch.selection_ties", f"--results_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("no *_history.csv under", proc.stderr)
    _history("erm", 0, [1.0, 2.0, 2.0], [5.0, 6.0, 7.5]).to_csv(
        os.path.join(out, "demo_history.csv"), index=False)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    self.assertEqual(pd.read_csv(os.path.join(out, "selection_ties.csv"))["largest_change"][0], 1.5)
    with open(os.path.join(out, "selection_ties.md")) as fh:
      self.assertIn("| demo | 1 | 1 | 1 | +1.500 | 1.50 |", fh.read())


if __name__ == "__main__":
  absltest.main()
