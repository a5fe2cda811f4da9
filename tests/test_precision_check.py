"""Tests of launch.precision_check's command line, command and report (no training)."""

from absl.testing import absltest

from launch import precision_check


def _run(precision, seed, bacc, gm, val, epoch_s):
  return {"precision": precision, "seed": seed, "test_bacc": bacc, "test_gm": gm,
          "val_bacc": val, "best_epoch": 5, "median_epoch_s": epoch_s}


class PrecisionCheckTest(absltest.TestCase):

  def test_command_is_the_short_recipe_in_that_precision(self):
    args = precision_check.parse_args(["--seeds=3,4"])
    self.assertEqual((args.epochs, args.deferred, args.seeds), (6, 5, [3, 4]))
    self.assertEqual(args.precisions, ["float32", "mixed_bfloat16"])
    cmd = precision_check.run_command(args, "mixed_bfloat16", 3, "out/x")
    for arg in ("--method=erm", "--seed=3", "--epochs=6", "--warmup_epochs=1",
                "--lr_milestones=5", "--lr_factors=0.01", "--precision=mixed_bfloat16",
                "--output_dir=out/x", "--noexport"):
      self.assertIn(arg, cmd)

  def test_bad_flags(self):
    for argv in (["--precisions=float32"], ["--precisions=float32,bfloat16"],
                 ["--epochs=5", "--deferred=5"], ["--seeds=a"]):
      with self.assertRaises(SystemExit, msg=argv):
        precision_check.parse_args(argv)

  def test_comparisons_pair_each_seed_with_the_reference(self):
    runs = {"float32_s0": _run("float32", 0, 30.0, 5.0, 31.0, 160.0),
            "mixed_bfloat16_s0": _run("mixed_bfloat16", 0, 29.5, 6.0, 31.5, 128.0),
            "float32_s1": _run("float32", 1, 33.0, 7.0, 32.0, 150.0)}  # seed 1: no pair yet
    out = precision_check.comparisons(runs, ["float32", "mixed_bfloat16"], [0, 1])
    self.assertLen(out, 1)
    c = out[0]
    self.assertEqual((c["seed"], c["precision"], c["reference"]), (0, "mixed_bfloat16", "float32"))
    self.assertAlmostEqual(c["test_bacc_diff"], -0.5)
    self.assertAlmostEqual(c["test_gm_diff"], 1.0)
    self.assertAlmostEqual(c["val_bacc_diff"], 0.5)
    self.assertAlmostEqual(c["epoch_time_ratio"], 1.25)
    md = precision_check.markdown({"argv": [], "label": "L", "machine": "M", "runs": runs,
                                   "comparisons": out})
    self.assertIn("| 0 | mixed_bfloat16 - float32 | -0.50 | +1.00 | +0.50 | 1.25× |", md)
    self.assertIn("| float32_s1 | float32 | 1 | 33.00 | 7.00 | 32.00 | 5 | 150.0 |", md)


if __name__ == "__main__":
  absltest.main()
