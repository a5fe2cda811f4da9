"""Tests of m2m_tf.evaluate on a tiny image dataset and a random ResNet-32."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from unittest import mock

import numpy as np
from sklearn import metrics as skm
import tensorflow as tf

from data_prep import registry
from data_prep import splits
from m2m_tf import evaluate
from m2m_tf import logit_adjustment as la
from m2m_tf import models
from data_prep.atomic import file_sha256
from m2m_tf.models import torch_import
from m2m_tf.training import output_dir as out_lib

K = 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _resized(data, *, size=16, classes=K, name="tiny_other"):
  """`data` with another image size and/or number of classes (a "wrong dataset")."""
  x = np.zeros((classes * 2, size, size, 3), np.uint8)
  y = np.arange(classes * 2, dtype=np.int64) % classes
  return splits.DatasetSplits(
      name=name, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y,
      class_names=tuple(f"c{k}" for k in range(classes)), input_kind="image",
      clip_range=(0.0, 1.0), label=data.label)


def _cli(args):
  """`python -m m2m_tf.evaluate ARGS` in a fresh process: (exit status, stdout, stderr)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", M2M_CACHE_DIR=tempfile.mkdtemp())
  proc = subprocess.run([sys.executable, "-m", "m2m_tf.evaluate"] + args, cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  # TensorFlow's C++ start-up lines (absl logging, "I0000 ..."/"W0000 ...") do not obey
  # TF_CPP_MIN_LOG_LEVEL on every build: they are not ours, so they are dropped here.
  ours = [l for l in proc.stderr.splitlines(keepends=True)
          if not re.match(r"(WARNING: All log messages before absl|[IWEF]\d{4} )", l)]
  return proc.returncode, proc.stdout, "".join(ours)


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

  def _run_folder(self, flags, saved_model=False, weights=True, model=None):
    run = tempfile.mkdtemp(dir=self.tmp)
    with open(os.path.join(run, "flags.json"), "w") as fh:
      json.dump(flags, fh)
    model = model or self.model
    if weights:
      model.save_weights(os.path.join(run, "best_f.weights.h5"))
    if saved_model:
      model.export(os.path.join(run, "saved_model"), format="tf_saved_model", verbose=False)
    return run

  def _main(self, args):
    """evaluate.main with the tiny dataset registered: (exit status, stderr)."""
    registry.register_dataset("tiny_eval_images", lambda: self.data, overwrite=True)
    err = io.StringIO()
    try:
      with contextlib.redirect_stderr(err):
        rc = evaluate.main(args)
    finally:
      registry.DATASETS.pop("tiny_eval_images", None)
    return rc, err.getvalue()

  def test_run_folder_takes_dataset_from_flags_json(self):
    run = self._run_folder({"dataset": "tiny_eval_images", "loss": "ce"})
    out = os.path.join(self.tmp, "run_eval.json")
    rc, err = self._main([f"--checkpoint={run}", "--arch=resnet32", f"--output={out}"])
    self.assertEqual(rc, 0, err)
    with open(out) as fh:
      result = json.load(fh)
    self._check(result)
    self.assertEqual(result["checkpoint"], os.path.join(run, "best_f.weights.h5"))

  def test_run_folder_prefers_its_saved_model(self):
    run = self._run_folder({"dataset": "tiny_eval_images", "loss": "ce"}, saved_model=True)
    result = evaluate.evaluate_checkpoint(run, self.data, batch_size=16)
    self._check(result)
    self.assertEqual((result["checkpoint"], result["arch"]),
                     (os.path.join(run, "saved_model"), "saved_model"))

  def test_ldam_run_folder_gets_the_cosine_head(self):
    tf.keras.utils.set_random_seed(4)
    ldam = models.resnet32(K, input_shape=(16, 16, 3), normed_head=True)
    run = self._run_folder({"dataset": "tiny_eval_images", "loss": "ldam"}, model=ldam)
    result = evaluate.evaluate_checkpoint(run, self.data, arch="resnet32", batch_size=16)
    self.assertEqual(result["n"], 40)
    with self.assertRaisesRegex(evaluate.CheckpointError, "--normed_head must match"):
      evaluate.evaluate_checkpoint(os.path.join(run, "best_f.weights.h5"), self.data,
                                   arch="resnet32", normed_head=False)

  def test_run_folder_without_a_model_is_one_line(self):
    run = self._run_folder({"dataset": "tiny_eval_images"}, weights=False)
    rc, err = self._main([f"--checkpoint={run}"])
    self.assertEqual(rc, 1)
    self.assertEqual(err, f"m2m_tf.evaluate: error: run folder {run!r} has neither saved_model/ "
                     "nor best_f.weights.h5 (an unfinished run?)\n")

  def test_missing_path_is_one_line(self):
    path = os.path.join(self.tmp, "nope")
    rc, err = self._main([f"--checkpoint={path}", "--dataset=tiny_eval_images"])
    self.assertEqual(rc, 1)
    self.assertEqual(err, f"m2m_tf.evaluate: error: checkpoint not found: {path!r}\n")

  def test_weights_of_another_dataset_name_both_shapes(self):
    path = os.path.join(self.tmp, "m.weights.h5")
    self.model.save_weights(path)
    with self.assertRaises(evaluate.CheckpointError) as ctx:
      evaluate.evaluate_checkpoint(path, _resized(self.data, classes=6), arch="resnet32")
    self.assertEqual(str(ctx.exception), (
        f"checkpoint {path!r} does not fit dataset tiny_other: the checkpoint takes input shape "
        "(?, ?, 3) and predicts 4 classes, the dataset has input shape (16, 16, 3) and 6 classes"))

  def test_saved_model_of_another_dataset_names_both_shapes(self):
    path = os.path.join(self.tmp, "sm")
    self.model.export(path, format="tf_saved_model", verbose=False)
    with self.assertRaises(evaluate.CheckpointError) as ctx:
      evaluate.evaluate_checkpoint(path, _resized(self.data, size=8, classes=5))
    self.assertEqual(str(ctx.exception), (
        f"checkpoint {path!r} does not fit dataset tiny_other: the checkpoint takes input shape "
        "(16, 16, 3) and predicts 4 classes, the dataset has input shape (8, 8, 3) and 5 classes"))

  def test_torch_npz_of_another_dataset_is_a_checkpoint_error(self):
    path = os.path.join(self.tmp, "bad.npz")
    np.savez(path, **{"linear.weight": np.zeros((10, 64), np.float32)})
    with self.assertRaisesRegex(evaluate.CheckpointError, r"dataset tiny_eval_images \(input "
                                r"shape \(16, 16, 3\), 4 classes\): .*linear.weight"):
      evaluate.evaluate_checkpoint(path, self.data, arch="resnet32")

  def test_cli_wrong_dataset_and_run_folder_end_to_end(self):
    # An MLP for 20 features and 7 classes, evaluated on synthetic_lt (32 features, 5 classes).
    tf.keras.utils.set_random_seed(5)
    wrong = os.path.join(self.tmp, "wrong.weights.h5")
    models.build_model("mlp", (20,), 7, hidden_units=(64,)).save_weights(wrong)
    rc, out, err = _cli([f"--checkpoint={wrong}", "--dataset=synthetic_lt"])
    self.assertEqual((rc, out), (1, ""))
    self.assertEqual(err.splitlines(), [
        f"m2m_tf.evaluate: error: checkpoint {wrong!r} does not fit dataset synthetic_lt: the "
        "checkpoint takes input shape (20,) and predicts 7 classes, the dataset has input shape "
        "(32,) and 5 classes"])
    # Another hidden width too (Reuters' 1000-256-36 MLP on synthetic_lt, found by a probe):
    # the input width still comes from the checkpoint, never from the dataset.
    other = os.path.join(self.tmp, "other.weights.h5")
    models.build_model("mlp", (40,), 9, hidden_units=(16,)).save_weights(other)
    rc, out, err = _cli([f"--checkpoint={other}", "--dataset=synthetic_lt"])
    self.assertEqual(rc, 1)
    self.assertIn("the checkpoint takes input shape (40,) and predicts 9 classes", err)
    # A run folder of synthetic_lt (the recipe's 64 hidden units): no --dataset, no --arch.
    mlp = models.build_model("mlp", (32,), 5, hidden_units=(64,))
    run = self._run_folder({"dataset": "synthetic_lt", "loss": "ce", "dataset_options": {}},
                           model=mlp)
    rc, out, err = _cli([f"--checkpoint={run}"])
    self.assertEqual(rc, 0, err)
    self.assertRegex(out, r"synthetic_lt test \(\d+\): bACC")

  def _finished_run(self):
    """A finished run folder of the tiny data: flags.json, results.json, weights, SavedModel."""
    run = self._run_folder({"dataset": "tiny_eval_images", "loss": "ce", "method": "erm",
                            "seed": 0}, saved_model=True)
    with open(os.path.join(run, "results.json"), "w") as fh:
      json.dump({"class_counts": [12, 6, 4, 2], "test_bacc": 12.5}, fh)
    return run

  def _snapshot(self, run):
    """{relative path: sha256} of every file of a run folder."""
    out = {}
    for root, _, files in os.walk(run):
      for name in files:
        path = os.path.join(root, name)
        out[os.path.relpath(path, run)] = file_sha256(path)
    return out

  def _np_logits(self, x):
    return self.model(tf.cast(x, tf.float32) / 255.0, training=False).numpy().astype(np.float64)

  def test_posthoc_select_on_a_run_folder(self):
    run = self._finished_run()
    before = self._snapshot(run)
    rc, err = self._main([f"--checkpoint={run}", "--posthoc_tau=select", "--batch_size=16"])
    self.assertEqual(rc, 0, err)
    after = self._snapshot(run)
    self.assertEqual(set(after) - set(before), {out_lib.POSTHOC_FILE})
    self.assertEqual({k: after[k] for k in before}, before)  # the run's own files: untouched
    self.assertEqual(out_lib.foreign_entries(run), [])  # the folder is still a run of ours
    with open(os.path.join(run, out_lib.POSTHOC_FILE)) as fh:
      result = json.load(fh)
    # An independent transcription: argmax(z - tau log(N / sum N)), bACC by scikit-learn.
    log_pi = np.log(np.array([12, 6, 4, 2]) / 24.0)
    zv, zt = self._np_logits(self.data.x_val), self._np_logits(self.data.x_test)
    bacc = lambda y, z, t: 100 * skm.balanced_accuracy_score(y, np.argmax(z - t * log_pi, 1))
    curve = [bacc(self.data.y_val, zv, t) for t in la.TAU_GRID]
    self.assertEqual(result["mode"], "select")
    self.assertEqual(result["grid"], list(la.TAU_GRID))
    self.assertAllClose(result["grid_val_bacc"], curve, atol=1e-9)
    self.assertEqual(result["tau"], la.TAU_GRID[int(np.argmax(curve))])  # first best: smallest
    self.assertAlmostEqual(result["test_bacc"], bacc(self.data.y_test, zt, result["tau"]),
                           places=9)
    self.assertAlmostEqual(result["test_raw"]["bacc"], bacc(self.data.y_test, zt, 0.0), places=9)
    self.assertEqual(result["checkpoint"], os.path.join(run, "saved_model"))
    self.assertEqual((result["logit_scale"], result["class_counts"]), (1.0, [12, 6, 4, 2]))

  def test_posthoc_fixed_tau_on_a_saved_model(self):
    run = self._finished_run()
    rc, err = self._main([f"--checkpoint={os.path.join(run, 'saved_model')}",
                          "--posthoc_tau=0", "--batch_size=16"])
    self.assertEqual(rc, 0, err)
    with open(os.path.join(run, out_lib.POSTHOC_FILE)) as fh:  # beside the run's results
      result = json.load(fh)
    self.assertEqual((result["mode"], result["tau"]), ("fixed", 0.0))
    self._check(dict(result["test"], n=40, data_label=result["data_label"],
                     class_counts=result["class_counts"]))  # tau 0: the plain evaluation
    self.assertEqual(result["test"], result["test_raw"])
    self.assertNotIn("grid", result)

  def test_posthoc_refusals_are_one_line(self):
    run = self._finished_run()
    for tau in ("-1", "nan", "inf", "bogus", ""):
      rc, err = self._main([f"--checkpoint={run}", f"--posthoc_tau={tau}"])
      self.assertEqual((rc, err), (1, "m2m_tf.evaluate: error: --posthoc_tau must be 'select' or "
                                   f"a finite number >= 0, got {tau!r}\n"))
    results = os.path.join(run, "results.json")
    before = file_sha256(results)
    rc, err = self._main([f"--checkpoint={run}", "--posthoc_tau=1", f"--output={results}"])
    self.assertEqual((rc, err.count("\n")), (1, 1))
    self.assertIn("is a run's own results.json", err)
    self.assertEqual(file_sha256(results), before)
    os.remove(results)  # an unfinished run: its best f may still change
    rc, err = self._main([f"--checkpoint={run}", "--posthoc_tau=select"])
    self.assertEqual(rc, 1)
    self.assertEqual(err, f"m2m_tf.evaluate: error: run folder {run!r} has no results.json: "
                     "post-hoc adjustment needs a finished run\n")
    self.assertFalse(os.path.exists(os.path.join(run, out_lib.POSTHOC_FILE)))

  def test_errors(self):
    with self.assertRaisesRegex(FileNotFoundError, "not found"):
      evaluate.evaluate_checkpoint(os.path.join(self.tmp, "nope.npz"), self.data, arch="resnet32")
    bad = os.path.join(self.tmp, "w.pt")
    open(bad, "w").close()
    with self.assertRaisesRegex(ValueError, "must be a .npz"):
      evaluate.evaluate_checkpoint(bad, self.data, arch="resnet32")
    with self.assertRaisesRegex(ValueError, "split must be"):
      evaluate.evaluate_checkpoint(bad, self.data, arch="resnet32", split="dev")


def _two_class_logits(d):
  """Logits (0, d) per row: class 1 wins after adjustment by tau iff d + tau log 10 > 0
  for counts (100, 10) (log pi_0 - log pi_1 = log 10)."""
  return np.stack([np.zeros_like(d), d], axis=1).astype(np.float32)


class _GuardedSplits:
  """val and test splits whose test arrays raise when read before tau was chosen."""

  name, label, class_names = "guarded", None, ("a", "b")

  def __init__(self):
    steps = -np.log(10.0) * (0.25 * np.arange(8) + 0.125)  # one class-1 win per grid step
    # Validation: class 0 loses one example per step of tau (best tau 0, worst 2).
    self.x_val = _two_class_logits(np.concatenate([steps, np.full(4, 5.0)]))
    self.y_val = np.array([0] * 8 + [1] * 4)
    # Test: class 1 wins one example per step (best tau 2: the worst validation tau).
    self._x_test = _two_class_logits(np.concatenate([np.full(4, -50.0), steps]))
    self._y_test = np.array([0] * 4 + [1] * 8)
    self.class_counts = np.array([100, 10])
    self.chosen = False

  def _test(self, value):
    if not self.chosen:
      raise AssertionError("the test split was read before tau was chosen")
    return value

  @property
  def x_test(self):
    return self._test(self._x_test)

  @property
  def y_test(self):
    return self._test(self._y_test)


class PosthocSelectionTest(tf.test.TestCase):

  def test_tau_is_chosen_on_validation_before_test_is_read(self):
    data = _GuardedSplits()
    select = la.select_tau

    def recorded(*args, **kw):
      out = select(*args, **kw)
      data.chosen = True
      return out

    with mock.patch.object(evaluate.la, "select_tau", side_effect=recorded) as spy:
      result = evaluate.posthoc_adjust(lambda x: x, data, la.SELECT, batch_size=5)
    self.assertEqual(spy.call_count, 1)
    # Validation bACC falls with tau (class 0 loses one of 8 per step): tau 0 is chosen...
    self.assertAllClose(result["grid_val_bacc"], [50 * (1 + (8 - k) / 8) for k in range(9)])
    self.assertEqual((result["tau"], result["tied_taus"]), (0.0, [0.0]))
    self.assertEqual(result["test_bacc"], 50.0)
    # ... though on test tau 2 would have been best (the test arrays, read after the choice).
    test_curve = [la.balanced_accuracy(data.x_test, data.y_test, data.class_counts, t)
                  for t in la.TAU_GRID]
    self.assertEqual(int(np.argmax(test_curve)), 8)
    self.assertEqual(la.select_tau(data.x_test, data.y_test, data.class_counts).tau, 2.0)

  def test_reading_test_first_would_be_detected(self):
    data = _GuardedSplits()  # nothing chooses tau: any read of the test split raises
    with self.assertRaisesRegex(AssertionError, "read before tau was chosen"):
      evaluate.posthoc_adjust(lambda x: x, data, 1.0)

  def test_fixed_tau_and_ldam_scale(self):
    data = _GuardedSplits()
    data.chosen = True
    result = evaluate.posthoc_adjust(lambda x: x, data, 2.0)
    self.assertEqual((result["mode"], result["tau"], result["test_bacc"]), ("fixed", 2.0, 100.0))
    self.assertEqual(result["test_raw"]["bacc"], 50.0)
    self.assertEqual(evaluate.logit_scale({"loss": "ldam", "ldam_scale": 10.0}), 10.0)
    self.assertEqual(evaluate.logit_scale({"loss": "logit_adjusted"}), 1.0)
    # Scaled logits (LDAM's cosines times s) move less per tau step: s = 8 turns 8 wins into 1.
    scaled = evaluate.posthoc_adjust(lambda x: x, data, 2.0, scale=8.0)
    self.assertEqual(scaled["test"]["per_class_recall"], [100.0, 12.5])


if __name__ == "__main__":
  tf.test.main()
