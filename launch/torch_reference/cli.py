"""The command line of the PyTorch reference (`python -m launch.torch_reference`): an
independent PyTorch reference of the CIFAR-10-LT CE rows (ERM, DRS, M2m), run on a GPU.

Why: the TF rows of `launch/cifar/full.py` sit a few points under the paper's numbers. The data
are a lossy JPEG substitute, so part of that gap is expected; this module measures how much is
the data's and how much could be ours. It re-implements the official PyTorch recipe
(docs/torch_reference.md lists each rule and where it differs from m2m_tf) without importing
TensorFlow, so it runs where TensorFlow does not (a lent GPU machine), on the very arrays the TF
runs use (exported here by `export`). The recipe and training are in
launch/torch_reference/training.py, the model in resnet.py, the subcommands that run beside
m2m_tf in bridge.py, the tables in report.py.

Commands:
  python -m launch.torch_reference export --out .torchref        # here: JPEGs + official g
  python -m launch.torch_reference import_tf                      # here: m2m_tf's phase 1
  python3 -m launch.torch_reference all --data .torchref --out DIR --seeds 0,1,2
                                                                 # on a GPU: 3 seeds, 4 runs each
  python -m launch.torch_reference collect --src DIR              # here: histories to results/
  python -m launch.torch_reference report --runs results/torch_reference   # here: the tables

`all` runs, per seed, ERM for 160 epochs (`erm_phase1_s<seed>`), then three branches from its
state after epoch 160 in parallel processes: ERM, DRS and M2m to 200 epochs (`--loss ldam`:
LDAM's phase 1, then LDAM, LDAM-DRW and LDAM-M2m). Every run keeps
`history.csv` (one row per epoch, rewritten atomically) and `state.pt` (its latest state), and
resumes from them; `--deadline_s` stops the runs and leaves them resumable. docs/torch_reference.md
gives the device commands, what a 15-minute GPU budget covers, and the results so far.
"""

import argparse
import io
import json
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from data_prep.atomic import atomic_write_text
from launch.torch_reference.training import (BRANCHES, DATA_FILE, G_FILE, JPEG_FILE, METHODS,
                                             SPLITS, Recipe, Run, digest, plan, read_history,
                                             train)


def _command(run: Run, args) -> List[str]:
  """The `train` command line of one run (a child process of `all`)."""
  cmd = [sys.executable, "-m", "launch.torch_reference", "train", "--data", str(args.data),
         "--out", str(run.out), "--method", run.method, "--seed", str(run.seed),
         "--until", str(run.until), "--device", args.device, "--epochs", str(args.epochs),
         "--deferral", str(args.deferral), "--deadline_at", str(args.deadline_at),
         "--loss", args.loss]
  if args.limit:
    cmd += ["--limit", str(args.limit)]
  return cmd + (["--init_from", str(run.init_from)] if run.init_from else [])


def run_all(args) -> int:
  """Runs the plan: each phase-1 run, then its three branches, each in its own process (the
  GPU is far from busy with one small ResNet). Returns the number of unfinished runs."""
  recipe = _recipe(args)
  runs = plan(pathlib.Path(args.out), args.seeds, recipe, args.branches)
  waiting = dict(runs)
  running: Dict[str, subprocess.Popen] = {}
  failed = set()
  while waiting or running:
    for name, run in list(waiting.items()):
      source = run.init_from.name if run.init_from else None
      if source is None or (runs[source].out / "result.json").exists():
        run.out.mkdir(parents=True, exist_ok=True)
        log = open(run.out.with_suffix(".log"), "a")  # the child's; closed when this exits
        running[name] = subprocess.Popen(_command(run, args), stdout=log, stderr=log)
        del waiting[name]
      elif source not in waiting and source not in running:  # failed or stopped unfinished
        del waiting[name]
        failed.add(name)
    time.sleep(1)
    for name, proc in list(running.items()):
      if proc.poll() is not None:
        finished = (runs[name].out / "result.json").exists()
        print(f"{time.strftime('%H:%M:%S')} {name}: exit {proc.returncode}, "
              f"{'finished' if finished else 'unfinished'}", flush=True)
        if not finished:
          failed.add(name)
        del running[name]
  return len(failed)


def run_result(run: Run, finished: bool) -> None:
  """Writes result.json of a finished run (its existence is what branches wait for)."""
  if finished:
    rows = read_history(run.out)
    atomic_write_text(str(run.out / "result.json"),
                      json.dumps({"epochs": len(rows), "method": run.method, "seed": run.seed}))


def _recipe(args) -> Recipe:
  """The recipe of the command line's loss, with its test-only schedule overrides."""
  milestones = tuple(m for m in Recipe.milestones if m < args.epochs) or (args.deferral,)
  return Recipe(epochs=args.epochs, deferral=args.deferral, milestones=milestones,
                warmup=min(Recipe.warmup, args.deferral), loss=args.loss)


def decode(src, dest) -> Dict[str, object]:
  """Decodes the exported JPEGs with Pillow into `dest`/DATA_FILE (NCHW uint8, labels) and
  checks them against the TF decode's digests. Returns the check: per split, whether the
  sha256 of the decoded images equals TF's."""
  if not (pathlib.Path(src) / JPEG_FILE).exists():
    raise SystemExit(f"{src}: no {JPEG_FILE}; write it with `python -m launch.torch_reference "
                     "export` where m2m_tf is installed")
  with np.load(pathlib.Path(src) / JPEG_FILE) as npz:
    exported = {k: np.array(npz[k]) for k in npz.files}
  arrays, check = {}, {}
  for split in SPLITS:
    jpeg, offsets = exported[f"jpeg_{split}"], exported[f"offsets_{split}"]
    images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[a:b].tobytes())).convert("RGB"))
                       for a, b in zip(offsets[:-1], offsets[1:])])
    check[split] = {"match": digest(images) == str(exported[f"digest_{split}"])}
    arrays[f"x_{split}"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    arrays[f"y_{split}"] = exported[f"y_{split}"]
  pathlib.Path(dest).mkdir(parents=True, exist_ok=True)
  np.savez(pathlib.Path(dest) / DATA_FILE, **arrays)
  shutil.copyfile(pathlib.Path(src) / G_FILE, pathlib.Path(dest) / G_FILE)
  return check


def _parser() -> argparse.ArgumentParser:
  """The command line: export | import_tf | train | all | collect | report."""
  p = argparse.ArgumentParser(prog="python -m launch.torch_reference", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  for name in ("train", "all"):
    t = sub.add_parser(name, help=f"{name} (PyTorch)")
    t.add_argument("--data", default=".torchref",
                   help="all: the exported folder; train: the decoded folder")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--epochs", type=int, default=Recipe.epochs)
    t.add_argument("--deferral", type=int, default=Recipe.deferral)
    t.add_argument("--deadline_at", type=float, default=0.0, help="Unix time; 0: none")
    t.add_argument("--limit", type=int, default=0, help="tests only (load_arrays)")
    t.add_argument("--loss", choices=("ce", "ldam"), default="ce")
  train_p, all_p = sub.choices["train"], sub.choices["all"]
  train_p.add_argument("--method", choices=METHODS, required=True)
  train_p.add_argument("--seed", type=int, required=True)
  train_p.add_argument("--until", type=int, required=True)
  train_p.add_argument("--init_from", default=None)
  all_p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
  all_p.add_argument("--branches", type=lambda s: s.split(","), default=None,
                     help="the methods to branch from each phase-1 run (default: ce: erm,drs,"
                     "m2m; ldam: erm,drw,m2m)")
  all_p.add_argument("--decoded", default=None, help="decoded arrays' folder (<out>_data)")
  all_p.add_argument("--deadline_s", type=float, default=0.0, help="seconds from now; 0: none")
  _add_other_side(sub)
  return p


def _add_other_side(sub) -> None:
  """The subcommands that run beside m2m_tf or make the tables (`_other_side`)."""
  e = sub.add_parser("export", help="write the arrays and the official g (needs TensorFlow)")
  e.add_argument("--out", default=".torchref")
  e.add_argument("--data_dir", default=None)
  e.add_argument("--g_npz", default=None)
  i = sub.add_parser("import_tf", help="m2m_tf's phase-1 state as a phase-1 run (needs TF)")
  i.add_argument("--tf_run", default="results/cifar10_jpeg_lt_full/erm_phase1_s0")
  i.add_argument("--out", default=".torchref/from_tf/erm_phase1_s0")
  c = sub.add_parser("collect", help="copy histories from a device output folder")
  c.add_argument("--src", required=True)
  c.add_argument("--dest", default="results/torch_reference")
  c.add_argument("--states", action="store_true", help="also unfinished runs' state.pt")
  r = sub.add_parser("report", help="the tables (needs pandas)")
  r.add_argument("--runs", default="results/torch_reference")
  r.add_argument("--results_dir", default="results")


def _machine(args, decode_check) -> None:
  """Records the GPU, the PyTorch version and the decode check beside the runs (machine.json)."""
  import torch  # lazy: PyTorch; the TF-side commands (export, report, ...) run without it
  gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
  info = {"gpu": gpu, "torch": torch.__version__, "seeds": args.seeds,
          "decode_check": decode_check}
  pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
  atomic_write_text(str(pathlib.Path(args.out) / "machine.json"), json.dumps(info))


def _other_side(args):
  """The subcommands that run beside m2m_tf (launch/torch_reference/bridge.py) or make the
  tables (launch/torch_reference/report.py); returns what they wrote."""
  # lazy: TensorFlow (bridge) and pandas (report); `all` and `train` run on the GPU machine,
  # which has neither
  from launch.torch_reference import bridge
  from launch.torch_reference import report as tables
  if args.command == "export":
    return bridge.export(args.out, args.data_dir, args.g_npz)
  if args.command == "import_tf":
    return bridge.import_tf_phase1(args.tf_run, args.out)
  if args.command == "collect":
    return " ".join(tables.collect(args.src, args.dest, args.states))
  return tables.report(args.runs, args.results_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one subcommand; returns the exit status."""
  args = _parser().parse_args(argv)
  if args.command in ("export", "import_tf", "collect", "report"):
    print(_other_side(args))
    return 0
  import torch  # lazy: PyTorch; the TF-side commands (export, report, ...) run without it
  torch.backends.cudnn.benchmark = True  # as the official code
  torch.backends.cudnn.allow_tf32 = False  # float32 convolutions, as the TF runs
  torch.backends.cuda.matmul.allow_tf32 = False
  torch.set_num_threads(1)
  if args.command == "all":
    unknown = sorted(set(args.branches or ()) - set(BRANCHES[args.loss]))
    if unknown:  # before anything is decoded or trained
      raise SystemExit(f"--branches {','.join(unknown)}: the {args.loss} rows are "
                       f"{','.join(BRANCHES[args.loss])}")
    args.deadline_at = time.time() + args.deadline_s if args.deadline_s else 0.0
    decoded = pathlib.Path(args.decoded or f"{args.out.rstrip('/')}_data")
    _machine(args, decode(args.data, decoded))
    args.data = str(decoded)
    return 1 if run_all(args) else 0
  run = Run(pathlib.Path(args.out), args.method, args.seed, args.until,
            pathlib.Path(args.init_from) if args.init_from else None)
  finished = train(run, args.data, _recipe(args), args.device, args.deadline_at or None,
                   args.limit or None)
  run_result(run, finished)
  print(f"{run.out.name}: {'finished' if finished else 'stopped at the deadline'}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())

