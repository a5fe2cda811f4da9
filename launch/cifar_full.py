r"""CIFAR-10-LT (ratio 100, JPEG substitute) at the paper's full schedule, resumable on a CPU.

  python -m launch.cifar_full            # run (or resume) the plan in order; kill at any time
  python -m launch.cifar_full --status   # what is done, what is running, the time left
  python -m launch.cifar_full --only=erm # one stage only
  python -m launch.cifar_full --only=ldam_phase1 --idle   # a second lane on the CPU time left

The plan (ResNet-32, seed 0, 200 epochs, batch 128, lr 0.1 with 5 warm-up epochs,
x0.01 at 160 and 180, weight decay 2e-4, deferral 160):

  1. erm_phase1   ERM's first 160 epochs, the CE rows' shared phase 1 (phase-1 sharing)
  2. erm, drs, m2m   each branched from erm_phase1 after 160 epochs
  3. ldam_phase1  LDAM's first 160 epochs (its cosine head starts as LDAM-DRW's does)
  4. ldam, ldam_drw, ldam_m2m   each branched from ldam_phase1 after 160 epochs

The rows' epochs 161-200 use PyTorch's momentum form (--momentum_form=pytorch: the
official code's, which has no overshoot at the lr drops); the phase-1 runs use Keras'
form, in which the committed ones were made. The two forms differ only after an lr
change, and phase 1's only changes are the warm-up's, 155 epochs before the branch
point (docs/method.md, difference 9; docs/runs.md).

M2m uses the official code's CIFAR-10 values (beta 0.999, lam 0.5, gamma 0.9, step
size 0.1, T = 10) and the official pre-trained ResNet-32 g for both losses; there is
no hyper-parameter grid here (18 settings x ~3 h of CPU each).

Every run folder lives under results/cifar10_jpeg_lt_full/, so the committed
repository holds all a new machine needs to continue: each unfinished run keeps
only its two newest epoch states (ckpt/) and a phase-1 run its branch point too.

Two lanes: ResNet-32's step keeps a 2-core CPU about 87% busy, and evaluation and
checkpoints leave gaps. `--idle` runs a launcher's stages under SCHED_IDLE, which the
kernel schedules only when no normal process wants the core, so a second lane (say
LDAM beside the CE rows) progresses without slowing the first much (docs/runs.md
gives the measurement). A stage that another launcher is running is waited for, not
started twice.
"""

import dataclasses
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from absl import app
from absl import flags

from launch import tables
from m2m_tf.cli import run_absl
from m2m_tf.io_utils import read_json
from m2m_tf import run_records as ckpt_lib
from m2m_tf.training import output_dir

FLAGS = flags.FLAGS
flags.DEFINE_bool("status", False, "Print the state of every stage and the time left; run nothing.")
flags.DEFINE_list("only", None, "Run only these stages (default: the whole plan in order).")
flags.DEFINE_string("root", "results/cifar10_jpeg_lt_full", "Folder of the run folders.")
flags.DEFINE_string("data_dir", None, "Data root (default $M2M_DATA_DIR, else ../shared/data).")
flags.DEFINE_bool("idle", False, "Run the stages at the lowest CPU priority (SCHED_IDLE, nice 19).")
flags.DEFINE_float("busy_poll_s", 60.0, "Seconds between checks of a stage another launcher runs.")
flags.DEFINE_string("g_checkpoint", "../shared/pretrained/official_erm_resnet32_cifar10lt_r100.npz",
                    "The official pre-trained ResNet-32 g (PyTorch layout).")

EPOCHS = 200
BRANCH_EPOCH = 160
M2M_FLAGS = {"beta": 0.999, "lam": 0.5, "gamma": 0.9, "step_size": 0.1, "steps": 10}
# Measured M2m/ERM step time of ResNet-32 on the 2-core CPUs this project runs on: 5.4 on an
# Intel Xeon (results/bench_resnet32_quiet.md), 5.9 on an AMD EPYC (results/bench_resnet32_amd.md).
# The larger one, so that an estimate errs long; a stage's own pace replaces it once it has run.
M2M_STEP_FACTOR = 5.9


PHASE1_MOMENTUM_FORM = "keras"  # the form the committed phase-1 runs were made in
ROWS_MOMENTUM_FORM = "pytorch"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One run of the plan: a row of the paper's Table 2 (launch.tables.TABLE2_ROWS), or the
  first `until` epochs of one, which the rows branch from (a phase-1 run)."""

  name: str
  branch_from: Optional[str] = None
  row: Optional[str] = None  # a phase-1 run: the row whose loss and method it trains

  @property
  def until(self) -> int:
    """The epochs the launcher trains it to: a phase-1 run stops at the branch point."""
    return BRANCH_EPOCH if self.row else EPOCHS

  @property
  def loss(self) -> str:
    """The stage's loss (its Table 2 row)."""
    return tables.TABLE2_ROWS[self.row or self.name][1]["loss"]

  @property
  def method(self) -> str:
    """The stage's rebalancing method (its Table 2 row)."""
    return tables.TABLE2_ROWS[self.row or self.name][1]["method"]

  @property
  def run_dir(self) -> str:
    """The stage's run folder under --root."""
    return os.path.join(FLAGS.root, f"{self.name}_s0")


PLAN: Tuple[Stage, ...] = (
    Stage("erm_phase1", row="erm"),
    Stage("erm", branch_from="erm_phase1"), Stage("drs", branch_from="erm_phase1"),
    Stage("m2m", branch_from="erm_phase1"),
    Stage("ldam_phase1", row="ldam"),
    Stage("ldam", branch_from="ldam_phase1"), Stage("ldam_drw", branch_from="ldam_phase1"),
    Stage("ldam_m2m", branch_from="ldam_phase1"),
)
STAGES: Dict[str, Stage] = {s.name: s for s in PLAN}
ROWS: Tuple[Stage, ...] = tuple(s for s in PLAN if s.row is None)  # the table's, in order
PHASE1: Tuple[Stage, ...] = tuple(s for s in PLAN if s.row)


def command(stage: Stage) -> List[str]:
  """The `m2m_tf.main` command of a stage."""
  cmd = [sys.executable, "-m", "m2m_tf.main", "--dataset=cifar10_jpeg_lt", "--imbalance_ratio=100",
         f"--loss={stage.loss}", f"--method={stage.method}", "--seed=0", "--verbose=2",
         f"--output_dir={stage.run_dir}"]
  if stage.branch_from:
    cmd += [f"--init_from={STAGES[stage.branch_from].run_dir}", f"--init_epoch={BRANCH_EPOCH}",
            f"--momentum_form={ROWS_MOMENTUM_FORM}"]
  else:  # keeps its branch point for good; stops there
    cmd += [f"--keep_epochs={BRANCH_EPOCH}", f"--momentum_form={PHASE1_MOMENTUM_FORM}",
            f"--stop_after={stage.until}"]
  if stage.method == "m2m":
    cmd += [f"--g_checkpoint={FLAGS.g_checkpoint}"] + [f"--{k}={v}" for k, v in M2M_FLAGS.items()]
  if FLAGS.data_dir:
    cmd.append(f"--data_dir={FLAGS.data_dir}")
  return cmd


def progress(stage: Stage) -> dict:
  """Epochs done, the stage's recent and best seconds per epoch, and whether it finished."""
  results = read_json(os.path.join(stage.run_dir, "results.json"))
  rec = ckpt_lib.newest_record(os.path.join(stage.run_dir, ckpt_lib.CKPT_DIR)) or {}
  first = BRANCH_EPOCH if stage.branch_from else 0
  seconds = [s for s in rec.get("epoch_seconds", [])[first:] if s]
  # The pace of the last 10 epochs (median): the machine's load changes between sessions.
  recent, every = sorted(seconds[-10:]), sorted(seconds)
  epochs = rec.get("epochs_done", 0)
  return {"done": bool(results) or epochs >= stage.until, "results": results, "epochs": epochs,
          "sec_per_epoch": recent[len(recent) // 2] if recent else None,
          # The pace of a quiet machine: the 10th percentile of all its epochs (one odd fast
          # epoch does not move it; the epochs that shared the CPU do not either).
          "best_sec_per_epoch": every[len(every) // 10] if every else None}


def erm_pace(progs: Dict[str, dict]) -> dict:
  """The `progress` whose pace stands for an ERM step's: the ERM row's once it has one, else
  its phase 1's."""
  return progs["erm"] if progs["erm"]["sec_per_epoch"] else progs["erm_phase1"]


def estimate_left(stage: Stage, prog: dict, erm_prog: dict,
                  pace_key: str = "sec_per_epoch") -> Optional[float]:
  """Seconds left for a stage at its own pace `pace_key` ("sec_per_epoch": recent,
  "best_sec_per_epoch": a quiet machine's), else at ERM's (`erm_prog`, `erm_pace`; x M2m's
  step factor).

  At the best pace a stage that does not translate may also go at ERM's best: the same
  ResNet-32 step, so a stage whose own epochs all shared the CPU (a second lane) is not
  taken to be slower than ERM alone.
  """
  if prog["done"]:
    return 0.0
  first = BRANCH_EPOCH if stage.branch_from else 0
  left = stage.until - max(prog["epochs"], first)
  own, erm = prog[pace_key], erm_prog[pace_key]
  if own is None and erm is not None and stage.method == "m2m":
    return left * erm * M2M_STEP_FACTOR
  if pace_key == "best_sec_per_epoch" and stage.method != "m2m":
    own = min((p for p in (own, erm) if p is not None), default=None)
  pace = own or erm
  return None if pace is None else left * pace


def _hours(seconds: Optional[float]) -> str:
  return "?" if seconds is None else f"{seconds / 3600:.1f} h"


def status_lines() -> List[str]:
  """One line per stage, then the total time left at the recent and at the best pace."""
  lines, total, total_best = [], 0.0, 0.0
  progs = {stage.name: progress(stage) for stage in PLAN}  # each run's record read once
  erm = erm_pace(progs)
  for stage in PLAN:
    prog = progs[stage.name]
    left = estimate_left(stage, prog, erm)
    best = estimate_left(stage, prog, erm, "best_sec_per_epoch")
    if prog["results"]:
      r = prog["results"]
      state = f"done: test bACC {r['test_bacc']:.2f}, GM {r['test_gm']:.2f}"
    elif prog["done"]:
      state = f"done: {prog['epochs']} epochs, the branch point kept"
    else:
      state = ("running" if output_dir.is_locked(stage.run_dir) else
               "unfinished" if prog["epochs"] else "pending")
      state += f", {prog['epochs']}/{stage.until} epochs"
    pace = (f", {prog['sec_per_epoch']:.0f} s/epoch recently, "
            f"{prog['best_sec_per_epoch']:.0f} at best" if prog["sec_per_epoch"] else "")
    lines.append(f"{stage.name:11s} {state}{pace}; left ~{_hours(left)} (~{_hours(best)} at best)")
    total, total_best = total + (left or 0.0), total_best + (best or 0.0)
  lines.append(f"total left ~{_hours(total)} at the recent pace, ~{_hours(total_best)} at the "
               "best pace seen (2-core CPU; '?' stages not counted)")
  return lines


def lowest_priority() -> None:
  """Puts this process (and the stages it starts, which inherit it) at SCHED_IDLE, nice 19."""
  os.nice(19)
  os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def wait_while_busy(stage: Stage, poll_s: float) -> None:
  """Waits while another process (another launcher's lane) trains `stage`."""
  if output_dir.is_locked(stage.run_dir):
    print(f"{stage.name}: another process is training it; waiting for it to stop.", flush=True)
  while output_dir.is_locked(stage.run_dir):
    time.sleep(poll_s)


def run_stage(stage: Stage) -> None:
  """Runs (or resumes) one stage as a subprocess, its log beside its folder."""
  wait_while_busy(stage, FLAGS.busy_poll_s)
  if progress(stage)["done"]:
    return
  if stage.branch_from and not progress(STAGES[stage.branch_from])["done"]:
    print(f"{stage.name}: waits for {stage.branch_from} to finish.")
    return
  os.makedirs(FLAGS.root, exist_ok=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage.name}: {' '.join(command(stage))}",
        flush=True)
  with open(stage.run_dir + ".log", "a") as log:
    rc = subprocess.run(command(stage), stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  if rc:
    sys.exit(f"{stage.name} failed with exit code {rc}; see {stage.run_dir}.log")


def main(argv):
  """Prints the plan's progress (--status), or trains its unfinished stages in order."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.status:
    print("\n".join(status_lines()))
    return
  names = FLAGS.only or [s.name for s in PLAN]
  unknown = sorted(set(names) - set(STAGES))
  if unknown:
    raise app.UsageError(f"unknown stages {unknown}; valid: {[s.name for s in PLAN]}")
  if FLAGS.idle:
    lowest_priority()
  for name in names:
    run_stage(STAGES[name])
  print("\n".join(status_lines()))


if __name__ == "__main__":
  run_absl(main)
