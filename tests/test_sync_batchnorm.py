"""Synchronized BatchNorm: a ResNet trained on 2 replicas equals the ResNet trained on one device.

tests/sync_bn_script.py trains a ResNet-8 (`models.cifar_resnet(depth=8)`: the ResNet-32 widths
16/32/64, one block per stage, 7 BatchNorms) on 16x16 images, global batch B = 16, for S = 6
SGD steps (lr 0.1, momentum 0.9, coupled weight decay): 3 ERM steps, then 3 M2m steps against a
frozen ResNet-8 g (the translation runs g and f folded: `models.inference_fn`). The same
initial weights and the same global batches train it on one device, on 2 mirrored logical CPUs
and on 2 workers on localhost (MultiWorkerMirroredStrategy, TF_CONFIG), each multi-replica
setting with BatchNorm synchronized (the default for R > 1 replicas) and not.

Tolerance (derived; the measurements are in docs/distributed.md). Compared: for every variable v
of f (kernels, biases, BatchNorm gamma/beta and moving statistics), max|v_R - v_1| against
D = max|v_1 - v_0|, how far the one-device run moved it from its initial value v_0.

1. What differs. With synchronized BatchNorm every replica computes the one-device ops on its
   rows; the only sums that span rows (BatchNorm's mean and mean squared deviation, the weight
   gradients, the loss) are split into R partial sums joined by an all-reduce. Each has at most
   n = B * 16 * 16 = 4096 terms (BatchNorm statistics and conv gradients at full resolution).
   float32: u = 2^-24. Every addition of a sum rounds by at most u times the partial sum s_k;
   under the probabilistic model of rounding errors (independent, mean zero: Higham & Mary
   2019) they add in quadrature, so a sum in any order is within lambda sqrt(n) u max|s_k| of
   the exact one with probability >= 1 - 2 exp(-lambda^2 / 2). lambda = 6 (failure 3e-8 per
   sum), and max|s_k| is the scale that matters (a BatchNorm statistic against the spread it is
   divided by, a gradient against its size: the partial sums of a mean-dominated sum stay below
   it, those of mixed signs wander by about as much as the total). Two orders therefore differ
   by at most eps = 2 * 6 * sqrt(4096) * u = 4.6e-5 relative.
2. One step. A gradient passes through at most 15 such sums (7 statistics forward, 7
   backward, its own): relative error <= 15 eps = 6.9e-4, assuming no amplification through
   the layers (each BatchNorm re-normalises, so a relative perturbation passes with gain ~1).
   A ReLU input within that distance of 0 flips its mask and removes (or adds) one term of a
   gradient sum; such inputs are <= 0.8 * 6.9e-4 of them (a unit-normal density near 0), the
   same relative size again: 1.3e-3 in all.
3. S steps. With momentum m a gradient enters every later update, lr / (1 - m) in all, and
   the displacement D is lr times the same weighted sum of the gradients; over 6 steps the
   momentum keeps a variable's updates pointing the same way, so D is about that weighted sum
   of the gradients' sizes and max|v_R - v_1| <= 1.3e-3 D to first order (a perturbation fed
   back through later steps assumed not to grow in 6 steps). The moving statistics are
   averages of the per-step statistics: the same bound. TAU = 2e-3 rounds it up. The loss is a
   mean of per-example losses: within TAU relative.
4. Exactly equal: the M2m counts (generation slots, candidates, acceptances) and the epoch
   logs' accuracy, unless a translated example lies within TAU of g's acceptance threshold
   or a prediction of its argmax boundary (the premise, as in tests/test_distributed.py).

Without synchronization each replica normalises its 8 rows with their own statistics: in the
stage-3 BatchNorms (8 * 4 * 4 = 128 values a channel) the half batch's mean is off by about
1 / sqrt(128) = 9% of the spread at every step, far beyond TAU, so the unsynchronized cases must
fail the comparison that the synchronized ones pass (by more than 10 TAU).

The logs of each epoch's last batch (what the progress bar shows) must equal the epoch logs:
under several replicas they gave the M2m counts at 1/R of their value (issue 26, item 5).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from m2m_tf.training import multi_worker as mw

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_REPO, "tests", "sync_bn_script.py")
TAU = 2e-3
COUNTS = ("gen_slots", "candidates", "accepted")


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env.update(TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
  return env


def _two_workers(out: str, sync: str) -> str:
  """Runs the script on 2 local workers; returns '' or the failing workers' output."""
  ports = mw.free_local_ports(2)
  procs = [subprocess.Popen([sys.executable, _SCRIPT, "worker", out, sync], cwd=_REPO,
                            env=_env(TF_CONFIG=mw.local_tf_config(ports, i)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  return "".join(log[-3000:] for p, log in zip(procs, logs) if p.returncode)


def relative_differences(one: dict, other: dict) -> dict:
  """variable path -> max|v_other - v_one| / max|v_one - v_0| (module docstring)."""
  out = {}
  for path, value in one["variables"].items():
    v1, v0 = np.asarray(value), np.asarray(one["initial"][path])
    out[path] = float(np.abs(np.asarray(other["variables"][path]) - v1).max()
                      / np.abs(v1 - v0).max())
  return out


class SyncBatchNormTest(tf.test.TestCase, parameterized.TestCase):
  """One device against 2 mirrored CPUs and 2 workers, BatchNorm synchronized or not."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix="m2m_sync_bn_")
    local = os.path.join(cls.root, "local.json")
    proc = subprocess.run([sys.executable, _SCRIPT, "local", local], cwd=_REPO, env=_env(),
                          capture_output=True, text=True, timeout=900)
    cls.errors = {"local": proc.stderr[-3000:] if proc.returncode else ""}
    cls.runs = {}
    if not proc.returncode:
      with open(local) as fh:
        cls.runs.update(json.load(fh))
    for sync, name in (("auto", "workers"), ("off", "workers_nosync")):
      out = os.path.join(cls.root, f"{name}.json")
      cls.errors[name] = _two_workers(out, sync)
      if not cls.errors[name]:
        with open(out) as fh:
          cls.runs[name] = json.load(fh)

  def _run(self, name):
    where = "local" if name in ("default", "sync", "nosync") else name
    self.assertEqual(self.errors[where], "", self.errors[where])
    return self.runs[name]

  @parameterized.named_parameters(
      ("mirrored", "sync", True), ("mirrored_unsynchronized", "nosync", False),
      ("two_workers", "workers", True), ("two_workers_unsynchronized", "workers_nosync", False))
  def test_replicas_train_as_one_device(self, name, synchronized):
    one, other = self._run("default"), self._run(name)
    self.assertEqual((one["replicas"], other["replicas"]), (1, 2))
    self.assertEqual(one["synchronized"], ["False"])
    self.assertEqual(other["synchronized"], [str(synchronized)])
    ratios = relative_differences(one, other)
    worst = max(ratios, key=ratios.get)
    print(f"{name}: max|v_2 - v_1| / max|v_1 - v_0| = {ratios[worst]:.3g} ({worst}); "
          f"tolerance {TAU}")
    if not synchronized:  # the comparison below would fail
      self.assertGreater(ratios[worst], 10 * TAU)
      return
    for path, ratio in ratios.items():
      self.assertLessEqual(ratio, TAU, msg=path)
    h1, h2 = one["history"], other["history"]
    self.assertGreater(h1["accepted"][1], 0)  # M2m translated and accepted samples
    for key in COUNTS + ("accuracy",):
      self.assertEqual(h1[key], h2[key], msg=key)
    self.assertAllClose(h1["loss"], h2["loss"], rtol=TAU, atol=0)

  @parameterized.parameters("default", "sync", "workers")
  def test_progress_bar_shows_the_epoch_counts(self, name):
    run = self._run(name)
    for epoch, last in enumerate(run["last_batch_logs"]):
      for key in COUNTS:
        self.assertEqual(last[key], run["history"][key][epoch], msg=f"epoch {epoch} {key}")
    self.assertGreater(run["last_batch_logs"][1]["accepted"], 0)


if __name__ == "__main__":
  tf.test.main()
