r"""Table and figures of the CIFAR-10-LT full-schedule runs (`python -m launch.cifar.full`).

  python -m launch.cifar.report                  # table + every figure whose inputs exist
  python -m launch.cifar.report --skip_figures   # table only (no TensorFlow, seconds)
  python -m launch.cifar.report --embedding=tsne # t-SNE instead of PCA for Fig. 4

Reads whatever run folders exist under --root (finished or not) and writes

  <results_dir>/cifar10_jpeg_lt.csv, .md   one row per row of launch.cifar.full.ROWS, and
                                           M2m's paired test-set comparisons (cifar_verdicts)
  <results_dir>/cifar10_jpeg_lt_predictions.npz   the finished rows' test predictions
  <results_dir>/figures/cifar_*.png        each figure only when its inputs exist:
    cifar_fig4_embedding.png        2-D embedding of f's penultimate features on the test set
                                    (finished ERM, DRS, M2m), coloured by class
    cifar_fig5_cumulative_fp.png    cumulative false positives over classes by training count
    cifar_fig6_translations.png     majority seeds translated towards minority classes
                                    (official g, the best f available)
    cifar_per_class_recall.png      per-class test recall of the finished rows
    cifar_training_curves.png       loss, val bACC (and M2m acceptance rate) per epoch
  drawn by `launch.cifar.figures` with `m2m_tf.plots`, the code that draws every run's report
  (`m2m_tf.report`). The run folders are read by `launch.cifar.runs`.

Unfinished rows show their progress and their latest validation bACC: the test
metrics of an epoch that was not selected on validation are never reported.
"""

import argparse
import functools
import math
import os
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np
import pandas as pd

from data_prep import registry
from data_prep.atomic import atomic_write_text
from launch import tables
from launch.cifar import figures as cifar_figures
from launch.cifar import full as cifar_full
from launch.cifar import seeds
from launch.cifar import verdicts as cifar_verdicts
from launch.cifar.runs import (DATASET, IMBALANCE_RATIO, Run, class_names, machines_text,
                               phase1_hours, read_runs, start_noise, table)
from m2m_tf.markdown import markdown_table

TORCH_CSV = "torch_reference_cifar10_jpeg_lt.csv"  # launch.torch_reference's table


def _fmt(v, digits: int = 1) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  return f"{v:.{digits}f}"


def recipe_text(runs: Sequence[Run]) -> str:
  """The training recipe, read from the first run's flags.json (the plan's values if none)."""
  f = next((r.flags for r in runs if r.flags), None) or {
      "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "warmup_epochs": 5,
      "lr_milestones": [160, 180], "lr_factors": [0.01, 0.01], "weight_decay": 2e-4,
      "deferred_epoch": cifar_full.BRANCH_EPOCH}
  steps = ", ".join(f"x{fac:g} at {m}" for m, fac in zip(f["lr_milestones"], f["lr_factors"]))
  seeds_run = sorted({r.seed for r in runs if r.flags}) or [0]
  return (f"ResNet-32, seeds {', '.join(map(str, seeds_run))}, {f['epochs']} epochs, batch "
          f"{f['batch_size']}, SGD with momentum "
          f"{f['momentum']:g}, lr {f['lr']:g} with {f['warmup_epochs']} warm-up epochs, {steps}, "
          f"weight decay {f['weight_decay']:g}; momentum form: {momentum_text(runs)}; every "
          "row branches from its seed's ERM (LDAM) shared phase-1 run after "
          f"{cifar_full.BRANCH_EPOCH} epochs, and "
          f"DRS, DRW and M2m act from epoch {f['deferred_epoch']}. Test metrics are those of the "
          "epoch with the best validation bACC; GM replaces zero recalls by 0.001.")


# Runs recorded before the field existed ran Keras' form (docs/method.md, difference 9).
FORMS = tables.MOMENTUM_FORMS


def _forms(run: Run) -> tuple:
  """(phase 1's momentum form, the run's own): a branched run's phase 1 is its source's."""
  own = run.flags.get("momentum_form") or "keras"
  if not run.flags.get("init_from"):
    return own, own
  return (run.phase1_flags or {}).get("momentum_form") or "keras", own


def momentum_text(runs: Sequence[Run]) -> str:
  """Which momentum form the rows' epochs ran in (one phrase when all rows agree)."""
  pairs = {}
  for run in runs:
    if run.flags:
      pairs.setdefault(_forms(run), []).append(run.label)
  if not pairs:
    pairs[("keras", cifar_full.ROWS_MOMENTUM_FORM)] = []
  parts = []
  for (early, late), labels in pairs.items():
    text = FORMS[late] if early == late else (
        f"{FORMS[early]} in the shared first {cifar_full.BRANCH_EPOCH} epochs, {FORMS[late]} "
        f"from epoch {cifar_full.BRANCH_EPOCH + 1} (phase 1's only lr changes are the "
        "warm-up's, docs/method.md difference 9)")
    parts.append(text if len(pairs) == 1 else f"{', '.join(labels)}: {text}")
  return "; ".join(parts)


def m2m_text(runs: Sequence[Run] = ()) -> str:
  """The M2m hyper-parameters of the M2m rows (launch.cifar.full.M2M_FLAGS)."""
  m = cifar_full.M2M_FLAGS
  return (f"beta {m['beta']}, lambda {m['lam']}, gamma {m['gamma']}, step size "
          f"{m['step_size']}, T = {m['steps']}, random start of L2 radius "
          f"{start_noise(runs)} (the official code's CIFAR-10 values)")


def _main_row(r: pd.Series) -> list:
  """The cells of one stage in the main table (unfinished: the latest val bACC, marked)."""
  done = r["status"] == "done"
  val = _fmt(r["val_bacc"]) + ("" if done or math.isnan(r["val_bacc"]) else " (latest)")
  best = "" if math.isnan(r["best_epoch"]) else str(int(r["best_epoch"]))
  tie = "" if math.isnan(r["best_epoch_last_tie"]) else (
      "same epoch" if r["best_epoch_last_tie"] == r["best_epoch"] else
      f"{int(r['best_epoch_last_tie'])}: {_fmt(r['test_bacc_last_tie'])} / "
      f"{_fmt(r['test_gm_last_tie'])}")
  adjusted = "" if math.isnan(r["posthoc_tau"]) else (
      f"{_fmt(r['posthoc_test_bacc'])} / {_fmt(r['posthoc_test_gm'])} ({r['posthoc_tau']:g})")
  return [r["method"], r["loss"], r["rebalancing"], r["seed"], r["epochs"], r["status"],
          _fmt(r["test_bacc"]), _fmt(r["test_gm"]), adjusted, val, best, tie,
          f"{_fmt(r['paper_bacc'])} / {_fmt(r['paper_gm'])}", _fmt(r["wall_hours"])]


def _main_table(df: pd.DataFrame) -> List[str]:
  """The table of every stage: progress, test metrics, paper, wall hours."""
  header = ["method", "loss", "rebalancing", "seed", "epochs", "status", "test bACC", "test GM",
            "post-hoc LA: test bACC / GM (tau)", "val bACC", "best epoch",
            "last tie: epoch: bACC / GM", "paper bACC / GM", "wall h"]
  return [markdown_table(header, [_main_row(r) for _, r in df.iterrows()])]


def _recall_table(df: pd.DataFrame) -> List[str]:
  """Per-class test recall of each row, averaged over its finished seeds."""
  rec = seeds.recall_over_seeds(df)
  if rec.empty:
    return ["Per-class test recall: no finished run yet."]
  cols = [c for c in rec.columns if c.startswith("recall_")]
  header = ["method", "seeds"] + [c[len("recall_"):] for c in cols]
  body = [[r["method"], int(r["seeds"])] + [_fmt(r[c]) for c in cols] for _, r in rec.iterrows()]
  return ["Per-class test recall (%), each row's mean over its finished seeds, classes in index "
          "order (largest first):", "", markdown_table(header, body)]


def verdicts(runs: Sequence[Run], results_dir: str, df: pd.DataFrame) -> List[str]:
  """M2m's paired comparisons: over seeds (`seeds.seed_verdicts`), then each seed's bootstrap
  over test images from the stored predictions (seeds with a finished run)."""
  labels = {r.stage: r.label for r in runs}
  lines = seeds.seed_verdict_lines(seeds.seed_verdicts(df), labels)
  y, preds, stale = cifar_verdicts.read_predictions(
      runs, os.path.join(results_dir, cifar_verdicts.PREDICTIONS))
  for seed in sorted({r.seed for r in runs if r.finished}):
    mine = [r for r in runs if r.seed == seed]
    lines += [""] + cifar_verdicts.verdict_lines(
        y, {r.stage: preds[r.key] for r in mine if r.key in preds},
        [r.stage for r in mine if r.key in stale], len(class_names(runs)),
        {r.stage: r.label for r in mine}, seed, [r.stage for r in mine if r.finished])
  return lines


def markdown(df: pd.DataFrame, runs: Sequence[Run], root: str,
             verdict: Sequence[str] = (), summary: Optional[pd.DataFrame] = None) -> str:
  """The report's Markdown: data caveat, recipe, g, M2m values, the tables, provenance."""
  summary = seeds.summary(df) if summary is None else summary
  lines = [
      "# CIFAR-10-LT (imbalance ratio 100), ResNet-32, the paper's 200-epoch schedule", "",
      "**JPEG substitute (CIFAR-10 re-encoded as JPEG; not comparable to the paper to the "
      "decimal).**", "",
      f"Made by `python -m launch.cifar.report` from the run folders under `{root}/` "
      "(trained by `python -m launch.cifar.full`).", "",
      f"- Recipe: {recipe_text(runs)}",
      "- g for the M2m rows: the official pre-trained ResNet-32 "
      f"(`{os.path.basename(cifar_figures.DEFAULT_G)}`), independent of f; 66.2% bACC on the "
      "JPEG test split (`results/official_g_cifar10_jpeg.md`).",
      f"- M2m hyper-parameters: {m2m_text(runs)}. There was no hyper-parameter grid.",
      "- Paper: the M2m paper's Table 2 (lossless CIFAR-10-LT, ratio 100, ResNet-32), the mean "
      "of its 3 seeds; its spread is not in our reference copy, so it is not shown.",
      "- Seeds: each seed has its own phase 1 (initialisation and data order); the long-tailed "
      "subset is the official one for every seed, as in the paper. PyTorch reference: "
      "`python -m launch.torch_reference` on the same data from the same kind of start "
      f"(`results/{TORCH_CSV[:-4]}.md`, docs/torch_reference.md).",
      "- Post-hoc LA: each finished row's logits minus tau log(prior) at evaluation (Menon et "
      "al., ICLR 2021), tau chosen on validation bACC from 0, 0.25, ..., 2 "
      "(`python -m m2m_tf.evaluate --checkpoint=RUN --posthoc_tau=select`, which "
      "`launch.cifar.full` runs once a row finishes); a tau of 2 is the grid's edge.",
      "- Last tie: on a tie in validation bACC our runs keep the first epoch; the official code "
      "keeps the last. The column gives that epoch's test bACC / GM where it differs "
      "(`results/selection_ties.md` counts the same for the text tables).",
      "- Unfinished rows show their progress and the latest epoch's validation bACC, no test "
      "numbers. Wall hours: this row's own epochs after the branch point, else results.json's "
      f"`seconds`; {_phase1_text(root)}.",
      "- Machines of each row's own epochs (epoch counts; a run resumed on another CPU runs at "
      f"its speed there, docs/platform.md): {machines_text(runs)}.", ""]
  lines += (["Each row over the seeds (test bACC and GM: mean ± sample std over the finished "
             "seeds):", ""] + seeds.summary_markdown(summary, df)
            + ["", "Each run:", ""] + _main_table(df) + [""] + _recall_table(df))
  if verdict:
    lines += [""] + list(verdict)
  return "\n".join(lines) + "\n"


def _phase1_text(root: str) -> str:
  hours = phase1_hours(root)
  if not hours:
    return "no shared phase-1 run has started"
  parts = []
  for name, (h, epochs) in hours.items():
    so_far = "" if epochs >= cifar_full.BRANCH_EPOCH else f" so far ({epochs} of them)"
    stage = cifar_full.STAGES[name]
    parts.append(f"{stage.label}'s (seed {stage.seed}) took {h:.1f} h{so_far}")
  return f"of the shared first {cifar_full.BRANCH_EPOCH} epochs, " + ", ".join(parts)


def write_table(runs: Sequence[Run], results_dir: str, root: str) -> List[str]:
  """Writes `<results_dir>/cifar10_jpeg_lt.csv` (one line per run), `cifar10_jpeg_lt_seeds.csv`
  (one per row, over seeds) and `cifar10_jpeg_lt.md`; returns their paths."""
  df = table(runs)
  summary = seeds.summary(df, seeds.torch_reference(os.path.join(results_dir, TORCH_CSV)))
  os.makedirs(results_dir, exist_ok=True)
  paths = [os.path.join(results_dir, f"{DATASET}{suffix}") for suffix in
           (".csv", "_seeds.csv", ".md")]
  atomic_write_text(paths[0], df.to_csv(index=False, float_format="%.4f"))
  atomic_write_text(paths[1], summary.to_csv(index=False, float_format="%.4f"))
  atomic_write_text(paths[2], markdown(df, runs, root, verdicts(runs, results_dir, df), summary))
  return paths


# --- command line --------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  p = argparse.ArgumentParser(prog="python -m launch.cifar.report", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", default="results/cifar10_jpeg_lt_full",
                 help="Folder of the run folders.")
  p.add_argument("--results_dir", default="results",
                 help="Where the table goes (figures under its figures/).")
  p.add_argument("--data_dir", default=None,
                 help="Data root (default $M2M_DATA_DIR, else ../shared/data).")
  p.add_argument("--g_checkpoint", default=cifar_figures.DEFAULT_G,
                 help="The official pre-trained ResNet-32 g.")
  p.add_argument("--skip_figures", action="store_true", help="Write the table only.")
  p.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                 help="2-D embedding of Fig. 4.")
  return p.parse_args(argv)


def make_predictions(runs: Sequence[Run], results_dir: str,
                     load_data: Callable[[], object]) -> Optional[str]:
  """Stores every finished row's test predictions for the paired comparisons; prints how
  many test images each disagrees on with the row's own recorded confusion matrix."""
  if not any(r.finished and r.weights for r in runs):
    return None
  data = load_data()

  def predict_run(run: Run) -> np.ndarray:
    f = cifar_figures.build_f(run, data.x_test.shape[1:], data.num_classes)
    pred = cifar_verdicts.predict(f, data.x_test)
    off = cifar_verdicts.confusion_check(run, data.y_test, pred, data.num_classes)
    print(f"{run.stage}: predictions differ from its recorded test confusion matrix on "
          f"{'?' if off is None else off} of {len(pred)} images")
    return pred

  path = os.path.join(results_dir, cifar_verdicts.PREDICTIONS)
  cifar_verdicts.write_predictions(runs, data.y_test, predict_run, path)
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Writes the predictions (unless --skip_figures), the table, then the figures."""
  args = parse_args(argv)
  runs = read_runs(args.root)

  @functools.lru_cache(maxsize=1)
  def load_data():
    """The real CIFAR-10-LT JPEG splits (read once, only when a model is due)."""
    return registry.load_dataset(DATASET, args.data_dir, imbalance_ratio=IMBALANCE_RATIO)

  predictions = None if args.skip_figures else make_predictions(runs, args.results_dir, load_data)
  for path in ([predictions] if predictions else []) + write_table(runs, args.results_dir,
                                                                    args.root):
    print(f"wrote {path}")
  if args.skip_figures:
    return 0
  figures = cifar_figures.FIGURES
  written = cifar_figures.make_figures(
      runs, os.path.join(args.results_dir, "figures"), load_data=load_data,
      load_g=lambda: cifar_figures.load_official_g(args.g_checkpoint), embedding=args.embedding)
  for key in figures:
    print(f"wrote {written[key]}" if key in written else f"skipped {figures[key]} (no input yet)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
