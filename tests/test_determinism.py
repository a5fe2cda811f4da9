"""A seeded conv-net run is bit-reproducible on one machine, run again or killed and resumed.

The command line runs with one inter-op thread by default (`--inter_op_threads=1`,
docs/runs.md#determinism): with TensorFlow's default, a ResNet step's last bits depend on the
schedule of its concurrent ops, and two equal runs part after a few steps.
"""

import csv
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from absl.testing import absltest

from helpers import h5_arrays, load_results

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(path):
  """3 classes of 16x16 RGB images, long-tailed (48 / 24 / 12), learnable by their colour."""
  rng = np.random.default_rng(0)
  counts = (48, 24, 12)
  y = np.repeat(np.arange(3), counts)
  x = rng.uniform(0, 0.5, (len(y), 16, 16, 3))
  x[np.arange(len(y)), :, :, y] += 0.5  # the class's channel is brighter
  np.savez(path, x_train=(x * 255).astype(np.uint8), y_train=y)


def _main(data, out, *extra):
  """`python -m m2m_tf.main` on the ResNet-32 image run; returns the process."""
  cmd = [sys.executable, "-m", "m2m_tf.main", f"--dataset=npz:{data}", "--method=erm",
         "--epochs=3", "--batch_size=16", "--seed=3", f"--output_dir={out}", "--verbose=0",
         "--noexport"] + list(extra)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", M2M_CACHE_DIR=os.path.dirname(out))
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _history(out):
  with open(os.path.join(out, "history.csv")) as fh:
    return list(csv.DictReader(fh))


class DeterminismTest(absltest.TestCase):

  def test_equal_runs_and_a_resumed_run_end_bit_identical(self):
    tmp = tempfile.mkdtemp(prefix="m2m_det_")
    data = os.path.join(tmp, "images.npz")
    _images(data)
    folders = {k: os.path.join(tmp, k) for k in ("a", "b", "resumed")}
    for name in ("a", "b"):
      proc = _main(data, folders[name])
      self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    stopped = _main(data, folders["resumed"], "--stop_after=1")
    self.assertEqual(stopped.returncode, 0, stopped.stderr[-2000:])
    self.assertLen(_history(folders["resumed"]), 1)
    resumed = _main(data, folders["resumed"])
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
    want = h5_arrays(os.path.join(folders["a"], "best_f.weights.h5"))
    for name in ("b", "resumed"):
      self.assertEqual(_history(folders[name]), _history(folders["a"]), name)
      self.assertEqual(load_results(folders[name]), load_results(folders["a"]), name)
      got = h5_arrays(os.path.join(folders[name], "best_f.weights.h5"))
      self.assertEqual(sorted(got), sorted(want))
      for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")


if __name__ == "__main__":
  absltest.main()
