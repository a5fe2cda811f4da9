r"""One accelerator check that fits a 15-minute device budget.

  python -m launch.cifar.gpu_check --out ./gpu_out [--data_dir DIR] [--epochs 30 --deferred 20]
  python -m launch.cifar.gpu_check --tiny --out /tmp/x      # a few steps, for tests on the CPU

In one process it:
  1. records the machine (TF/Keras versions, GPUs, `nvidia-smi` is run by gpu_check.sh);
  2. measures ResNet-32 step throughput at batch 128 (CIFAR-LT-10 ratio 100 class counts)
     for ERM and the M2m phase-2 step, XLA on and off (`launch.step_timing.time_steps`);
  3. evaluates the official g (`official_erm_resnet32_cifar10lt_r100.npz`) on the JPEG
     CIFAR-10 test split (`m2m_tf.evaluate`);
  4. runs a SHORT CIFAR-LT-10 schedule on `cifar10_jpeg_lt` (ratio 100): ERM g, then M2m
     from that g, with the recipe scaled to `--epochs` (`launch.cifar.short.short_schedule`);
  5. writes `<out>/gpu_check.json` after every stage (so a run cut short keeps what it
     measured) and `<out>/gpu_check.md`.
The data root is found as everywhere (`data_prep.paths.resolve_data_dir`: --data_dir,
$M2M_DATA_DIR, ../shared/data). Every figure made on cifar10_jpeg_lt is labelled as the JPEG
substitute, and the schedule as shortened: they are not the paper's 200-epoch numbers.
"""

import argparse
import dataclasses
import os
import pathlib
import time
import traceback
from typing import Callable, Optional, Sequence

import numpy as np

from data_prep import paths, splits
from data_prep.atomic import atomic_write_json, atomic_write_text
from data_prep.registry import load_dataset
from launch import step_timing
from launch.cifar import short as cifar_short
from launch.cifar.short import fmt
from m2m_tf import evaluate
from m2m_tf.config import ExperimentConfig
from m2m_tf.markdown import markdown_table
from m2m_tf.run_records import BEST_WEIGHTS_FILE

REPO = pathlib.Path(__file__).resolve().parents[2]
OFFICIAL_G = "official_erm_resnet32_cifar10lt_r100.npz"
STAGES = ("throughput", "official_g", "erm", "m2m")


def find_official_g(explicit: Optional[str], data_dir: Optional[str]) -> Optional[str]:
  """--g_npz, else the official g in ../shared/pretrained, shared/pretrained, or beside the
  data root (its ../pretrained, or the root itself)."""
  cands = [explicit, REPO.parent / "shared" / "pretrained" / OFFICIAL_G,
           REPO / "shared" / "pretrained" / OFFICIAL_G]
  if data_dir:
    cands += [pathlib.Path(data_dir).parent / "pretrained" / OFFICIAL_G,
              pathlib.Path(data_dir) / OFFICIAL_G]
  for c in cands:
    if c and pathlib.Path(c).is_file():
      return str(c)
  return None


def tiny_subset(data, per_class: int = 12, eval_per_class: int = 4):
  """A few images per class of a DatasetSplits (for --tiny), long-tailed like the original."""
  k = data.num_classes
  tr = splits.first_per_class(data.y_train, splits.long_tail_counts(per_class, k, 4))
  va = splits.first_per_class(data.y_val, [eval_per_class] * k)
  te = splits.first_per_class(data.y_test, [eval_per_class] * k)
  return dataclasses.replace(data, x_train=data.x_train[tr], y_train=data.y_train[tr],
                             x_val=data.x_val[va], y_val=data.y_val[va],
                             x_test=data.x_test[te], y_test=data.y_test[te],
                             label=(data.label + " (tiny subset)").strip())


def random_images(num_classes: int = 10):
  """Random 32x32 images (for --tiny without the JPEG data)."""
  rng = np.random.default_rng(0)

  def make(n):
    return rng.integers(0, 256, (n * num_classes, 32, 32, 3), dtype=np.uint8), \
        np.repeat(np.arange(num_classes), n).astype(np.int64)

  (xt, yt), (xv, yv), (xs, ys) = make(12), make(4), make(4)
  return splits.DatasetSplits("cifar10_jpeg_lt", xt, yt, xv, yv, xs, ys,
                              tuple(f"c{k}" for k in range(num_classes)), "image",
                              (0.0, 1.0), label="random tiny images (no data found)")


class Report:
  """The figures so far; written (atomically) after every stage."""

  def __init__(self, out: str, args: dict):
    self.out = out
    self.data = {"label": f"{cifar_short.DATA_LABEL}; shortened schedule - "
                          f"{cifar_short.NOT_COMPARABLE}",
                 "args": args, "stages": {}, "errors": {}, "started": time.time()}
    os.makedirs(out, exist_ok=True)

  def stage(self, name: str, value) -> None:
    """Records a finished stage's figures and rewrites the files."""
    self.data["stages"][name] = value
    self.write()

  def error(self, name: str, exc: BaseException) -> None:
    """Records (and prints) the exception that ended a stage and rewrites the files."""
    self.data["errors"][name] = f"{type(exc).__name__}: {exc}"
    traceback.print_exc()
    self.write()

  def guarded(self, name: str, fn: Callable[[], object]):
    """fn(), or None when it raised (the error is recorded under `name`; later stages run)."""
    try:
      return fn()
    except Exception as e:  # any failure ends this stage only
      self.error(name, e)
      return None

  def write(self) -> None:
    """Writes gpu_check.json and gpu_check.md (atomically)."""
    self.data["elapsed_s"] = time.time() - self.data["started"]
    atomic_write_json(os.path.join(self.out, "gpu_check.json"), self.data)
    atomic_write_text(os.path.join(self.out, "gpu_check.md"), markdown(self.data))


def _throughput_table(rows) -> str:
  """The ResNet-32 step timings as a Markdown table."""
  body = [[r["config"], r["batch_size"], fmt(r["median_step_s"], 4), fmt(r["samples_per_s"], 0)]
          for r in rows]
  return markdown_table(["step (ResNet-32)", "batch", "median step (s)", "samples/s"], body)


def markdown(data: dict) -> str:
  """A short Markdown summary of a gpu_check report."""
  st = data["stages"]
  lines = ["# GPU check", "", f"**{data['label']}**", ""]
  if "machine" in st:
    m = st["machine"]
    lines += [f"- device: {m.get('device')}; TF {m.get('tensorflow')}, Keras {m.get('keras')}",
              ""]
  if "throughput" in st:
    lines += [_throughput_table(st["throughput"]), ""]
  if "official_g" in st:
    g = st["official_g"]
    lines += [f"- official g on the JPEG CIFAR-10 test split: bACC {fmt(g['bacc'])}, "
              f"GM {fmt(g['gm'])} (PROVENANCE: 66.2)", ""]
  for name in ("erm", "m2m"):
    if name in st:
      r = st[name]
      lines.append(f"- {name.upper()} ({r['schedule']}): test bACC {fmt(r['test_bacc'])}, "
                   f"GM {fmt(r['test_gm'])}, best epoch {r['best_epoch']}, "
                   f"{fmt(r['seconds'], 0)} s")
  if data["errors"]:
    lines += ["", "Errors:"] + [f"- {k}: {v}" for k, v in data["errors"].items()]
  return "\n".join(lines) + "\n"


def train_short(data, out_dir: str, schedule: dict, *, method: str, g_checkpoint=None,
                batch_size: Optional[int] = None, verbose: int = 2) -> dict:
  """One run of the shortened CIFAR recipe (`cifar_short.short_schedule`) with run_experiment."""
  from m2m_tf.training.run import run_experiment  # lazy: TensorFlow; keeps --help fast
  cfg = ExperimentConfig.from_leaves(
      dataset="cifar10_jpeg_lt", method=method, seed=0, output_dir=out_dir,
      epochs=schedule["epochs"], batch_size=batch_size, warmup_epochs=schedule["warmup_epochs"],
      lr_milestones=tuple(schedule["lr_milestones"]), lr_factors=tuple(schedule["lr_factors"]),
      deferred_epoch=schedule["deferred_epoch"], g_checkpoint=g_checkpoint, overwrite=True,
      verbose=verbose, jit_compile="auto")
  return run_experiment(cfg, data=data)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Command-line flags (module docstring)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.environ.get("OUT") or "gpu_out")
  p.add_argument("--data_dir", default=None, help="root holding cifar10_jpeg/ (default: "
                 "$M2M_DATA_DIR, else ../shared/data)")
  p.add_argument("--g_npz", default=None, help="official g .npz (default: found beside data)")
  p.add_argument("--epochs", type=int, default=30, help="short schedule length (paper: 200)")
  p.add_argument("--deferred", type=int, default=20, help="M2m phase 2 from (paper: 160)")
  p.add_argument("--bench_steps", type=int, default=20)
  p.add_argument("--skip", default="", help=f"comma list of stages to skip: {','.join(STAGES)}")
  p.add_argument("--tiny", action="store_true",
                 help="a few images and steps (CPU test); timings and accuracies meaningless")
  p.add_argument("--verbose", type=int, default=2)
  return p.parse_args(argv)


def throughput(tiny: bool, bench_steps: int) -> list:
  """ResNet-32 ERM and M2m (n_buckets=8) step timings, XLA on and off (--tiny: off, tiny)."""
  w = step_timing.WORKLOADS["resnet32"]
  jits = (True, False)
  if tiny:
    w, jits = step_timing.quick_workload(w), (False,)
  configs = [c for jit in jits for c in (step_timing.StepConfig("erm", jit),
                                         step_timing.StepConfig("m2m", jit, 8))]
  steps = 2 if tiny else bench_steps
  return step_timing.time_steps(w, configs, warmup=1 if tiny else 3, steps=steps,
                                slow_steps=steps, seed=0)


def load_data(report: Report, data_dir: Optional[str], tiny: bool):
  """(CIFAR-10-LT JPEG splits, their data root); --tiny: a subset, or random images when
  there is no data (root None)."""
  t0 = time.time()
  try:
    root = str(paths.resolve_data_dir(data_dir))
    data = load_dataset("cifar10_jpeg_lt", root, imbalance_ratio=100)
  except paths.DataNotFoundError:
    if not tiny:
      raise
    return random_images(), None
  if tiny:
    data = tiny_subset(data)
  report.stage("data", {"data_dir": root, "label": data.label, "seconds": time.time() - t0,
                        "class_counts": data.class_counts.tolist(),
                        "n_val": len(data.y_val), "n_test": len(data.y_test)})
  return data, root


def official_g(data, g_npz: Optional[str], data_dir: Optional[str]) -> dict:
  """bACC, GM and per-class recall of the official g on the test split."""
  g_path = find_official_g(g_npz, data_dir)
  if g_path is None:
    raise FileNotFoundError(f"{OFFICIAL_G} not found: pass --g_npz")
  res = evaluate.evaluate_checkpoint(g_path, data, arch="resnet32")
  res.pop("summary")
  return res


def train_stages(report: Report, args: argparse.Namespace, data, skip) -> None:
  """The short ERM run, then M2m from its best f as g (each a stage of the report)."""
  sched = cifar_short.short_schedule(2, 1) if args.tiny else cifar_short.short_schedule(
      args.epochs, args.deferred)
  batch = 16 if args.tiny else None
  label = cifar_short.schedule_label(sched["epochs"], sched["deferred_epoch"])
  report.data["schedule"] = sched
  runs = os.path.join(args.out, "runs")
  g_weights = None
  if "erm" not in skip:
    res = report.guarded("erm", lambda: train_short(
        data, os.path.join(runs, "erm"), sched, method="erm", batch_size=batch,
        verbose=args.verbose))
    if res is not None:
      report.stage("erm", cifar_short.run_summary(res, label))
      g_weights = os.path.join(runs, "erm", BEST_WEIGHTS_FILE)
  if "m2m" not in skip and g_weights is not None:
    res = report.guarded("m2m", lambda: train_short(
        data, os.path.join(runs, "m2m"), sched, method="m2m", batch_size=batch,
        g_checkpoint=g_weights, verbose=args.verbose))
    if res is not None:
      report.stage("m2m", cifar_short.run_summary(res, label))


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the stages (module docstring); returns the report dict."""
  args = parse_args(argv)
  skip = {s for s in args.skip.split(",") if s}
  report = Report(args.out, vars(args))
  import tensorflow as tf  # lazy: keeps --help fast
  info = step_timing.machine_info()
  info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
  report.stage("machine", info)
  if "throughput" not in skip:
    rows = report.guarded("throughput", lambda: throughput(args.tiny, args.bench_steps))
    if rows is not None:
      report.stage("throughput", rows)
  loaded = report.guarded("data", lambda: load_data(report, args.data_dir, args.tiny))
  if loaded is None:
    return report.data
  data, data_dir = loaded
  if "official_g" not in skip:
    res = report.guarded("official_g", lambda: official_g(data, args.g_npz, data_dir))
    if res is not None:
      report.stage("official_g", res)
  train_stages(report, args, data, skip)
  report.write()
  print(markdown(report.data))
  return report.data


if __name__ == "__main__":
  main()
