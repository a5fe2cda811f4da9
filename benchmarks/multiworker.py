"""Step time of N workers against one worker on this machine: `python -m benchmarks.multiworker`.

Starts local clusters of 1 and of N worker processes (default N = 2), in alternating rounds
(1, N, 1, N, ...) so that a change in machine load hits both alike. Each worker runs the
`--strategy=multi_worker` training step (`m2m_tf.training.multi_worker.step_function`:
`M2mTrainer.train_step` under `strategy.run`, logs all-reduced) on the benchmark workload of
`benchmarks.bench` (default the Reuters MLP, global batch 64), fed by its shard of the real
class-balanced pipeline; ERM and the M2m phase-2 step (n_buckets 8) are timed. The chief reports
the median time of a step; the report gives each configuration's median over the rounds and the
ratio N workers / 1 worker. The global batch is the same in both, so on one machine, whose
cores the workers share, the ratio shows the overhead of the collectives (expect >= 1), not a
speed-up.

  python -m benchmarks.multiworker                 # 2 workers vs 1, 2 rounds
  python -m benchmarks.multiworker --workers 4 --rounds 3 --output results/multiworker.json

`--quick` is a tiny configuration for tests (timings meaningless).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import report as report_lib
from launch import step_timing
from m2m_tf.markdown import markdown_table

PROG = "python -m benchmarks.multiworker"
METHODS = ("erm", "m2m")


def _time_steps(step, iterator, *, warmup: int, samples: int, repeat: int) -> List[float]:
  """Seconds per step of `samples` samples of `repeat` steps each, after `warmup` steps."""
  for _ in range(warmup):
    float(step(iterator)["loss"])
  times = []
  for _ in range(samples):
    t0 = time.perf_counter()
    for _ in range(repeat):
      logs = step(iterator)
    if not np.isfinite(float(logs["loss"])):  # also waits for the last step
      raise FloatingPointError("non-finite loss")
    times.append((time.perf_counter() - t0) / repeat)
  return times


def _time_method(strategy, w, method: str, x, y, args) -> Dict[str, float]:
  """Builds the workload's trainer in the strategy's scope and times its distributed step."""
  from m2m_tf.data import pipeline  # lazy: TensorFlow; keeps --help fast
  from m2m_tf.training import multi_worker as mw  # lazy: TensorFlow; keeps --help fast
  cfg = step_timing.StepConfig(method, False, 8 if method == "m2m" else 0)
  with strategy.scope():
    trainer = step_timing.build_trainer(w, cfg, args.seed)
  dataset = mw.distribute(strategy, lambda ctx: pipeline.train_dataset(
      x, y, num_classes=len(w.class_counts), batch_size=w.batch_size, seed=args.seed,
      epochs=1000, balanced_from_epoch=0, augment=w.augment, input_context=ctx), w.batch_size)
  times = _time_steps(mw.step_function(trainer), iter(dataset), warmup=args.warmup,
                      samples=args.samples, repeat=args.repeat)
  return {"config": cfg.name, "median_step_s": statistics.median(times), "step_times_s": times}


def worker_main(args: argparse.Namespace) -> None:
  """One worker of a benchmark cluster (its TF_CONFIG set by `run_cluster`); the chief prints
  its timings as one `RESULT {json}` line."""
  from m2m_tf.training import multi_worker as mw  # lazy: TensorFlow; keeps --help fast
  strategy = mw.cluster_strategy()  # first: before TensorFlow's first op
  w = step_timing.WORKLOADS[args.which]
  w = step_timing.quick_workload(w) if args.quick else w
  x, y = step_timing.synthetic_arrays(w, args.seed)
  rows = [_time_method(strategy, w, m, x, y, args) for m in args.methods]
  if mw.is_chief(strategy):
    print("RESULT " + json.dumps({"workers": strategy.num_replicas_in_sync, "rows": rows,
                                  "workload": w.label}), flush=True)


def _worker_argv(args: argparse.Namespace) -> List[str]:
  argv = [sys.executable, "-m", "benchmarks.multiworker", "--worker", "--which", args.which,
          "--methods", ",".join(args.methods), "--warmup", str(args.warmup), "--samples",
          str(args.samples), "--repeat", str(args.repeat), "--seed", str(args.seed)]
  return argv + (["--quick"] if args.quick else [])


def run_cluster(n: int, args: argparse.Namespace, log_dir: str) -> dict:
  """Runs a local cluster of `n` benchmark workers; returns the chief's RESULT."""
  from m2m_tf.training import multi_worker as mw  # lazy: TensorFlow; keeps --help fast
  ports = mw.free_local_ports(n)
  procs, logs = [], []
  try:
    for i in range(n):
      logs.append(os.path.join(log_dir, f"workers{n}-{i}.log"))
      env = dict(os.environ, TF_CONFIG=mw.local_tf_config(ports, i), TF_CPP_MIN_LOG_LEVEL="2")
      with open(logs[-1], "w") as log:
        procs.append(subprocess.Popen(_worker_argv(args), env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=args.timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  with open(logs[0]) as fh:
    text = fh.read()
  if any(codes) or "RESULT " not in text:
    raise RuntimeError(f"{PROG}: the {n}-worker cluster failed (exit codes {codes}): "
                       f"{text[-2000:]}")
  return json.loads(text.split("RESULT ", 1)[1].splitlines()[0])


def summarise(runs: Dict[int, List[dict]], n: int) -> List[dict]:
  """Per configuration: the median over rounds of each cluster's median step, and the ratio."""
  out = []
  for i, row in enumerate(runs[1][0]["rows"]):
    one = statistics.median(r["rows"][i]["median_step_s"] for r in runs[1])
    many = statistics.median(r["rows"][i]["median_step_s"] for r in runs[n])
    out.append({"config": row["config"], "one_worker_step_s": one, f"{n}_workers_step_s": many,
                "ratio": many / one})
  return out


def markdown(report: dict) -> str:
  """The report's table."""
  n = report["workers"]
  rows = [[s["config"], f"{s['one_worker_step_s'] * 1e3:.1f}",
           f"{s[f'{n}_workers_step_s'] * 1e3:.1f}", f"{s['ratio']:.2f}"]
          for s in report["summary"]]
  return (f"{report['workload']}, global batch the same for both; {report['rounds']} rounds, "
          f"{report['cores']} cores, load {report['load_average']}\n\n"
          + markdown_table(["step", "1 worker (ms)", f"{n} workers (ms)",
                            f"ratio {n} / 1"], rows))


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--workers", type=int, default=2, help="workers of the compared cluster")
  p.add_argument("--rounds", type=int, default=2, help="alternating rounds (1, N, 1, N, ...)")
  p.add_argument("--which", default="mlp", choices=("mlp", "resnet32"), help="bench workload")
  p.add_argument("--methods", default="erm,m2m", help="comma-separated among erm, m2m")
  p.add_argument("--warmup", type=int, default=5, help="untimed steps (tracing included)")
  p.add_argument("--samples", type=int, default=10, help="timed samples per configuration")
  p.add_argument("--repeat", type=int, default=10, help="steps per timed sample")
  p.add_argument("--timeout", type=int, default=900, help="seconds allowed per cluster")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="tiny workload and counts (for tests)")
  p.add_argument("--output", default=None, help="also write the report as JSON here")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The checked flags (module docstring)."""
  p = _parser()
  args = p.parse_args(argv)
  args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  if not args.methods or any(m not in METHODS for m in args.methods):
    p.error(f"--methods must be among {', '.join(METHODS)}")
  if args.workers < 2 or args.rounds < 1 or min(args.warmup, args.samples, args.repeat) < 1:
    p.error("--workers must be >= 2; --rounds, --warmup, --samples and --repeat >= 1")
  if args.quick:
    args.warmup, args.samples, args.repeat = 1, 2, 2
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the alternating clusters, prints the table, optionally writes JSON; returns the
  report."""
  args = parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up lines are noise here
  if args.worker:
    worker_main(args)
    return {}
  runs = {1: [], args.workers: []}
  with tempfile.TemporaryDirectory(prefix="m2m_multiworker_bench_") as log_dir:
    for r in range(args.rounds):
      for n in runs:
        print(f"[multiworker] round {r + 1}/{args.rounds}: {n} worker(s)", flush=True)
        runs[n].append(run_cluster(n, args, log_dir))
  report = {"argv": list(sys.argv[1:] if argv is None else argv), "workers": args.workers,
            "rounds": args.rounds, "workload": runs[1][0]["workload"], "cores": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "summary": summarise(runs, args.workers), "runs": {str(k): v for k, v in runs.items()}}
  return report_lib.emit(report, markdown(report), args.output)


if __name__ == "__main__":
  main()
