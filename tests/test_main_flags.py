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
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BAD_FLAGS = {
    "beta": (["--beta=1.5"], "--beta must be in [0, 1)"),
    "steps": (["--steps=-1"], "--steps must be >= 0"),
    "dataset": (["--dataset=no_such_set"], "--dataset must be one of"),
    "method": (["--method=bogus"], "--method"),
    "gamma": (["--gamma=2"], "--gamma must be in [0, 1]"),
    "n_buckets": (["--n_buckets=0"], "--n_buckets must be >= 1"),
    "milestones": (["--lr_milestones=3", "--dataset=synthetic_lt"],
                   "--lr_milestones and --lr_factors must be given together"),
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
        out = {}
        for name, args in cases.items():
          flags.FLAGS.unparse_flags()
          try:
            flags.FLAGS(["m2m_tf.main"] + args)
            m2m_tf.main.config_from_flags()
            out[name] = None
          except Exception as e:  # pylint: disable=broad-except
            out[name] = type(e).__name__ + ": " + str(e)
        print("RESULT" + json.dumps(out))
    """)
    cases = {name: args for name, (args, _) in _BAD_FLAGS.items()}
    cases["good"] = ["--dataset=synthetic_lt", "--beta=0.99", "--steps=0"]
    commands = {"parse": ["-c", parse_script, json.dumps(cases)]}
    main = ["-m", "m2m_tf.main"]
    commands["cli_beta"] = main + ["--beta=1.5"]
    commands["missing_data"] = main + [
        "--dataset=reuters", "--method=erm", f"--data_dir={cls.empty}",
        f"--output_dir={os.path.join(cls.tmp.name, 'out_missing')}"]
    cls.run_dir = os.path.join(cls.tmp.name, "out_ok")
    commands["ok"] = main + ["--dataset=synthetic_lt", "--method=erm", "--epochs=1", "--verbose=0",
                             "--jit_compile=false", f"--output_dir={cls.run_dir}"]
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
    results = json.loads(stdout.split("RESULT", 1)[1])
    self.assertIsNone(results["good"])
    for name, (_, message) in _BAD_FLAGS.items():
      with self.subTest(name):
        self.assertIsNotNone(results[name], f"{name} was accepted")
        self.assertIn(message, results[name])

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

  def test_tiny_run(self):
    rc, stdout, stderr = self.out["ok"]
    self.assertEqual(rc, 0, stderr[-3000:])
    self.assertIn("synthetic_lt ce-erm seed 0: test bACC", stdout)
    with open(os.path.join(self.run_dir, "results.json")) as fh:
      results = json.load(fh)
    self.assertEqual(results["method"], "erm")
    with open(os.path.join(self.run_dir, "flags.json")) as fh:
      self.assertEqual(json.load(fh)["epochs"], 1)
    self.assertIn(f"{results['test_bacc']:.2f}", stdout)


if __name__ == "__main__":
  tf.test.main()
