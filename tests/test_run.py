"""End-to-end tests of m2m_tf.training.run.run_experiment on a tiny synthetic_lt.

Covers the output files, refusal of a finished output directory, a missing g
checkpoint, seeded determinism, resumption after a simulated kill (two kill
points), and reloading the exported SavedModel in a process that imports only
TensorFlow.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

import pytest
import keras
import numpy as np
from sklearn.metrics import balanced_accuracy_score
import tensorflow as tf

from data_prep.registry import load_dataset
from helpers import h5_arrays, load_results
from m2m_tf.config import ExperimentConfig
from m2m_tf.errors import CheckpointError, ConfigError, OutputDirError
from m2m_tf.models import build_classifier
from data_prep.atomic import read_json
from m2m_tf.config import G_SEED_OFFSET
from m2m_tf.training import callbacks as cb
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training import run
from m2m_tf.training.branching import check_branch
from m2m_tf.training.comparison import differences

# End-to-end: real training runs or subprocesses (skipped by the fast run: -m 'not slow').
pytestmark = pytest.mark.slow

_OPTS = dict(n_max=80, dim=8, n_val_per_class=10, n_test_per_class=10)
_TMP = None


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory(prefix="m2m_test_run_")
  os.environ["M2M_CACHE_DIR"] = os.path.join(_TMP.name, "cache")


def tearDownModule():
  _TMP.cleanup()


def _config(name, method, **kw):
  args = dict(dataset="synthetic_lt", method=method, seed=0,
              output_dir=os.path.join(_TMP.name, name), dataset_options=dict(_OPTS), epochs=2,
              deferred_epoch=1, verbose=0, jit_compile="false", n_buckets=2)
  args.update(kw)
  return ExperimentConfig.from_leaves(**args)


def _history(path):
  with open(path) as fh:
    return list(csv.DictReader(fh))


class _Kill(Exception):
  pass


class RunExperimentTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.results = {}
    for method in ("erm", "drs", "m2m"):
      # m2m without g_checkpoint trains g with ERM under output_dir/g_erm.
      cls.results[method] = run.run_experiment(_config(f"smoke_{method}", method))
    cls.g_path = os.path.join(_TMP.name, "smoke_erm", "best_f.weights.h5")
    # The reference 4-epoch M2m run (phase 2 from epoch 2; gamma low so that
    # samples are actually accepted), used by the determinism and resume tests.
    cls.m2m_kw = dict(epochs=4, deferred_epoch=2, gamma=0.2, beta=0.99, g_checkpoint=cls.g_path)
    cls.reference = run.run_experiment(_config("ref_m2m", "m2m", **cls.m2m_kw))
    cls.ref_dir = os.path.join(_TMP.name, "ref_m2m")

  def test_outputs(self):
    data = load_dataset("synthetic_lt", **_OPTS)
    for method, res in self.results.items():
      out = os.path.join(_TMP.name, f"smoke_{method}")
      for name in ("flags.json", "history.csv", "results.json", "best_f.weights.h5"):
        self.assertTrue(os.path.isfile(os.path.join(out, name)), f"{method}: {name}")
      self.assertNotEmpty(os.listdir(os.path.join(out, "tensorboard")))
      self.assertTrue(os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb")))
      self.assertFalse(os.path.exists(os.path.join(out, "ckpt")))  # removed when finished
      with open(os.path.join(out, "flags.json")) as fh:
        flags = json.load(fh)
      self.assertEqual(flags["training"]["method"], method)
      self.assertEqual(flags["schedule"]["epochs"], 2)
      self.assertEqual(ExperimentConfig.from_json(flags), _config(f"smoke_{method}", method)
                       .resolved())
      on_disk = load_results(out)
      for key in ("dataset", "method", "seed", "test_bacc", "test_gm", "val_bacc", "best_epoch",
                  "per_class_recall"):
        self.assertIn(key, on_disk)
        self.assertIn(key, res)
      self.assertEqual(on_disk["dataset"], "synthetic_lt")
      self.assertEqual(on_disk["method"], method)
      self.assertEqual(on_disk["seed"], 0)
      self.assertIn(on_disk["best_epoch"], (0, 1))
      recall = np.array(on_disk["per_class_recall"], np.float64)
      self.assertLen(recall, data.num_classes)
      # Percent, and bACC is the mean per-class recall.
      self.assertAllInRange(recall, 0.0, 100.0)
      self.assertAllClose(on_disk["test_bacc"], recall.mean(), atol=1e-9)
      self.assertBetween(on_disk["test_gm"], 0.0, 100.0)
      self.assertBetween(on_disk["val_bacc"], 0.0, 100.0)
      self.assertLessEqual(on_disk["test_gm"], on_disk["test_bacc"] + 1e-9)
      rows = _history(os.path.join(out, "history.csv"))
      self.assertLen(rows, 2)
      self.assertEqual([int(r["epoch"]) for r in rows], [0, 1])
      for col in ("loss", "lr", "val_bacc", "test_bacc", "val_gm"):
        self.assertIn(col, rows[0])
      best = on_disk["best_epoch"]
      self.assertAllClose(float(rows[best]["val_bacc"]), on_disk["val_bacc"])
      self.assertAllClose(float(rows[best]["test_bacc"]), on_disk["test_bacc"])
      self.assertEqual(max(float(r["val_bacc"]) for r in rows), on_disk["val_bacc"])
      if method == "m2m":
        for col in ("m2m_accept_rate", "m2m_gen_rate", "m2m_candidate_rate", "m2m_accepted"):
          self.assertIn(col, rows[0])
        self.assertEqual(float(rows[0]["gen_slots"]), 0.0)  # phase 1
        self.assertGreater(float(rows[1]["gen_slots"]), 0.0)  # phase 2 from epoch 1
        self.assertTrue(os.path.isfile(os.path.join(out, "g_erm", "results.json")))
        self.assertTrue(os.path.isfile(os.path.join(out, "g_erm", "best_f.weights.h5")))
        # g is trained independently of f: its own seed, so its own initialisation and batch
        # order; f's phase 1 (ERM until the deferral) is therefore not g's training.
        self.assertEqual(load_results(os.path.join(out, "g_erm"))["seed"], G_SEED_OFFSET)
        g_rows = _history(os.path.join(out, "g_erm", "history.csv"))
        self.assertNotEqual(g_rows[0]["loss"], rows[0]["loss"])
        erm_rows = _history(os.path.join(_TMP.name, "smoke_erm", "history.csv"))
        self.assertEqual(erm_rows[0]["loss"], rows[0]["loss"])  # f's phase 1 is ERM's seed-0 run

  def test_results_match_best_weights(self):
    # Recompute test bACC from the saved best f with scikit-learn.
    data = load_dataset("synthetic_lt", **_OPTS)
    out = os.path.join(_TMP.name, "ref_m2m")
    f = build_classifier("mlp", data.input_shape, data.num_classes, normed_head=False,
                         hidden_units=(64,), name="f")
    f.load_weights(os.path.join(out, "best_f.weights.h5"))
    pred = np.argmax(f.predict(data.x_test, verbose=0), axis=1)
    self.assertAllClose(100 * balanced_accuracy_score(data.y_test, pred),
                        self.reference["test_bacc"], atol=1e-6)

  def test_second_run_refused_unless_overwrite(self):
    cfg = _config("smoke_erm", "erm")
    with self.assertRaisesRegex(OutputDirError, "already holds results"):
      run.run_experiment(cfg)
    cfg_overwrite = _config("overwrite_erm", "erm", epochs=1)
    run.run_experiment(cfg_overwrite)
    with self.assertRaises(OutputDirError):
      run.run_experiment(cfg_overwrite)
    marker = os.path.join(cfg_overwrite.output_dir, "results.json")
    os.utime(marker, (0, 0))
    res = run.run_experiment(_config("overwrite_erm", "erm", epochs=1, overwrite=True))
    self.assertEqual(res["method"], "erm")
    self.assertGreater(os.path.getmtime(marker), 0)

  def test_foreign_directory_refused(self):
    out = os.path.join(_TMP.name, "foreign")
    os.makedirs(out)
    with open(os.path.join(out, "notes.txt"), "w") as fh:
      fh.write("mine")
    with self.assertRaisesRegex(OutputDirError, "no run of ours wrote"):
      run.run_experiment(_config("foreign", "erm"))
    self.assertTrue(os.path.exists(os.path.join(out, "notes.txt")))

  def test_missing_g_checkpoint(self):
    missing = os.path.join(_TMP.name, "nowhere", "g.weights.h5")
    with self.assertRaisesRegex(CheckpointError, "nowhere/g.weights.h5"):
      run.run_experiment(_config("missing_g", "m2m", g_checkpoint=missing))

  def test_deterministic(self):
    again = run.run_experiment(_config("ref_m2m_again", "m2m", **self.m2m_kw))
    a = load_results(os.path.join(_TMP.name, "ref_m2m"))
    b = load_results(os.path.join(_TMP.name, "ref_m2m_again"))
    self.assertEqual(a, b)
    self.assertEqual(again["test_bacc"], self.reference["test_bacc"])
    self._assert_same_run("ref_m2m", "ref_m2m_again")

  def test_bfloat16_run(self):
    res = run.run_experiment(_config("bf16_m2m", "m2m", precision="mixed_bfloat16",
                                     **self.m2m_kw))
    out = os.path.join(_TMP.name, "bf16_m2m")
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")
    with open(os.path.join(out, "flags.json")) as fh:
      self.assertEqual(json.load(fh)["runtime"]["precision"], "mixed_bfloat16")
    hist, ref = (_history(os.path.join(d, "history.csv")) for d in (out, self.ref_dir))
    self.assertTrue(all(np.isfinite(float(r["loss"])) for r in hist))
    # The same run in float32 (same seed, data and g) differs from the first step on.
    self.assertNotEqual(hist[0]["loss"], ref[0]["loss"])
    self.assertGreater(float(hist[-1]["accepted"]), 0.0)
    # Weights are float32; the exported model answers in float32 like any other.
    self.assertTrue(all(a.dtype == np.float32 for a in
                        h5_arrays(os.path.join(out, "best_f.weights.h5")).values()))
    served = tf.saved_model.load(os.path.join(out, "saved_model"))
    x = load_dataset("synthetic_lt", **_OPTS).x_test[:3]
    probs = served.signatures["serving_default"](tf.constant(x))
    self.assertTrue(all(v.dtype == tf.float32 for v in probs.values()))
    self.assertBetween(res["test_bacc"], 0.0, 100.0)

  def _assert_same_run(self, name_a, name_b):
    dir_a, dir_b = (os.path.join(_TMP.name, n) for n in (name_a, name_b))
    self.assertEqual(load_results(dir_a), load_results(dir_b))
    wa = h5_arrays(os.path.join(dir_a, "best_f.weights.h5"))
    wb = h5_arrays(os.path.join(dir_b, "best_f.weights.h5"))
    self.assertEqual(sorted(wa), sorted(wb))
    self.assertNotEmpty(wa)
    for k in wa:
      self.assertAllEqual(wa[k], wb[k], msg=k)
    ha = _history(os.path.join(dir_a, "history.csv"))
    hb = _history(os.path.join(dir_b, "history.csv"))
    self.assertEqual(ha, hb)
    # M2m really ran in phase 2 and accepted samples.
    self.assertGreater(float(ha[3]["accepted"]), 0.0)

  def _interrupted_then_resumed(self, name, kill_patch, restart_epoch):
    cfg = _config(name, "m2m", **self.m2m_kw)
    with kill_patch, self.assertRaises(_Kill):
      run.run_experiment(cfg)
    out = cfg.output_dir
    self.assertFalse(os.path.exists(os.path.join(out, "results.json")))
    records = ckpt_lib.committed_records(os.path.join(out, "ckpt"))
    self.assertEqual(records[0][0], restart_epoch)
    self.assertLen(_history(os.path.join(out, "history.csv")), restart_epoch)
    run.run_experiment(cfg)  # same configuration: resumes at restart_epoch
    self._assert_same_run("ref_m2m", name)
    self.assertFalse(os.path.exists(os.path.join(out, "ckpt")))

  def test_resume_after_kill_after_commit(self):
    # Killed after everything of epoch 2, its commit included: resumes at 3.
    class KillingCheckpoint(ckpt_lib.RunCheckpoint):

      def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 2:
          raise _Kill()

    self._interrupted_then_resumed(
        "resume_after_commit", mock.patch.object(ckpt_lib, "RunCheckpoint", KillingCheckpoint), 3)

  def test_resume_after_kill_before_commit(self):
    # Killed after epoch 2's evaluation and TensorBoard logs, before its commit:
    # epoch 2 is repeated, and its history row must not appear twice.
    class KillingTensorBoard(keras.callbacks.TensorBoard):

      def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 2:
          raise _Kill()

    self._interrupted_then_resumed(
        "resume_before_commit",
        mock.patch.object(keras.callbacks, "TensorBoard", KillingTensorBoard), 2)

  def test_resume_after_kill_before_evaluation(self):
    # Killed at the end of epoch 2 before its evaluation: epoch 2 is repeated
    # and evaluated, so the resumed run selects the same best epoch.
    class KillingPhaseSchedule(cb.PhaseSchedule):

      def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
          raise _Kill()

    self._interrupted_then_resumed(
        "resume_before_eval", mock.patch.object(cb, "PhaseSchedule", KillingPhaseSchedule), 2)

  def test_pytorch_momentum_form_resumes_across_a_milestone(self):
    # The rescaling reads the old lr from the optimizer, which the checkpoint restores: a run
    # killed after epoch 2's commit (lr 0.01) and resumed through the drop to 0.001 at epoch 3
    # equals the straight run bit for bit (a fresh optimizer's lr, 0.1, would rescale by 0.01
    # instead of 0.1), and differs from Keras' form.
    kw = dict(epochs=4, deferred_epoch=2, lr_milestones=(2, 3), lr_factors=(0.1, 0.1),
              momentum_form="pytorch")
    run.run_experiment(_config("torch_form", "erm", **kw))

    class KillingCheckpoint(ckpt_lib.RunCheckpoint):

      def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 2:
          raise _Kill()

    cfg = _config("torch_form_resumed", "erm", **kw)
    with mock.patch.object(ckpt_lib, "RunCheckpoint", KillingCheckpoint), self.assertRaises(_Kill):
      run.run_experiment(cfg)
    run.run_experiment(cfg)
    run.run_experiment(_config("keras_form", "erm", **dict(kw, momentum_form="keras")))
    # The last epoch's training loss and accuracy are made by the weights after the drop (the
    # best-validation weights may come from before it).
    hist = {n: _history(os.path.join(_TMP.name, n, "history.csv"))
            for n in ("torch_form", "torch_form_resumed", "keras_form")}
    self.assertEqual(hist["torch_form"], hist["torch_form_resumed"])
    self.assertEqual(hist["torch_form"][:2], hist["keras_form"][:2])  # the same until a drop
    self.assertNotEqual(hist["torch_form"][3]["loss"], hist["keras_form"][3]["loss"])
    self.assertEqual(load_results(os.path.join(_TMP.name, "torch_form")),
                     load_results(os.path.join(_TMP.name, "torch_form_resumed")))

  def test_stop_after_then_go_on_equals_straight_run(self):
    # --stop_after ends an invocation at a commit without results; the same command without it
    # goes on to the straight run's result bit for bit (phase 2 starts at epoch 2, after the stop).
    cfg = _config("stopped_m2m", "m2m", **self.m2m_kw)
    out = run.run_experiment(cfg.replace(stop_after=2))
    self.assertEqual(out, {"stopped_after": 2, "epochs": 4, "output_dir": cfg.output_dir})
    self.assertFalse(os.path.exists(os.path.join(cfg.output_dir, "results.json")))
    self.assertLen(_history(os.path.join(cfg.output_dir, "history.csv")), 2)
    # A stop already passed trains nothing more.
    self.assertEqual(run.run_experiment(cfg.replace(stop_after=1))["stopped_after"], 2)
    run.run_experiment(cfg)
    self.assertEqual(load_results(self.ref_dir), load_results(cfg.output_dir))
    wa, wb = (h5_arrays(os.path.join(d, "best_f.weights.h5")) for d in (self.ref_dir,
                                                                       cfg.output_dir))
    for k in wa:
      self.assertAllEqual(wa[k], wb[k], msg=k)

  def test_branch_equals_straight_run(self):
    # Phase-1 sharing: M2m branched from an ERM run's state after 2 epochs is
    # the straight M2m run bit for bit (weights, results, phase-2 history).
    src = _config("branch_src_erm", "erm", epochs=4, deferred_epoch=2, keep_epochs=(2,))
    run.run_experiment(src)
    self.assertTrue(os.path.exists(os.path.join(src.output_dir, "ckpt", "state-0002.json")))
    cfg = _config("branched_m2m", "m2m", init_from=src.output_dir, init_epoch=2, **self.m2m_kw)
    run.run_experiment(cfg)
    a, b = (os.path.join(_TMP.name, n) for n in ("ref_m2m", "branched_m2m"))
    self.assertEqual(load_results(a), load_results(b))
    wa, wb = (h5_arrays(os.path.join(d, "best_f.weights.h5")) for d in (a, b))
    for k in wa:
      self.assertAllEqual(wa[k], wb[k], msg=k)
    ha, hb = (_history(os.path.join(d, "history.csv")) for d in (a, b))
    self.assertEqual(ha[2:], hb[2:])
    self.assertEqual([r["val_bacc"] for r in ha], [r["val_bacc"] for r in hb])

  def test_branch_may_change_momentum_form_at_a_steady_lr(self):
    # With no warm-up and lr steady until epoch 3, the Keras-form source's state after 2 epochs
    # is the PyTorch-form run's: the branch in PyTorch's form equals the straight PyTorch-form
    # run bit for bit, through the drop at epoch 3 (where the forms part: the Keras-form
    # source itself ends elsewhere).
    kw = dict(epochs=4, deferred_epoch=2, warmup_epochs=0, lr_milestones=(3,), lr_factors=(0.1,))
    src = _config("form_src_keras", "erm", keep_epochs=(2,), momentum_form="keras", **kw)
    run.run_experiment(src)
    straight = _config("form_straight_torch", "erm", momentum_form="pytorch", **kw)
    run.run_experiment(straight)
    branched = _config("form_branched_torch", "erm", momentum_form="pytorch",
                       init_from=src.output_dir, init_epoch=2, **kw)
    run.run_experiment(branched)
    a, b, k = (_history(os.path.join(c.output_dir, "history.csv"))
               for c in (straight, branched, src))
    self.assertEqual(a, b)
    self.assertEqual(load_results(straight.output_dir), load_results(branched.output_dir))
    self.assertNotEqual(a[3]["loss"], k[3]["loss"])
    # After an lr change (a milestone, or the warm-up still running) the forms' buffers differ.
    source = read_json(os.path.join(src.output_dir, "flags.json"))
    for change in (dict(lr_milestones=(1,)), dict(warmup_epochs=2)):
      bad = _config("form_branch_bad", "erm", momentum_form="pytorch", init_from=src.output_dir,
                    init_epoch=2, **dict(kw, **change))
      with self.assertRaisesRegex(ConfigError, r"differs in \['momentum_form'\] \(moment"):
        check_branch(dict(source, **change), bad)
      check_branch(dict(source, **change, momentum_form="pytorch"), bad)  # same form: fine

  def test_cb_beta_matters_only_where_cb_weights_act(self):
    src = read_json(os.path.join(_TMP.name, "smoke_erm", "flags.json"))  # beta 0.9999, ERM
    for method, refused in (("drw", False), ("erm", False), ("cb_rw", True)):
      cfg = _config("branch_cb", method, epochs=2, deferred_epoch=1, cb_beta=0.999,
                    init_from=os.path.join(_TMP.name, "smoke_erm"), init_epoch=1)
      if refused:  # CB-RW weighs its phase 1 with beta
        with self.assertRaisesRegex(ConfigError, r"differs in \['cb_beta'\]"):
          check_branch(dict(src, method="cb_rw"), cfg)
      else:  # DRW's CB weights act in phase 2 only
        check_branch(src, cfg)
      diff = differences(dict(src, method=method), cfg.to_json())
      self.assertEqual("cb_beta" in diff, method != "erm", method)

  def test_test_split_is_evaluated_where_validation_reaches_or_ties_its_best(self):
    kw = dict(epochs=6, deferred_epoch=3, lr=0.3)
    sparse = _config("test_sparse", "drs", **kw)
    every = _config("test_every", "drs", test_every_epoch=True, **kw)
    for cfg in (sparse, every):
      run.run_experiment(cfg)
    a, b = (_history(os.path.join(c.output_dir, "history.csv")) for c in (sparse, every))
    best, at_best = -1.0, []
    for row in b:
      at_best.append(float(row["val_bacc"]) >= best)
      best = max(best, float(row["val_bacc"]))
    self.assertIn(False, at_best)  # some epoch falls below the best: its test is skipped
    for ra, rb, evaluated in zip(a, b, at_best):
      self.assertEqual(ra["val_bacc"], rb["val_bacc"])
      self.assertEqual(ra["loss"], rb["loss"])  # the same training
      self.assertEqual(ra["test_bacc"], rb["test_bacc"] if evaluated else "")
    self.assertEqual(load_results(sparse.output_dir)["test_bacc"],
                     load_results(every.output_dir)["test_bacc"])

  def test_default_momentum_form_does_not_raise_the_loss_at_a_large_drop(self):
    # A converging run whose lr drops x0.01: in the default (PyTorch's) form the training loss
    # goes on falling; in Keras' form the old-rate buffer overshoots and it rises
    # (docs/method.md, difference 9).
    kw = dict(dataset_options={}, epochs=7, lr_milestones=(5,), lr_factors=(0.01,),
              deferred_epoch=5)
    losses = {}
    for form in (None, "keras"):
      extra = {} if form is None else {"momentum_form": form}
      cfg = _config(f"drop_{form}", "erm", export=False, **kw, **extra)
      run.run_experiment(cfg)
      losses[form] = [float(r["loss"]) for r in _history(os.path.join(cfg.output_dir,
                                                                      "history.csv"))]
    self.assertLess(losses[None][5], losses[None][4])
    self.assertLess(losses[None][6], losses[None][4])
    self.assertGreater(losses["keras"][5], losses["keras"][4])

  def test_branch_refuses_other_phase1(self):
    src = os.path.join(_TMP.name, "smoke_erm")  # 2 epochs, kept no state
    for kw, pattern in ((dict(init_epoch=1), "no committed state"),
                        (dict(init_epoch=1, lr=0.05), r"differs in \['lr'\]"),
                        (dict(init_epoch=1, loss="focal"), r"differs in \['loss'\]")):
      cfg = _config("branch_bad", "drs", epochs=2, deferred_epoch=1, init_from=src, **kw)
      with self.assertRaisesRegex((ConfigError, CheckpointError), pattern):
        run.run_experiment(cfg)
    with self.assertRaisesRegex(ConfigError, "trains phase 1 differently"):
      run.run_experiment(_config("branch_bad", "rs", epochs=2, init_from=src, init_epoch=1))

  def test_saved_model_reloads_without_m2m_tf(self):
    data = load_dataset("synthetic_lt", **_OPTS)
    out = os.path.join(_TMP.name, "ref_m2m")
    x_path = os.path.join(_TMP.name, "x_test.npy")
    pred_path = os.path.join(_TMP.name, "pred.npy")
    np.save(x_path, data.x_test)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({os.path.join(out, "saved_model")!r})
        x = tf.constant(np.load({x_path!r}))
        np.save({pred_path!r}, loaded.serve(x).numpy())
        bad = [m for m in sys.modules if m.startswith(("m2m_tf", "data_prep"))]
        assert not bad, bad
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=_TMP.name, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    served = np.load(pred_path)
    f = build_classifier("mlp", data.input_shape, data.num_classes, normed_head=False,
                         hidden_units=(64,), name="f")
    f.load_weights(os.path.join(out, "best_f.weights.h5"))
    self.assertAllClose(served, f.predict(data.x_test, verbose=0), atol=1e-5)
    pred = np.argmax(served, axis=1)
    self.assertAllClose(100 * balanced_accuracy_score(data.y_test, pred),
                        self.reference["test_bacc"], atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
