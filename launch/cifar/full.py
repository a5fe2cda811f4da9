r"""CIFAR-10-LT (ratio 100, JPEG substitute) at the paper's full schedule, three seeds,
resumable on a CPU.

  python -m launch.cifar.full            # run (or resume) the plan in order; kill at any time
  python -m launch.cifar.full --status   # every stage: done, running, the time left
  python -m launch.cifar.full --only=erm_phase1_s1 --idle   # a second lane on the CPU time left

The recipe (ResNet-32, 200 epochs, batch 128, lr 0.1 with 5 warm-up epochs, x0.01 at 160 and
180, weight decay 2e-4, deferral 160). For each seed s (its own initialisation and data order;
the long-tailed subset is the official one for all seeds, as in the paper):

  erm_phase1_s<s>   ERM's first 160 epochs, shared by the seed's CE rows (phase-1 sharing)
  erm, drs, m2m     each branched from it after 160 epochs
  ldam_phase1_s0, then ldam, ldam_drw, ldam_m2m   the LDAM rows (seed 0)
  m2m_per_sample_s0 ERM-M2m with our per-sample random start (an ablation of ours)

The rows' epochs 161-200 use PyTorch's momentum form (the official code's); each phase-1 run
uses the form seed 0's phase 1 of its loss was made in (Keras'), so the seeds stay comparable.
The two forms differ only after an lr change, and phase 1's only changes are the warm-up's,
155 epochs before the branch point (docs/method.md, difference 9; docs/runs.md).

M2m uses the official code's CIFAR-10 values (beta 0.999, lam 0.5, gamma 0.9, step size 0.1,
T = 10, the official random start) and the official pre-trained ResNet-32 g for both losses;
there is no hyper-parameter grid here (18 settings x ~3 h of CPU each). CB weights (LDAM-DRW)
use the recipe's beta 0.999, the M2m release's.

Once a row finishes, the launcher runs its post-hoc logit adjustment (`m2m_tf.evaluate
--posthoc_tau=select`, tau chosen on validation; the table's post-hoc column), and does so for
any finished row still without its posthoc_la.json.

Every run folder lives under results/cifar10_jpeg_lt_full/, so the committed
repository holds all a new machine needs to continue: each unfinished run keeps
its two newest epoch states (ckpt/; the newest is committed, `launch.cifar.state`) and a
phase-1 run its branch point too.

Two lanes: ResNet-32's step keeps a 2-core CPU about 87% busy, and evaluation and
checkpoints leave gaps. `--idle` runs a launcher's stages under SCHED_IDLE, which the
kernel schedules only when no normal process wants the core, so a second lane (say
LDAM beside the CE rows) progresses without slowing the first much (docs/runs.md
gives the measurement). A stage that another launcher is running is waited for, not
started twice.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from launch import tables
from m2m_tf.cli import run_absl
from m2m_tf.config import ExperimentConfig
from data_prep.atomic import atomic_save, atomic_write_json, file_sha256, read_json
from m2m_tf.machine import machine_name
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
SEEDS = (0, 1, 2)
M2M_FLAGS = {"beta": 0.999, "lam": 0.5, "gamma": 0.9, "step_size": 0.1, "steps": 10}
# Measured M2m/ERM step time of ResNet-32 on the 2-core CPUs this project runs on: 5.4 on an
# Intel Xeon (results/bench_resnet32_quiet.md), 5.9 on a Zen 3 AMD EPYC (bench_resnet32_amd.md),
# 6.95 on a Zen 4 one (bench_resnet32_torch_amd_epyc.md). The largest, so that an estimate errs
# long; an M2m stage's own pace on this machine replaces it, for that stage and the pending ones.
M2M_STEP_FACTOR = 6.95
# The smallest of them: an ERM pace derived from an M2m stage's (M2m's epochs alone have run on
# this machine) then errs long too.
M2M_STEP_FACTOR_LOW = 5.4

ROWS_MOMENTUM_FORM = "pytorch"  # the official code's; the rows' epochs 161-200
# Every row of the table: (label, loss, method, M2m's start_noise_mode). "m2m_per_sample" is our
# ablation: ERM-M2m with our per-sample random start instead of the official one.
ROW_SPECS: Dict[str, tuple] = {
    **{k: (tables.TABLE2_ROWS[k][0], tables.TABLE2_ROWS[k][1]["loss"],
           tables.TABLE2_ROWS[k][1]["method"], "official" if "m2m" in k else None)
       for k in ("erm", "drs", "m2m", "ldam", "ldam_drw", "ldam_m2m")},
    "m2m_per_sample": ("ERM-M2m, per-sample start (ours)", "ce", "m2m", "per_sample"),
    # Logit adjustment (Menon et al.): its loss acts from epoch 0, so it shares no phase 1.
    "la": ("LA (loss)", "logit_adjusted", "erm", None),
}


@dataclasses.dataclass(frozen=True)
class Stage:
  """One run of the plan: a row of `ROW_SPECS` for one seed, or the first BRANCH_EPOCH epochs
  of one (a phase-1 run, `phase1_of` set), which that seed's rows branch from."""

  name: str
  seed: int = 0
  branch_from: Optional[str] = None  # the phase-1 stage's name (same seed)
  phase1_of: Optional[str] = None  # a phase-1 run: the row whose loss and method it trains

  @property
  def key(self) -> str:
    """The stage's unique name and run folder's: `<name>_s<seed>`."""
    return f"{self.name}_s{self.seed}"

  @property
  def row(self) -> str:
    """The `ROW_SPECS` key whose loss and method it trains."""
    return self.phase1_of or self.name

  @property
  def label(self) -> str:
    """The row's label in the table."""
    return ROW_SPECS[self.row][0]

  @property
  def until(self) -> int:
    """The epochs the launcher trains it to: a phase-1 run stops at the branch point."""
    return BRANCH_EPOCH if self.phase1_of else EPOCHS

  @property
  def loss(self) -> str:
    """The stage's loss."""
    return ROW_SPECS[self.row][1]

  @property
  def method(self) -> str:
    """The stage's rebalancing method."""
    return ROW_SPECS[self.row][2]

  @property
  def start_noise_mode(self) -> Optional[str]:
    """M2m's random start law (None: the stage does not translate)."""
    return None if self.phase1_of else ROW_SPECS[self.row][3]

  @property
  def run_dir(self) -> str:
    """The stage's run folder under --root."""
    return os.path.join(FLAGS.root, self.key)


def _rows(seed: int, phase1: str, rows: Sequence[str]) -> Tuple[Stage, ...]:
  """A seed's phase-1 run of `phase1`'s row, then `rows` branched from it."""
  return ((Stage(f"{phase1}_phase1", seed, phase1_of=phase1),)
          + tuple(Stage(r, seed, branch_from=f"{phase1}_phase1") for r in rows))


# In the order the launcher trains them: seed 0's CE rows (done with the per-sample start), its
# LDAM rows, ERM-M2m of seed 0 with the official start, seeds 1 and 2 of the CE rows, then the
# logit-adjusted loss (seed 0, 200 epochs of its own).
PLAN: Tuple[Stage, ...] = (
    _rows(0, "erm", ("erm", "drs", "m2m_per_sample")) + _rows(0, "ldam", ("ldam", "ldam_drw",
                                                                         "ldam_m2m"))
    + (Stage("m2m", 0, branch_from="erm_phase1"),)
    + _rows(1, "erm", ("erm", "drs", "m2m")) + _rows(2, "erm", ("erm", "drs", "m2m"))
    + (Stage("la", 0),))
STAGES: Dict[str, Stage] = {s.key: s for s in PLAN}
ROWS: Tuple[Stage, ...] = tuple(s for s in PLAN if s.phase1_of is None)
PHASE1: Tuple[Stage, ...] = tuple(s for s in PLAN if s.phase1_of)


def source(stage: Stage) -> Optional[Stage]:
  """The phase-1 stage a row branches from (None for a phase-1 run)."""
  return STAGES[f"{stage.branch_from}_s{stage.seed}"] if stage.branch_from else None


def phase1_momentum_form(stage: Stage) -> str:
  """A phase-1 run's momentum form: seed 0's phase 1 of its loss as recorded (the committed runs
  were made in Keras' form; the seeds stay comparable), else today's default."""
  record = read_json(os.path.join(FLAGS.root, f"{stage.name}_s0", ckpt_lib.FLAGS_FILE))
  # from_json: a record older than the momentum_form leaf was made in Keras' form.
  return (ExperimentConfig() if record is None else
          ExperimentConfig.from_json(record)).schedule.momentum_form


def command(stage: Stage) -> List[str]:
  """The `m2m_tf.main` command of a stage."""
  cmd = [sys.executable, "-m", "m2m_tf.main", "--dataset=cifar10_jpeg_lt", "--imbalance_ratio=100",
         f"--loss={stage.loss}", f"--method={stage.method}", f"--seed={stage.seed}", "--verbose=2",
         f"--output_dir={stage.run_dir}"]
  if stage.branch_from:
    cmd += [f"--init_from={source(stage).run_dir}", f"--init_epoch={BRANCH_EPOCH}",
            f"--momentum_form={ROWS_MOMENTUM_FORM}"]
  elif not stage.phase1_of:  # a row of its own from epoch 0
    cmd.append(f"--momentum_form={ROWS_MOMENTUM_FORM}")
  else:  # keeps its branch point for good; stops there
    cmd += [f"--keep_epochs={BRANCH_EPOCH}", f"--momentum_form={phase1_momentum_form(stage)}",
            f"--stop_after={stage.until}"]
  if stage.start_noise_mode:
    cmd += [f"--g_checkpoint={FLAGS.g_checkpoint}", f"--start_noise_mode={stage.start_noise_mode}"]
    cmd += [f"--{k}={v}" for k, v in M2M_FLAGS.items()]
  if FLAGS.data_dir:
    cmd.append(f"--data_dir={FLAGS.data_dir}")
  return cmd


def own_seconds(pairs: List[tuple], machine: str) -> List[float]:
  """The seconds of a stage's own epochs (`_own_epochs`) that ran on `machine`, or of all of
  them if none did (CPUs differ up to 4x in speed: a pace is its machine's)."""
  here = [s for s, m in pairs if s and m == machine]
  return here or [s for s, _ in pairs if s]


def _own_epochs(stage: Stage, record: dict) -> List[tuple]:
  """(seconds, machine) of each of the stage's own epochs: a branched stage's record also holds
  its source's first `BRANCH_EPOCH`, which are not its own."""
  first = BRANCH_EPOCH if stage.branch_from else 0
  return list(zip(record.get("epoch_seconds", []), ckpt_lib.epoch_machines(record)))[first:]


def progress(stage: Stage, machine: Optional[str] = None) -> dict:
  """Epochs done, the stage's recent and best seconds per epoch (on `machine` where it has run
  there, default this one), and whether it finished."""
  results = read_json(os.path.join(stage.run_dir, ckpt_lib.RESULTS_FILE))
  # A finished run keeps no ckpt/; its results.json holds the same epoch_seconds and machines.
  rec = ckpt_lib.newest_record(os.path.join(stage.run_dir, ckpt_lib.CKPT_DIR)) or results or {}
  machine = machine or machine_name()
  pairs = _own_epochs(stage, rec)
  seconds = own_seconds(pairs, machine)
  # The pace of the last 10 epochs (median): the machine's load changes between sessions.
  recent, every = sorted(seconds[-10:]), sorted(seconds)
  epochs = rec.get("epochs_done", 0)
  return {"done": bool(results) or epochs >= stage.until, "results": results, "epochs": epochs,
          "sec_per_epoch": recent[len(recent) // 2] if recent else None,
          # The pace of a quiet machine: the 10th percentile of all its epochs (one odd fast
          # epoch does not move it; the epochs that shared the CPU do not either).
          "best_sec_per_epoch": every[len(every) // 10] if every else None,
          "here": any(s and m == machine for s, m in pairs)}


def erm_pace(progs: Dict[str, dict], m2m_prog: Optional[dict] = None) -> dict:
  """The pace that stands for an ERM step's: the first stage without translation that has run
  on this machine; else `m2m_prog` (`m2m_pace`: an M2m stage run here) over
  `M2M_STEP_FACTOR_LOW`; else seed 0's ERM row once it has a pace, else its phase 1's."""
  for stage in PLAN:
    if stage.method != "m2m" and progs[stage.key]["here"]:
      return progs[stage.key]
  if m2m_prog:
    return {k: m2m_prog[k] / M2M_STEP_FACTOR_LOW for k in ("sec_per_epoch", "best_sec_per_epoch")}
  return progs["erm_s0"] if progs["erm_s0"]["sec_per_epoch"] else progs["erm_phase1_s0"]


def m2m_pace(progs: Dict[str, dict]) -> Optional[dict]:
  """The `progress` whose pace stands for a pending M2m stage's: the first M2m stage that has
  run on this machine (every M2m row translates with the same g and T), else None."""
  return next((progs[s.key] for s in PLAN if s.method == "m2m" and progs[s.key]["here"]), None)


def estimate_left(stage: Stage, prog: dict, erm_prog: dict, pace_key: str = "sec_per_epoch",
                  m2m_prog: Optional[dict] = None) -> Optional[float]:
  """Seconds left for a stage at its own pace `pace_key` ("sec_per_epoch": recent,
  "best_sec_per_epoch": a quiet machine's); else, for M2m, at another M2m stage's (`m2m_prog`,
  `m2m_pace`); else at ERM's (`erm_prog`, `erm_pace`; x M2m's step factor for M2m).

  At the best pace a stage that does not translate may also go at ERM's best: the same
  ResNet-32 step, so a stage whose own epochs all shared the CPU (a second lane) is not
  taken to be slower than ERM alone.
  """
  if prog["done"]:
    return 0.0
  first = BRANCH_EPOCH if stage.branch_from else 0
  left = stage.until - max(prog["epochs"], first)
  own, erm = prog[pace_key], erm_prog[pace_key]
  if own is None and stage.method == "m2m":
    stand_in = (m2m_prog or {}).get(pace_key)
    if stand_in is not None or erm is not None:
      return left * (stand_in or erm * M2M_STEP_FACTOR)
  if pace_key == "best_sec_per_epoch" and stage.method != "m2m":
    own = min((p for p in (own, erm) if p is not None), default=None)
  pace = own or erm
  return None if pace is None else left * pace


def _hours(seconds: Optional[float]) -> str:
  return "?" if seconds is None else f"{seconds / 3600:.1f} h"


def _state(stage: Stage, prog: dict) -> str:
  """A stage's state in words: done (with its numbers), running, unfinished or pending."""
  if prog["results"]:
    r = prog["results"]
    return f"done: test bACC {r['test_bacc']:.2f}, GM {r['test_gm']:.2f}"
  if prog["done"]:
    return f"done: {prog['epochs']} epochs, the branch point kept"
  state = ("running" if output_dir.is_locked(stage.run_dir) else
           "unfinished" if prog["epochs"] else "pending")
  return state + f", {prog['epochs']}/{stage.until} epochs"


def status_lines() -> List[str]:
  """One line per stage, then the total time left at the recent and at the best pace."""
  lines, total, total_best = [], 0.0, 0.0
  progs = {stage.key: progress(stage) for stage in PLAN}  # each run's record read once
  m2m = m2m_pace(progs)
  erm = erm_pace(progs, m2m)
  width = max(len(k) for k in STAGES)
  for stage in PLAN:
    prog = progs[stage.key]
    left = estimate_left(stage, prog, erm, m2m_prog=m2m)
    best = estimate_left(stage, prog, erm, "best_sec_per_epoch", m2m)
    pace = (f", {prog['sec_per_epoch']:.0f} s/epoch recently, "
            f"{prog['best_sec_per_epoch']:.0f} at best" if prog["sec_per_epoch"] else "")
    lines.append(f"{stage.key:{width}s} {_state(stage, prog)}{pace}; left ~{_hours(left)} "
                 f"(~{_hours(best)} at best)")
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
    print(f"{stage.key}: another process is training it; waiting for it to stop.", flush=True)
  while output_dir.is_locked(stage.run_dir):
    time.sleep(poll_s)


def posthoc_command(stage: Stage) -> List[str]:
  """The `m2m_tf.evaluate` command of a finished row's post-hoc logit adjustment (tau chosen on
  validation; the table's post-hoc column)."""
  cmd = [sys.executable, "-m", "m2m_tf.evaluate", f"--checkpoint={stage.run_dir}",
         "--posthoc_tau=select"]
  return cmd + ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])


def needs_posthoc(stage: Stage) -> bool:
  """Whether `stage` is a finished row (best weights kept) without its post-hoc LA file."""
  def has(name):
    return os.path.exists(os.path.join(stage.run_dir, name))
  return (stage.phase1_of is None and has(ckpt_lib.RESULTS_FILE)
          and has(ckpt_lib.BEST_WEIGHTS_FILE) and not has(ckpt_lib.POSTHOC_FILE))


def restore_best_files(stage: Stage) -> bool:
  """Gives a finished branched row whose best epoch came before the branch point its best files
  (best_f.weights.h5, best_state.json), copied from its phase-1 run, whose best they are; the
  trainer wrote none for such a row before December 2026. Returns whether it copied them."""
  src = source(stage)
  best_epoch = (read_json(os.path.join(stage.run_dir, ckpt_lib.RESULTS_FILE)) or {}).get(
      "best_epoch")
  if (src is None or best_epoch is None or best_epoch >= BRANCH_EPOCH
      or os.path.exists(os.path.join(stage.run_dir, ckpt_lib.BEST_WEIGHTS_FILE))):
    return False
  best_state = read_json(os.path.join(src.run_dir, ckpt_lib.BEST_STATE_FILE)) or {}
  weights = os.path.join(src.run_dir, ckpt_lib.BEST_WEIGHTS_FILE)
  if (best_state.get("best_epoch") != best_epoch or not os.path.exists(weights)
      or file_sha256(weights) != best_state.get("weights_sha256")):
    sys.exit(f"{stage.key}: no best weights, and {src.key}'s are not its epoch {best_epoch}")
  atomic_save(lambda tmp: shutil.copyfile(weights, tmp),
              os.path.join(stage.run_dir, ckpt_lib.BEST_WEIGHTS_FILE))
  atomic_write_json(os.path.join(stage.run_dir, ckpt_lib.BEST_STATE_FILE),
                    dict(best_state, epochs_done=BRANCH_EPOCH))  # as its branch commit writes
  print(f"{stage.key}: best files (epoch {best_epoch}) copied from {src.key}.", flush=True)
  return True


def run_logged(stage: Stage, cmd: List[str]) -> None:
  """Runs `cmd` for `stage`, its output appended to the log beside the stage's folder; exits
  with one line if it fails."""
  os.makedirs(FLAGS.root, exist_ok=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage.key}: {' '.join(cmd)}", flush=True)
  with open(stage.run_dir + ".log", "a") as log:
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  if rc:
    sys.exit(f"{stage.key} failed with exit code {rc}; see {stage.run_dir}.log")


def run_stage(stage: Stage) -> None:
  """Runs (or resumes) one stage as a subprocess, then a finished row's post-hoc LA."""
  wait_while_busy(stage, FLAGS.busy_poll_s)
  if not progress(stage)["done"]:
    if stage.branch_from and not progress(source(stage))["done"]:
      print(f"{stage.key}: waits for {source(stage).key} to finish.")
      return
    run_logged(stage, command(stage))
  restore_best_files(stage)  # a no-op but for a finished branched row without them
  if needs_posthoc(stage):
    run_logged(stage, posthoc_command(stage))


def main(argv):
  """Prints the plan's progress (--status), or trains its unfinished stages in order."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.status:
    print("\n".join(status_lines()))
    return
  names = FLAGS.only or [s.key for s in PLAN]
  unknown = sorted(set(names) - set(STAGES))
  if unknown:
    raise app.UsageError(f"unknown stages {unknown}; valid: {list(STAGES)}")
  if FLAGS.idle:
    lowest_priority()
  for name in names:
    run_stage(STAGES[name])
  print("\n".join(status_lines()))


if __name__ == "__main__":
  run_absl(main)
