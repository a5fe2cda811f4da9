"""Tests of m2m_tf.config (the nested configuration) and m2m_tf.config_flags (its flags)."""

import dataclasses
import json
import re
import types

from absl import flags
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from data_prep import recipes
from m2m_tf import config as config_lib
from m2m_tf import config_flags
from m2m_tf import losses
from m2m_tf import run_records
from m2m_tf.errors import ConfigError
from m2m_tf.models import registry
from data_prep.registry import get_recipe
from m2m_tf.training import builders
from m2m_tf.training.methods import METHODS

ExperimentConfig = config_lib.ExperimentConfig


class ConfigTest(parameterized.TestCase, tf.test.TestCase):

  def test_name_lists_match_the_registries(self):
    self.assertEqual(config_lib.LOSS_NAMES, tuple(losses.LOSSES))
    self.assertEqual(config_lib.ARCH_NAMES, tuple(registry.ARCHITECTURES))

  def test_record_reader_knows_the_sections(self):
    self.assertEqual(tuple(config_lib.SECTIONS), run_records.CONFIG_SECTIONS)
    self.assertEqual(set(config_lib.DataConfig().options), set())
    for name in run_records.NAMED_DATA_OPTIONS:
      self.assertIn(name, [f.name for f in dataclasses.fields(config_lib.DataConfig)])

  def test_leaf_names_are_unique(self):
    names = [f.name for cls in config_lib.SECTIONS.values() for f in dataclasses.fields(cls)]
    names += [f.name for f in dataclasses.fields(ExperimentConfig)
              if f.name not in config_lib.SECTIONS]
    self.assertEqual(len(names), len(set(names)))

  @parameterized.parameters(
      ("gamma", 1.5, "gamma must be in [0, 1]"), ("beta", 1.0, "beta must be in [0, 1)"),
      ("loss", "hinge", "loss must be one of"),
      ("epochs", 0, "epochs must be >= 1"), ("seed", -1, "seed must be >= 0"),
      ("arch", "vgg", "arch must be one of"), ("dataset", "mnist", "dataset must be one of"),
      ("hidden_units", (0,), "hidden_units must be positive widths"),
      ("lr_milestones", (3,), "lr_milestones and lr_factors must be given together"),
      ("init_from", "/x", "init_from and init_epoch must be given together"),
      ("accept_mode", "noise", "accept_mode must be one of"),
      ("la_tau", -0.25, "la_tau must be a finite number >= 0"),
      ("la_tau", float("nan"), "la_tau must be a finite number >= 0"))
  def test_bad_value_refused_when_built(self, name, value, message):
    with self.assertRaisesRegex(ConfigError, re.escape(message)):
      ExperimentConfig.from_leaves(**{name: value})

  def test_unknown_field_refused(self):
    with self.assertRaisesRegex(ConfigError, r"unknown configuration fields \['lamda'\]"):
      ExperimentConfig.from_leaves(lamda=0.3)

  def test_resolved_takes_the_recipe_and_keeps_what_was_set(self):
    cfg = ExperimentConfig.from_leaves(dataset="cifar10_jpeg_lt", epochs=20, step_size=0.3)
    r, recipe = cfg.resolved(), get_recipe("cifar10_jpeg_lt")
    self.assertEqual(r.schedule.epochs, 20)
    self.assertEqual(r.m2m.step_size, 0.3)
    self.assertEqual(r.schedule.lr_milestones, recipe.milestones)
    self.assertEqual((r.model.arch, r.model.augment), ("resnet32", True))
    self.assertEqual(r.output_dir, "runs/cifar10_jpeg_lt_ce_m2m_s0")
    self.assertEqual(ExperimentConfig.from_leaves(dataset="reuters").resolved().m2m.step_size, 1.0)

  def test_m2m_defaults_and_substitute_are_the_datasets(self):
    recipe = dataclasses.replace(get_recipe("reuters"), beta=0.9, lam=0.01, gamma=0.99)
    r = ExperimentConfig.from_leaves(dataset="reuters", lam=0.3).resolved(recipe)
    self.assertEqual((r.m2m.beta, r.m2m.lam, r.m2m.gamma), (0.9, 0.3, 0.99))  # set lam wins
    official = ExperimentConfig.from_leaves(dataset="cifar10_jpeg_lt").resolved()
    self.assertEqual((official.m2m.beta, official.m2m.lam, official.m2m.gamma), (0.999, 0.5, 0.9))
    self.assertIsNone(official.data.substitute)
    self.assertEqual(config_lib.M2mConfig().beta, 0.999)  # the trainer's own default stays
    tw = ExperimentConfig.from_leaves(dataset="twitter")
    self.assertEqual(tw.resolved().data.substitute, "ngram")
    self.assertEqual(tw.replace(substitute="random").resolved().data.substitute, "random")
    self.assertIsNone(tw.replace(embeddings="/e.txt").resolved().data.substitute)  # a file wins

  def test_start_noise_and_cb_beta_follow_the_recipe(self):
    for dataset, mode, cb_beta in (("cifar10_jpeg_lt", "official", 0.999),
                                   ("cifar100_lt", "official", 0.999),
                                   ("reuters", "per_sample", 0.9999),
                                   ("twitter", "per_sample", 0.9999),
                                   ("celeba5", "official", 0.9999)):
      r = ExperimentConfig.from_leaves(dataset=dataset).resolved()
      self.assertEqual((r.m2m.start_noise_mode, r.training.cb_beta), (mode, cb_beta), dataset)
    set_ = ExperimentConfig.from_leaves(dataset="cifar10_lt", start_noise_mode="per_sample",
                                        cb_beta=0.9999).resolved()
    self.assertEqual((set_.m2m.start_noise_mode, set_.training.cb_beta), ("per_sample", 0.9999))
    # The building blocks' own defaults: the official start; PyTorch's momentum form.
    self.assertEqual(config_lib.M2mConfig().start_noise_mode, "official")
    self.assertEqual(ExperimentConfig().schedule.momentum_form, "pytorch")

  def test_your_own_data_gets_the_official_start_for_images_only(self):
    for kind, shape, mode in (("image", (8, 8, 3), "official"), ("features", (5,), "per_sample")):
      data = types.SimpleNamespace(input_kind=kind, input_shape=shape,
                                   x_train=np.random.default_rng(0).uniform(size=(40,) + shape))
      self.assertEqual(recipes.suggest_recipe(data).start_noise_mode, mode)

  def test_records_older_than_a_leaf_read_as_they_were_made(self):
    # Runs made before momentum_form, start_noise_mode or cb_beta existed were trained in Keras'
    # form, with the per-sample start and beta 0.9999, whatever today's defaults say.
    old = ExperimentConfig.from_json({"dataset": "cifar10_jpeg_lt", "method": "m2m"}).resolved()
    self.assertEqual((old.schedule.momentum_form, old.m2m.start_noise_mode, old.training.cb_beta),
                     ("keras", "per_sample", 0.9999))
    new = ExperimentConfig.from_leaves(dataset="cifar10_jpeg_lt").resolved()
    again = ExperimentConfig.from_json(json.loads(json.dumps(new.to_json())))
    self.assertEqual((again.schedule.momentum_form, again.m2m.start_noise_mode,
                      again.training.cb_beta), ("pytorch", "official", 0.999))

  def test_json_round_trip(self):
    cfg = ExperimentConfig.from_leaves(dataset="reuters", vocab_size=2000, keep_epochs=[5, 7],
                                       dataset_options={"val_fraction": 0.2}).resolved()
    again = ExperimentConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    self.assertEqual(again, cfg)
    self.assertEqual(again.data.options, {"val_fraction": 0.2, "vocab_size": 2000})

  def test_flat_record_of_older_runs_reads(self):
    old = {"dataset": "reuters", "method": "drw", "seed": 3, "lam": 0.1, "no_reject": True,
           "dataset_options": {"vocab_size": 5000, "n_max": 9}, "removed_field": 1,
           "lr_milestones": [10], "lr_factors": [0.1]}
    cfg = ExperimentConfig.from_json(old)
    self.assertEqual((cfg.training.method, cfg.seed, cfg.m2m.lam), ("drw", 3, 0.1))
    self.assertTrue(cfg.m2m.no_reject)
    self.assertEqual(cfg.schedule.lr_milestones, (10,))
    self.assertEqual(cfg.data.options, {"vocab_size": 5000, "n_max": 9})

  def test_methods_are_the_callers(self):
    cfg = ExperimentConfig.from_leaves(dataset="synthetic_lt", method="bogus").resolved()
    with self.assertRaisesRegex(ConfigError, re.escape("method must be one of ['erm', 'm2m']")):
      cfg.check_resolved({"erm": METHODS["erm"], "m2m": METHODS["m2m"]})
    with self.assertRaisesRegex(ConfigError, "method must be one of"):
      cfg.check_resolved(METHODS)
    self.assertEqual(config_flags.CHOICES["method"], tuple(sorted(METHODS)))

  def test_check_resolved_ties_fields(self):
    cfg = ExperimentConfig.from_leaves(dataset="synthetic_lt", method="drs", deferred_epoch=6)
    with self.assertRaisesRegex(ConfigError,
                                r"deferred_epoch=6, which must lie in \[0, epochs=6\)"):
      cfg.resolved().check_resolved(METHODS)
    cfg.replace(method="rs").resolved().check_resolved(METHODS)  # RS has no deferral


class FlagsTest(tf.test.TestCase):

  def _flags(self, *args):
    fv = flags.FlagValues()
    config_flags.define_flags(fv)
    fv(["prog"] + list(args))
    return fv

  def test_every_leaf_has_a_flag_with_help(self):
    fv = self._flags()
    leaves = set(ExperimentConfig().flat()) - {"dataset_options", "data_digest"}
    self.assertEqual(leaves, {name for name in fv if name in leaves})
    for name in leaves:
      self.assertTrue(fv[name].help, name)

  def test_flags_give_the_configuration(self):
    fv = self._flags("--dataset=reuters", "--lam=0.25", "--keep_epochs=3,4", "--nofold_batchnorm",
                     "--lr_milestones=5", "--lr_factors=0.5", "--hidden_units=32,16")
    cfg = config_flags.config_from_flags(fv)
    self.assertEqual(cfg.m2m.lam, 0.25)
    self.assertEqual(cfg.runtime.keep_epochs, (3, 4))
    self.assertFalse(cfg.m2m.fold_batchnorm)
    self.assertEqual((cfg.schedule.lr_milestones, cfg.schedule.lr_factors), ((5,), (0.5,)))
    self.assertEqual(cfg.model.hidden_units, (32, 16))
    self.assertIsNone(cfg.m2m.step_size)  # unset: the recipe's
    self.assertEqual(config_flags.config_from_flags(self._flags()), ExperimentConfig())

  def test_flag_validator_uses_the_field_rule(self):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, r"--steps must be >= 0, got -1"):
      self._flags("--steps=-1")
    with self.assertRaisesRegex(flags.IllegalFlagValueError, "keep_epochs"):
      self._flags("--keep_epochs=a")


if __name__ == "__main__":
  tf.test.main()


class LossKnobsTest(tf.test.TestCase):
  """The loss and weighting knobs of the configuration reach the loss the run trains with."""

  def test_loss_hyper_parameters_reach_the_loss(self):
    counts = np.array([50, 20, 5])
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 3, 8), rng.normal(size=(8, 3)).astype(np.float32)
    for leaves, want in (
        (dict(loss="focal", focal_gamma=2.0), losses.focal(labels, logits, gamma=2.0)),
        (dict(loss="ldam", ldam_max_margin=0.3, ldam_scale=10.0),
         losses.ldam(labels, logits, counts, max_margin=0.3, scale=10.0)),
        (dict(loss="logit_adjusted", la_tau=0.5),
         losses.logit_adjusted(labels, logits, counts, tau=0.5)),
        (dict(loss="balanced_softmax"), losses.logit_adjusted(labels, logits, counts, tau=1.0))):
      cfg = ExperimentConfig.from_leaves(**leaves)
      self.assertAllClose(builders.build_loss(cfg, counts)(labels, logits), want)
    default = builders.build_loss(ExperimentConfig.from_leaves(loss="focal"), counts)
    self.assertNotAllClose(default(labels, logits), losses.focal(labels, logits, gamma=2.0))

  def test_cb_beta_reaches_the_class_weights(self):
    counts = np.array([50, 20, 5])
    cfg = ExperimentConfig.from_leaves(cb_beta=0.99)
    got = builders.class_weight("cb", counts, cfg)
    w = (1 - 0.99) / (1 - 0.99 ** counts.astype(np.float64))
    self.assertAllClose(got, w / w.sum() * 3)
