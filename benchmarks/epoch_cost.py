"""Where the time of a CIFAR-10-LT epoch goes: `python -m benchmarks.epoch_cost`.

In one process, on the CIFAR recipe's shapes (ResNet-32, batch 128, XLA off as
`--jit_compile=auto` leaves it on a CPU), it times in interleaved rounds:
  * the ERM and M2m (n_buckets 8) train steps;
  * the per-epoch evaluation of 1,000 validation and 9,000 test images (`f.predict`, as
    `EvaluationCallback` does) at several evaluation batch sizes;
  * the balanced, augmented input pipeline read on its own;
then profiles a few steps of each (kernel time by part and by op type,
`benchmarks.kernel_profile`), and with `--threads` times the ERM step in child processes under
other TensorFlow thread-pool sizes (TF_NUM_INTRAOP_THREADS x TF_NUM_INTEROP_THREADS).

s/epoch is composed from the timed parts: steps x step + eval(val) + share x eval(test), where
`share` is 1 when test is evaluated every epoch (`--test_every_epoch`, the former default) and,
by default, the share of epochs whose validation bACC reaches or ties the best so far, read
from the finished runs' histories (`--histories`). Writes JSON and Markdown (atomically).
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.atomic import atomic_write_json, atomic_write_text
from m2m_tf.data import pipeline
from m2m_tf.markdown import markdown_table
from launch.step_timing import (WORKLOADS, StepConfig, input_rate, load_average, machine_info,
                                quick_workload, step_timer)
from benchmarks import kernel_profile

PROG = "python -m benchmarks.epoch_cost"
SPLIT_SIZES = {"val": 1000, "test": 9000}  # CIFAR-10's test set, split as data_prep does
STEPS = {"erm": StepConfig("erm", False), "m2m": StepConfig("m2m", False, n_buckets=8)}


def test_share(val_baccs: Sequence[Sequence[float]]) -> float:
  """Share of epochs, over runs, whose validation bACC reaches or ties the best so far: the
  epochs at which `EvaluationCallback(every_epoch=False)` evaluates the other splits."""
  hits = total = 0
  for run in val_baccs:
    best = -np.inf
    for v in run:
      hits += v >= best
      best = max(best, v)
    total += len(run)
  return hits / total if total else float("nan")


def finished_histories(pattern: str, epochs: int) -> Dict[str, List[float]]:
  """Validation bACC per epoch of each history.csv matching `pattern` that has `epochs` rows."""
  out = {}
  for path in sorted(glob.glob(pattern)):
    df = pd.read_csv(path)
    if len(df) == epochs and "val_bacc" in df:
      out[os.path.basename(os.path.dirname(path))] = df["val_bacc"].tolist()
  return out


def _eval_datasets(w, batch_sizes: Sequence[int], seed: int) -> dict:
  """(split, batch size) -> the evaluation dataset of that split's size of random images."""
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in SPLIT_SIZES.items():
    n = n if w.batch_size >= 64 else max(8, n // 100)
    x = rng.integers(0, 256, (n,) + w.input_shape, dtype=np.uint8)
    for b in batch_sizes:
      out[(split, b)] = pipeline.eval_dataset(x, batch_size=b)
  return out


def time_evaluation(f, datasets: dict, repeats: int) -> List[dict]:
  """Median seconds of `f.predict` over each dataset, timed in interleaved rounds after one
  untimed call each."""
  times = {k: [] for k in datasets}
  for r in range(repeats + 1):
    for key, ds in datasets.items():
      t0 = time.perf_counter()
      f.predict(ds, verbose=0)
      if r:
        times[key].append(time.perf_counter() - t0)
  return [{"split": s, "batch_size": b, "median_s": statistics.median(v), "times_s": v}
          for (s, b), v in times.items()]


def time_steps(timers: dict, warmup: int, steps: int, min_sample_s: float) -> Dict[str, dict]:
  """Median seconds per step of each timer, timed in interleaved rounds."""
  for t in timers.values():
    t.warm_up(warmup, min_sample_s)
  for _ in range(steps):
    for t in timers.values():
      t.times.append(t.step(t.repeat))
  return {k: {"median_step_s": statistics.median(t.times), "first_call_s": t.first_call_s,
              "times_s": [round(v, 5) for v in t.times], "steps_per_sample": t.repeat}
          for k, t in timers.items()}


# ResNet-32's three stages: (height = width, channels) of their 3x3 convolutions.
RESNET32_STAGES = ((32, 16), (16, 32), (8, 64))


def _conv_pass(data_format: str):
  """A compiled 3x3 convolution with its input and filter gradients, in `data_format`."""
  @tf.function
  def run(x, w):
    with tf.GradientTape() as tape:
      tape.watch([x, w])
      y = tf.nn.conv2d(x, w, 1, "SAME", data_format=data_format)
      loss = tf.reduce_sum(y * y)
    return tape.gradient(loss, [x, w])
  return run


def time_layouts(batch: int, repeats: int, stages=RESNET32_STAGES) -> List[dict]:
  """Median seconds of a ResNet-32 stage's convolution pass (`_conv_pass`) in NHWC and NCHW,
  timed in interleaved rounds after one untimed call each."""
  cases = {}
  for size, ch in stages:
    w = tf.random.stateless_normal((3, 3, ch, ch), seed=(0, ch))
    for fmt in ("NHWC", "NCHW"):
      shape = (batch, size, size, ch) if fmt == "NHWC" else (batch, ch, size, size)
      cases[(size, ch, fmt)] = (_conv_pass(fmt), tf.random.stateless_normal(shape, (1, ch)), w)
  times = {k: [] for k in cases}
  for r in range(repeats + 1):
    for key, (run, x, w) in cases.items():
      t0 = time.perf_counter()
      np.asarray(run(x, w)[1])
      if r:
        times[key].append(time.perf_counter() - t0)
  return [{"size": size, "channels": ch, "nhwc_s": statistics.median(times[(size, ch, "NHWC")]),
           "nchw_s": statistics.median(times[(size, ch, "NCHW")])} for size, ch in stages]


def epoch_seconds(step_s: float, steps: int, val_s: float, test_s: float, share: float) -> float:
  """Seconds of one epoch: its train steps, the validation pass, and test on `share` of epochs."""
  return steps * step_s + val_s + share * test_s


def _step_only(w, args) -> dict:
  """The ERM step's median (the child process of `--threads`)."""
  timers = {"erm": step_timer(w, STEPS["erm"], args.seed)}
  return time_steps(timers, args.warmup, args.steps, args.min_sample_s)["erm"]


def _child_step(setting: str, args) -> dict:
  """The ERM step's median in a child process under thread-pool `setting` ("INTRAxINTER")."""
  intra, inter = setting.split("x")
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS=intra, TF_NUM_INTEROP_THREADS=inter)
  cmd = [sys.executable, "-m", "benchmarks.epoch_cost", "--step_only", "--steps",
         str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
  out = subprocess.run(cmd + (["--quick"] if args.quick else []), env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def time_threads(settings: Sequence[str], args) -> List[dict]:
  """The ERM step's median per "INTRAxINTER" thread-pool setting ("0" leaves TensorFlow's
  default), one child process per setting and round; rounds alternate the order, so a drift in
  the machine's speed shows as a spread within a setting."""
  medians = {s: [] for s in settings}
  for r in range(args.thread_rounds):
    for setting in (settings if r % 2 == 0 else list(reversed(settings))):
      medians[setting].append(_child_step(setting, args)["median_step_s"])
      _log(f"  threads {setting} round {r}: ERM step {medians[setting][-1]:.4f} s")
  return [{"intra_op": int(s.split("x")[0]), "inter_op": int(s.split("x")[1]),
           "median_step_s": statistics.median(v), "rounds_s": v} for s, v in medians.items()]


def summarise(w, steps: Dict[str, dict], evals: List[dict], share: float,
              pipe: Optional[dict], default_batch: int) -> List[dict]:
  """s/epoch before (test every epoch, evaluation batch `default_batch`) and after (test at a
  new best) per method and evaluation batch size, with their ratio."""
  n = sum(w.class_counts) // w.batch_size
  ev = {(r["split"], r["batch_size"]): r["median_s"] for r in evals}
  rows = []
  for method, s in steps.items():
    before = epoch_seconds(s["median_step_s"], n, ev[("val", default_batch)],
                           ev[("test", default_batch)], 1.0)
    for b in sorted({r["batch_size"] for r in evals}):
      after = epoch_seconds(s["median_step_s"], n, ev[("val", b)], ev[("test", b)], share)
      rows.append({"method": method, "steps": n, "eval_batch_size": b, "before_s": before,
                   "after_s": after, "after_over_before": after / before,
                   "eval_share_before": (before - n * s["median_step_s"]) / before})
  if pipe:
    pipe["epoch_s"] = n * w.batch_size / pipe["samples_per_s"]
    pipe["over_erm_steps"] = pipe["epoch_s"] / (n * steps["erm"]["median_step_s"])
  return rows


def _log(text: str) -> None:
  print(text, flush=True)


def measure(w, args) -> dict:
  """Every timing and profile the flags ask for, on workload `w`."""
  timers = {k: step_timer(w, cfg, args.seed) for k, cfg in STEPS.items()}
  _log(f"[epoch_cost] {w.label}: steps")
  steps = time_steps(timers, args.warmup, args.steps, args.min_sample_s)
  _log("[epoch_cost] evaluation passes")
  datasets = _eval_datasets(w, args.eval_batch_sizes, args.seed)
  evals = time_evaluation(timers["erm"].trainer.f, datasets, args.eval_repeats)
  pipe = input_rate(w, n_batches=args.pipeline_batches, seed=args.seed)
  _log("[epoch_cost] profiles")
  profiles = {k: kernel_profile.profile(lambda t=t: t.step(args.profile_steps))
              for k, t in timers.items()}
  runs = finished_histories(args.histories, args.epochs)
  share = test_share(list(runs.values())) if runs else 1.0
  return {"steps": steps, "evaluation": evals, "pipeline": pipe, "profiles": profiles,
          "share_runs": sorted(runs), "test_share": share,
          "epochs": summarise(w, steps, evals, share, pipe, args.default_eval_batch),
          "layouts": time_layouts(w.batch_size, args.layout_repeats),
          "threads": time_threads(args.threads, args) if args.threads else []}


def _pct(v: float) -> str:
  return f"{100 * v:.1f}%"


def _machine_line(report: dict) -> str:
  m = report["machine"]
  return (f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_features'])}); TF "
          f"{m['tensorflow']}, Keras {m['keras']}. Load average {m['load_average_start']} at the "
          f"start, {report['load_average_end']} at the end. {report['workload']}.")


def _profile_tables(profiles: Dict[str, dict]) -> List[str]:
  """Kernel-time shares by part and by op type, one column per step."""
  lines = []
  for field, title in (("parts", "part of the step"), ("types", "op type")):
    keys = list(dict.fromkeys(k for p in profiles.values() for k in p[field]))
    rows = [[k] + [_pct(p[field].get(k, 0.0)) for p in profiles.values()] for k in keys]
    lines += ["", f"Share of summed kernel time by {title}:", "",
              markdown_table([title] + list(profiles), rows)]
  return lines


def _epoch_table(epochs: List[dict]) -> str:
  rows = [[e["method"], e["eval_batch_size"], f"{e['before_s']:.1f}", f"{e['after_s']:.1f}",
           f"{e['after_over_before']:.3f}", _pct(e["eval_share_before"])] for e in epochs]
  return markdown_table(["step", "eval batch", "s/epoch before", "s/epoch after",
                         "after / before", "evaluation's share before"], rows)


def markdown(report: dict) -> str:
  """The report as Markdown."""
  r = report["result"]
  if "epochs" not in r:
    return "\n".join([f"# ERM step per thread pool (`{PROG}`)", "", _machine_line(report)]
                      + _threads_lines(r["threads"])) + "\n"
  steps = [[k, f"{v['median_step_s']:.4f}", len(v["times_s"]), f"{v['first_call_s']:.1f}"]
           for k, v in r["steps"].items()]
  evals = [[e["split"], e["batch_size"], f"{e['median_s']:.2f}"] for e in r["evaluation"]]
  pipe = r["pipeline"]
  lines = [
      f"# Where a CIFAR-10-LT epoch's time goes (`{PROG}`)", "",
      _machine_line(report), "",
      f"Test is evaluated on {_pct(r['test_share'])} of epochs under the new-best rule "
      f"(validation bACC reaches or ties the best so far), counted over "
      f"{len(r['share_runs'])} finished histories: {', '.join(r['share_runs']) or 'none'}.", "",
      "s/epoch = steps x step + eval(val) + share x eval(test); before: share 1 and the "
      f"evaluation batch of the runs ({report['settings']['default_eval_batch']}).", "",
      _epoch_table(r["epochs"]), "",
      markdown_table(["step", "median s/step", "timed samples", "first call s"], steps), "",
      markdown_table(["split", "eval batch", "median s"], evals), "",
      f"Input pipeline read alone: {pipe['samples_per_s']:.0f} samples/s, "
      f"{pipe['epoch_s']:.1f} s per epoch of batches = {_pct(pipe['over_erm_steps'])} of the "
      "ERM steps' time (it runs beside the step, on the same cores).",
  ] + _profile_tables(r["profiles"]) + _layout_lines(r.get("layouts", []))
  return "\n".join(lines + _threads_lines(r["threads"])) + "\n"


def _layout_lines(layouts: List[dict]) -> List[str]:
  """The NHWC / NCHW table."""
  rows = [[f"{x['size']}x{x['size']}x{x['channels']}", f"{x['nhwc_s'] * 1e3:.1f}",
           f"{x['nchw_s'] * 1e3:.1f}", f"{x['nchw_s'] / x['nhwc_s']:.2f}"] for x in layouts]
  return ["", "A 3x3 convolution with its input and filter gradients, per ResNet-32 stage, "
          "in each layout (median ms, interleaved):", "",
          markdown_table(["stage (HxWxC)", "NHWC ms", "NCHW ms", "NCHW / NHWC"], rows)
          ] if layouts else []


def _threads_lines(threads: List[dict]) -> List[str]:
  """The thread-pool table (empty without --threads)."""
  if not threads:
    return []
  rows = [[t["intra_op"] or "default", t["inter_op"] or "default", f"{t['median_step_s']:.4f}",
           " / ".join(f"{v:.4f}" for v in t["rounds_s"])] for t in threads]
  return ["", "ERM step per thread-pool setting (a child process per setting and round; "
          "rounds alternate the order):", "",
          markdown_table(["intra-op threads", "inter-op threads", "median s/step",
                          "each round"], rows)]


def _int_list(text: str) -> List[int]:
  return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (module docstring)."""
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny shapes, for tests")
  p.add_argument("--steps", type=int, default=10, help="timed samples per step")
  p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps")
  p.add_argument("--min_sample_s", type=float, default=0.25, help="shortest timed sample")
  p.add_argument("--eval_batch_sizes", type=_int_list, default=[256, 1024, 2048])
  p.add_argument("--default_eval_batch", type=int, default=1024,
                 help="the runs' --eval_batch_size (the 'before')")
  p.add_argument("--eval_repeats", type=int, default=3, help="timed passes per evaluation")
  p.add_argument("--layout_repeats", type=int, default=20, help="timed passes per layout")
  p.add_argument("--pipeline_batches", type=int, default=40)
  p.add_argument("--profile_steps", type=int, default=3, help="steps profiled per step kind")
  p.add_argument("--threads", type=lambda s: [v for v in s.split(",") if v], default=[],
                 help="INTRAxINTER thread-pool settings timed in child processes, e.g. 0x0,1x1,2x1")
  p.add_argument("--thread_rounds", type=int, default=2, help="child processes per setting")
  p.add_argument("--threads_only", action="store_true",
                 help="only the --threads comparison (its own report)")
  p.add_argument("--histories", default="results/cifar10_jpeg_lt_full/*/history.csv")
  p.add_argument("--epochs", type=int, default=200, help="rows of a finished history")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--step_only", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--output", default="results/epoch_cost.json",
                 help="JSON output; the Markdown goes beside it with suffix .md")
  args = p.parse_args(argv)
  if args.threads_only and not args.threads:
    p.error("--threads_only needs --threads")
  if args.default_eval_batch not in args.eval_batch_sizes:
    p.error("--default_eval_batch must be one of --eval_batch_sizes")
  if any(not (len(t.split("x")) == 2 and all(v.isdigit() for v in t.split("x")))
         for t in args.threads):
    p.error("--threads takes INTRAxINTER pairs of integers, e.g. 0x0,1x1")
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the benchmark, writes JSON and Markdown, prints the Markdown; returns the report."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  w = quick_workload(WORKLOADS["resnet32"]) if args.quick else WORKLOADS["resnet32"]
  if args.step_only:
    print(json.dumps(_step_only(w, args)))
    return {}
  report = {"argv": argv, "machine": machine_info(), "workload": w.label,
            "settings": {k: v for k, v in vars(args).items() if k != "output"}}
  report["result"] = ({"threads": time_threads(args.threads, args)} if args.threads_only
                      else measure(w, args))
  report["load_average_end"] = load_average()
  atomic_write_json(args.output, report)
  md = markdown(report)
  atomic_write_text(os.path.splitext(args.output)[0] + ".md", md)
  print(md)
  return report


if __name__ == "__main__":
  main()
