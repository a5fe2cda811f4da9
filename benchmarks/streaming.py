"""Benchmark of the streaming input against the in-memory input: `python -m benchmarks.streaming`.

Measures, each in a fresh subprocess so that its peak RSS (VmHWM of /proc/self/status)
is its own:
  * the input rate (images/s) and peak RSS of the class-balanced, augmented training stream
    (M2m phase 2's input) read from memory (`pipeline.train_dataset`: the split as NumPy
    arrays plus its `tf.constant` copy) and streamed from a TFRecord directory
    (`streaming.train_dataset`), both after the same imports; RSS is also reported above
    the process's own baseline (TensorFlow imported, nothing loaded);
  * on CIFAR-10-LT (the JPEG substitute, ratio 100; `cifar10_jpeg_lt` under the data root,
    read only), the whole dataset loaded as a run loads it (`load_dataset` against
    `streamed.load_streamed` of a TFRecord copy written to the work folder);
  * on a synthetic ImageNet-LT-sized split: 1000 classes, exponential long tail of ratio
    256 scaled to --items examples (115,846 like ImageNet-LT), 128x128x3 uint8 random
    pixels, written as a TFRecord directory (about 5.7 GB) into a temporary folder and
    deleted afterwards. The in-memory path is measured on the first --memory_fractions of
    it (the whole would need twice the split in RAM) and extrapolated linearly: the fit of
    the measured points is printed, so the extrapolation can be checked;
  * on the synthetic split also the stream without augmentation (batches only scaled to
    float32), with the "pread" and the pure-graph "tf" reader: what reading itself costs;
  * what a training step consumes: images/s of the ERM train step (`M2mTrainer`, as
    `run_experiment` builds it) of ResNet-32 at 32 px (batch 128) and ResNet-50 at 128 px
    (batch --resnet50_batch) on this machine.
Every rate is also given as a ratio to the step rate of the same run. The freshly
written files sit in the OS page cache while they are read, so the stream's rate is a
page-cache rate, not a cold-disk one.

`--quick` is a tiny configuration for tests (no meaningful numbers).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks import report as report_lib
from data_prep import registry, splits, streamed, tfrecord_dir
from launch import step_timing
from m2m_tf import machine

PROG = "python -m benchmarks.streaming"


def rss_mb() -> Dict[str, float]:
  """Current and peak resident set size of this process, in MB (VmRSS, VmHWM)."""
  out = {}
  try:
    with open("/proc/self/status") as fh:
      for line in fh:
        if line.startswith(("VmRSS:", "VmHWM:")):
          out[line.split(":")[0]] = int(line.split()[1]) / 1024
  except OSError:
    pass
  if "VmHWM" not in out:  # no /proc: ru_maxrss is the peak (KB on Linux)
    out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"rss_mb": out.get("VmRSS"), "peak_rss_mb": out["VmHWM"]}


def long_tail_counts(num_classes: int, ratio: float, total: int) -> np.ndarray:
  """Exponential long-tail counts int(n_max * ratio^(-k/(K-1))) (CIFAR-LT's rule), with
  the n_max whose total is closest to `total`."""
  best = None
  for n_max in range(1, 100000):
    counts = splits.long_tail_counts(n_max, num_classes, ratio)
    if best is None or abs(counts.sum() - total) < abs(best.sum() - total):
      best = counts
    if counts.sum() > total:
      break
  return np.maximum(best, 1)


def write_synthetic(directory: str, counts: np.ndarray, side: int, seed: int = 0,
                    chunk: int = 512) -> dict:
  """Writes a TFRecord directory of random uint8 images with `counts` per class, in a random
  class order; returns what was written (examples, bytes, seconds)."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
  bank = rng.integers(0, 256, (chunk, side, side, 3), np.uint8)  # pixels do not matter here
  t0 = time.perf_counter()
  names = [f"class_{k}" for k in range(len(counts))]
  with tfrecord_dir.Writer(directory, image_shape=(side, side, 3), class_names=names) as w:
    for start in range(0, len(labels), chunk):
      y = labels[start:start + chunk]
      w.add("train", bank[:len(y)], y)
    w.finish(name="synthetic ImageNet-LT-sized")
  size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
  return {"examples": int(len(labels)), "bytes": size, "write_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------
# Children: one measurement per process.
# ---------------------------------------------------------------------------


def stratified_rows(labels: np.ndarray, fraction: float) -> np.ndarray:
  """The first max(1, round(fraction * N_k)) rows of every class k (sorted): a subset that
  keeps every class, as the balanced sampler needs."""
  keep = [np.flatnonzero(labels == k)[:max(1, round(fraction * n))]
          for k, n in enumerate(np.bincount(labels))]
  return np.sort(np.concatenate(keep))


def _read_subset(tdir, fraction: float, chunk: int = 1024):
  """(x, y) of `stratified_rows` of a TFRecord directory's training split, in memory."""
  import tensorflow as tf  # lazy: keeps --help fast
  index = tdir.indexes["train"]
  rows = stratified_rows(index.labels, fraction)
  x = np.zeros((len(rows),) + tdir.image_shape, np.uint8)
  for start in range(0, len(rows), chunk):
    part = rows[start:start + chunk]
    images, _, _ = tfrecord_dir.decode_records(tf.constant(tfrecord_dir.read_rows(index, part)),
                                               tdir.image_shape, tdir.meta["encoding"])
    x[start:start + len(part)] = images.numpy()
  return x, index.labels[rows]


def _time_stream(ds, n_batches: int, warmup: int = 3) -> dict:
  """Images/s of a dataset of (x, y) batches, after `warmup` batches."""
  it = iter(ds)
  for _ in range(warmup):
    next(it)
  t0, n = time.perf_counter(), 0
  for _ in range(n_batches):
    x, _ = next(it)
    n += int(x.shape[0])
  return {"images": n, "seconds": time.perf_counter() - t0,
          "images_per_s": n / (time.perf_counter() - t0)}


def _load_for_input(spec: dict):
  """(labels, num_classes, loader) of an input child: what the path holds in memory."""
  if spec["source"] == "dataset":  # a whole dataset as a run loads it
    data = (streamed.load_streamed(spec["dataset"]) if spec["path"] == "stream" else
            registry.load_dataset(spec["dataset"]))
    return data, data.num_classes
  tdir = tfrecord_dir.read_dir(spec["dir"])
  k = len(tdir.class_names)
  if spec["path"] == "stream":
    return tdir.train_source(), k
  return _read_subset(tdir, spec["fraction"]), k


def input_child(spec: dict) -> dict:
  """Loads one path's data, iterates its balanced augmented stream; rate and RSS."""
  import tensorflow as tf  # lazy: keeps --help fast
  from m2m_tf.data import pipeline, streaming  # lazy: TensorFlow; keeps --help fast
  tf.constant(0)  # TensorFlow's runtime started: the baseline
  base = rss_mb()
  t0 = time.perf_counter()
  data, k = _load_for_input(spec)
  load_s = time.perf_counter() - t0
  kw = dict(num_classes=k, batch_size=spec["batch_size"], seed=0, epochs=1000,
            balanced_from_epoch=0, augment=spec.get("augment", True))
  if spec["path"] == "stream":
    source = getattr(data, "train_source", data)
    ds = streaming.train_dataset(source, reader=spec.get("reader", "auto"), **kw)
  else:
    x, y = (data.x_train, data.y_train) if spec["source"] == "dataset" else data
    ds = pipeline.train_dataset(x, y, **kw)
  out = _time_stream(ds, spec["batches"])
  out.update(load_s=load_s, baseline_rss_mb=base["rss_mb"], **rss_mb())
  out["peak_above_baseline_mb"] = out["peak_rss_mb"] - base["rss_mb"]
  return out


def step_child(spec: dict) -> dict:
  """Images/s of the compiled ERM train step of one architecture (`step_timing.time_steps`)."""
  counts = tuple(int(c) for c in spec["class_counts"])
  w = step_timing.Workload(spec["arch"], spec["arch"], spec["arch"],
                           tuple(spec["input_shape"]), counts, spec["batch_size"], 0.1, 1e-4,
                           True)
  (row,) = step_timing.time_steps(w, [step_timing.StepConfig("erm", False)],
                                  warmup=spec["warmup"], steps=spec["steps"],
                                  slow_steps=spec["steps"], seed=0, min_sample_s=0.0,
                                  log=lambda _: None)
  return {"median_step_s": row["median_step_s"], "step_times_s": row["step_times_s"],
          "images_per_s": row["samples_per_s"], "first_call_s": row["first_call_s"],
          **rss_mb()}


def run_child(spec: dict, timeout: float = 3600) -> dict:
  """Runs one measurement in a fresh Python process; returns its JSON result."""
  cmd = [sys.executable, "-m", "benchmarks.streaming", "--child", json.dumps(spec)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                        check=False)
  lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
  if done.returncode or not lines:
    raise RuntimeError(f"child {spec.get('kind')} failed (exit {done.returncode}): "
                       f"{done.stderr.strip().splitlines()[-1:]}")
  return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# The parent: workloads and the report.
# ---------------------------------------------------------------------------


def _log(text: str) -> None:
  print(f"[streaming] {text}", flush=True)


def cifar(args, work: str) -> dict:
  """CIFAR-10-LT (JPEG substitute): memory vs stream, whole dataset as a run loads it."""
  out = os.path.join(work, "cifar10_jpeg_lt")
  tfrecord_dir.write_splits(out, registry.load_dataset("cifar10_jpeg_lt", args.data_dir))
  rows = {}
  for path, dataset in (("memory", "cifar10_jpeg_lt"), ("stream", f"tfrecord:{out}")):
    rows[path] = run_child({"kind": "input", "source": "dataset", "path": path,
                            "dataset": dataset, "batch_size": 128, "batches": args.batches})
    _log(f"CIFAR-10-LT {path}: {rows[path]['images_per_s']:.0f} images/s, peak RSS "
         f"{rows[path]['peak_rss_mb']:.0f} MB")
  shutil.rmtree(out, ignore_errors=True)
  return rows


def _fit_line(points: List[tuple]) -> dict:
  """Least-squares MB = a + b * rows through the measured in-memory points."""
  rows, mb = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
  b, a = np.polyfit(rows, mb, 1) if len(points) > 1 else (mb[0] / rows[0], 0.0)
  return {"intercept_mb": float(a), "mb_per_1000_rows": float(b * 1000)}


def imagenet_sized(args, work: str) -> dict:
  """The synthetic ImageNet-LT-sized split: stream at full size, memory on fractions."""
  counts = long_tail_counts(args.classes, args.ratio, args.items)
  need = int(counts.sum()) * (args.side * args.side * 3 + 40)
  free = shutil.disk_usage(work).free
  if need > 0.8 * free:
    raise SystemExit(f"{PROG}: {need / 1e9:.1f} GB needed in {work}, {free / 1e9:.1f} GB "
                     "free; pass fewer --items")
  out = os.path.join(work, "synthetic_imagenet_lt")
  rep = {"class_counts_max_min": [int(counts.max()), int(counts.min())]}
  try:
    rep["written"] = write_synthetic(out, counts, args.side)
    _log(f"synthetic: wrote {rep['written']['examples']} images, "
         f"{rep['written']['bytes'] / 1e9:.2f} GB in {rep['written']['write_s']:.0f} s")
    base = {"kind": "input", "source": "dir", "dir": out, "batch_size": args.batch_size,
            "batches": args.batches}
    rep["stream"] = run_child(dict(base, path="stream"))
    _log(f"synthetic stream: {rep['stream']['images_per_s']:.0f} images/s, peak RSS "
         f"{rep['stream']['peak_rss_mb']:.0f} MB")
    # Reading alone (no scaling to float, no augmentation), with either reader.
    rep["read_only"] = {r: run_child(dict(base, path="stream", augment=False, reader=r))
                        for r in ("pread", "tf")}
    for r, m in rep["read_only"].items():
      _log(f"synthetic stream, {r} reader, no augmentation: {m['images_per_s']:.0f} images/s")
    rep["memory"] = []
    for frac in args.memory_fractions:
      rows = len(stratified_rows(np.repeat(np.arange(len(counts)), counts), frac))
      rep["memory"].append(dict(run_child(dict(base, path="memory", fraction=frac)), rows=rows))
      _log(f"synthetic memory, {rows} rows: {rep['memory'][-1]['images_per_s']:.0f} images/s, "
           f"peak RSS {rep['memory'][-1]['peak_rss_mb']:.0f} MB")
  finally:
    shutil.rmtree(out, ignore_errors=True)
  fit = _fit_line([(m["rows"], m["peak_rss_mb"]) for m in rep["memory"]])
  fit["extrapolated_full_mb"] = fit["intercept_mb"] + fit["mb_per_1000_rows"] * counts.sum() / 1e3
  rep["memory_fit"] = fit
  return rep


def steps(args) -> dict:
  """Train-step consumption rates of ResNet-32 (32 px) and ResNet-50 (128 px)."""
  out = {}
  for arch, shape, batch, k in (("resnet32", (32, 32, 3), 128, 10),
                                ("resnet50", (args.side, args.side, 3), args.resnet50_batch,
                                 args.classes)):
    out[arch] = run_child({"kind": "step", "arch": arch, "input_shape": shape,
                           "batch_size": batch, "class_counts": [max(2, 512 // k)] * k,
                           "warmup": 2, "steps": args.steps})
    _log(f"{arch} ERM step, batch {batch}: {out[arch]['images_per_s']:.1f} images/s")
  return out


def markdown(report: dict) -> str:
  """The report as a Markdown table (rates, their ratio to the steps, peak RSS)."""
  st = report.get("steps", {})
  r32, r50 = (st.get(a, {}).get("images_per_s") for a in ("resnet32", "resnet50"))
  lines = [f"Machine: {report['machine']}", "",
           "| workload | path | images/s | x ResNet step | peak RSS MB | above baseline MB |",
           "|---|---|---|---|---|---|"]

  def row(name, path, m, step):
    ratio = f"{m['images_per_s'] / step:.0f}" if step else "-"
    lines.append(f"| {name} | {path} | {m['images_per_s']:.0f} | {ratio} | "
                 f"{m['peak_rss_mb']:.0f} | {m['peak_above_baseline_mb']:.0f} |")

  for path, m in report.get("cifar", {}).items():
    row("CIFAR-10-LT, batch 128", path, m, r32)
  syn = report.get("synthetic")
  if syn:
    name = f"synthetic {syn['written']['examples']} x {report['side']} px"
    row(name, "stream", syn["stream"], r50)
    for reader, m in syn.get("read_only", {}).items():
      row(name + ", no augmentation", f"stream ({reader} reader)", m, r50)
    for m in syn["memory"]:
      row(f"synthetic subset, {m['rows']} rows", "memory", m, r50)
    f = syn["memory_fit"]
    lines += ["", f"In-memory peak RSS fit: {f['intercept_mb']:.0f} MB + "
              f"{f['mb_per_1000_rows']:.1f} MB per 1000 rows -> "
              f"{f['extrapolated_full_mb']:.0f} MB for the whole split."]
  for arch, m in st.items():
    lines.append(f"- {arch} ERM train step: {m['images_per_s']:.1f} images/s "
                 f"(median step {m['median_step_s']:.2f} s)")
  return "\n".join(lines)


def _machine() -> str:
  return f"{machine.machine_name()}, load {[round(v, 2) for v in os.getloadavg()]}"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The benchmark's flags."""
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--items", type=int, default=115846)
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--ratio", type=float, default=256.0)
  p.add_argument("--side", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=256, help="synthetic stream batch")
  p.add_argument("--batches", type=int, default=40, help="timed batches per input path")
  p.add_argument("--memory_fractions", type=float, nargs="+", default=[0.05, 0.1])
  p.add_argument("--resnet50_batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=5, help="timed train steps")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default=None, help="where the TFRecord files go (default /tmp)")
  p.add_argument("--skip", nargs="*", default=[], choices=("cifar", "synthetic", "steps"))
  p.add_argument("--output", default=None, help="also write the report as JSON here")
  p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.items, args.classes, args.side, args.batch_size = 600, 20, 16, 32
    args.batches, args.memory_fractions, args.resnet50_batch, args.steps = 3, [0.5, 1.0], 4, 1
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the benchmark (or one child measurement) and prints the table."""
  args = parse_args(argv)
  if args.child:
    spec = json.loads(args.child)
    print(json.dumps({"input": input_child, "step": step_child}[spec["kind"]](spec)))
    return {}
  report = {"machine": _machine(), "side": args.side, "argv": list(argv or sys.argv[1:])}
  work = tempfile.mkdtemp(prefix="m2m_bench_streaming_", dir=args.workdir)
  try:
    if "cifar" not in args.skip:
      report["cifar"] = cifar(args, work)
    if "synthetic" not in args.skip:
      report["synthetic"] = imagenet_sized(args, work)
    if "steps" not in args.skip:
      report["steps"] = steps(args)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return report_lib.emit(report, markdown(report), args.output)


if __name__ == "__main__":
  main()
