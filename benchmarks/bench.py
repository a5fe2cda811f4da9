"""Benchmark of the M2m step against the ERM step: `python -m benchmarks.bench`.

Measures, in one process and on one device:
  * the median time of the compiled training step (`M2mTrainer.train_function`,
    the function `fit` runs) after warm-up, for ERM and for the M2m phase-2 step
    (`phase2` on), with XLA on and off, for
      - "mlp": the Reuters MLP 1000-256-36, batch 64, Reuters class counts;
      - "resnet32": ResNet-32 on CIFAR-LT-10 (ratio 100) class counts, batch 128;
    M2m with n_buckets=8 (only the slots that passed the Bernoulli draw are
    translated, padded to one of 8 sizes) and n_buckets=1 (naive: the whole
    batch is translated); for conv nets also M2m with n_buckets=8 without
    folding BatchNorm into the convolutions of the translation passes
    (`M2mConfig.fold_batchnorm=False`, "_nofold"), to show that gain;
  * samples per second, and the rate of the real input pipeline
    (`m2m_tf.data.pipeline.train_dataset`, class-balanced, with augmentation for
    images) against what the fastest step consumes;
  * the whole-run ratio on Reuters: wall time of `run_experiment` with M2m
    (training g with ERM included) over the same ERM run.
Inputs are random (the cost of M2m does not depend on pixel values), labels are
real class-balanced draws of the balanced sampler over the dataset's class
counts, so the number of translated slots is realistic. Steps are timed in
interleaved rounds (one step of every configuration per round), so a change in
machine load hits all configurations alike; every figure is also given as a
ratio to the ERM step of the same run.

Writes a JSON file and a Markdown table (atomically) and prints the table.
`--quick` is a tiny configuration for tests (no meaningful timings);
`--from_json` rewrites the Markdown of an existing JSON report without timing.
"""

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from data_prep.atomic import atomic_write_json, atomic_write_text, read_json
from data_prep.registry import load_dataset
from launch.step_timing import (CPU_FEATURES, PRECISION_TAGS, WORKLOADS, StepConfig, Workload,
                                input_rate, load_average, machine_info, quick_workload,
                                time_steps)
from m2m_tf.config import ExperimentConfig
from m2m_tf.markdown import markdown_table

WORKLOAD_NAMES = ("mlp", "resnet32")
PROG = "python -m benchmarks.bench"


def _torch_timed(w: Workload, cfg: StepConfig, xs, ys, seed: int):
  """The PyTorch step's `TorchTimed` (`time_steps`' timer of the "torch_erm" configurations)."""
  from benchmarks import torch_step  # lazy: PyTorch, a test dependency, only for --torch
  return torch_step.TorchTimed(w, cfg, np.asarray(xs), np.asarray(ys), seed)


def _fastest(rows: List[dict]) -> Optional[dict]:
  """The row with the smallest median step time (None for no rows)."""
  return min(rows, key=lambda r: r["median_step_s"]) if rows else None


def _m2m_ratios(rows: List[dict], fastest_erm: Optional[dict]) -> dict:
  """Per n_buckets, the fastest default M2m step and its ratio to the fastest ERM step, and
  the ratios of the "_nofold" steps (BatchNorm not folded) to it."""
  out = {}
  m2m_rows = [r for r in rows if r["method"] == "m2m" and r["fold_batchnorm"]]
  nofold = [r for r in rows if r["method"] == "m2m" and not r["fold_batchnorm"]]
  for nb in sorted({r["n_buckets"] for r in m2m_rows}):
    best = _fastest([r for r in m2m_rows if r["n_buckets"] == nb])
    out[f"fastest_m2m_b{nb}"] = best["config"]
    if fastest_erm:
      out[f"m2m_b{nb}_over_erm_fastest_modes"] = (best["median_step_s"]
                                                  / fastest_erm["median_step_s"])
  if nofold and fastest_erm:
    out["m2m_nofold"] = {r["config"]: r["median_step_s"] / fastest_erm["median_step_s"]
                         for r in nofold}
  return out


def _is_float32(row: dict) -> bool:
  return row.get("precision", "float32") == "float32"


def precision_speedups(rows: List[dict]) -> dict:
  """{config: its float32 twin's median step time / its own} for every step timed in
  another precision (above 1: faster than float32)."""
  by = {r["config"]: r for r in rows}
  out = {}
  for r in rows:
    twin = by.get(r["config"].split("@")[0])
    if not _is_float32(r) and twin is not None and r["median_step_s"] > 0:
      out[r["config"]] = twin["median_step_s"] / r["median_step_s"]
  return out


def summarise(w: Workload, rows: List[dict], pipe: Optional[dict]) -> dict:
  """Ratios of every step to the float32 ERM step (same XLA mode, and fastest modes), and of
  each step timed in another precision to its float32 twin."""
  base = [r for r in rows if _is_float32(r)]
  by = {r["config"]: r for r in base}
  for r in rows:
    erm = by.get("erm/" + ("xla" if r["jit_compile"] else "default"))
    r["ratio_to_erm_same_mode"] = (r["median_step_s"] / erm["median_step_s"]) if erm else None
  fastest_erm = _fastest([r for r in base if r["method"] == "erm"])
  torch_row = by.get("erm/pytorch")
  out = {"workload": w.key, "label": w.label, "batch_size": w.batch_size,
         "class_counts": list(w.class_counts), "translation_steps": w.translation_steps}
  if fastest_erm:
    out["fastest_erm"] = fastest_erm["config"]
    out["fastest_erm_step_s"] = fastest_erm["median_step_s"]
    for r in rows:
      r["ratio_to_fastest_erm"] = r["median_step_s"] / fastest_erm["median_step_s"]
  if torch_row and fastest_erm:
    out["pytorch_erm_over_erm"] = torch_row["median_step_s"] / fastest_erm["median_step_s"]
  # M2m as it runs by default (BatchNorm folded); the "_nofold" rows are the comparison.
  out.update(_m2m_ratios(base, fastest_erm))
  speedups = precision_speedups(rows)
  if speedups:
    out["precision_speedups"] = speedups
  if pipe is not None and fastest_erm:
    out["input_pipeline"] = pipe
    consumers = {"fastest_erm": fastest_erm}
    fastest_m2m = _fastest([r for r in base if r["method"] == "m2m" and r["fold_batchnorm"]])
    if fastest_m2m:
      consumers["fastest_m2m"] = fastest_m2m
    out["input_over_consumption"] = {k: pipe["samples_per_s"] / r["samples_per_s"]
                                     for k, r in consumers.items()}
  return out


def _time_whole_runs(dataset: str, data, runs, *, seed: int, overrides: dict, repeats: int,
                     log) -> Tuple[dict, dict, object]:
  """Runs every (method, n_buckets) of `runs` `repeats` times in interleaved rounds.

  Returns ({run: wall seconds per round}, {run: its last result}, jit_compile).
  """
  from m2m_tf.training.run import run_experiment  # lazy: TensorFlow; keeps --help fast
  times = {r: [] for r in runs}
  results = {}
  jit_compile = None
  with tempfile.TemporaryDirectory(prefix="m2m_bench_") as tmp:
    for rep in range(repeats):
      for method, nb in runs:
        extra = {} if nb is None else {"n_buckets": nb}
        cfg = ExperimentConfig.from_leaves(
            dataset=dataset, method=method, seed=seed, verbose=0, overwrite=True,
            output_dir=os.path.join(tmp, f"{method}{nb or ''}"), **overrides, **extra)
        t0 = time.perf_counter()
        results[(method, nb)] = run_experiment(cfg, data=data)
        times[(method, nb)].append(time.perf_counter() - t0)
        jit_compile = results[(method, nb)]["jit_compile"]
        log(f"  whole {method} run (n_buckets={nb}) on {dataset}, round {rep}: "
            f"{times[(method, nb)][-1]:.1f} s")
  return times, results, jit_compile


def whole_run_ratio(dataset: str, *, seed: int, overrides: dict, n_buckets: Sequence[int] = (8,),
                    repeats: int = 2, log=print) -> dict:
  """Wall time of a full M2m `run_experiment` (g's ERM training included) over a full ERM run.

  The ERM run and one M2m run per `n_buckets` value (each trains its own g, as a
  user's M2m run does) are repeated `repeats` times in interleaved rounds, and
  each keeps its fastest round, so a load spike or the process's one-time
  start-up costs do not land on one side only. The first n_buckets value gives
  the headline ratio. `overrides` are ExperimentConfig fields, plus
  "dataset_options" for `load_dataset`.
  """
  overrides = dict(overrides)
  options = overrides.pop("dataset_options", {})
  t0 = time.perf_counter()
  data = load_dataset(dataset, **options)
  out = {"dataset": dataset, "seed": seed, "data_load_s": time.perf_counter() - t0,
         "overrides": dict(overrides), "class_counts": np.asarray(data.class_counts).tolist(),
         "repeats": repeats}
  runs = [("erm", None)] + [("m2m", nb) for nb in n_buckets]
  times, results, out["jit_compile"] = _time_whole_runs(
      dataset, data, runs, seed=seed, overrides=overrides, repeats=repeats, log=log)
  out["erm_run_s"] = min(times[("erm", None)])
  out["erm_run_all_s"] = times[("erm", None)]
  out["erm_test_bacc"] = results[("erm", None)]["test_bacc"]
  out["m2m_runs"] = [{"n_buckets": nb, "run_s": min(times[("m2m", nb)]),
                      "run_all_s": times[("m2m", nb)],
                      "test_bacc": results[("m2m", nb)]["test_bacc"],
                      "m2m_over_erm": min(times[("m2m", nb)]) / out["erm_run_s"]}
                     for _, nb in runs[1:]]
  first = out["m2m_runs"][0]
  out.update({"m2m_run_s": first["run_s"], "m2m_n_buckets": first["n_buckets"],
              "m2m_over_erm": first["m2m_over_erm"]})
  return out


def _fmt(v, digits=3):
  """A table number: `digits` significant digits ("–" for None and non-finite values)."""
  if v is None:
    return "–"
  if isinstance(v, float):
    if not np.isfinite(v):
      return "–"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
  return str(v)


def _features(machine: dict) -> str:
  """", with avx2, fma" for a report that lists the CPU's features ("" for older reports)."""
  if "cpu_features" not in machine:
    return ""
  return ", with " + (", ".join(machine["cpu_features"]) or f"none of {', '.join(CPU_FEATURES)}")


def _intro(report: dict) -> List[str]:
  """The title, the command, the machine and the timing protocol."""
  m, s = report["machine"], report["settings"]
  return [
      "# M2m step benchmark",
      "",
      f"Made by `{PROG} {' '.join(report['argv'])}` on {report['finished']}. Do not edit by "
      "hand.",
      "",
      f"Machine: {m['cpu']}{_features(m)}, {m['cores']} cores, device {m['device']}, TensorFlow "
      f"{m['tensorflow']}, Keras {m['keras']}. Load average at start {m['load_average_start']}, "
      f"at end {report.get('load_average_end')}.",
      "",
      f"Steps: {s['warmup']} warm-up + {s['steps']} timed samples, interleaved across "
      "configurations (a step under 0.25 s is timed as the mean of a block of steps lasting "
      f"~0.25 s); XLA conv-net M2m steps (n_buckets {s['xla_conv_buckets']}): 1 warm-up + "
      f"{s['slow_steps']} timed. Medians. Ratios are to the ERM step of the same run.",
      "",
  ]


def _steps_table(steps: List[dict]) -> str:
  """Every timed step: median, samples/s, ratios to ERM, translated slots, first call."""
  header = ["workload", "step", "median s", "samples/s", "× ERM same mode", "× fastest ERM",
            "translated slots", "first call s"]
  body = [[r["workload"], r["config"], _fmt(r["median_step_s"], 4), _fmt(r["samples_per_s"], 4),
           _fmt(r.get("ratio_to_erm_same_mode")), _fmt(r.get("ratio_to_fastest_erm")),
           _fmt(r.get("translated_slot_fraction"), 2), _fmt(r["first_call_s"], 3)]
          for r in steps]
  return markdown_table(header, body)


def _summary_lines(s: dict) -> List[str]:
  """One workload's summary: fastest ERM, M2m / ERM ratios, the input pipeline's rate."""
  lines = [f"**{s['label']}**", ""]
  if "fastest_erm" in s:
    lines.append(f"- fastest ERM step: {s['fastest_erm']} at {_fmt(s['fastest_erm_step_s'], 4)} s")
  for k, v in s.items():
    if k.startswith("m2m_b") and k.endswith("_over_erm_fastest_modes"):
      nb = k[len("m2m_b"):].split("_")[0]
      lines.append(f"- M2m (n_buckets={nb}, {s[f'fastest_m2m_b{nb}']}) / ERM, each in its "
                   f"fastest mode: **{_fmt(v)}×**")
  if "pytorch_erm_over_erm" in s:
    lines.append("- the project's PyTorch ResNet-32 step (erm/pytorch, "
                 "`launch/torch_reference/resnet.py`) / fastest m2m_tf ERM step: "
                 f"**{_fmt(s['pytorch_erm_over_erm'])}×**")
  for name, v in s.get("m2m_nofold", {}).items():
    lines.append(f"- without BatchNorm folding in the translation ({name}) / fastest ERM: "
                 f"{_fmt(v)}×")
  for name, v in sorted(s.get("precision_speedups", {}).items()):  # JSON sorts the keys
    lines.append(f"- {name}: float32 step time / its step time = **{_fmt(v)}×**")
  if "input_pipeline" in s:
    p = s["input_pipeline"]
    ratios = ", ".join(f"{_fmt(v)}× the {k.replace('_', ' ')} step"
                       for k, v in s["input_over_consumption"].items())
    lines.append(f"- input pipeline (balanced{', augmented' if p['augment'] else ''}): "
                 f"{_fmt(p['samples_per_s'], 4)} samples/s = {ratios}")
  return lines + [""]


def _whole_run_lines(wr: dict) -> List[str]:
  """The whole-run comparison: the ERM run's time and each M2m run's ratio to it."""
  lines = [f"**Whole run on {wr['dataset']}** (seed {wr['seed']}, verbose=0, "
           f"jit_compile={wr['jit_compile']}, data loaded once, {_fmt(wr['data_load_s'])} s; "
           f"fastest of {wr.get('repeats', 1)} interleaved rounds each):",
           "", f"- ERM run {_fmt(wr['erm_run_s'], 4)} s"]
  for r in wr["m2m_runs"]:
    lines.append(f"- M2m run, n_buckets={r['n_buckets']} (g's ERM training included): "
                 f"{_fmt(r['run_s'], 4)} s = **{_fmt(r['m2m_over_erm'])}×** the ERM run")
  return lines + [""]


def markdown(report: dict) -> str:
  """The Markdown summary written next to the JSON."""
  lines = _intro(report) + [_steps_table(report["steps"]), "", "## Summary", ""]
  for s in report["summaries"]:
    lines += _summary_lines(s)
  if report.get("whole_run"):
    lines += _whole_run_lines(report["whole_run"])
  return "\n".join(lines) + "\n"


def _int_list(p: argparse.ArgumentParser, name: str, text: str) -> List[int]:
  """A comma-separated list of integers >= 1 given to --name (else a usage error)."""
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    p.error(f"--{name} must be comma-separated integers, got {text!r}")
  if any(v < 1 for v in values):
    p.error(f"--{name} values must be >= 1")
  return values


def _add_step_flags(p: argparse.ArgumentParser) -> None:
  """The flags of the step timings."""
  p.add_argument("--which", default="mlp,resnet32",
                 help=f"comma-separated workloads among {', '.join(WORKLOAD_NAMES)}")
  p.add_argument("--steps", type=int, default=None,
                 help="timed steps per configuration (default 5)")
  p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3)")
  p.add_argument("--slow_steps", type=int, default=None,
                 help="timed steps of XLA-compiled conv-net M2m steps (default 1)")
  p.add_argument("--jit", default="both", choices=("both", "on", "off"), help="XLA modes to time")
  p.add_argument("--buckets", default="8,1",
                 help="M2m n_buckets values to time (8: ours, 1: naive)")
  p.add_argument("--nofold_buckets", default="8",
                 help="n_buckets values also timed without BatchNorm folding in the "
                      "translation (conv nets, default kernels; empty: none), to show what "
                      "folding gains in the same run")
  p.add_argument("--xla_conv_buckets", default="1",
                 help="n_buckets values timed for conv-net M2m steps under XLA (default 1: on "
                      "CPU XLA compiles each of the 9 bucket branches of n_buckets=8 for "
                      "minutes and a step takes tens of seconds; empty: none)")
  p.add_argument("--precisions", default="float32",
                 help="comma-separated precisions of the ERM and M2m steps (float32, "
                      "mixed_bfloat16, mixed_float16); beside float32 each other one times ERM "
                      "and M2m per --buckets, named config@bf16 / @fp16")
  p.add_argument("--pipeline_batches", type=int, default=None,
                 help="batches read to measure the input rate (default 40)")
  p.add_argument("--skip_pipeline", action="store_true", help="do not measure the input rate")
  p.add_argument("--torch", action="store_true",
                 help="also time the project's PyTorch ResNet-32 ERM step (ResNet-32 only)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
  """The flags of the whole-run comparison."""
  p.add_argument("--skip_runs", action="store_true", help="do not time the whole Reuters runs")
  p.add_argument("--run_n_buckets", default="8,1",
                 help="n_buckets of the whole M2m runs (one M2m run per value; 8 is the default)")
  p.add_argument("--run_repeats", type=int, default=2,
                 help="interleaved rounds of the whole runs; each keeps its fastest (default 2)")
  p.add_argument("--run_jit", default=None, choices=("auto", "true", "false"),
                 help="jit_compile of the whole runs (default auto; false with --quick)")
  p.add_argument("--run_dataset", default=None,
                 help="dataset of the whole-run ratio (default reuters; synthetic_lt with --quick)")


def _parser() -> argparse.ArgumentParser:
  """The command line (module docstring)."""
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="tiny models and sizes, 1 warm-up + 2 steps (for tests; timings meaningless)")
  _add_step_flags(p)
  _add_run_flags(p)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--output", default="results/bench.json",
                 help="JSON output; the Markdown goes next to it with suffix .md")
  p.add_argument("--from_json", default=None,
                 help="rewrite the Markdown beside this report JSON from it, without timing")
  return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Command-line flags, checked, with the defaults that depend on --quick filled in."""
  p = _parser()
  args = p.parse_args(argv)
  args.which = [s.strip() for s in args.which.split(",") if s.strip()]
  bad = [s for s in args.which if s not in WORKLOADS]
  if bad:
    p.error(f"--which: unknown workload(s) {bad}; valid: {', '.join(WORKLOAD_NAMES)}")
  args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
  bad = [s for s in args.precisions if s not in PRECISION_TAGS]
  if bad or not args.precisions:
    p.error(f"--precisions: unknown {bad or 'empty'}; valid: {', '.join(PRECISION_TAGS)}")
  for name in ("buckets", "nofold_buckets", "xla_conv_buckets", "run_n_buckets"):
    setattr(args, name, _int_list(p, name, getattr(args, name)))
  if args.run_jit is None:
    args.run_jit = "false" if args.quick else "auto"
  defaults = (1, 2, 1, 4) if args.quick else (3, 5, 1, 40)
  for name, d in zip(("warmup", "steps", "slow_steps", "pipeline_batches"), defaults):
    if getattr(args, name) is None:
      setattr(args, name, d)
  if args.warmup < 1 or args.steps < 1 or args.slow_steps < 1 or args.pipeline_batches < 1:
    p.error("--warmup, --steps, --slow_steps and --pipeline_batches must be >= 1")
  if args.run_dataset is None:
    args.run_dataset = "synthetic_lt" if args.quick else "reuters"
  return args


def step_configs(w: Workload, modes: Sequence[bool], args: argparse.Namespace
                 ) -> List[StepConfig]:
  """The configurations timed for `w`, per precision of --precisions: ERM and M2m per
  n_buckets (XLA conv nets: only --xla_conv_buckets); in float32 also, for conv nets
  without XLA, M2m without BatchNorm folding."""
  configs = []
  for precision in args.precisions:
    configs += [StepConfig("erm", jit, precision=precision) for jit in modes]
    for jit in modes:
      buckets = args.xla_conv_buckets if (jit and w.arch != "mlp") else args.buckets
      configs += [StepConfig("m2m", jit, nb, precision=precision) for nb in buckets]
      if not jit and w.arch != "mlp" and precision == "float32":
        configs += [StepConfig("m2m", jit, nb, fold_batchnorm=False)
                    for nb in args.nofold_buckets]
  if args.torch and w.arch == "resnet32":
    configs.append(StepConfig("torch_erm", False))
  return configs


def _log(text: str) -> None:
  print(text, flush=True)


def bench_workload(w: Workload, args: argparse.Namespace) -> Tuple[List[dict], dict]:
  """Times one workload's steps (and its input pipeline); returns (rows, summary)."""
  _log(f"[bench] {w.label}")
  modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
  rows = time_steps(w, step_configs(w, modes, args), warmup=args.warmup, steps=args.steps,
                    slow_steps=args.slow_steps, seed=args.seed, log=_log,
                    timers={"torch_erm": _torch_timed})
  pipe = None
  if not args.skip_pipeline:
    pipe = input_rate(w, n_batches=args.pipeline_batches, seed=args.seed)
    _log(f"  {w.key} input pipeline: {pipe['samples_per_s']:.0f} samples/s")
  return rows, summarise(w, rows, pipe)


def _whole_run(args: argparse.Namespace) -> dict:
  """The whole-run comparison on --run_dataset (tiny runs with --quick)."""
  overrides = {"jit_compile": args.run_jit}
  if args.quick:
    overrides.update({"epochs": 2, "deferred_epoch": 1, "warmup_epochs": 0,
                      "dataset_options": {"n_max": 40, "n_val_per_class": 4,
                                          "n_test_per_class": 4}})
  _log(f"[bench] whole runs on {args.run_dataset}")
  return whole_run_ratio(args.run_dataset, seed=args.seed, overrides=overrides,
                         n_buckets=args.run_n_buckets,
                         repeats=1 if args.quick else args.run_repeats, log=_log)


def _settings(args: argparse.Namespace) -> dict:
  """The flags recorded in the report."""
  names = ("warmup", "steps", "slow_steps", "buckets", "xla_conv_buckets", "nofold_buckets",
           "run_n_buckets", "run_jit", "jit", "seed", "precisions", "torch")
  return {n: getattr(args, n) for n in names}


def write_markdown(report: dict, out_json: str) -> str:
  """Writes the report's Markdown beside `out_json` (suffix .md); returns its path."""
  out_md = os.path.splitext(out_json)[0] + ".md"
  atomic_write_text(out_md, markdown(report))
  return out_md


def run(argv: List[str], args: argparse.Namespace) -> dict:
  """Measures everything the flags ask for; returns the report."""
  t_start = time.perf_counter()
  report = {"argv": argv, "machine": machine_info(), "quick": args.quick,
            "settings": _settings(args), "steps": [], "summaries": []}
  for key in args.which:
    w = quick_workload(WORKLOADS[key]) if args.quick else WORKLOADS[key]
    rows, summary = bench_workload(w, args)
    report["steps"] += rows
    report["summaries"].append(summary)
  if not args.skip_runs:
    report["whole_run"] = _whole_run(args)
  report["load_average_end"] = load_average()
  report["total_s"] = time.perf_counter() - t_start
  report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  return report


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Runs the benchmark, prints the table, writes JSON + Markdown; returns the report.

  With --from_json, only rewrites (and prints) the Markdown of that report.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.from_json:
    report = read_json(args.from_json)
    if report is None:
      raise SystemExit(f"{PROG}: error: --from_json {args.from_json} cannot be read")
    out_json = args.from_json
  else:
    report = run(argv, args)
    out_json = args.output
    atomic_write_json(out_json, report)
  out_md = write_markdown(report, out_json)
  print(markdown(report))
  _log(f"[bench] wrote {out_md}" if args.from_json else
       f"[bench] wrote {out_json} and {out_md} in {report['total_s']:.0f} s")
  return report


if __name__ == "__main__":
  main()
