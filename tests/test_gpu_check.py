"""Tests of launch/cifar/gpu_check and launch/cifar/short: the schedule scaling and its command, the
tiny end-to-end mode on the CPU, and the CPU short-run report."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
import numpy as np
import tensorflow as tf

from data_prep import splits
from launch.cifar import short as cifar_short
from launch.cifar import gpu_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GpuCheckTest(tf.test.TestCase):

  def test_short_schedule(self):
    s = cifar_short.short_schedule(30, 20)
    self.assertEqual(s["lr_milestones"], (20, 25))  # 160/180 of 200, scaled
    self.assertEqual(s["lr_factors"], (0.01, 0.01))
    self.assertEqual(s["warmup_epochs"], 5)
    s = cifar_short.short_schedule(200, 160)
    self.assertEqual(s["lr_milestones"], (160, 180))  # the paper's recipe
    s = cifar_short.short_schedule(2, 1)
    self.assertEqual(s["lr_milestones"], (1,))
    self.assertEqual(s["warmup_epochs"], 1)
    with self.assertRaisesRegex(ValueError, "deferred < epochs"):
      cifar_short.short_schedule(5, 5)

  def test_schedule_command(self):
    # launch/cifar/cpu_short.sh reads "WARMUP MILESTONES FACTORS" from this command.
    proc = subprocess.run([sys.executable, "-m", "launch.cifar.short", "schedule", "--epochs",
                           "30", "--deferred", "20"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(proc.stdout, "5 20,25 0.01,0.01\n")

  def test_tiny_subset_keeps_the_first_images_of_each_class(self):
    rng = np.random.default_rng(0)
    y = {s: rng.permutation(np.repeat(np.arange(10), 30)) for s in ("train", "val", "test")}
    x = {s: np.arange(len(v)) for s, v in y.items()}  # an image is its own index
    data = splits.DatasetSplits("cifar10_jpeg_lt", x["train"], y["train"], x["val"], y["val"],
                                x["test"], y["test"], tuple(map(str, range(10))), "image",
                                (0.0, 1.0), label="L")
    tiny = gpu_check.tiny_subset(data)
    # Train: 12 images of class 0 down to int(12 / 4) = 3 of class 9 (ratio 4).
    counts = [int(12 * 4 ** (-k / 9)) for k in range(10)]
    self.assertEqual(np.bincount(tiny.y_train).tolist(), counts)
    for split, n in (("train", counts), ("val", [4] * 10), ("test", [4] * 10)):
      xs, ys = getattr(tiny, f"x_{split}"), getattr(tiny, f"y_{split}")
      for k in range(10):  # the first n[k] of class k, in the original array order
        self.assertEqual(xs[ys == k].tolist(), np.flatnonzero(y[split] == k)[:n[k]].tolist())
    self.assertEqual(tiny.label, "L (tiny subset)")

  def test_markdown_of_a_report(self):
    md = gpu_check.markdown({
        "label": "JPEG", "errors": {"erm": "ValueError: x"},
        "stages": {"throughput": [{"config": "erm/xla", "batch_size": 128,
                                   "median_step_s": 0.01234, "samples_per_s": 10372.7}]}})
    self.assertIn("| step (ResNet-32) | batch | median step (s) | samples/s |\n|---|---|---|---|\n"
                  "| erm/xla | 128 | 0.0123 | 10373 |\n", md)
    self.assertIn("- erm: ValueError: x", md)

  @pytest.mark.slow
  def test_tiny_end_to_end(self):
    out = tempfile.mkdtemp(dir=self.get_temp_dir())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "launch.cifar.gpu_check", "--tiny", "--out", out,
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
    rep = cifar_short.write_short_run_report(os.path.join(tmp, "erm"), os.path.join(tmp, "m2m"),
                                             out, 10, 8, "test machine")
    self.assertEqual(rep["runs"]["m2m"]["test_bacc"], 70.5)
    self.assertIn("JPEG substitute", rep["label"])
    self.assertIn("10 epochs", rep["label"])
    with open(out[:-5] + ".md") as fh:
      md = fh.read()
    self.assertIn("| M2M | 70.50 | 67.50 | 71.50 | 9 | 100 |", md)
    # The same report from the command launch/cifar/cpu_short.sh runs.
    out2 = os.path.join(tmp, "r2.json")
    proc = subprocess.run([sys.executable, "-m", "launch.cifar.short", "report", "--erm_dir",
                           os.path.join(tmp, "erm"), "--m2m_dir", os.path.join(tmp, "m2m"),
                           "--output", out2, "--epochs", "10", "--deferred", "8", "--where",
                           "test machine"], cwd=REPO, capture_output=True, text=True, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertIn("m2m test bACC 70.5 GM 67.5", proc.stdout)
    with open(out2[:-5] + ".md") as fh:
      self.assertEqual(fh.read(), md)


if __name__ == "__main__":
  tf.test.main()
