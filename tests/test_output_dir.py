"""Tests of m2m_tf.training.output_dir: the run lock, foreign files, --overwrite, resume rules."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

from m2m_tf.errors import OutputDirError
from m2m_tf.training import output_dir as out_lib
from m2m_tf.config import ExperimentConfig
from m2m_tf.training.comparison import differences


def _cfg(**kw):
  return ExperimentConfig.from_leaves(dataset="synthetic_lt", **kw).to_json()


def _plan(folder, cfg, overwrite):
  return out_lib.plan_output_dir(folder, cfg, overwrite,
                                 lambda previous: differences(previous, cfg))


def _commit_epoch(folder, n=1):
  os.makedirs(os.path.join(folder, "ckpt"), exist_ok=True)
  with open(os.path.join(folder, "ckpt", f"state-{n:04d}.json"), "w") as fh:
    json.dump({"epochs_done": n}, fh)


class RunLockTest(tf.test.TestCase):

  def test_second_holder_refused_and_dead_holder_taken_over(self):
    folder = os.path.join(tempfile.mkdtemp(), "run")
    with out_lib.RunLock(folder):
      with self.assertRaisesRegex(OutputDirError, r"in use by another run \(pid \d+"):
        with out_lib.RunLock(folder):
          pass
    # A process that holds the lock and is killed: its lock is taken over.
    script = textwrap.dedent(f"""
        import os, signal
        from m2m_tf.training.output_dir import RunLock
        lock = RunLock({folder!r}).__enter__()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), timeout=120)
    self.assertEqual(proc.returncode, -9)
    with out_lib.RunLock(folder):
      pass

  def test_is_locked_only_while_held(self):
    folder = os.path.join(tempfile.mkdtemp(), "run")
    self.assertFalse(out_lib.is_locked(folder))  # no folder yet
    with out_lib.RunLock(folder):
      self.assertTrue(out_lib.is_locked(folder))
      self.assertTrue(out_lib.is_locked(folder))  # asking does not take the lock away
    self.assertFalse(out_lib.is_locked(folder))  # the lock file stays, unheld
    with out_lib.RunLock(folder):  # and asking left nothing held
      pass

  def test_unwritable_folder_is_one_line(self):
    parent = tempfile.mkdtemp()
    blocker = os.path.join(parent, "a_file")
    open(blocker, "w").close()
    with self.assertRaisesRegex(OutputDirError, "cannot use output folder"):
      with out_lib.RunLock(os.path.join(blocker, "run")):
        pass


class PlanTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = os.path.join(tempfile.mkdtemp(), "run")
    os.makedirs(self.dir)

  def _ours(self, **kw):
    plan = _plan(self.dir, _cfg(**kw), False)
    plan.apply()
    return plan

  def test_empty_folder_is_fresh(self):
    self.assertEqual(self._ours().action, "fresh")
    self.assertTrue(out_lib.is_ours(self.dir))

  def test_foreign_files_refused_even_with_overwrite_and_kept(self):
    with open(os.path.join(self.dir, "important.txt"), "w") as fh:
      fh.write("thesis")
    os.makedirs(os.path.join(self.dir, "my_thesis"))
    for overwrite in (False, True):
      with self.assertRaisesRegex(OutputDirError, "important.txt, my_thesis"):
        _plan(self.dir, _cfg(), overwrite)
    self.assertTrue(os.path.exists(os.path.join(self.dir, "important.txt")))
    self.assertTrue(os.path.isdir(os.path.join(self.dir, "my_thesis")))

  def test_overwrite_of_our_run_next_to_a_user_file_deletes_nothing(self):
    self._ours()
    open(os.path.join(self.dir, "results.json"), "w").close()
    open(os.path.join(self.dir, "notes.md"), "w").close()
    with self.assertRaisesRegex(OutputDirError, "notes.md"):
      _plan(self.dir, _cfg(), True)
    self.assertCountEqual([n for n in os.listdir(self.dir) if not n.startswith(".")],
                          ["flags.json", "results.json", "notes.md"])

  def test_overwrite_replaces_only_our_entries(self):
    self._ours()
    open(os.path.join(self.dir, "results.json"), "w").close()
    os.makedirs(os.path.join(self.dir, "saved_model"))
    with self.assertRaisesRegex(OutputDirError, "already holds results"):
      _plan(self.dir, _cfg(), False)
    plan = _plan(self.dir, _cfg(seed=3), True)
    self.assertEqual(plan.action, "replace")
    # Planning deletes nothing.
    self.assertTrue(os.path.exists(os.path.join(self.dir, "results.json")))
    plan.apply()
    self.assertFalse(os.path.exists(os.path.join(self.dir, "results.json")))
    self.assertFalse(os.path.exists(os.path.join(self.dir, "saved_model")))
    with open(os.path.join(self.dir, "flags.json")) as fh:
      self.assertEqual(json.load(fh)["seed"], 3)

  def test_failed_start_does_not_block_a_corrected_command(self):
    self._ours(data_dir="/nonexistent", lr=100.0)
    plan = _plan(self.dir, _cfg(lr=0.1), False)
    self.assertEqual(plan.action, "restart")

  def test_committed_run_of_another_configuration_refused(self):
    self._ours()
    _commit_epoch(self.dir)
    with self.assertRaisesRegex(OutputDirError, r"1 epochs done.*differs in \['seed'\]"):
      _plan(self.dir, _cfg(seed=7), False)
    self.assertEqual(_plan(self.dir, _cfg(), False).action, "resume")
    # Where the data lives and verbosity cannot change the result.
    plan = _plan(self.dir, _cfg(data_dir="/elsewhere", verbose=0), False)
    self.assertEqual(plan.action, "resume")

  def test_paths_compared_resolved(self):
    cwd = os.getcwd()
    os.chdir(os.path.dirname(self.dir))
    try:
      g = os.path.join(self.dir, "g.weights.h5")
      a = _cfg(method="m2m", g_checkpoint=g, output_dir=self.dir)
      b = _cfg(method="m2m", g_checkpoint=os.path.relpath(g),
               output_dir=os.path.relpath(self.dir))
      self.assertEqual(differences(a, b), [])
      self.assertEqual(differences(a, _cfg(method="m2m", g_checkpoint=g + "x")),
                       ["g_checkpoint"])
    finally:
      os.chdir(cwd)

  def test_m2m_leaves_count_only_when_a_run_translates(self):
    # A recipe's new M2m default (gamma 0.9 -> 0.99) must not block resuming an ERM or DRS run.
    for method in ("erm", "drs", "rw"):
      self.assertEqual(differences(_cfg(method=method, gamma=0.9, beta=0.99),
                                   _cfg(method=method, gamma=0.99, beta=0.999)), [])
      self.assertEqual(differences(_cfg(method=method, gamma=0.9), _cfg(method=method, lr=0.3)),
                       ["lr"])
    self.assertEqual(differences(_cfg(method="m2m", gamma=0.9), _cfg(method="m2m", gamma=0.99)),
                     ["gamma"])
    self.assertEqual(differences(_cfg(method="erm", gamma=0.9), _cfg(method="m2m", gamma=0.99)),
                     ["gamma", "method"])

  def test_field_added_later_counts_as_its_default(self):
    old = _cfg()
    del old["runtime"]["precision"]
    self.assertEqual(differences(old, _cfg()), [])
    self.assertEqual(differences(old, _cfg(precision="mixed_bfloat16")), ["precision"])

  def test_old_mixed_precision_flag_reads_as_float16(self):
    # Runs recorded before --precision hold the boolean mixed_precision instead.
    for flag, same in ((False, "float32"), (True, "mixed_float16")):
      old = _cfg()
      del old["runtime"]["precision"]
      old["runtime"]["mixed_precision"] = flag
      self.assertEqual(differences(old, _cfg(precision=same)), [])
      other = "mixed_bfloat16"
      self.assertEqual(differences(old, _cfg(precision=other)), ["precision"])

  def test_legacy_run_folder_is_ours(self):
    with open(os.path.join(self.dir, "flags.json"), "w") as fh:
      json.dump(_cfg(), fh)
    self.assertTrue(out_lib.is_ours(self.dir))
    with open(os.path.join(self.dir, "flags.json"), "w") as fh:
      json.dump({"something": "else"}, fh)
    self.assertFalse(out_lib.is_ours(self.dir))


if __name__ == "__main__":
  tf.test.main()
