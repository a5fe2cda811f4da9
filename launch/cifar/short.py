r"""The shortened CIFAR-LT schedule of the GPU check and the CPU short run, and its report.

  python -m launch.cifar.short schedule --epochs 10 --deferred 8
      # prints "WARMUP MILESTONES FACTORS", e.g. "1 8,9 0.01,0.01"
  python -m launch.cifar.short report --erm_dir DIR --m2m_dir DIR --output R.json \
      --epochs 10 --deferred 8 [--where "machine description"]
      # collects the two runs' results.json into R.json and R.md

`launch/cifar/gpu_check.py` imports the functions; `launch/cifar/cpu_short.sh` runs the
two commands. Figures made with such a schedule on the JPEG substitute are
labelled as both: they are not the paper's 200-epoch numbers.
"""

import argparse
import json
import os
import platform
import sys
from typing import Optional, Sequence

from m2m_tf.markdown import markdown_table
from data_prep.atomic import atomic_write_json, atomic_write_text
from m2m_tf.run_records import RESULTS_FILE

DATA_LABEL = "JPEG substitute (CIFAR-10 re-encoded as JPEG; PROVENANCE §3)"
NOT_COMPARABLE = "not comparable to the paper to the decimal"
SCHEDULE_LABEL = ("shortened schedule ({epochs} epochs, M2m phase 2 from epoch {deferred}; "
                  "paper: 200 / 160)")


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


def schedule_label(epochs: int, deferred: int) -> str:
  """How every figure of a shortened run is labelled (`SCHEDULE_LABEL` filled in)."""
  return SCHEDULE_LABEL.format(epochs=epochs, deferred=deferred)


def run_summary(results: dict, schedule: str) -> dict:
  """The figures of a run_experiment result (or its results.json) kept in a report."""
  keys = ("dataset", "data_label", "method", "seed", "best_epoch", "test_bacc", "test_gm",
          "val_bacc", "val_gm", "n_zero_recall", "per_class_recall", "jit_compile", "seconds")
  out = {k: results.get(k) for k in keys}
  out["schedule"] = schedule
  return out


def fmt(v, digits: int = 2) -> str:
  """A report number: fixed `digits` decimals for floats, "-" for None."""
  return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _report_markdown(out: dict, where: str) -> str:
  """The Markdown of `write_short_run_report`: the labels, then one row per run."""
  body = [[name.upper(), fmt(r["test_bacc"]), fmt(r["test_gm"]), fmt(r["val_bacc"]),
           r["best_epoch"], fmt(r["seconds"], 0)] for name, r in out["runs"].items()]
  lines = ["# CIFAR-10-LT (ratio 100), JPEG substitute, shortened schedule", "",
           f"**{out['label']}.** Machine: {where}.", "",
           markdown_table(["method", "test bACC", "test GM", "val bACC", "best epoch", "seconds"],
                          body)]
  return "\n".join(lines) + "\n"


def write_short_run_report(erm_dir: str, m2m_dir: str, out_json: str, epochs: int,
                           deferred: int, where: str) -> dict:
  """Collects an ERM and an M2m run (their results.json, when written) into a labelled JSON
  file `out_json` and a Markdown file beside it; returns the JSON's content."""
  label = schedule_label(epochs, deferred)
  out = {"label": f"{DATA_LABEL}; {label} - {NOT_COMPARABLE}",
         "machine": where, "schedule": short_schedule(epochs, deferred), "runs": {}}
  for name, d in (("erm", erm_dir), ("m2m", m2m_dir)):
    path = os.path.join(d, RESULTS_FILE)
    if os.path.exists(path):
      with open(path) as fh:
        out["runs"][name] = run_summary(json.load(fh), label)
  atomic_write_json(out_json, out)
  atomic_write_text(os.path.splitext(out_json)[0] + ".md", _report_markdown(out, where))
  return out


def cpu_description() -> str:
  """This machine as the CPU short run's report names it (it never uses a GPU)."""
  return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU"


def _parser() -> argparse.ArgumentParser:
  """The two commands of the module docstring."""
  p = argparse.ArgumentParser(prog="python -m launch.cifar.short",
                              description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  for name, text in (("schedule", "print WARMUP MILESTONES FACTORS of the short schedule"),
                     ("report", "collect an ERM and an M2m run into a JSON + Markdown report")):
    c = sub.add_parser(name, help=text)
    c.add_argument("--epochs", type=int, required=True, help="schedule length (paper: 200)")
    c.add_argument("--deferred", type=int, required=True, help="M2m phase 2 from (paper: 160)")
  report = sub.choices["report"]
  report.add_argument("--erm_dir", required=True, help="the ERM run folder")
  report.add_argument("--m2m_dir", required=True, help="the M2m run folder")
  report.add_argument("--output", required=True, help="report JSON (the .md goes beside it)")
  report.add_argument("--where", default=None, help="machine description (default: this CPU)")
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one command (module docstring); returns the exit code."""
  args = _parser().parse_args(argv)
  if args.command == "schedule":
    s = short_schedule(args.epochs, args.deferred)
    print(s["warmup_epochs"], ",".join(map(str, s["lr_milestones"])),
          ",".join(map(str, s["lr_factors"])))
    return 0
  out = write_short_run_report(args.erm_dir, args.m2m_dir, args.output, args.epochs,
                               args.deferred, args.where or cpu_description())
  for name, r in out["runs"].items():
    print(name, "test bACC", r["test_bacc"], "GM", r["test_gm"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
