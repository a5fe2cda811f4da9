r"""Does mixed_bfloat16 keep CIFAR-LT accuracy? ERM on a shortened CIFAR schedule per precision.

  python -m launch.precision_check                       # 6 epochs, seed 0; resumes
  python -m launch.precision_check --epochs=10 --deferred=8 --seeds=0,1

Trains ERM (ResNet-32, CIFAR-10-LT ratio 100, JPEG substitute) with the CIFAR recipe scaled
to --epochs (`launch.cifar_short.short_schedule`) once per precision and seed, each by
`python -m m2m_tf.main` under runs/precision_check/<precision>_s<seed> (a killed run resumes;
a finished one is not rerun). Writes results/precision_cifar10_jpeg.{json,md}: each run's
test and validation bACC and GM, its median seconds per epoch, and per seed the difference
mixed_bfloat16 - float32 with the epoch-time ratio. The step-time ratios of ERM and M2m come
from `python -m benchmarks.bench --precisions=float32,mixed_bfloat16` (results/bench_precision.md).
The reproduction stays float32 unless such runs show equal accuracy (docs/runs.md#precision).
"""

import os
import statistics
import subprocess
import sys
from typing import List

from absl import flags

from launch import cifar_short
from launch.markdown import markdown_table
from m2m_tf.cli import run_absl
from m2m_tf.io_utils import atomic_write_json, atomic_write_text, read_json

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 6, "Shortened schedule length (paper: 200).", lower_bound=2)
flags.DEFINE_integer("deferred", 5, "First lr drop (the recipe's 160 of 200).", lower_bound=1)
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precisions compared; the first "
                  "is the reference.")
flags.DEFINE_string("root", "runs/precision_check", "Run folder.")
flags.DEFINE_string("output", "results/precision_cifar10_jpeg.json", "Report JSON (.md beside).")
flags.DEFINE_string("data_dir", None, "Data root (default $M2M_DATA_DIR, else ../shared/data).")


def run_command(precision: str, seed: int, out_dir: str) -> List[str]:
  """The m2m_tf.main command of one ERM run of the shortened schedule."""
  s = cifar_short.short_schedule(FLAGS.epochs, FLAGS.deferred)
  cmd = [sys.executable, "-m", "m2m_tf.main", "--dataset=cifar10_jpeg_lt", "--imbalance_ratio=100",
         "--method=erm", f"--seed={seed}", f"--epochs={s['epochs']}",
         f"--warmup_epochs={s['warmup_epochs']}",
         f"--lr_milestones={','.join(map(str, s['lr_milestones']))}",
         f"--lr_factors={','.join(map(str, s['lr_factors']))}",
         f"--deferred_epoch={s['deferred_epoch']}", f"--precision={precision}", "--verbose=2",
         "--noexport", f"--output_dir={out_dir}"]
  return cmd + ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])


def summary(results: dict, precision: str) -> dict:
  """A run's figures in the report (with its median epoch time)."""
  out = cifar_short.run_summary(results, cifar_short.schedule_label(FLAGS.epochs, FLAGS.deferred))
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


def main(argv) -> int:
  """Runs the missing runs in order, then writes the report."""
  seeds = [int(s) for s in FLAGS.seeds]
  runs = {}
  for seed in seeds:
    for p in FLAGS.precisions:
      out_dir = os.path.join(FLAGS.root, f"{p}_s{seed}")
      if read_json(os.path.join(out_dir, "results.json")) is None:
        print(f"[precision_check] {p} seed {seed} -> {out_dir}", flush=True)
        if subprocess.call(run_command(p, seed, out_dir)) != 0:
          print(f"[precision_check] the run in {out_dir} failed; its log is above.")
          return 1
      runs[f"{p}_s{seed}"] = summary(read_json(os.path.join(out_dir, "results.json")), p)
  label = (f"{cifar_short.DATA_LABEL}; "
           f"{cifar_short.schedule_label(FLAGS.epochs, FLAGS.deferred)} - "
           f"{cifar_short.NOT_COMPARABLE}")
  report = {"argv": argv[1:], "label": label, "machine": cifar_short.cpu_description(),
            "schedule": cifar_short.short_schedule(FLAGS.epochs, FLAGS.deferred), "runs": runs,
            "comparisons": comparisons(runs, FLAGS.precisions, seeds)}
  atomic_write_json(FLAGS.output, report)
  atomic_write_text(os.path.splitext(FLAGS.output)[0] + ".md", markdown(report))
  print(markdown(report))
  return 0


if __name__ == "__main__":
  run_absl(main)
