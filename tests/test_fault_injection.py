"""Fault injection: a real run is killed with SIGKILL at 20+ points and resumed after each.

The run is M2m on a small synthetic set with g trained first (so kills land in
g's run and in f's). A driver process SIGKILLs itself at the n-th firing of a
named point (after a history row appears, in the middle of a checkpoint write,
between a state file and its record, during the export, ...), or a timer thread
kills it a set time after the run starts (imports excluded, so the kill lands in
the run on a fast CPU and on a slow one alike). After each kill the same command
runs again.
The final results.json, weights and history must equal an uninterrupted run's.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
import tensorflow as tf

from helpers import h5_arrays, load_results

pytestmark = pytest.mark.slow

CONFIG = dict(dataset="synthetic_lt", method="m2m", seed=0, verbose=0, jit_compile="false",
              n_buckets=2, gamma=0.2, beta=0.99,
              dataset_options=dict(n_max=80, dim=8, n_val_per_class=10, n_test_per_class=10))

DRIVER = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    from m2m_tf.config import ExperimentConfig
    from m2m_tf.training import checkpoint, results, run
    point, nth = sys.argv[2], float(sys.argv[3])  # for "timer", seconds into the run
    count = [0]

    def fire(name):
      if name == point:
        count[0] += 1
        if count[0] == nth:
          os.kill(os.getpid(), signal.SIGKILL)

    save, write_json, write_history = (checkpoint.atomic_save, checkpoint.atomic_write_json,
                                       checkpoint.write_history)

    def atomic_save(save_fn, path):
      def torn(tmp):  # the file is half written when the kill comes
        save_fn(tmp)
        with open(tmp, "rb") as fh:
          data = fh.read()
        with open(tmp, "wb") as fh:
          fh.write(data[: len(data) // 2])
        fire("during_" + ("state" if "state-" in path else "best") + "_write")
        with open(tmp, "wb") as fh:
          fh.write(data)
      save(torn, path)

    def atomic_write_json(path, obj):
      record = os.path.basename(path).startswith("state-")
      if record:
        fire("before_record")
      write_json(path, obj)
      if record:
        fire("after_record")

    def history(path, rows):
      write_history(path, rows)
      fire("after_history")

    replace_dir, results_json = results.atomic_replace_dir, results.atomic_write_json

    def export(build_fn, path):
      def build(p):
        build_fn(p)
        fire("during_export")
      replace_dir(build, path)

    def write_results(path, obj):
      results_json(path, obj)
      fire("after_results")

    checkpoint.atomic_save, checkpoint.atomic_write_json = atomic_save, atomic_write_json
    checkpoint.write_history = history
    results.atomic_replace_dir, results.atomic_write_json = export, write_results
    cfg = ExperimentConfig.from_leaves(**json.loads(sys.argv[1]))
    timer = threading.Timer(nth, os.kill, (os.getpid(), signal.SIGKILL))
    if point == "timer":
      timer.start()
    start = time.monotonic()
    run.run_experiment(cfg)
    timer.cancel()  # a finished run is not killed
    print(f"run_seconds={time.monotonic() - start}")
""")

# (point, n-th firing in that process). Each killed process resumes from the last
# commit, so the list walks through g's run (6 epochs), its export, then f's run.
KILLS = [
    ("after_history", 1), ("during_state_write", 1), ("before_record", 1), ("after_record", 1),
    ("during_best_write", 1), ("after_history", 2), ("during_state_write", 2),
    ("before_record", 2), ("during_export", 1), ("after_results", 1),  # g's run ends here
    ("after_history", 1), ("after_history", 3), ("during_state_write", 1), ("after_record", 2),
    ("before_record", 1), ("during_best_write", 1), ("after_history", 1),
    ("during_export", 1), ("during_export", 1),
]
# Timed kills, in a run of their own (their progress would shift the named points above), at
# fractions of the uninterrupted run's time measured in the same test. Together they cover
# 0.7 of the run, so the last one's process still has at least 0.55 of it ahead when killed at
# 0.25: it dies mid-run unless this machine doubles its speed within the test.
TIMED = [("timer", 0.1), ("timer", 0.15), ("timer", 0.2), ("timer", 0.25)]


class FaultInjectionTest(tf.test.TestCase):

  def _run(self, out, point="none", nth=0, timeout=300):
    cfg = json.dumps(dict(CONFIG, output_dir=out))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-c", DRIVER, cfg, point, str(nth)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)

  def _kill_and_resume(self, out, kills, run_seconds) -> int:
    """Runs once per kill (each resuming the last), then to the end; returns the kill count."""
    killed = 0
    for point, nth in kills:
      proc = self._run(out, point, nth * run_seconds if point == "timer" else nth)
      if os.path.exists(os.path.join(out, "results.json")):
        break
      self.assertEqual(proc.returncode, -signal.SIGKILL, f"{point} {nth}: {proc.stderr[-3000:]}")
      killed += 1
    proc = self._run(out)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return killed

  def _assert_same_run(self, reference, out):
    self.assertEqual(load_results(reference), load_results(out))
    for sub in ("", "g_erm"):
      a, b = h5_arrays(os.path.join(reference, sub, "best_f.weights.h5")), h5_arrays(
          os.path.join(out, sub, "best_f.weights.h5"))
      for k in a:
        self.assertAllEqual(a[k], b[k], msg=f"{sub}/{k}")
      with open(os.path.join(reference, sub, "history.csv")) as fa, \
           open(os.path.join(out, sub, "history.csv")) as fb:
        self.assertEqual(list(csv.reader(fa)), list(csv.reader(fb)))
      leftovers = [n for n in os.listdir(os.path.join(out, sub)) if n.startswith(".tmp-")]
      self.assertEqual(leftovers, [])
      self.assertFalse(os.path.exists(os.path.join(out, sub, "ckpt")))

  def test_killed_at_many_points_resumes_to_the_same_run(self):
    root = tempfile.mkdtemp(prefix="m2m_fault_")
    os.environ["M2M_CACHE_DIR"] = os.path.join(root, "cache")
    reference = os.path.join(root, "reference")
    proc = self._run(reference)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    run_seconds = float(proc.stdout.split("run_seconds=")[1])
    for name, kills in (("named", KILLS), ("timed", TIMED)):
      out = os.path.join(root, name)
      killed = self._kill_and_resume(out, kills, run_seconds)
      print(f"fault injection ({name}): {killed} SIGKILLs, each followed by a resume")
      self.assertEqual(killed, len(kills))
      self._assert_same_run(reference, out)


if __name__ == "__main__":
  tf.test.main()
