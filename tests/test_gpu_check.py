"""Tests of launch/gpu_check: the schedule scaling, the tiny end-to-end mode on the CPU, and
the CPU short-run report."""

import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from launch import gpu_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GpuCheckTest(tf.test.TestCase):

  def test_short_schedule(self):
    s = gpu_check.short_schedule(30, 20)
    self.assertEqual(s["lr_milestones"], (20, 25))  # 160/180 of 200, scaled
    self.assertEqual(s["lr_factors"], (0.01, 0.01))
    self.assertEqual(s["warmup_epochs"], 5)
    s = gpu_check.short_schedule(200, 160)
    self.assertEqual(s["lr_milestones"], (160, 180))  # the paper's recipe
    s = gpu_check.short_schedule(2, 1)
    self.assertEqual(s["lr_milestones"], (1,))
    self.assertEqual(s["warmup_epochs"], 1)
    with self.assertRaisesRegex(ValueError, "deferred < epochs"):
      gpu_check.short_schedule(5, 5)

  def test_tiny_end_to_end(self):
    out = tempfile.mkdtemp(dir=self.get_temp_dir())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "launch.gpu_check", "--tiny", "--out", out,
                           "--verbose=0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(out, "gpu_check.json")) as fh:
      report = json.load(fh)
    self.assertEqual(report["errors"], {})
    st = report["stages"]
    self.assertIn("JPEG substitute", report["label"])
    configs = {r["config"] for r in st["throughput"]}
    self.assertEqual(configs, {"erm/default", "m2m_b8/default"})
    for r in st["throughput"]:
      self.assertGreater(r["median_step_s"], 0)
    for name in ("erm", "m2m"):
      self.assertBetween(st[name]["test_bacc"], 0.0, 100.0)
      self.assertIn("shortened schedule", st[name]["schedule"])
    if "official_g" in st:  # the shared data and the official g are present here
      self.assertEqual(st["official_g"]["n"], 40)  # the tiny subset: 4 images per class
      self.assertGreater(st["official_g"]["bacc"], 30.0)  # far above chance (10%)
    with open(os.path.join(out, "gpu_check.md")) as fh:
      self.assertIn("M2M", fh.read())

  def test_short_run_report(self):
    tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
    for name, bacc in (("erm", 60.0), ("m2m", 70.5)):
      os.makedirs(os.path.join(tmp, name))
      with open(os.path.join(tmp, name, "results.json"), "w") as fh:
        json.dump({"dataset": "cifar10_jpeg_lt", "method": name, "test_bacc": bacc,
                   "test_gm": bacc - 3, "val_bacc": bacc + 1, "best_epoch": 9,
                   "seconds": 100.0}, fh)
    out = os.path.join(tmp, "r.json")
    rep = gpu_check.write_short_run_report(os.path.join(tmp, "erm"), os.path.join(tmp, "m2m"),
                                           out, 10, 8, "test machine")
    self.assertEqual(rep["runs"]["m2m"]["test_bacc"], 70.5)
    self.assertIn("JPEG substitute", rep["label"])
    self.assertIn("10 epochs", rep["label"])
    with open(out[:-5] + ".md") as fh:
      md = fh.read()
    self.assertIn("| M2M | 70.50 | 67.50 |", md)


if __name__ == "__main__":
  tf.test.main()
