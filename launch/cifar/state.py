r"""Stages the CIFAR plan's run folders for a commit, keeping the repository light.

  python -m launch.cifar.state            # git add / git rm --cached what the rule says
  python -m launch.cifar.state --dry_run  # print it only

The rule (docs/runs.md#carrying-a-plan-across-machines): every run folder's own files
(flags, history, results, best weights, its log) are committed, but not its export
(`saved_model/`, which stays on disk; exports committed before stay); of its
`ckpt/`, only what a new machine needs to go on:
  * an unfinished run: its newest commit that verifies (record, state, best file);
  * a phase-1 run: its branch point too, while a row of its seed still has to branch
    from it or is unfinished;
  * a finished run: nothing (history keeps the older states).
Every other checkpoint file leaves the tree (`git rm --cached`) and stays on disk.
"""

import os
import subprocess
from typing import List, Set, Tuple

from absl import app
from absl import flags

from launch.cifar import full as cifar_full
from m2m_tf.cli import run_absl
from m2m_tf.run_records import CKPT_DIR, EXPORT_DIR, read_record, record_path
from m2m_tf.training import checkpoint as ckpt_lib

FLAGS = flags.FLAGS
flags.DEFINE_bool("dry_run", False, "Print the git commands; change nothing.")


def _record_files(path: str) -> Set[str]:
  """A commit record and the files it names."""
  rec = read_record(path)
  folder = os.path.dirname(path)
  names = {rec.get("state_file"), (rec.get("best") or {}).get("file")}
  return {path} | {os.path.join(folder, n) for n in names if n}


def _rows_pending(stage: cifar_full.Stage) -> bool:
  """Whether a row of the phase-1 run `stage`'s seed has yet to branch from it or to finish."""
  rows = [s for s in cifar_full.ROWS if cifar_full.source(s) == stage]
  return any(not cifar_full.progress(s)["results"] for s in rows)


def kept_checkpoints(stage: cifar_full.Stage) -> Set[str]:
  """The `ckpt/` files of `stage` that the repository keeps (module docstring)."""
  ckpt_dir = os.path.join(stage.run_dir, CKPT_DIR)
  prog = cifar_full.progress(stage) if os.path.isdir(ckpt_dir) else {"results": True}
  if prog["results"]:
    return set()
  kept = set()
  branch = record_path(stage.run_dir, cifar_full.BRANCH_EPOCH)
  if stage.phase1_of and _rows_pending(stage) and os.path.exists(branch):
    kept |= _record_files(branch)
  if not prog["done"]:
    state = ckpt_lib.latest_state(ckpt_dir)  # verified: hashes and shapes
    if state is not None:
      kept |= _record_files(state.record_path)
  return kept


def plan_git(stages) -> Tuple[List[str], List[str]]:
  """(paths to add, paths left out: checkpoints to drop from the index, and exports) for the
  plan's run folders."""
  add, drop = [], []
  for stage in stages:
    if not os.path.isdir(stage.run_dir):
      continue
    kept = kept_checkpoints(stage)
    for folder, _, files in os.walk(stage.run_dir):
      for name in sorted(files):
        path = os.path.join(folder, name)
        in_ckpt = os.path.basename(folder) == CKPT_DIR
        # A finished row's export (4.5 MB a row) stays out: its best weights hold the same f.
        in_export = EXPORT_DIR in os.path.relpath(folder, stage.run_dir).split(os.sep)
        (add if (not in_ckpt or path in kept) and not in_export else drop).append(path)
    if os.path.exists(stage.run_dir + ".log"):
      add.append(stage.run_dir + ".log")
  return add, drop


def _ignored(paths: List[str]) -> Set[str]:
  """The paths that .gitignore excludes (the run lock, TensorBoard logs)."""
  proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"],
                        input="\0".join(paths), capture_output=True, text=True)
  return {p for p in proc.stdout.split("\0") if p}


def _git(args: List[str]) -> None:
  if FLAGS.dry_run:
    print("git " + " ".join(args[:3]) + (f" ... ({len(args) - 3} more)" if len(args) > 3 else ""))
    return
  subprocess.run(["git"] + args, check=True)


def main(argv):
  """Stages the plan's folders for a commit by the rule of the module docstring."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  add, drop = plan_git(cifar_full.PLAN)
  ignored = _ignored(add)
  add = [p for p in add if p not in ignored]
  tracked = subprocess.run(["git", "ls-files", "-z", "--", FLAGS.root], capture_output=True,
                           text=True, check=True).stdout.split("\0")
  stale = sorted(p for p in tracked if p and "/ckpt/" in p and p not in set(add))
  if stale:
    _git(["rm", "--cached", "--quiet", "--"] + stale)
  if add:
    _git(["add", "--"] + add)
  print(f"cifar_state: {len(add)} files staged, {len(stale)} checkpoint files left the tree "
        f"({len(drop)} on disk not committed).")


if __name__ == "__main__":
  run_absl(main)
