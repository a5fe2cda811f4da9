"""Tests of the absl entry point `python -m m2m_tf.main`, run in subprocesses.

All subprocesses start together in setUpClass (each one imports TensorFlow),
and each test checks one of them: bad flag values are refused with a clear
message and a non-zero exit status, a missing data directory gives the
DataNotFoundError message, and a tiny synthetic run prints its results line.
To keep the number of processes small, the validators of every bad value are
checked by one script that parses each argument list with m2m_tf.main's FLAGS;
one bad value also goes through the real command line.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import tensorflow as tf

# End-to-end: real training runs or subprocesses (skipped by the fast run: -m 'not slow').
pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BAD_FLAGS = {
    "beta": (["--beta=1.5"], "--beta must be in [0, 1)"),
    "steps": (["--steps=-1"], "--steps must be >= 0"),
    "dataset": (["--dataset=no_such_set"], "--dataset must be one of"),
    "method": (["--method=bogus"], "--method"),
    "gamma": (["--gamma=2"], "--gamma must be in [0, 1]"),
    "n_buckets": (["--n_buckets=0"], "--n_buckets must be >= 1"),
    "la_tau": (["--la_tau=-1"], "--la_tau must be a finite number >= 0"),
    "loss": (["--loss=logit_adjustment"], "--loss"),
    "milestones": (["--lr_milestones=3", "--dataset=synthetic_lt"],
                   "invalid flags: lr_milestones and lr_factors must be given together"),
}


class MainFlagsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory(prefix="m2m_test_main_")
    cls.empty = os.path.join(cls.tmp.name, "empty_data")
    os.makedirs(cls.empty)
    env = dict(os.environ, M2M_CACHE_DIR=os.path.join(cls.tmp.name, "cache"),
               PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parse_script = textwrap.dedent("""
        import json, sys
        from absl import flags
        import m2m_tf.main
        cases = json.loads(sys.argv[1])
        out, options = {}, {}
        for name, args in cases.items():
          flags.FLAGS.unparse_flags()
          try:
            flags.FLAGS(["m2m_tf.main"] + args)
            options[name] = m2m_tf.main.config_from_flags().data.options
            out[name] = None
          except Exception as e:
            out[name] = type(e).__name__ + ": " + str(e)
        print("RESULT" + json.dumps(out) + "OPTIONS" + json.dumps(options))
    """)
    cases = {name: args for name, (args, _) in _BAD_FLAGS.items()}
    cases["good"] = ["--dataset=synthetic_lt", "--beta=0.99", "--steps=0"]
    cases["vocab"] = ["--dataset=reuters", "--vocab_size=2000"]
    commands = {"parse": ["-c", parse_script, json.dumps(cases)]}
    main = ["-m", "m2m_tf.main"]
    commands["cli_beta"] = main + ["--beta=1.5"]
    commands["help"] = main + ["--help"]
    commands["missing_data"] = main + [
        "--dataset=reuters", "--method=erm", f"--data_dir={cls.empty}",
        f"--output_dir={os.path.join(cls.tmp.name, 'out_missing')}"]
    cls.run_dir = os.path.join(cls.tmp.name, "out_ok")
    commands["ok"] = main + ["--dataset=synthetic_lt", "--method=erm", "--epochs=1", "--verbose=0",
                             "--jit_compile=false", f"--output_dir={cls.run_dir}"]
    common = ["--dataset=synthetic_lt", "--verbose=0", "--jit_compile=false"]
    commands["deferred_late"] = main + common + [
        "--method=m2m", "--epochs=3", f"--output_dir={os.path.join(cls.tmp.name, 'late')}"]
    cls.stopped_dir = os.path.join(cls.tmp.name, "stopped")
    commands["stopped"] = main + common + ["--method=erm", "--epochs=2", "--stop_after=1",
                                           f"--output_dir={cls.stopped_dir}"]
    commands["diverge"] = main + common + [
        "--method=erm", "--lr=100", "--epochs=3",
        f"--output_dir={os.path.join(cls.tmp.name, 'div')}"]
    procs = {
        name: subprocess.Popen([sys.executable] + args, cwd=cls.tmp.name, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in commands.items()
    }
    cls.out = {}
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=300)
      cls.out[name] = (proc.returncode, stdout, stderr)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_bad_flags_rejected(self):
    rc, stdout, stderr = self.out["parse"]
    self.assertEqual(rc, 0, stderr[-3000:])
    results, options = stdout.split("RESULT", 1)[1].split("OPTIONS")
    results, options = json.loads(results), json.loads(options)
    self.assertIsNone(results["good"])
    self.assertIsNone(results["vocab"])
    self.assertEqual(options["vocab"], {"vocab_size": 2000})  # reaches the Reuters builder
    for name, (_, message) in _BAD_FLAGS.items():
      with self.subTest(name):
        self.assertIsNotNone(results[name], f"{name} was accepted")
        self.assertIn(message, results[name])

  def test_help_lists_every_generated_flag(self):
    rc, stdout, stderr = self.out["help"]
    self.assertEqual(rc, 0, stderr[-3000:])
    for flag in ("--lam:", "--keep_epochs:", "--hidden_units:", "--[no]fold_batchnorm:",
                 "--dataset:", "--init_epoch:"):
      self.assertIn(flag, stdout)
    self.assertIn("M2m: weight of f's seed-class logit", stdout)  # the field's help text

  def test_stop_after_ends_unfinished(self):
    rc, stdout, stderr = self.out["stopped"]
    self.assertEqual(rc, 0, stderr[-3000:])
    self.assertEqual(stdout, f"{self.stopped_dir}: stopped after 1 of 2 epochs (--stop_after); "
                     "the same command without it goes on.\n")
    self.assertFalse(os.path.exists(os.path.join(self.stopped_dir, "results.json")))
    self.assertTrue(os.path.exists(os.path.join(self.stopped_dir, "ckpt", "state-0001.json")))

  def test_bad_flag_on_command_line(self):
    rc, stdout, stderr = self.out["cli_beta"]
    self.assertNotEqual(rc, 0)
    self.assertIn("flag --beta=1.5: --beta must be in [0, 1)", stdout + stderr)
    self.assertNotIn("Traceback", stderr)

  def test_missing_data_dir(self):
    rc, stdout, stderr = self.out["missing_data"]
    self.assertNotEqual(rc, 0)
    text = stdout + stderr
    self.assertIn("m2m_tf.main: error:", text)
    self.assertIn(self.empty, text)
    self.assertIn("is missing", text)
    self.assertIn("--data_dir", text)
    self.assertNotIn("Traceback", stderr)

  def test_deferral_after_the_last_epoch_refused(self):
    rc, stdout, stderr = self.out["deferred_late"]
    self.assertEqual(rc, 1)
    self.assertIn("deferred_epoch=3, which must lie in [0, epochs=3)", stderr)
    self.assertNotIn("Traceback", stderr)

  def test_divergence_is_an_error(self):
    rc, stdout, stderr = self.out["diverge"]
    self.assertEqual(rc, 1, stdout + stderr[-3000:])
    self.assertRegex(stderr, r"m2m_tf.main: error: (training diverged|The training loss became)")
    self.assertNotIn("Traceback", stderr)
    self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "div", "results.json")))

  def _main(self, *args, **kw):
    env = dict(os.environ, M2M_CACHE_DIR=os.path.join(self.tmp.name, "cache"),
               PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "m2m_tf.main"] + list(args), cwd=self.tmp.name,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)

  def test_overwrite_with_a_bad_input_deletes_nothing(self):
    results = os.path.join(self.run_dir, "results.json")
    self.assertTrue(os.path.exists(results))
    proc = self._main("--dataset=synthetic_lt", "--method=m2m", "--overwrite",
                      "--g_checkpoint=/nonexistent/g.weights.h5", f"--output_dir={self.run_dir}")
    _, stderr = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 1)
    self.assertIn("g checkpoint not found: '/nonexistent/g.weights.h5'", stderr)
    self.assertTrue(os.path.exists(results))
    self.assertTrue(os.path.isdir(os.path.join(self.run_dir, "saved_model")))

  def test_interrupt_is_one_line(self):
    out = os.path.join(self.tmp.name, "interrupted")
    # A shell that starts a job in the background makes it ignore SIGINT, and children inherit
    # that (Python then installs no KeyboardInterrupt handler): restore Ctrl-C's default.
    proc = self._main("--dataset=synthetic_lt", "--method=erm", "--epochs=2000", "--verbose=0",
                      "--jit_compile=false", f"--output_dir={out}",
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(out, "history.csv")) and time.time() < deadline:
      time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    self.assertEqual(proc.returncode, 130, stderr[-3000:])
    self.assertIn("interrupted; run the same command again to resume", stderr)
    self.assertNotIn("Traceback", stderr)

  def test_tiny_run(self):
    rc, stdout, stderr = self.out["ok"]
    self.assertEqual(rc, 0, stderr[-3000:])
    self.assertIn("synthetic_lt ce-erm seed 0: test bACC", stdout)
    # Quiet start-up: none of TensorFlow's C++ start-up lines (m2m_tf.quiet).
    self.assertNotIn("InitializeLog", stderr)
    self.assertNotIn("oneDNN custom operations", stderr)
    with open(os.path.join(self.run_dir, "results.json")) as fh:
      results = json.load(fh)
    self.assertEqual(results["method"], "erm")
    with open(os.path.join(self.run_dir, "flags.json")) as fh:
      recorded = json.load(fh)
    self.assertEqual(recorded["schedule"]["epochs"], 1)
    # The recipe's model choices are recorded resolved, not as "unset".
    self.assertEqual(recorded["model"], {"arch": "mlp", "hidden_units": [64], "augment": False})
    self.assertIn(f"{results['test_bacc']:.2f}", stdout)


if __name__ == "__main__":
  tf.test.main()
