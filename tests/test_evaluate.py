"""Tests of m2m_tf.evaluate on a tiny image dataset and a random ResNet-32."""

import json
import os
import tempfile

import numpy as np
from sklearn import metrics as skm
import tensorflow as tf

from data_prep import registry
from data_prep import splits
from m2m_tf import evaluate
from m2m_tf import models
from m2m_tf.models import torch_import

K = 4


def _tiny_data():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8)
  y = np.arange(48, dtype=np.int64) % K
  return splits.DatasetSplits(
      name="tiny_eval_images", x_train=x[:24], y_train=np.array([0] * 12 + [1] * 6 + [2] * 4 +
                                                                [3] * 2),
      x_val=x[24:32], y_val=y[24:32], x_test=x[:40], y_test=y[:40],
      class_names=tuple(f"c{k}" for k in range(K)), input_kind="image",
      clip_range=(0.0, 1.0), label="tiny test images")


def _model():
  tf.keras.utils.set_random_seed(3)
  model = models.resnet32(K, input_shape=(16, 16, 3))
  # Random BN statistics, so that inference differs from a fresh model.
  for v in model.weights:
    if "moving_variance" in v.path:
      v.assign(np.random.default_rng(1).uniform(0.5, 2.0, v.shape).astype(np.float32))
  return model


def _reference(model, data):
  logits = model(tf.cast(data.x_test, tf.float32) / 255.0, training=False)
  return np.argmax(logits.numpy(), axis=-1)


class EvaluateTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
    self.data = _tiny_data()
    self.model = _model()
    self.pred = _reference(self.model, self.data)

  def _check(self, result):
    self.assertEqual(result["n"], 40)
    self.assertAlmostEqual(
        result["bacc"], 100 * skm.balanced_accuracy_score(self.data.y_test, self.pred), places=4)
    recalls = skm.recall_score(self.data.y_test, self.pred, average=None, labels=range(K))
    self.assertAllClose(result["per_class_recall"], 100 * recalls, atol=1e-4)
    self.assertEqual(result["data_label"], "tiny test images")
    self.assertEqual(result["class_counts"], [12, 6, 4, 2])

  def test_weights_h5(self):
    path = os.path.join(self.tmp, "m.weights.h5")
    self.model.save_weights(path)
    self._check(evaluate.evaluate_checkpoint(path, self.data, arch="resnet32", batch_size=16))

  def test_saved_model(self):
    path = os.path.join(self.tmp, "sm")
    self.model.export(path, format="tf_saved_model", verbose=False)
    self._check(evaluate.evaluate_checkpoint(path, self.data, batch_size=7))

  def test_torch_npz(self):
    state = {}
    for key, (variable, torch_shape, _) in torch_import._expected_tensors(self.model).items():
      value = variable.numpy()
      if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
      elif value.ndim == 2:
        value = value.T
      self.assertEqual(value.shape, torch_shape)
      state[key] = value
    path = os.path.join(self.tmp, "sd.npz")
    np.savez(path, **state)
    self._check(evaluate.evaluate_checkpoint(path, self.data, arch="resnet32"))

  def test_main_writes_json_and_md(self):
    path = os.path.join(self.tmp, "m.weights.h5")
    self.model.save_weights(path)
    registry.register_dataset("tiny_eval_images", lambda: self.data, overwrite=True)
    out = os.path.join(self.tmp, "res", "r.json")
    try:
      rc = evaluate.main(["--dataset=tiny_eval_images", f"--checkpoint={path}",
                          "--arch", "resnet32", "--output", out])
    finally:
      registry.DATASETS.pop("tiny_eval_images", None)
    self.assertEqual(rc, 0)
    with open(out) as fh:
      self._check(json.load(fh))
    with open(out[:-5] + ".md") as fh:
      md = fh.read()
    self.assertIn("tiny test images", md)
    self.assertIn("| c3 | 2 |", md)

  def test_errors(self):
    with self.assertRaisesRegex(FileNotFoundError, "not found"):
      evaluate.evaluate_checkpoint(os.path.join(self.tmp, "nope.npz"), self.data, arch="resnet32")
    bad = os.path.join(self.tmp, "w.pt")
    open(bad, "w").close()
    with self.assertRaisesRegex(ValueError, "must be a .npz"):
      evaluate.evaluate_checkpoint(bad, self.data, arch="resnet32")
    with self.assertRaisesRegex(ValueError, "split must be"):
      evaluate.evaluate_checkpoint(bad, self.data, arch="resnet32", split="dev")


if __name__ == "__main__":
  tf.test.main()
