r"""Does mixed_bfloat16 keep CIFAR-LT accuracy? ERM on a shortened CIFAR schedule per precision.

  python -m launch.precision_check                       # 6 epochs, seed 0; resumes
  python -m launch.precision_check --epochs=10 --deferred=8 --seeds=0,1

Trains ERM (ResNet-32, CIFAR-10-LT ratio 100, JPEG substitute) with the CIFAR recipe scaled
to --epochs (`launch.cifar.short.short_schedule`) once per precision and seed, each by
`python -m m2m_tf.main` under runs/precision_check/<precision>_s<seed> (a killed run resumes;
a finished one is not rerun). Writes results/precision_cifar10_jpeg.{json,md}: each run's
test and validation bACC and GM, its median seconds per epoch, and per seed the difference
mixed_bfloat16 - float32 with the epoch-time ratio. The step-time ratios of ERM and M2m come
from `python -m benchmarks.bench --precisions=float32,mixed_bfloat16` (results/bench_precision.md).
The reproduction stays float32 unless such runs show equal accuracy (docs/runs.md#precision).
"""

import argparse
import os
import statistics
import subprocess
import sys
from typing import List, Optional, Sequence

from launch.cifar import short as cifar_short
from m2m_tf.markdown import markdown_table
from m2m_tf.config import PRECISIONS
from data_prep.atomic import atomic_write_json, atomic_write_text, read_json
from m2m_tf.run_records import RESULTS_FILE


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (module docstring), checked."""
  p = argparse.ArgumentParser(prog="python -m launch.precision_check",
                              description=__doc__.split("\n")[0])
  p.add_argument("--epochs", type=int, default=6, help="schedule length (paper: 200)")
  p.add_argument("--deferred", type=int, default=5, help="first lr drop (recipe: 160 of 200)")
  p.add_argument("--seeds", default="0", help="comma-separated seeds")
  p.add_argument("--precisions", default="float32,mixed_bfloat16",
                 help="comma-separated precisions; the first is the reference")
  p.add_argument("--root", default="runs/precision_check", help="run folder")
  p.add_argument("--output", default="results/precision_cifar10_jpeg.json",
                 help="report JSON (the .md goes beside it)")
  p.add_argument("--data_dir", default=None,
                 help="data root (default $M2M_DATA_DIR, else ../shared/data)")
  args = p.parse_args(argv)
  try:
    args.seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    cifar_short.short_schedule(args.epochs, args.deferred)
  except ValueError as e:
    p.error(str(e))
  args.precisions = [v.strip() for v in args.precisions.split(",") if v.strip()]
  if len(args.precisions) < 2 or set(args.precisions) - set(PRECISIONS):
    p.error(f"--precisions: two or more of {', '.join(PRECISIONS)}")
  return args


def run_command(args: argparse.Namespace, precision: str, seed: int, out_dir: str) -> List[str]:
  """The m2m_tf.main command of one ERM run of the shortened schedule."""
  s = cifar_short.short_schedule(args.epochs, args.deferred)
  cmd = [sys.executable, "-m", "m2m_tf.main", "--dataset=cifar10_jpeg_lt", "--imbalance_ratio=100",
         "--method=erm", f"--seed={seed}", f"--epochs={s['epochs']}",
         f"--warmup_epochs={s['warmup_epochs']}",
         f"--lr_milestones={','.join(map(str, s['lr_milestones']))}",
         f"--lr_factors={','.join(map(str, s['lr_factors']))}",
         f"--deferred_epoch={s['deferred_epoch']}", f"--precision={precision}", "--verbose=2",
         "--noexport", f"--output_dir={out_dir}"]
  return cmd + ([f"--data_dir={args.data_dir}"] if args.data_dir else [])


def summary(results: dict, precision: str, label: str) -> dict:
  """A run's figures in the report (with its median epoch time)."""
  out = cifar_short.run_summary(results, label)
  out["precision"] = results.get("precision", precision)
  out["median_epoch_s"] = statistics.median(results["epoch_seconds"])
  return out


def comparisons(runs: dict, precisions: List[str], seeds: List[int]) -> List[dict]:
  """Per seed and non-reference precision: the differences to the reference precision's run."""
  out = []
  for seed in seeds:
    ref = runs.get(f"{precisions[0]}_s{seed}")
    for p in precisions[1:]:
      run = runs.get(f"{p}_s{seed}")
      if ref and run:
        out.append({"seed": seed, "precision": p, "reference": precisions[0],
                    "test_bacc_diff": run["test_bacc"] - ref["test_bacc"],
                    "test_gm_diff": run["test_gm"] - ref["test_gm"],
                    "val_bacc_diff": run["val_bacc"] - ref["val_bacc"],
                    "epoch_time_ratio": ref["median_epoch_s"] / run["median_epoch_s"]})
  return out


def markdown(report: dict) -> str:
  """The report's Markdown: the runs, then the paired differences."""
  f = cifar_short.fmt
  runs = [[k, r["precision"], r["seed"], f(r["test_bacc"]), f(r["test_gm"]), f(r["val_bacc"]),
           r["best_epoch"], f(r["median_epoch_s"], 1)] for k, r in report["runs"].items()]
  diffs = [[c["seed"], f"{c['precision']} - {c['reference']}", f"{c['test_bacc_diff']:+.2f}",
            f"{c['test_gm_diff']:+.2f}", f"{c['val_bacc_diff']:+.2f}",
            f"{c['epoch_time_ratio']:.2f}×"] for c in report["comparisons"]]
  return "\n".join([
      "# ERM on CIFAR-10-LT in float32 and mixed_bfloat16 (shortened schedule)", "",
      f"**{report['label']}.** Made by `python -m launch.precision_check "
      f"{' '.join(report['argv'])}`. Machine: {report['machine']}.", "",
      markdown_table(["run", "precision", "seed", "test bACC", "test GM", "val bACC",
                      "best epoch", "median s/epoch"], runs), "",
      "Differences per seed (epoch-time ratio: reference s/epoch over this one's; the runs "
      "may have shared the machine with other work, so the step benchmark's interleaved "
      "ratio is the speed figure to quote):", "",
      markdown_table(["seed", "difference", "test bACC", "test GM", "val bACC",
                      "epoch-time ratio"], diffs), ""])


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the missing runs in order, then writes the report; returns the exit code."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  schedule = cifar_short.schedule_label(args.epochs, args.deferred)
  runs = {}
  for seed in args.seeds:
    for p in args.precisions:
      out_dir = os.path.join(args.root, f"{p}_s{seed}")
      if read_json(os.path.join(out_dir, RESULTS_FILE)) is None:
        print(f"[precision_check] {p} seed {seed} -> {out_dir}", flush=True)
        if subprocess.call(run_command(args, p, seed, out_dir)) != 0:
          print(f"[precision_check] the run in {out_dir} failed; its log is above.")
          return 1
      runs[f"{p}_s{seed}"] = summary(read_json(os.path.join(out_dir, RESULTS_FILE)), p,
                                     schedule)
  report = {"argv": argv, "label": f"{cifar_short.DATA_LABEL}; {schedule} - "
            f"{cifar_short.NOT_COMPARABLE}", "machine": cifar_short.cpu_description(),
            "schedule": cifar_short.short_schedule(args.epochs, args.deferred), "runs": runs,
            "comparisons": comparisons(runs, args.precisions, args.seeds)}
  atomic_write_json(args.output, report)
  atomic_write_text(os.path.splitext(args.output)[0] + ".md", markdown(report))
  print(markdown(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
