"""launch.cifar.full --status: progress and time left from the committed records alone."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
import numpy as np

from launch.cifar import full as cifar_full
from launch.cifar import state as cifar_state

from data_prep.atomic import read_json
from m2m_tf import config_flags
from m2m_tf.machine import machine_name
from m2m_tf.training.branching import check_branch
from m2m_tf.training.comparison import differences
from m2m_tf.training.output_dir import RunLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(run_dir, epochs_done, epoch_seconds, machines=None):
  ckpt = os.path.join(run_dir, "ckpt")
  os.makedirs(ckpt)
  record = {"epochs_done": epochs_done, "epoch_seconds": epoch_seconds}
  if machines is not None:
    record["epoch_machines"] = machines
  with open(os.path.join(ckpt, f"state-{epochs_done:04d}.json"), "w") as fh:
    json.dump(record, fh)


def _status(root):
  return subprocess.run([sys.executable, "-m", "launch.cifar.full", "--status", f"--root={root}"],
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
    self.assertEqual(lines[0], "erm_phase1_s0     unfinished, 100/160 epochs, 400 s/epoch "
                     "recently, 160 at best; left ~6.7 h (~2.7 h at best)")
    # The rows branch at 160: 40 epochs at ERM's pace; M2m: the same x its step factor 6.95.
    self.assertEqual(lines[1], "erm_s0            pending, 0/200 epochs; left ~4.4 h (~1.8 h at "
                     "best)")
    self.assertEqual(lines[3], "m2m_per_sample_s0 pending, 0/200 epochs; left ~30.9 h (~12.4 h "
                     "at best)")
    self.assertEqual(lines[4], "ldam_phase1_s0    pending, 0/160 epochs; left ~17.8 h (~7.1 h at "
                     "best)")
    # The whole plan: 18 stages (3 seeds of ERM's phase 1, ERM, DRS, M2m; seed 0's LDAM rows,
    # the per-sample ablation and LA's own 200 epochs); seeds 1-2 add 2 x (64000 + 2 x 16000 +
    # 111200) s at the recent pace to seed 0's (24000 + 4 x 16000 + 3 x 111200 + 64000) s, and LA
    # 80000 s; at the best pace 160 s.
    self.assertLen(lines, 19)
    self.assertEqual(lines[-2], "la_s0             pending, 0/200 epochs; left ~22.2 h (~8.9 h at "
                     "best)")
    self.assertEqual(lines[-1], "total left ~272.2 h at the recent pace, ~108.9 h at the best "
                     "pace seen (2-core CPU; '?' stages not counted)")

  def test_a_phase1_run_is_done_at_its_branch_point(self):
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_phase1_s0"), 162, [160.0] * 162)
    # The ERM row's own epochs (after the source's 160) set the ERM pace once there are some.
    _record(os.path.join(root, "erm_s0"), 165, [160.0] * 160 + [200.0] * 5)
    out = _status(root)
    self.assertIn("erm_phase1_s0     done: 162 epochs, the branch point kept, 160 s/epoch "
                  "recently, 160 at best; left ~0.0 h (~0.0 h at best)", out)
    self.assertIn("erm_s0            unfinished, 165/200 epochs, 200 s/epoch recently, 200 at "
                  "best; left ~1.9 h (~1.9 h at best)", out)
    self.assertIn("drs_s0            pending, 0/200 epochs; left ~2.2 h (~2.2 h at best)", out)
    # Seed 1's rows wait for their own phase 1, at the same pace.
    self.assertIn("erm_phase1_s1     pending, 0/160 epochs; left ~8.9 h (~8.9 h at best)", out)

  def test_the_pace_is_this_machines(self):
    root = tempfile.mkdtemp()
    here = machine_name()
    # 100 epochs elsewhere at 400 s, then 10 on this machine at 100 s: the pace is this CPU's,
    # and a stage that has run here sets the ERM pace of the others.
    _record(os.path.join(root, "erm_phase1_s0"), 110, [400.0] * 100 + [100.0] * 10,
            ["Other CPU, 2 cores"] * 100 + [here] * 10)
    _record(os.path.join(root, "ldam_phase1_s0"), 20, [300.0] * 20, [here] * 20)
    out = _status(root)
    self.assertIn("erm_phase1_s0     unfinished, 110/160 epochs, 100 s/epoch recently, 100 at "
                  "best; left ~1.4 h (~1.4 h at best)", out)
    self.assertIn("erm_phase1_s1     pending, 0/160 epochs; left ~4.4 h (~4.4 h at best)", out)

  def test_a_pending_m2m_stage_goes_at_an_m2m_stage_pace_measured_here(self):
    root = tempfile.mkdtemp()
    here = machine_name()
    _record(os.path.join(root, "erm_phase1_s0"), 160, [50.0] * 160, [here] * 160)
    # Seed 0's ERM-M2m: 10 own epochs here at 380 s (7.6 ERM epochs, not the factor's 6.95).
    _record(os.path.join(root, "m2m_s0"), 170, [50.0] * 160 + [380.0] * 10, [here] * 170)
    # ERM-M2m of seed 1 then takes 40 x 380 s = 4.2 h; at ERM's pace x 6.95 it would be 3.9 h.
    self.assertIn("m2m_s1            pending, 0/200 epochs; left ~4.2 h (~4.2 h at best)",
                  _status(root))
    # Epochs that ran elsewhere do not stand in for this machine's M2m pace.
    other = tempfile.mkdtemp()
    _record(os.path.join(other, "erm_phase1_s0"), 160, [50.0] * 160, [here] * 160)
    _record(os.path.join(other, "m2m_s0"), 170, [50.0] * 160 + [380.0] * 10,
            [here] * 160 + ["Other CPU, 2 cores"] * 10)
    self.assertIn("m2m_s1            pending, 0/200 epochs; left ~3.9 h (~3.9 h at best)",
                  _status(other))

  def test_an_erm_pace_comes_from_an_m2m_stage_run_here_before_another_cpus(self):
    root = tempfile.mkdtemp()
    here = machine_name()
    # ERM's phase 1 ran elsewhere at 168 s; only ERM-M2m's own epochs ran here, at 270 s.
    _record(os.path.join(root, "erm_phase1_s0"), 160, [168.0] * 160, ["elsewhere"] * 160)
    _record(os.path.join(root, "m2m_s0"), 170, [168.0] * 160 + [270.0] * 10,
            ["elsewhere"] * 160 + [here] * 10)
    # LA's own 200 epochs at 270 / 5.4 = 50 s (2.8 h), not at the other CPU's 168 s (9.3 h).
    self.assertIn("la_s0             pending, 0/200 epochs; left ~2.8 h (~2.8 h at best)",
                  _status(root))

  def test_a_finished_rows_pace_comes_from_its_results(self):
    # A finished row keeps no ckpt/: the pace of its epochs on this machine is read from its
    # results.json, so a pending stage is estimated at this machine's pace, not an older one's.
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_phase1_s0"), 160, [400.0] * 160, ["elsewhere"] * 160)
    os.makedirs(os.path.join(root, "erm_s2"))
    with open(os.path.join(root, "erm_s2", "results.json"), "w") as fh:
      json.dump({"test_bacc": 65.0, "test_gm": 60.0, "epoch_seconds": [400.0] * 160 + [45.0] * 40,
                 "epoch_machines": ["elsewhere"] * 160 + [machine_name()] * 40}, fh)
    lines = _status(root).strip().splitlines()
    drs_s2 = next(line for line in lines if line.startswith("drs_s2"))
    self.assertEqual(drs_s2, "drs_s2            pending, 0/200 epochs; left ~0.5 h (~0.5 h at "
                     "best)")  # 40 epochs at 45 s

  def test_a_second_lane_is_not_taken_for_the_quiet_pace(self):
    root = tempfile.mkdtemp()
    _record(os.path.join(root, "erm_phase1_s0"), 100, [160.0] * 90 + [400.0] * 10)
    # LDAM's 4 epochs all shared the CPU (two at equal priority, two in an idle lane).
    _record(os.path.join(root, "ldam_phase1_s0"), 4, [270.0, 256.0, 1126.0, 1295.0])
    # Recent: its own median (1126 s) x 156 epochs; best: ERM's quiet 160 s, the same step.
    self.assertIn("ldam_phase1_s0    unfinished, 4/160 epochs, 1126 s/epoch recently, 256 at "
                  "best; left ~48.8 h (~6.9 h at best)", _status(root))

  def test_nothing_started_yet_gives_no_estimate(self):
    out = _status(tempfile.mkdtemp())
    self.assertIn("erm_phase1_s0     pending, 0/160 epochs; left ~? (~? at best)", out)
    self.assertIn("total left ~0.0 h", out)


class CommandsTest(absltest.TestCase):

  def test_commands_resume_and_branch_the_committed_runs(self):
    # Each stage's command, parsed as m2m_tf.main would: a committed run folder resumes under
    # it (no difference that changes a result) and a row passes the branch check against its
    # committed phase-1 run, in PyTorch's momentum form against Keras'.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    checked = []
    for stage in cifar_full.PLAN:
      fv = flags.FlagValues()
      config_flags.define_flags(fv)
      fv(["m2m_tf.main"] + cifar_full.command(stage)[3:])
      cfg = config_flags.config_from_flags(fv).resolved()
      # Every phase 1 in seed 0's form (Keras', as committed), every row in PyTorch's.
      self.assertEqual(cfg.schedule.momentum_form, "keras" if stage.phase1_of else "pytorch")
      if stage.method == "m2m":
        self.assertEqual(cfg.m2m.start_noise_mode,
                         "per_sample" if stage.name == "m2m_per_sample" else "official")
      self.assertEqual(cfg.seed, stage.seed)
      self.assertEqual(cfg.training.cb_beta, 0.999)  # the recipe's (LDAM-DRW's weights)
      own = read_json(os.path.join(REPO, stage.run_dir, "flags.json"))
      if own:
        self.assertEqual(differences(own, cfg.to_json()), [], stage.key)
        checked.append(stage.key)
      source = cifar_full.source(stage)
      if source:
        self.assertEqual(source.seed, stage.seed)
        flags_json = read_json(os.path.join(REPO, source.run_dir, "flags.json"))
        if flags_json:
          check_branch(flags_json, cfg)
          checked.append(f"{stage.key}<-{source.key}")
    self.assertContainsSubset(["erm_phase1_s0", "erm_s0<-erm_phase1_s0", "m2m_per_sample_s0",
                               "m2m_s0<-erm_phase1_s0", "ldam_m2m_s0<-ldam_phase1_s0"], checked)


def _verified_state(run_dir, epochs_done, best_epoch, damaged=False):
  """A commit record whose state and best files verify (or, `damaged`, whose state does not)."""
  ckpt = os.path.join(run_dir, "ckpt")
  os.makedirs(ckpt, exist_ok=True)
  shas = {}
  for name, value in ((f"state-{epochs_done:04d}.npz", epochs_done),
                      (f"best-e{best_epoch:04d}.npz", best_epoch)):
    buf = io.BytesIO()
    np.savez(buf, np.full(3, value, np.float32))
    with open(os.path.join(ckpt, name), "wb") as fh:
      fh.write(buf.getvalue())
    shas[name] = hashlib.sha256(buf.getvalue()).hexdigest()
  state = f"state-{epochs_done:04d}.npz"
  record = {"epochs_done": epochs_done, "state_file": state, "n_f_weights": 1,
            "state_sha256": "0" * 64 if damaged else shas[state],
            "best": {"epoch": best_epoch, "score": 1.0, "summaries": {},
                     "file": f"best-e{best_epoch:04d}.npz",
                     "sha256": shas[f"best-e{best_epoch:04d}.npz"]}}
  with open(os.path.join(ckpt, f"state-{epochs_done:04d}.json"), "w") as fh:
    json.dump(record, fh)


class CommittedStateTest(absltest.TestCase):
  """launch.cifar.state: the checkpoint files a commit keeps."""

  def test_only_the_newest_verified_state_and_a_needed_branch_point(self):
    root = tempfile.mkdtemp()
    flags.FLAGS(["cifar_state", f"--root={root}"])
    ph1, ldam, erm = (os.path.join(root, n) for n in ("erm_phase1_s0", "ldam_phase1_s0",
                                                      "erm_s0"))
    for epochs in (160, 161, 162):  # done at its branch point; rows still to come
      _verified_state(ph1, epochs, 50)
    _verified_state(ldam, 100, 90)
    _verified_state(ldam, 101, 90, damaged=True)  # the newest does not verify
    _verified_state(erm, 170, 165)
    with open(os.path.join(erm, "results.json"), "w") as fh:  # finished: no checkpoint kept
      json.dump({"test_bacc": 1.0, "test_gm": 1.0}, fh)
    export = os.path.join(erm, "saved_model", "variables", "variables.index")
    os.makedirs(os.path.dirname(export))
    open(export, "w").close()
    add, drop = cifar_state.plan_git(cifar_full.PLAN)
    kept = sorted(os.path.relpath(p, root) for p in add if "/ckpt/" in p)
    self.assertEqual(kept, ["erm_phase1_s0/ckpt/best-e0050.npz",
                            "erm_phase1_s0/ckpt/state-0160.json",
                            "erm_phase1_s0/ckpt/state-0160.npz",
                            "ldam_phase1_s0/ckpt/best-e0090.npz",
                            "ldam_phase1_s0/ckpt/state-0100.json",
                            "ldam_phase1_s0/ckpt/state-0100.npz"])
    self.assertIn(os.path.join(erm, "results.json"), add)
    self.assertNotIn(export, add)  # exports stay on disk
    self.assertIn(export, drop)
    self.assertLen(drop, 4 + 2 + 3 + 1)  # 161, 162; ldam's 101; erm_s0's ckpt/ and export
    # Once every row of the seed has finished, the branch point leaves the tree too.
    for row in ("drs_s0", "m2m_per_sample_s0", "m2m_s0"):
      os.makedirs(os.path.join(root, row))
      with open(os.path.join(root, row, "results.json"), "w") as fh:
        json.dump({"test_bacc": 1.0, "test_gm": 1.0}, fh)
    self.assertEmpty(cifar_state.kept_checkpoints(cifar_full.STAGES["erm_phase1_s0"]))


class LanesTest(absltest.TestCase):

  def test_idle_sets_the_lowest_priority(self):
    script = ("import os; from launch.cifar import full as c; c.lowest_priority(); "
              "print(os.sched_getscheduler(0) == os.SCHED_IDLE, os.nice(0))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    self.assertEqual(out, ["True", "19"])

  def test_a_stage_another_launcher_runs_is_waited_for_not_started(self):
    root = tempfile.mkdtemp()
    run_dir = os.path.join(root, "erm_s1")
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
    proc = subprocess.Popen([sys.executable, "-m", "launch.cifar.full", "--only=erm_s1",
                             f"--root={root}", "--busy_poll_s=0.2"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # printed while the other lane still holds the folder
    release.set()
    rest, _ = proc.communicate(timeout=300)
    lane.join()
    self.assertEqual(proc.returncode, 0)
    self.assertEqual(first, "erm_s1: another process is training it; waiting for it to stop.\n")
    self.assertIn("erm_s1            done: test bACC 70.00, GM 60.00", rest)
    # Nothing was started: no log of a run of its own beside the folder.
    self.assertFalse(os.path.exists(run_dir + ".log"))

  def test_a_row_whose_best_is_in_phase1_gets_the_phase1_best_files(self):
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    root = tempfile.mkdtemp()
    with flagsaver.flagsaver(root=root):
      phase1, row, drs = (cifar_full.STAGES[k] for k in ("erm_phase1_s2", "erm_s2", "drs_s2"))
      for stage in (phase1, row, drs):
        os.makedirs(stage.run_dir)
      weights = os.path.join(phase1.run_dir, "best_f.weights.h5")
      with open(weights, "wb") as fh:
        fh.write(b"the f of epoch 125")
      sha = hashlib.sha256(b"the f of epoch 125").hexdigest()
      best = {"best_epoch": 125, "best_score": 66.4, "epochs_done": 126, "weights_sha256": sha,
              "summaries": {"test": {"bacc": 65.8}}}
      for path, record in ((os.path.join(phase1.run_dir, "best_state.json"), best),
                           (os.path.join(row.run_dir, "results.json"), {"best_epoch": 125}),
                           (os.path.join(drs.run_dir, "results.json"), {"best_epoch": 170})):
        with open(path, "w") as fh:
          json.dump(record, fh)
      self.assertTrue(cifar_full.restore_best_files(row))
      with open(os.path.join(row.run_dir, "best_f.weights.h5"), "rb") as fh:
        self.assertEqual(fh.read(), b"the f of epoch 125")
      self.assertEqual(read_json(os.path.join(row.run_dir, "best_state.json")),
                       dict(best, epochs_done=160))  # what its branch commit now writes
      self.assertFalse(cifar_full.restore_best_files(row))  # once
      self.assertFalse(cifar_full.restore_best_files(drs))  # its best is its own epoch's
      self.assertFalse(cifar_full.restore_best_files(phase1))
      # A phase-1 best of another epoch (or other bytes) is not the row's: one line, no copy.
      os.remove(os.path.join(row.run_dir, "best_f.weights.h5"))
      with open(weights, "ab") as fh:
        fh.write(b"!")
      with self.assertRaisesRegex(SystemExit, "erm_s2: no best weights"):
        cifar_full.restore_best_files(row)
      self.assertFalse(os.path.exists(os.path.join(row.run_dir, "best_f.weights.h5")))

  def test_a_finished_row_gets_its_posthoc_la_once(self):
    # The launcher runs the table's post-hoc column itself: once per finished row (best weights
    # kept), never for a phase-1 run, and not again once the file exists.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    root = tempfile.mkdtemp()
    calls = []

    def fake_run(cmd, **unused):
      calls.append(cmd)
      run_dir = cmd[3].split("=", 1)[1]
      with open(os.path.join(run_dir, "posthoc_la.json"), "w") as fh:
        json.dump({"tau": 1.0}, fh)
      return subprocess.CompletedProcess(cmd, 0)

    row, phase1 = cifar_full.STAGES["erm_s1"], cifar_full.STAGES["erm_phase1_s1"]
    with flagsaver.flagsaver(root=root, data_dir="/data"):
      for stage in (row, phase1):
        os.makedirs(stage.run_dir)
        for name in ("results.json", "best_f.weights.h5"):
          with open(os.path.join(stage.run_dir, name), "w") as fh:
            json.dump({"test_bacc": 70.0, "test_gm": 60.0}, fh)
      self.assertTrue(cifar_full.needs_posthoc(row))
      self.assertFalse(cifar_full.needs_posthoc(phase1))
      real_run, subprocess.run = subprocess.run, fake_run
      try:
        for _ in range(2):
          cifar_full.run_stage(row)
          cifar_full.run_stage(phase1)
      finally:
        subprocess.run = real_run
      self.assertEqual(calls, [[sys.executable, "-m", "m2m_tf.evaluate",
                                f"--checkpoint={row.run_dir}", "--posthoc_tau=select",
                                "--data_dir=/data"]])
      self.assertFalse(cifar_full.needs_posthoc(row))

if __name__ == "__main__":
  absltest.main()
