r"""One accelerator check that fits a 15-minute device budget (issue 5).

  python -m launch.gpu_check --out ./gpu_out [--data_dir DIR] [--epochs 30 --deferred 20]
  python -m launch.gpu_check --tiny --out /tmp/x      # a few steps, for tests on the CPU

In one process it:
  1. records the machine (TF/Keras versions, GPUs, `nvidia-smi` is run by gpu_check.sh);
  2. measures ResNet-32 step throughput at batch 128 (CIFAR-LT-10 ratio 100 class counts)
     for ERM and the M2m phase-2 step, XLA on and off (`m2m_tf.bench.time_steps`);
  3. evaluates the official g (`official_erm_resnet32_cifar10lt_r100.npz`) on the JPEG
     CIFAR-10 test split (`m2m_tf.evaluate`);
  4. runs a SHORT CIFAR-LT-10 schedule on `cifar10_jpeg_lt` (ratio 100): ERM g, then M2m
     from that g, with the recipe scaled to `--epochs` (warm-up min(5, epochs//6), lr x0.01
     at the deferred epoch and again halfway to the end, M2m phase 2 from `--deferred`);
  5. writes `<out>/gpu_check.json` after every stage (so a run cut short keeps what it
     measured) and `<out>/gpu_check.md`.
Every figure made on cifar10_jpeg_lt is labelled as the JPEG substitute, and the schedule
as shortened: they are not the paper's 200-epoch numbers.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time
import traceback
from typing import Optional, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
OFFICIAL_G = "official_erm_resnet32_cifar10lt_r100.npz"
SCHEDULE_LABEL = "shortened schedule ({epochs} epochs, M2m phase 2 from epoch {deferred}; paper: 200 / 160)"


def find_data_dir(explicit: Optional[str]) -> Optional[str]:
  """The first existing data root holding cifar10_jpeg/: --data_dir, $M2M_DATA_DIR,
  ../shared/data, ./shared/data, ./gpu_data (None if none)."""
  cands = [explicit, os.environ.get("M2M_DATA_DIR"), REPO.parent / "shared" / "data",
           REPO / "shared" / "data", REPO / "gpu_data"]
  for c in cands:
    if c and (pathlib.Path(c) / "cifar10_jpeg" / "test.npz").is_file():
      return str(pathlib.Path(c).resolve())
  return None


def find_official_g(explicit: Optional[str], data_dir: Optional[str]) -> Optional[str]:
  """--g_npz, else the official g next to the data (../pretrained) or in shared/pretrained."""
  cands = [explicit, REPO.parent / "shared" / "pretrained" / OFFICIAL_G,
           REPO / "shared" / "pretrained" / OFFICIAL_G, REPO / "gpu_data" / OFFICIAL_G]
  if data_dir:
    cands += [pathlib.Path(data_dir).parent / "pretrained" / OFFICIAL_G,
              pathlib.Path(data_dir) / OFFICIAL_G]
  for c in cands:
    if c and pathlib.Path(c).is_file():
      return str(c)
  return None


def short_schedule(epochs: int, deferred: int) -> dict:
  """The CIFAR recipe (200 epochs, warm-up 5, lr x0.01 at 160 and 180, deferred 160) scaled
  to `epochs`: warm-up min(5, epochs // 6) (at least 1), milestones (deferred,
  deferred + (epochs - deferred) // 2) with factors 0.01 each (the second only when it lies
  inside the run and after the first)."""
  if not 1 <= deferred < epochs:
    raise ValueError(f"need 1 <= deferred < epochs, got deferred={deferred}, epochs={epochs}")
  second = deferred + (epochs - deferred) // 2
  milestones = (deferred,) if second <= deferred else (deferred, second)
  return {"epochs": epochs, "deferred_epoch": deferred,
          "warmup_epochs": max(1, min(5, epochs // 6)), "lr_milestones": milestones,
          "lr_factors": tuple(0.01 for _ in milestones)}


def tiny_subset(data, per_class: int = 12, eval_per_class: int = 4):
  """A few images per class of a DatasetSplits (for --tiny), long-tailed like the original."""
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  counts = synthetic.long_tail_counts(per_class, data.num_classes, 4)

  def pick(y, n):
    return np.concatenate([np.flatnonzero(y == k)[:n if np.isscalar(n) else n[k]]
                           for k in range(data.num_classes)])

  tr, va, te = (pick(data.y_train, counts), pick(data.y_val, eval_per_class),
                pick(data.y_test, eval_per_class))
  return dataclasses.replace(data, x_train=data.x_train[tr], y_train=data.y_train[tr],
                             x_val=data.x_val[va], y_val=data.y_val[va],
                             x_test=data.x_test[te], y_test=data.y_test[te],
                             label=(data.label + " (tiny subset)").strip())


def random_images(num_classes: int = 10):
  """Random 32x32 images (for --tiny without the JPEG data)."""
  from data_prep import splits  # pylint: disable=g-import-not-at-top
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
    self.data = {"label": "JPEG substitute (CIFAR-10 re-encoded as JPEG; PROVENANCE §3); "
                          "shortened schedule - not comparable to the paper to the decimal",
                 "args": args, "stages": {}, "errors": {}, "started": time.time()}
    os.makedirs(out, exist_ok=True)

  def stage(self, name: str, value) -> None:
    self.data["stages"][name] = value
    self.write()

  def error(self, name: str, exc: BaseException) -> None:
    self.data["errors"][name] = f"{type(exc).__name__}: {exc}"
    traceback.print_exc()
    self.write()

  def write(self) -> None:
    from m2m_tf.io_utils import atomic_write_json, atomic_write_text  # pylint: disable=g-import-not-at-top
    self.data["elapsed_s"] = time.time() - self.data["started"]
    atomic_write_json(os.path.join(self.out, "gpu_check.json"), self.data)
    atomic_write_text(os.path.join(self.out, "gpu_check.md"), markdown(self.data))


def _fmt(v, digits=2):
  return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(data: dict) -> str:
  """A short Markdown summary of a gpu_check report."""
  st = data["stages"]
  lines = ["# GPU check", "", f"**{data['label']}**", ""]
  if "machine" in st:
    m = st["machine"]
    lines += [f"- device: {m.get('device')}; TF {m.get('tensorflow')}, Keras {m.get('keras')}",
              ""]
  if "throughput" in st:
    lines += ["| step (ResNet-32) | batch | median step (s) | samples/s |", "|---|---|---|---|"]
    for r in st["throughput"]:
      lines.append(f"| {r['config']} | {r['batch_size']} | {_fmt(r['median_step_s'], 4)} | "
                   f"{_fmt(r['samples_per_s'], 0)} |")
    lines.append("")
  if "official_g" in st:
    g = st["official_g"]
    lines += [f"- official g on the JPEG CIFAR-10 test split: bACC {_fmt(g['bacc'])}, "
              f"GM {_fmt(g['gm'])} (PROVENANCE: 66.2)", ""]
  for name in ("erm", "m2m"):
    if name in st:
      r = st[name]
      lines.append(f"- {name.upper()} ({r['schedule']}): test bACC {_fmt(r['test_bacc'])}, "
                   f"GM {_fmt(r['test_gm'])}, best epoch {r['best_epoch']}, "
                   f"{_fmt(r['seconds'], 0)} s")
  if data["errors"]:
    lines += ["", "Errors:"] + [f"- {k}: {v}" for k, v in data["errors"].items()]
  return "\n".join(lines) + "\n"


def run_summary(results: dict, schedule: str) -> dict:
  """The figures of a run_experiment result kept in the report."""
  keys = ("dataset", "data_label", "method", "seed", "best_epoch", "test_bacc", "test_gm",
          "val_bacc", "val_gm", "n_zero_recall", "per_class_recall", "jit_compile", "seconds")
  out = {k: results.get(k) for k in keys}
  out["schedule"] = schedule
  return out


def train_short(data, out_dir: str, schedule: dict, *, method: str, g_checkpoint=None,
                batch_size: Optional[int] = None, seed: int = 0, verbose: int = 2,
                jit_compile: str = "auto") -> dict:
  """One run of the shortened CIFAR recipe (`short_schedule`) with run_experiment."""
  from m2m_tf.training.run import ExperimentConfig, run_experiment  # pylint: disable=g-import-not-at-top
  cfg = ExperimentConfig(dataset="cifar10_jpeg_lt", method=method, seed=seed,
                         output_dir=out_dir, epochs=schedule["epochs"],
                         batch_size=batch_size, warmup_epochs=schedule["warmup_epochs"],
                         lr_milestones=tuple(schedule["lr_milestones"]),
                         lr_factors=tuple(schedule["lr_factors"]),
                         deferred_epoch=schedule["deferred_epoch"], g_checkpoint=g_checkpoint,
                         overwrite=True, verbose=verbose, jit_compile=jit_compile)
  return run_experiment(cfg, data=data)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.environ.get("OUT") or "gpu_out")
  p.add_argument("--data_dir", default=None, help="root holding cifar10_jpeg/")
  p.add_argument("--g_npz", default=None, help="official g .npz (default: found beside data)")
  p.add_argument("--epochs", type=int, default=30, help="short schedule length (paper: 200)")
  p.add_argument("--deferred", type=int, default=20, help="M2m phase 2 from (paper: 160)")
  p.add_argument("--bench_steps", type=int, default=20)
  p.add_argument("--skip", default="", help="comma list of stages to skip: "
                 "throughput,official_g,erm,m2m")
  p.add_argument("--tiny", action="store_true",
                 help="a few images and steps (CPU test); timings and accuracies meaningless")
  p.add_argument("--verbose", type=int, default=2)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the stages (module docstring); returns the report dict."""
  args = parse_args(argv)
  sys.path.insert(0, str(REPO))
  skip = {s for s in args.skip.split(",") if s}
  report = Report(args.out, vars(args))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from m2m_tf import bench  # pylint: disable=g-import-not-at-top
  info = bench.machine_info()
  info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
  report.stage("machine", info)

  if "throughput" not in skip:
    try:
      w = bench.WORKLOADS["resnet32"]
      jits = (True, False)
      if args.tiny:
        w, jits = bench.quick_workload(w), (False,)
      configs = [c for jit in jits for c in (bench.StepConfig("erm", jit),
                                             bench.StepConfig("m2m", jit, 8))]
      rows = bench.time_steps(w, configs, warmup=1 if args.tiny else 3,
                              steps=2 if args.tiny else args.bench_steps,
                              slow_steps=2 if args.tiny else args.bench_steps, seed=0)
      report.stage("throughput", rows)
    except Exception as e:  # pylint: disable=broad-except
      report.error("throughput", e)

  data_dir = find_data_dir(args.data_dir)
  data = None
  try:
    if data_dir is None:
      if not args.tiny:
        raise FileNotFoundError("no cifar10_jpeg/ found: pass --data_dir (a root holding "
                                "cifar10_jpeg/train.npz and test.npz)")
      data = random_images()
    else:
      from data_prep.registry import load_dataset  # pylint: disable=g-import-not-at-top
      t0 = time.time()
      data = load_dataset("cifar10_jpeg_lt", data_dir, imbalance_ratio=100)
      if args.tiny:
        data = tiny_subset(data)
      report.stage("data", {"data_dir": data_dir, "label": data.label, "seconds": time.time() - t0,
                            "class_counts": data.class_counts.tolist(),
                            "n_val": len(data.y_val), "n_test": len(data.y_test)})
  except Exception as e:  # pylint: disable=broad-except
    report.error("data", e)

  if data is not None and "official_g" not in skip:
    try:
      g_path = find_official_g(args.g_npz, data_dir)
      if g_path is None:
        raise FileNotFoundError(f"{OFFICIAL_G} not found: pass --g_npz")
      from m2m_tf import evaluate  # pylint: disable=g-import-not-at-top
      res = evaluate.evaluate_checkpoint(g_path, data, arch="resnet32")
      res.pop("summary")
      report.stage("official_g", res)
    except Exception as e:  # pylint: disable=broad-except
      report.error("official_g", e)

  if data is None:
    return report.data
  if args.tiny:
    sched = short_schedule(2, 1)
    batch = 16
  else:
    sched = short_schedule(args.epochs, args.deferred)
    batch = None
  label = SCHEDULE_LABEL.format(epochs=sched["epochs"], deferred=sched["deferred_epoch"])
  report.data["schedule"] = sched
  g_weights = None
  runs = os.path.join(args.out, "runs")
  if "erm" not in skip:
    try:
      res = train_short(data, os.path.join(runs, "erm"), sched, method="erm", batch_size=batch,
                        verbose=args.verbose)
      report.stage("erm", run_summary(res, label))
      g_weights = os.path.join(runs, "erm", "best_f.weights.h5")
    except Exception as e:  # pylint: disable=broad-except
      report.error("erm", e)
  if "m2m" not in skip and g_weights is not None:
    try:
      res = train_short(data, os.path.join(runs, "m2m"), sched, method="m2m", batch_size=batch,
                        g_checkpoint=g_weights, verbose=args.verbose)
      report.stage("m2m", run_summary(res, label))
    except Exception as e:  # pylint: disable=broad-except
      report.error("m2m", e)
  report.write()
  print(markdown(report.data))
  return report.data


def write_short_run_report(erm_dir: str, m2m_dir: str, out_json: str, epochs: int,
                           deferred: int, where: str) -> dict:
  """Collects an ERM and an M2m run (results.json) into a labelled JSON + Markdown pair
  (used by launch/cifar_cpu_short.sh)."""
  from m2m_tf.io_utils import atomic_write_json, atomic_write_text  # pylint: disable=g-import-not-at-top
  label = SCHEDULE_LABEL.format(epochs=epochs, deferred=deferred)
  out = {"label": "JPEG substitute (CIFAR-10 re-encoded as JPEG; PROVENANCE §3); " + label +
                  " - not comparable to the paper to the decimal",
         "machine": where, "schedule": short_schedule(epochs, deferred), "runs": {}}
  for name, d in (("erm", erm_dir), ("m2m", m2m_dir)):
    path = os.path.join(d, "results.json")
    if os.path.exists(path):
      with open(path) as fh:
        out["runs"][name] = run_summary(json.load(fh), label)
  atomic_write_json(out_json, out)
  lines = ["# CIFAR-10-LT (ratio 100), JPEG substitute, shortened schedule", "",
           f"**{out['label']}.** Machine: {where}.", "",
           "| method | test bACC | test GM | val bACC | best epoch | seconds |",
           "|---|---|---|---|---|---|"]
  for name, r in out["runs"].items():
    lines.append(f"| {name.upper()} | {_fmt(r['test_bacc'])} | {_fmt(r['test_gm'])} | "
                 f"{_fmt(r['val_bacc'])} | {r['best_epoch']} | {_fmt(r['seconds'], 0)} |")
  atomic_write_text(os.path.splitext(out_json)[0] + ".md", "\n".join(lines) + "\n")
  return out


if __name__ == "__main__":
  main()
