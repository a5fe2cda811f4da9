"""Tests for benchmarks.epoch_cost and benchmarks.kernel_profile."""

import json
import os
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
from absl.testing import absltest, parameterized
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from launch.step_timing import WORKLOADS
from benchmarks import epoch_cost, kernel_profile


def _cummax_oracle(runs):
  """Share of epochs at or above the running best, from NumPy's cumulative maximum."""
  hits = total = 0
  for v in map(np.asarray, runs):
    before = np.concatenate([[-np.inf], np.maximum.accumulate(v)[:-1]])
    hits, total = hits + int(np.sum(v >= before)), total + len(v)
  return hits / total


class TestShareTest(absltest.TestCase):

  def test_ties_count_and_drops_do_not(self):
    self.assertAlmostEqual(epoch_cost.test_share([[1, 3, 3, 2, 4]]), 4 / 5)

  def test_matches_a_cumulative_maximum(self):
    rng = np.random.default_rng(0)
    runs = [np.round(rng.normal(60, 5, n), 1).tolist() for n in (200, 40, 1)]
    self.assertAlmostEqual(epoch_cost.test_share(runs), _cummax_oracle(runs))

  def test_only_finished_histories_count(self):
    with tempfile.TemporaryDirectory() as d:
      for name, n in (("a", 5), ("b", 3)):
        os.makedirs(os.path.join(d, name))
        pd.DataFrame({"epoch": range(n), "val_bacc": range(n)}).to_csv(
            os.path.join(d, name, "history.csv"), index=False)
      got = epoch_cost.finished_histories(os.path.join(d, "*", "history.csv"), 5)
    self.assertEqual(got, {"a": [0, 1, 2, 3, 4]})


class SummariseTest(absltest.TestCase):

  def test_before_and_after_compose_the_parts(self):
    w = WORKLOADS["resnet32"]  # 12,406 images / 128 = 96 steps
    steps = {"erm": {"median_step_s": 0.5}}
    evals = [{"split": s, "batch_size": b, "median_s": t}
             for s, b, t in (("val", 1024, 1.0), ("test", 1024, 9.0),
                             ("val", 256, 2.0), ("test", 256, 18.0))]
    rows = {r["eval_batch_size"]: r for r in
            epoch_cost.summarise(w, steps, evals, 0.25, None, default_batch=1024)}
    self.assertEqual(rows[1024]["steps"], 96)
    self.assertAlmostEqual(rows[1024]["before_s"], 96 * 0.5 + 1.0 + 9.0)
    self.assertAlmostEqual(rows[1024]["after_s"], 96 * 0.5 + 1.0 + 0.25 * 9.0)
    self.assertAlmostEqual(rows[256]["after_s"], 96 * 0.5 + 2.0 + 0.25 * 18.0)
    self.assertAlmostEqual(rows[256]["before_s"], rows[1024]["before_s"])
    self.assertAlmostEqual(rows[1024]["eval_share_before"], 10.0 / 58.0)


class KernelProfileTest(parameterized.TestCase):

  @parameterized.parameters(
      ("StatefulPartitionedCall/gradient_tape/f_1/conv/Conv2DBackpropFilter", "Conv2D", "backward"),
      ("StatefulPartitionedCall/cond/then/_4/gradient_tape/g/x", "Conv2D", "translation"),
      ("StatefulPartitionedCall/cond_1/then/_4/g/conv", "Conv2D", "translation"),
      ("StatefulPartitionedCall/sgd/Mul_114", "Mul", "optimizer"),
      ("StatefulPartitionedCall/SGD_1/Mul", "Mul", "optimizer"),
      ("StatefulPartitionedCall/f_1/stage_1.0/convolution", "Conv2D", "forward"),
      ("StatefulPartitionedCall/IteratorGetNext", "IteratorGetNext", "input"),
      ("StatefulPartitionedCall/mul_83", "Mul", "other"),
      ("StatefulPartitionedCall/fc/MatMul", "MatMul", "other"))
  def test_parts(self, name, op_type, part):
    self.assertEqual(kernel_profile.part_of(name, op_type), part)

  def test_leaf_ops_only_from_an_xspace(self):
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = {1: "a/f/conv:Conv2D", 2: "StatefulPartitionedCall:StatefulPartitionedCall",
             3: "ExecutorState::Process", 4: "EagerLocalExecute: __inference_x_1",
             5: "a/sgd/Mul:Mul"}
    for i, n in names.items():
      plane.event_metadata[i].name = n
    line = plane.lines.add(name="tf_Compute")
    for i, ps in ((1, 300), (2, 1000), (3, 1000), (4, 1000), (5, 100), (1, 100)):
      line.events.add(metadata_id=i, duration_ps=ps)
    got = sorted(kernel_profile.op_events(space))
    self.assertEqual(got, [("a/f/conv", "Conv2D", 100), ("a/f/conv", "Conv2D", 300),
                           ("a/sgd/Mul", "Mul", 100)])
    s = kernel_profile.summarize(got, top=1)
    self.assertAlmostEqual(s["types"]["Conv2D"], 0.8)
    self.assertAlmostEqual(s["types"]["(other types)"], 0.2)
    self.assertAlmostEqual(sum(s["parts"].values()), 1.0)
    self.assertAlmostEqual(s["total_ms"], 500 / 1e9)


class LayoutTest(tf.test.TestCase):

  def test_both_layouts_compute_the_same_gradients(self):
    x = tf.random.stateless_normal((2, 5, 5, 3), seed=(0, 1))
    w = tf.random.stateless_normal((3, 3, 3, 4), seed=(0, 2))
    try:
      gx_nchw, gw_nchw = epoch_cost._conv_pass("NCHW")(tf.transpose(x, (0, 3, 1, 2)), w)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
      self.skipTest("this TensorFlow build has no NCHW convolution on the CPU")
    gx, gw = epoch_cost._conv_pass("NHWC")(x, w)
    # Each entry sums at most 2 * 25 * 36 float32 products of size ~10 in some order:
    # |error| <= 1800 * 2**-24 * 10, about 1e-3.
    self.assertAllClose(gw, gw_nchw, rtol=1e-4, atol=1e-3)
    self.assertAllClose(gx, tf.transpose(gx_nchw, (0, 2, 3, 1)), rtol=1e-4, atol=1e-3)


class EpochCostCommandTest(absltest.TestCase):

  def test_quick_run_writes_its_report(self):
    with tempfile.TemporaryDirectory() as d:
      hist = os.path.join(d, "run", "history.csv")
      os.makedirs(os.path.dirname(hist))
      pd.DataFrame({"val_bacc": [1.0, 3.0, 2.0, 3.0]}).to_csv(hist, index=False)
      out = os.path.join(d, "ec.json")
      epoch_cost.main(["--quick", "--steps", "1", "--warmup", "1", "--eval_repeats", "1",
                       "--pipeline_batches", "2", "--profile_steps", "1", "--epochs", "4",
                       "--layout_repeats", "1",
                       "--histories", os.path.join(d, "*", "history.csv"), "--output", out])
      with open(out) as fh:
        report = json.load(fh)
      with open(os.path.splitext(out)[0] + ".md") as fh:
        md = fh.read()
    r = report["result"]
    self.assertAlmostEqual(r["test_share"], 0.75)
    self.assertEqual(r["share_runs"], ["run"])
    self.assertEqual(len(r["epochs"]), 2 * 3)  # erm, m2m x 3 evaluation batch sizes
    self.assertIn("translation", r["profiles"]["m2m"]["parts"])
    self.assertNotIn("translation", r["profiles"]["erm"]["parts"])
    self.assertIn("s/epoch after", md)
    self.assertEqual([(x["size"], x["channels"]) for x in r["layouts"]],
                     list(epoch_cost.RESNET32_STAGES))
    self.assertIn("NCHW / NHWC", md)

  def test_threads_only_times_child_processes(self):
    with tempfile.TemporaryDirectory() as d:
      out = os.path.join(d, "threads.json")
      report = epoch_cost.main(["--quick", "--steps", "1", "--warmup", "1", "--threads_only",
                                "--threads", "1x1", "--thread_rounds", "1", "--output", out])
      with open(os.path.splitext(out)[0] + ".md") as fh:
        md = fh.read()
    (row,) = report["result"]["threads"]
    self.assertEqual((row["intra_op"], row["inter_op"], len(row["rounds_s"])), (1, 1, 1))
    self.assertGreater(row["median_step_s"], 0)
    self.assertIn("| 1 | 1 |", md)

  def test_bad_threads_flag_is_a_usage_error(self):
    with self.assertRaises(SystemExit):
      epoch_cost.parse_args(["--threads", "2"])
    with self.assertRaises(SystemExit):
      epoch_cost.parse_args(["--threads_only"])


if __name__ == "__main__":
  absltest.main()
