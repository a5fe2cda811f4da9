"""Runs on your own data (`--dataset=npz:PATH`): configuration, suggested recipe, end to end.

The data layer itself (every source, every bad input) is tested in test_user_data.py;
here the run around it: the dataset field accepts KIND:PATH, the recipe comes from the
data (its epoch fields scaled to a shorter schedule), the model standardises the user's
features, and a run writes its results, records what it resolved, and resumes.
"""

import os
import subprocess
import sys
import tempfile

import pytest
import numpy as np
from sklearn.datasets import load_digits
import tensorflow as tf

from data_prep.atomic import read_json
from data_prep.registry import load_dataset
from m2m_tf import evaluate
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import ConfigError
from m2m_tf.training import builders
from m2m_tf.training import run

# End-to-end: real training runs or subprocesses (skipped by the fast run: -m 'not slow').
pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_npz(folder):
  digits = load_digits()
  x, y = digits.data.astype(np.float32), digits.target
  order = np.random.default_rng(0).permutation(len(y))
  x, y = x[order], y[order]
  path = os.path.join(folder, "digits.npz")
  np.savez(path, x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
  return path


class UserRunTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="m2m_test_user_runs_")
    cls.npz = _digits_npz(cls.tmp)

  def test_dataset_field_takes_a_source_and_refuses_an_unknown_kind(self):
    cfg = ExperimentConfig.from_leaves(dataset=f"npz:{self.npz}", imbalance_ratio=10)
    self.assertEqual(cfg.data.options, {"imbalance_ratio": 10})
    with self.assertRaisesRegex(ConfigError, "dataset must be one of .* or KIND:PATH"):
      ExperimentConfig.from_leaves(dataset="mnist")
    with self.assertRaisesRegex(ConfigError, "has no recipe: its unset fields"):
      cfg.resolved()  # the recipe needs the data
    self.assertEqual(cfg.replace(output_dir="x", epochs=3, batch_size=8, lr=0.1,
                                 warmup_epochs=0, lr_milestones=(), lr_factors=(),
                                 weight_decay=0.0, deferred_epoch=1, step_size=1.0,
                                 arch="mlp", hidden_units=(8,), augment=False, beta=0.999,
                                 lam=0.5, gamma=0.9, start_noise_mode="per_sample",
                                 cb_beta=0.9999).resolved().seed, 0)

  def test_suggested_recipe_keeps_its_fractions_on_a_shorter_schedule(self):
    data = load_dataset(f"npz:{self.npz}", imbalance_ratio=10)
    full = run.suggested_recipe(data)
    self.assertEqual(full.arch, "mlp")
    self.assertEqual(full.deferred_epoch, round(0.8 * full.epochs))
    short = run.suggested_recipe(data, 10)
    self.assertEqual((short.epochs, short.deferred_epoch), (10, 8))
    self.assertEqual(short.milestones, tuple(round(m * 10 / full.epochs) for m in full.milestones))

  def test_m2m_end_to_end_records_and_resumes(self):
    out = os.path.join(self.tmp, "m2m")
    cfg = ExperimentConfig.from_leaves(dataset=f"npz:{self.npz}", imbalance_ratio=10,
                                       method="m2m", epochs=3, output_dir=out, verbose=0,
                                       jit_compile="false")
    res = run.run_experiment(cfg)
    counts = res["class_counts"]
    self.assertEqual(min(counts), int(max(counts) / 10))  # CIFAR-LT's rule, ratio 10
    self.assertGreater(res["test_bacc"], 50.0)  # chance is 10%: the model learned
    self.assertLen(res["clip_range"][0], 64)  # per-feature training range
    recorded = ExperimentConfig.from_json(read_json(os.path.join(out, "flags.json")))
    self.assertEqual((recorded.model.arch, recorded.schedule.deferred_epoch), ("mlp", 2))
    # The model standardises the user's features with their training mean and std.
    data = load_dataset(f"npz:{self.npz}", imbalance_ratio=10)
    f = builders.classifier(recorded, data, builders.normalization(recorded, data),
                            normed_head=False, name="f")
    layer = f.get_layer("standardize")
    self.assertAllClose(layer.mean, data.x_train.astype(np.float64).mean(axis=0), atol=1e-9)
    # Evaluating its weights file applies the same standardisation (the file holds none).
    h5 = os.path.join(out, "best_f.weights.h5")
    self.assertAlmostEqual(evaluate.evaluate_checkpoint(h5, data)["bacc"], res["test_bacc"],
                           places=6)
    fn = evaluate.load_classifier(
        h5, arch="mlp", input_shape=data.input_shape, num_classes=data.num_classes,
        hidden_units=recorded.model.hidden_units,
        normalization=evaluate._normalization(data, "mlp"))
    saved = tf.saved_model.load(os.path.join(out, "saved_model"))
    self.assertAllClose(fn(data.x_test), saved.serve(data.x_test), atol=1e-5)
    # Killed before its last file: the same command gives the same result.
    os.remove(os.path.join(out, "results.json"))
    again = run.run_experiment(cfg)
    self.assertEqual(again["test_bacc"], res["test_bacc"])

  def test_image_folder_end_to_end(self):
    # 3 classes of 32x32 PNGs (a long tail 12/6/3), one folder per class, no val/test folders.
    root = os.path.join(self.tmp, "images")
    rng = np.random.default_rng(1)
    for k, n in enumerate((12, 6, 3)):
      os.makedirs(os.path.join(root, f"class{k}"))
      for i in range(n):
        # Each class its own mean brightness, so there is something to learn.
        img = np.clip(rng.normal(60 + 70 * k, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        tf.io.write_file(os.path.join(root, f"class{k}", f"{i}.png"), tf.io.encode_png(img))
    out = os.path.join(self.tmp, "folder_run")
    cfg = ExperimentConfig.from_leaves(dataset=f"folder:{root}", method="drs", epochs=2,
                                       output_dir=out, verbose=0, jit_compile="false")
    res = run.run_experiment(cfg)
    self.assertEqual(res["class_names"], ["class0", "class1", "class2"])
    recorded = ExperimentConfig.from_json(read_json(os.path.join(out, "flags.json")))
    self.assertEqual((recorded.model.arch, recorded.model.augment), ("resnet32", True))
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    self.assertEqual([n.decode() for n in loaded.class_names().numpy()], res["class_names"])

  def test_command_line_reports_a_missing_file_in_one_line(self):
    env = dict(os.environ, PYTHONPATH=_REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "m2m_tf.main", f"--dataset=npz:{self.tmp}/nope.npz",
         "--method=erm", f"--output_dir={self.tmp}/nope_run"],
        cwd=self.tmp, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
    self.assertIn("m2m_tf.main: error:", proc.stderr)
    self.assertIn("nope.npz", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)
    self.assertFalse(os.path.exists(f"{self.tmp}/nope_run"))


if __name__ == "__main__":
  tf.test.main()
