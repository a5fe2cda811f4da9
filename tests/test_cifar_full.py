"""launch.cifar_full --status: progress and time left from the committed records alone."""

import json
import os
import subprocess
import sys
import tempfile
import threading

from absl.testing import absltest

from m2m_tf.training.output_dir import RunLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(run_dir, epochs_done, epoch_seconds):
  ckpt = os.path.join(run_dir, "ckpt")
  os.makedirs(ckpt)
  with open(os.path.join(ckpt, f"state-{epochs_done:04d}.json"), "w") as fh:
    json.dump({"epochs_done": epochs_done, "epoch_seconds": epoch_seconds}, fh)


class StatusTest(absltest.TestCase):

  def test_time_left_at_the_recent_and_the_best_pace(self):
    root = tempfile.mkdtemp()
    # ERM: 100 epochs, 90 at 160 s on a quiet machine, then 10 at 400 s on a busy one.
    _record(os.path.join(root, "erm_s0"), 100, [160.0] * 90 + [400.0] * 10)
    before = sorted(os.listdir(root))
    out = subprocess.run([sys.executable, "-m", "launch.cifar_full", "--status", f"--root={root}"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    self.assertEqual(sorted(os.listdir(root)), before)  # --status runs and writes nothing
    # Recent pace: the median of the last 10 epochs (400 s); best: the 10th percentile (160 s).
    self.assertEqual(lines[0], "erm       unfinished, 100/200 epochs, 400 s/epoch recently, "
                     "160 at best; left ~11.1 h (~4.4 h at best)")
    # DRS branches at 160: 40 epochs at ERM's pace; M2m: the same x its step factor 5.9.
    self.assertEqual(lines[1], "drs       pending, 0/200 epochs; left ~4.4 h (~1.8 h at best)")
    self.assertEqual(lines[2], "m2m       pending, 0/200 epochs; left ~26.2 h (~10.5 h at best)")
    self.assertEqual(lines[3], "ldam      pending, 0/200 epochs; left ~22.2 h (~8.9 h at best)")
    # (40000 + 16000 + 94400 + 80000 + 16000 + 94400) s and (16000 + ... + 37760) s.
    self.assertEqual(lines[-1], "total left ~94.7 h at the recent pace, ~37.9 h at the best pace "
                     "seen (2-core CPU; '?' stages not counted)")

  def test_a_second_lane_is_not_taken_for_the_quiet_pace(self):
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_s0"), 100, [160.0] * 90 + [400.0] * 10)
    # LDAM's 4 epochs all shared the CPU (two at equal priority, two in an idle lane).
    _record(os.path.join(root, "ldam_s0"), 4, [270.0, 256.0, 1126.0, 1295.0])
    out = subprocess.run([sys.executable, "-m", "launch.cifar_full", "--status", f"--root={root}"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    # Recent: its own median (1126 s) x 196 epochs; best: ERM's quiet 160 s, the same step.
    self.assertIn("ldam      unfinished, 4/200 epochs, 1126 s/epoch recently, 256 at best; "
                  "left ~61.3 h (~8.7 h at best)", out)

  def test_nothing_started_yet_gives_no_estimate(self):
    root = tempfile.mkdtemp()
    out = subprocess.run([sys.executable, "-m", "launch.cifar_full", "--status", f"--root={root}"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    self.assertIn("erm       pending, 0/200 epochs; left ~? (~? at best)", out)
    self.assertIn("total left ~0.0 h", out)


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
    self.assertIn("erm       done: test bACC 70.00, GM 60.00", rest)
    # Nothing was started: no log of a run of its own beside the folder.
    self.assertFalse(os.path.exists(run_dir + ".log"))

if __name__ == "__main__":
  absltest.main()
