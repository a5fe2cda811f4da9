"""The benchmark command runs on a tiny configuration and writes valid JSON and Markdown.

No timing is asserted (timings depend on the machine); only structure and sanity.
"""

import json
import math
import os

import pytest
from absl.testing import absltest
import numpy as np
import tensorflow as tf

from benchmarks import bench
from benchmarks import torch_step
from launch import step_timing


class BenchTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_quick_run_writes_json_and_markdown(self):
    out = os.path.join(self.get_temp_dir(), "sub", "bench.json")
    # The MLP workload only: the ResNet-32 one takes a minute more on 2 cores, and its M2m path
    # (folding, buckets) is tested in test_folding.py and test_generation.py.
    report = bench.main(["--quick", "--jit", "off", "--output", out, "--run_n_buckets", "8",
                         "--which", "mlp", "--buckets", "8,1", "--precisions",
                         "float32,mixed_bfloat16"])
    with open(out) as fh:
      data = json.load(fh)  # valid JSON (no NaN tokens)
    self.assertEqual(data["argv"], report["argv"])
    names = {(r["workload"], r["config"]) for r in data["steps"]}
    self.assertTrue({("mlp", "erm/default"), ("mlp", "m2m_b8/default"),
                     ("mlp", "m2m_b1/default"), ("mlp", "erm/default@bf16"),
                     ("mlp", "m2m_b8/default@bf16")} <= names, names)
    for r in data["steps"]:
      self.assertLen(r["step_times_s"], 2)
      self.assertGreater(r["median_step_s"], 0)
      self.assertTrue(math.isfinite(r["ratio_to_erm_same_mode"]))
      if r["method"] == "m2m":
        self.assertBetween(r["translated_slot_fraction"], 0.0, 1.0)
    for s in data["summaries"]:
      self.assertGreater(s["input_pipeline"]["samples_per_s"], 0)
      self.assertIn("m2m_b8_over_erm_fastest_modes", s)
      self.assertEqual(sorted(s["precision_speedups"]), ["erm/default@bf16",
                                                         "m2m_b1/default@bf16",
                                                         "m2m_b8/default@bf16"])
    run = data["whole_run"]
    self.assertEqual(run["dataset"], "synthetic_lt")
    self.assertGreater(run["m2m_over_erm"], 0)
    for key in ("cpu", "cores", "tensorflow", "device"):
      self.assertIn(key, data["machine"])
    with open(os.path.splitext(out)[0] + ".md") as fh:
      md = fh.read()
    self.assertIn("| mlp | m2m_b8/default |", md)
    self.assertIn("Whole run on synthetic_lt", md)
    self.assertIn("python -m benchmarks.bench --quick", md)
    self.assertEqual(sorted(os.listdir(os.path.dirname(out))), ["bench.json", "bench.md"])
    # The Markdown is a function of the JSON alone: --from_json rewrites it identically.
    os.remove(os.path.splitext(out)[0] + ".md")
    bench.main(["--from_json", out])
    with open(os.path.splitext(out)[0] + ".md") as fh:
      self.assertEqual(fh.read(), md)

  def test_markdown_of_a_report(self):
    step = {"workload": "mlp", "config": "erm/default", "median_step_s": 0.0125,
            "samples_per_s": 5120.0, "ratio_to_erm_same_mode": 1.0, "ratio_to_fastest_erm": 1.25,
            "first_call_s": 0.5}
    report = {"argv": ["--which", "mlp"], "finished": "then", "load_average_end": None,
              "machine": {"cpu": "c", "cores": 2, "device": "CPU", "tensorflow": "t",
                          "keras": "k", "load_average_start": None,
                          "cpu_features": ["avx2", "fma"]},
              "settings": {"warmup": 3, "steps": 5, "slow_steps": 1, "xla_conv_buckets": [1]},
              "steps": [step], "summaries": [{"label": "L", "fastest_erm": "erm/default",
                                              "fastest_erm_step_s": 0.0125,
                                              "m2m_b8_over_erm_fastest_modes": 5.4321,
                                              "fastest_m2m_b8": "m2m_b8/xla"}]}
    md = bench.markdown(report)
    self.assertIn("Made by `python -m benchmarks.bench --which mlp` on then.", md)
    self.assertIn("Machine: c, with avx2, fma, 2 cores, device CPU", md)
    del report["machine"]["cpu_features"]  # a report made before the features were recorded
    self.assertIn("Machine: c, 2 cores,", bench.markdown(report))
    report["machine"]["cpu_features"] = ["avx2", "fma"]
    self.assertIn("| mlp | erm/default | 0.0125 | 5120 | 1 | 1.25 | – | 0.5 |", md)
    self.assertIn("- M2m (n_buckets=8, m2m_b8/xla) / ERM, each in its fastest mode: **5.43×**",
                  md)
    self.assertNotIn("Whole run", md)

  def test_precision_rows_are_compared_with_their_float32_twin(self):
    def row(config, method, precision, median):
      return {"config": config, "method": method, "jit_compile": False, "median_step_s": median,
              "precision": precision, "fold_batchnorm": True if method == "m2m" else None,
              "n_buckets": 8 if method == "m2m" else None, "samples_per_s": 128 / median}
    rows = [row("erm/default", "erm", "float32", 0.4),
            row("m2m_b8/default", "m2m", "float32", 2.0),
            row("erm/default@bf16", "erm", "mixed_bfloat16", 0.1),  # faster, not the basis
            row("m2m_b8/default@bf16", "m2m", "mixed_bfloat16", 1.6)]
    s = bench.summarise(step_timing.quick_workload(step_timing.WORKLOADS["resnet32"]), rows, None)
    self.assertEqual(s["fastest_erm"], "erm/default")
    self.assertAllClose(s["m2m_b8_over_erm_fastest_modes"], 5.0)
    self.assertAllClose(s["precision_speedups"], {"erm/default@bf16": 4.0,
                                                  "m2m_b8/default@bf16": 1.25})
    self.assertAllClose(rows[3]["ratio_to_erm_same_mode"], 4.0)
    lines = bench._summary_lines(s)
    self.assertIn("- m2m_b8/default@bf16: float32 step time / its step time = **1.25×**", lines)

  def test_torch_step_trains_and_is_summarised_against_erm(self):
    w = step_timing.quick_workload(step_timing.WORKLOADS["resnet32"])
    cfg = step_timing.StepConfig("torch_erm", False)
    self.assertEqual(cfg.name, "erm/pytorch")
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (2, w.batch_size) + w.input_shape).astype(np.float32)
    ys = rng.integers(0, len(w.class_counts), (2, w.batch_size))
    t = torch_step.TorchTimed(w, cfg, xs, ys, seed=0)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.warm_up(2, 0.0)
    self.assertGreater(t.step(), 0)
    moved = [float((p - q).abs().max()) for p, q in zip(t.model.parameters(), before)]
    self.assertGreater(max(moved), 0)  # SGD steps happened
    rows = [{"config": "erm/default", "method": "erm", "jit_compile": False, "precision": "float32",
             "median_step_s": 2.0, "fold_batchnorm": None},
            {"config": "erm/pytorch", "method": "torch_erm", "jit_compile": False,
             "precision": "float32", "median_step_s": 1.5, "fold_batchnorm": None}]
    s = bench.summarise(w, rows, None)
    self.assertEqual(s["fastest_erm"], "erm/default")  # PyTorch's step is not m2m_tf's ERM
    self.assertAlmostEqual(s["pytorch_erm_over_erm"], 0.75)
    self.assertIn("PyTorch ResNet-32 step", "\n".join(bench._summary_lines(s)))

  def test_bad_flags(self):
    with self.assertRaises(SystemExit):
      bench.parse_args(["--precisions", "bfloat16"])
    with self.assertRaises(SystemExit):
      bench.parse_args(["--which", "vgg"])
    with self.assertRaises(SystemExit):
      bench.parse_args(["--buckets", "0"])

  def test_defaults(self):
    args = bench.parse_args([])
    self.assertEqual(args.which, ["mlp", "resnet32"])
    self.assertEqual((args.warmup, args.steps), (3, 5))
    self.assertEqual(args.buckets, [8, 1])
    self.assertEqual(args.run_dataset, "reuters")
    self.assertEqual(args.output, "results/bench.json")
    self.assertEqual(sum(step_timing.REUTERS_COUNTS), 6436)
    self.assertLen(step_timing.REUTERS_COUNTS, 36)


if __name__ == "__main__":
  absltest.main()
