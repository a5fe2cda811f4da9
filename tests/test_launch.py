"""launch/: a tiny grid and hyper-parameter selection run end to end, resume, and make their tables."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pandas as pd

from launch import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRA = "--extra=epochs=3,deferred_epoch=1,warmup_epochs=1"


def _run(args, env):
  proc = subprocess.run([sys.executable, "-m"] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout


class LaunchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.env = dict(os.environ, M2M_CACHE_DIR=os.path.join(cls.tmp, "cache"),
                   TF_CPP_MIN_LOG_LEVEL="2")

  def test_hparam_selection_then_grid_then_resume(self):
    res = os.path.join(self.tmp, "results")
    grid_root = os.path.join(self.tmp, "grid")
    _run(["launch.select_hparams", "--dataset=synthetic_lt", "--losses=ce", "--seeds=0",
          "--betas=0.9,0.999", "--lams=0.5", "--gammas=0.9", f"--root={self.tmp}/hp",
          f"--grid_root={grid_root}", f"--results_dir={res}", EXTRA], self.env)
    with open(os.path.join(res, "hparams_synthetic_lt.json")) as fh:
      hp = json.load(fh)
    self.assertLen(hp["grid"], 2)
    best = max(hp["grid"], key=lambda r: r["val_bacc"])
    self.assertEqual(hp["selected"]["ce"]["beta"], best["beta"])
    self.assertNotIn("test_bacc", json.dumps(hp))  # selection never sees test metrics

    out = _run(["launch.grid", "--dataset=synthetic_lt", "--rows=erm,drs,m2m", "--seeds=0,1",
                f"--root={grid_root}", f"--results_dir={res}", EXTRA], self.env)
    self.assertIn("M2m hyper-parameters from", out)
    df = pd.read_csv(os.path.join(res, "synthetic_lt.csv"))
    for col in ("loss", "rebalancing", "seed", "test_bacc", "test_gm", "n_zero_recall",
                "val_bacc", "seconds"):
      self.assertIn(col, df.columns)
    self.assertEqual(sorted(df["row"].unique()), ["drs", "erm", "m2m"])
    self.assertLen(df, 6)
    self.assertEqual(set(df["rebalancing"]), {"none", "drs", "m2m"})
    with open(os.path.join(grid_root, "m2m_s0", "flags.json")) as fh:
      flags = json.load(fh)
    self.assertEqual(flags["beta"], hp["selected"]["ce"]["beta"])
    self.assertTrue(flags["g_checkpoint"].endswith(os.path.join("erm_s0", "best_f.weights.h5")))
    md = open(os.path.join(res, "synthetic_lt.md")).read()
    self.assertIn("ERM-M2m", md)
    self.assertIn("±", md)
    # A second invocation finds every run finished and redoes none.
    out = _run(["launch.grid", "--dataset=synthetic_lt", "--rows=erm,drs,m2m", "--seeds=0,1",
                f"--root={grid_root}", f"--results_dir={res}", EXTRA], self.env)
    self.assertIn("0 runs to do", out)

  def test_markdown_table_against_paper(self):
    df = pd.DataFrame({"row": ["erm", "erm"], "test_bacc": [60.0, 62.0], "test_gm": [50.0, 52.0],
                       "n_zero_recall": [1, 0], "val_bacc": [70.0, 70.0], "seconds": [10, 12]})
    md = tables.markdown_table(df, {"erm": tables.TABLE2_ROWS["erm"]}, tables.PAPER["reuters"], "t")
    self.assertIn("| ERM | 2 | 61.0 ± 1.4 | 51.0 ± 1.4 | 59.8 / 53.8 | +1.2 | -2.8 |", md)


if __name__ == "__main__":
  absltest.main()
