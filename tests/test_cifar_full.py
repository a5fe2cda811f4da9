"""launch.cifar_full --status: progress and time left from the committed records alone."""

import json
import os
import subprocess
import sys
import tempfile
import threading

from absl import flags
from absl.testing import absltest

from m2m_tf.training.output_dir import RunLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(run_dir, epochs_done, epoch_seconds):
  ckpt = os.path.join(run_dir, "ckpt")
  os.makedirs(ckpt)
  with open(os.path.join(ckpt, f"state-{epochs_done:04d}.json"), "w") as fh:
    json.dump({"epochs_done": epochs_done, "epoch_seconds": epoch_seconds}, fh)


def _status(root):
  return subprocess.run([sys.executable, "-m", "launch.cifar_full", "--status", f"--root={root}"],
                        cwd=REPO, capture_output=True, text=True, check=True).stdout


class StatusTest(absltest.TestCase):

  def test_time_left_at_the_recent_and_the_best_pace(self):
    root = tempfile.mkdtemp()
    # ERM's phase 1: 100 epochs, 90 at 160 s on a quiet machine, then 10 at 400 s on a busy one.
    _record(os.path.join(root, "erm_phase1_s0"), 100, [160.0] * 90 + [400.0] * 10)
    before = sorted(os.listdir(root))
    lines = _status(root).strip().splitlines()
    self.assertEqual(sorted(os.listdir(root)), before)  # --status runs and writes nothing
    # Recent pace: the median of the last 10 epochs (400 s); best: the 10th percentile (160 s);
    # a phase-1 run goes to the branch point only (60 epochs left).
    self.assertEqual(lines[0], "erm_phase1  unfinished, 100/160 epochs, 400 s/epoch recently, "
                     "160 at best; left ~6.7 h (~2.7 h at best)")
    # The rows branch at 160: 40 epochs at ERM's pace; M2m: the same x its step factor 5.9.
    self.assertEqual(lines[1], "erm         pending, 0/200 epochs; left ~4.4 h (~1.8 h at best)")
    self.assertEqual(lines[3], "m2m         pending, 0/200 epochs; left ~26.2 h (~10.5 h at best)")
    self.assertEqual(lines[4], "ldam_phase1 pending, 0/160 epochs; left ~17.8 h (~7.1 h at best)")
    # (24000 + 3 x 16000 + 2 x 94400 + 64000 + 2 x 16000) s and (9600 + ... + 2 x 37760) s.
    self.assertEqual(lines[-1], "total left ~94.7 h at the recent pace, ~37.9 h at the best pace "
                     "seen (2-core CPU; '?' stages not counted)")

  def test_a_phase1_run_is_done_at_its_branch_point(self):
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_phase1_s0"), 162, [160.0] * 162)
    # The ERM row's own epochs (after the source's 160) set the ERM pace once there are some.
    _record(os.path.join(root, "erm_s0"), 165, [160.0] * 160 + [200.0] * 5)
    out = _status(root)
    self.assertIn("erm_phase1  done: 162 epochs, the branch point kept, 160 s/epoch recently, "
                  "160 at best; left ~0.0 h (~0.0 h at best)", out)
    self.assertIn("erm         unfinished, 165/200 epochs, 200 s/epoch recently, 200 at best; "
                  "left ~1.9 h (~1.9 h at best)", out)
    self.assertIn("drs         pending, 0/200 epochs; left ~2.2 h (~2.2 h at best)", out)

  def test_a_second_lane_is_not_taken_for_the_quiet_pace(self):
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_phase1_s0"), 100, [160.0] * 90 + [400.0] * 10)
    # LDAM's 4 epochs all shared the CPU (two at equal priority, two in an idle lane).
    _record(os.path.join(root, "ldam_phase1_s0"), 4, [270.0, 256.0, 1126.0, 1295.0])
    # Recent: its own median (1126 s) x 156 epochs; best: ERM's quiet 160 s, the same step.
    self.assertIn("ldam_phase1 unfinished, 4/160 epochs, 1126 s/epoch recently, 256 at best; "
                  "left ~48.8 h (~6.9 h at best)", _status(root))

  def test_nothing_started_yet_gives_no_estimate(self):
    out = _status(tempfile.mkdtemp())
    self.assertIn("erm_phase1  pending, 0/160 epochs; left ~? (~? at best)", out)
    self.assertIn("total left ~0.0 h", out)


class CommandsTest(absltest.TestCase):

  def test_commands_resume_and_branch_the_committed_runs(self):
    # Each stage's command, parsed as m2m_tf.main would: a committed run folder resumes under
    # it (no difference that changes a result) and a row passes the branch check against its
    # committed phase-1 run, in PyTorch's momentum form against Keras'.
    from launch import cifar_full  # pylint: disable=g-import-not-at-top
    from m2m_tf import config_flags  # pylint: disable=g-import-not-at-top
    from m2m_tf.io_utils import read_json  # pylint: disable=g-import-not-at-top
    from m2m_tf.training import run  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    checked = []
    for stage in cifar_full.PLAN:
      fv = flags.FlagValues()
      config_flags.define_flags(fv)
      fv(["m2m_tf.main"] + cifar_full.command(stage)[3:])
      cfg = config_flags.config_from_flags(fv).resolved()
      self.assertEqual(cfg.schedule.momentum_form, "pytorch" if stage.branch_from else "keras")
      own = read_json(os.path.join(REPO, stage.run_dir, "flags.json"))
      if own:
        self.assertEqual(run.differences(own, cfg.to_json()), [], stage.name)
        checked.append(stage.name)
      if stage.branch_from:
        source = read_json(os.path.join(REPO, cifar_full.STAGES[stage.branch_from].run_dir,
                                        "flags.json"))
        if source:
          run.check_branch(source, cfg)
          checked.append(f"{stage.name}<-{stage.branch_from}")
    self.assertContainsSubset(["erm_phase1", "erm<-erm_phase1", "m2m<-erm_phase1"], checked)


class LanesTest(absltest.TestCase):

  def test_idle_sets_the_lowest_priority(self):
    script = ("import os; from launch import cifar_full as c; c.lowest_priority(); "
              "print(os.sched_getscheduler(0) == os.SCHED_IDLE, os.nice(0))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    self.assertEqual(out, ["True", "19"])

  def test_a_stage_another_launcher_runs_is_waited_for_not_started(self):
    root = tempfile.mkdtemp()
    run_dir = os.path.join(root, "erm_s0")
    held, release = threading.Event(), threading.Event()

    def other_lane():
      with RunLock(run_dir):  # the other lane trains erm until told, and finishes it
        held.set()
        release.wait(timeout=300)
        with open(os.path.join(run_dir, "results.json"), "w") as fh:
          json.dump({"test_bacc": 70.0, "test_gm": 60.0}, fh)

    lane = threading.Thread(target=other_lane)
    lane.start()
    held.wait()
    proc = subprocess.Popen([sys.executable, "-m", "launch.cifar_full", "--only=erm",
                             f"--root={root}", "--busy_poll_s=0.2"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # printed while the other lane still holds the folder
    release.set()
    rest, _ = proc.communicate(timeout=300)
    lane.join()
    self.assertEqual(proc.returncode, 0)
    self.assertEqual(first, "erm: another process is training it; waiting for it to stop.\n")
    self.assertIn("erm         done: test bACC 70.00, GM 60.00", rest)
    # Nothing was started: no log of a run of its own beside the folder.
    self.assertFalse(os.path.exists(run_dir + ".log"))

if __name__ == "__main__":
  absltest.main()
