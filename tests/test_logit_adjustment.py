"""Logit adjustment: the post-hoc math (m2m_tf.logit_adjustment), the flags of the losses, and
end-to-end runs with --loss=logit_adjusted / balanced_softmax (docs/method.md#losses).

The training loss itself is tested in tests/test_losses.py; post-hoc adjustment of run
folders and SavedModels (and that the test split is read only after tau is chosen) in
tests/test_evaluate.py.
"""

import json
import os
import tempfile

from absl import flags
from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from m2m_tf import config_flags
from m2m_tf import evaluate
from m2m_tf import logit_adjustment as la
from m2m_tf import models
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import ConfigError
from m2m_tf.models import weights_io
from m2m_tf.training import run
from m2m_tf.training.methods import METHODS

_COUNTS = np.array([50, 5000, 7, 300, 1, 1200])


class PosthocMathTest(absltest.TestCase):

  def test_grid(self):
    self.assertEqual(la.TAU_GRID, (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0))

  def test_log_prior_and_adjusted_logits_match_the_formula(self):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 6)) * 3
    pi = _COUNTS / _COUNTS.sum()
    np.testing.assert_allclose(la.log_prior(_COUNTS), np.log(pi), rtol=1e-14)
    for tau, scale in ((0.5, 1.0), (1.0, 1.0), (2.0, 30.0)):
      # A subtraction of float64 values of size <= 90 + 17: a few u64. Measured ~1e-14.
      np.testing.assert_allclose(la.adjust_logits(z, _COUNTS, tau, scale),
                                 scale * z - tau * np.log(pi), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(la.adjust_logits(z, _COUNTS, 0.0), z)  # tau 0: untouched
    # Adjusting favours the rare classes: class 4 (one example) gains tau log(6558) over none.
    flat = np.zeros((1, 6))
    self.assertEqual(int(la.predictions(flat, _COUNTS, 0.0)[0]), 0)  # tie: lowest index
    self.assertEqual(int(la.predictions(flat, _COUNTS, 1.0)[0]), 4)

  def test_tiny_prior_is_finite(self):
    lp = la.log_prior([1e12, 1.0])
    self.assertTrue(np.isfinite(lp).all())
    self.assertAlmostEqual(lp[1], -np.log(1e12 + 1.0), places=10)

  def test_select_tau_takes_the_best_validation_tau_smallest_on_ties(self):
    # Two classes, counts (100, 10): class 1 wins a row (0, d) after adjustment iff
    # d + tau log 10 > 0. Rows at d = -log 10 * {0.3, 0.8}: class 1 wins them from tau 0.5
    # and from tau 1.0 on.
    d = -np.log(10.0) * np.array([0.3, 0.8])
    z = np.stack([np.zeros(2), d], axis=1)
    counts = [100, 10]
    # Both rows of class 1: bACC 0, then 50 (tau 0.5, 0.75), then 100 from tau 1.0: the best,
    # tied up to 2.0, goes to the smallest.
    best = la.select_tau(z, [1, 1], counts)
    self.assertEqual(best.tau, 1.0)
    self.assertEqual(best.tied, (1.0, 1.25, 1.5, 1.75, 2.0))
    self.assertEqual(best.val_bacc, (0.0, 0.0, 50.0, 50.0) + (100.0,) * 5)
    # Both of class 0: tau 0 and 0.25 keep them; 0.25 ties with 0, and 0 is chosen.
    self.assertEqual(la.select_tau(z, [0, 0], counts).tau, 0.0)
    # A grid of one.
    self.assertEqual(la.select_tau(z, [1, 1], counts, grid=(0.5,)).tau, 0.5)

  def test_refusals(self):
    with self.assertRaisesRegex(ValueError, "tau must be a finite number >= 0"):
      la.adjust_logits(np.zeros((1, 2)), [1, 2], -1.0)
    with self.assertRaisesRegex(ValueError, "tau must be a finite number >= 0"):
      la.select_tau(np.zeros((1, 2)), [0], [1, 2], grid=(0.0, float("nan")))
    with self.assertRaisesRegex(ValueError, "classes"):
      la.adjust_logits(np.zeros((1, 3)), [1, 2], 1.0)
    with self.assertRaisesRegex(ValueError, "at least one"):
      la.log_prior([3, 0])
    with self.assertRaisesRegex(ValueError, "no validation examples"):
      la.select_tau(np.zeros((0, 2)), [], [1, 2])
    with self.assertRaisesRegex(ValueError, "scale"):
      la.adjust_logits(np.zeros((1, 2)), [1, 2], 1.0, scale=0.0)

  def test_parse_tau(self):
    self.assertEqual(la.parse_tau("select"), la.SELECT)
    self.assertEqual(la.parse_tau("0.75"), 0.75)
    self.assertEqual(str(la.parse_tau("-0")), "0.0")
    for text in ("-0.5", "nan", "inf", "-inf", "auto", "1,2", ""):
      with self.assertRaises(ValueError) as ctx:
        la.parse_tau(text)
      self.assertEqual(str(ctx.exception), "--posthoc_tau must be 'select' or a finite number "
                       f">= 0, got {text!r}")


def _parse(args):
  """The configuration of m2m_tf.main's flags for `args`, on fresh FlagValues."""
  values = flags.FlagValues()
  config_flags.define_flags(values)
  values(["m2m_tf.main"] + list(args))
  return config_flags.config_from_flags(values)


class LossFlagsTest(absltest.TestCase):

  def test_bad_tau_and_unknown_loss_refused_in_one_line(self):
    for args, message in (
        (["--la_tau=-0.5"], "flag --la_tau=-0.5: --la_tau must be a finite number >= 0, got "
         "-0.5."),
        (["--la_tau=nan"], "flag --la_tau=nan: --la_tau must be a finite number >= 0, got nan."),
        (["--la_tau=inf"], "flag --la_tau=inf: --la_tau must be a finite number >= 0, got inf."),
        (["--loss=logit_adjustment"], "flag --loss=logit_adjustment: value should be one of "
         "<ce|focal|ldam|logit_adjusted|balanced_softmax>")):
      with self.subTest(args=args):
        with self.assertRaises(flags.IllegalFlagValueError) as ctx:
          _parse(args)
        self.assertEqual(str(ctx.exception), message)
    with self.assertRaises(ConfigError) as ctx:  # the alias fixes tau
      _parse(["--loss=balanced_softmax", "--la_tau=0.5"])
    self.assertEqual(str(ctx.exception), "loss balanced_softmax is logit_adjusted at tau 1; "
                     "la_tau=0.5 asks for --loss=logit_adjusted.")

  def test_good_flags_reach_the_config(self):
    cfg = _parse(["--loss=logit_adjusted", "--la_tau=0.5", "--method=drw"])
    self.assertEqual((cfg.training.loss, cfg.training.la_tau), ("logit_adjusted", 0.5))
    self.assertEqual(_parse(["--loss=balanced_softmax"]).training.la_tau, 1.0)
    self.assertEqual(_parse([]).training.la_tau, 1.0)

  def test_every_method_takes_the_new_losses(self):
    for method in sorted(METHODS):
      for loss in ("logit_adjusted", "balanced_softmax"):
        cfg = ExperimentConfig.from_leaves(dataset="reuters", method=method, loss=loss)
        cfg.resolved().check_resolved(METHODS)
        self.assertTrue(cfg.resolved().output_dir.endswith(f"reuters_{loss}_{method}_s0"))


_OPTS = dict(n_max=80, dim=8, n_val_per_class=10, n_test_per_class=10)


@pytest.mark.slow
class LogitAdjustedRunTest(absltest.TestCase):
  """Tiny synthetic_lt runs: the losses reach the trainer (class weights, M2m), the run records
  them, f keeps a plain linear head, and post-hoc adjustment reads the finished run."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory(prefix="m2m_test_la_")
    os.environ["M2M_CACHE_DIR"] = os.path.join(cls.tmp.name, "cache")

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _run(self, name, **kw):
    args = dict(dataset="synthetic_lt", seed=0, output_dir=os.path.join(self.tmp.name, name),
                dataset_options=dict(_OPTS), epochs=2, deferred_epoch=1, verbose=0,
                jit_compile="false", n_buckets=2)
    return run.run_experiment(ExperimentConfig.from_leaves(**dict(args, **kw)))

  def test_runs_record_the_loss_and_keep_a_linear_head(self):
    la_rw = self._run("la_rw", method="rw", loss="logit_adjusted", la_tau=0.5)
    bs_m2m = self._run("bs_m2m", method="m2m", loss="balanced_softmax")
    self.assertEqual((la_rw["loss"], la_rw["loss_hparams"]), ("logit_adjusted", {"tau": 0.5}))
    self.assertEqual((bs_m2m["loss"], bs_m2m["loss_hparams"]),
                     ("balanced_softmax", {"tau": 1.0, "alias_of": "logit_adjusted"}))
    with open(os.path.join(bs_m2m["output_dir"], "flags.json")) as fh:
      self.assertEqual(json.load(fh)["training"]["loss"], "balanced_softmax")
    self.assertTrue(np.isfinite(bs_m2m["test_bacc"]))
    # g of the M2m run is trained with plain CE, as for every M2m run.
    with open(os.path.join(bs_m2m["output_dir"], "g_erm", "results.json")) as fh:
      self.assertEqual(json.load(fh)["loss"], "ce")
    # f has the plain linear head (LDAM's cosine head is for --loss=ldam only): its weights
    # load into an MLP with a Dense head, which computes what the exported f serves.
    k, out = len(la_rw["class_counts"]), la_rw["output_dir"]
    plain = models.build_model("mlp", (_OPTS["dim"],), k, hidden_units=(64,))
    weights_io.load_weights(plain, os.path.join(out, "best_f.weights.h5"), "synthetic_lt")
    x = np.random.default_rng(0).uniform(size=(5, _OPTS["dim"])).astype(np.float32)
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))  # kept: it owns the weights
    served = loaded.serve(x)
    np.testing.assert_allclose(plain(x).numpy(), served.numpy(), rtol=1e-5, atol=1e-6)
    with self.assertRaises(evaluate.CheckpointError):
      weights_io.load_weights(models.build_model("mlp", (_OPTS["dim"],), k, hidden_units=(64,),
                                                 normed_head=True),
                              os.path.join(out, "best_f.weights.h5"), "synthetic_lt")
    # Post-hoc adjustment of the finished run: its tau 0 is the run's own test result.
    self.assertEqual(evaluate.main([f"--checkpoint={bs_m2m['output_dir']}",
                                    "--posthoc_tau=select"]), 0)
    with open(os.path.join(bs_m2m["output_dir"], "posthoc_la.json")) as fh:
      post = json.load(fh)
    self.assertEqual(post["run_loss"], "balanced_softmax")
    self.assertAlmostEqual(post["test_raw"]["bacc"], bs_m2m["test_bacc"], places=6)

if __name__ == "__main__":
  absltest.main()
