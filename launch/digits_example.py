r"""The README's bring-your-own-data example: M2m against ERM and DRS on long-tailed digits.

  python -m launch.digits_example            # runs what is missing, then writes the table
  python -m launch.digits_example --seeds=0  # fewer runs (the table says which seeds)

scikit-learn's bundled `load_digits` (1,797 8x8 images as 64 features, 10 classes; no
download) is written as an npz with a fixed 70/30 train/test split, then trained with the
command line a user would type:

  python -m m2m_tf.main --dataset=npz:runs/digits/digits.npz --imbalance_ratio=10 \
      --method=m2m --seed=0

The source makes the balanced training split long-tailed (CIFAR-LT's exponential rule,
N_max / N_min = 10) after holding out a stratified 10% for validation; the test split stays
balanced. Every method runs with the recipe suggested from the data (no tuning for any of
them: the same budget, zero). Runs live under --root; a finished run is reused and an
unfinished one resumes. Writes results/digits_lt10.{csv,md}.
"""

import os
import subprocess
import sys
from typing import List

from absl import flags
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from data_prep.atomic import atomic_save, atomic_write_text, read_json
from m2m_tf.cli import run_absl
from m2m_tf.markdown import markdown_table
from m2m_tf.run_records import FLAGS_FILE, RESULTS_FILE, flatten_record

METHODS = {"erm": "ERM", "drs": "DRS", "m2m": "M2m"}  # key -> table label

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "runs/digits", "Where the npz and the run folders go.")
flags.DEFINE_string("results_dir", "results", "Where digits_lt10.{csv,md} go.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds of every method.")


def write_digits_npz(path: str) -> None:
  """Writes load_digits as an npz with a fixed stratified 70/30 train/test split."""
  digits = load_digits()
  x_tr, x_te, y_tr, y_te = train_test_split(
      digits.data.astype(np.float32), digits.target, test_size=0.3, stratify=digits.target,
      random_state=0)
  arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                class_names=np.array([str(k) for k in range(10)]))
  atomic_save(lambda tmp: np.savez(tmp, **arrays), path)


def command(npz: str, method: str, seed: int, out_dir: str) -> List[str]:
  """The user's command line for one run."""
  return [sys.executable, "-m", "m2m_tf.main", f"--dataset=npz:{npz}", "--imbalance_ratio=10",
          f"--method={method}", f"--seed={seed}", f"--output_dir={out_dir}", "--verbose=0"]


def table(rows: List[dict]) -> pd.DataFrame:
  """Mean and standard deviation over seeds of test bACC and GM, per method."""
  df = pd.DataFrame(rows)
  return df.groupby("method", sort=False).agg(
      seeds=("seed", "count"), test_bacc=("test_bacc", "mean"),
      test_bacc_std=("test_bacc", "std"), test_gm=("test_gm", "mean"),
      test_gm_std=("test_gm", "std"),
      best_epochs=("best_epoch", lambda e: ",".join(str(int(v) + 1) for v in e))).reset_index()


def data_facts(npz: str) -> dict:
  """Features, classes and test size of the written npz (for the table's text)."""
  with np.load(npz) as d:
    return {"dim": d["x_train"].shape[1], "classes": len(np.unique(d["y_train"])),
            "n_test": len(d["y_test"])}


def markdown(summary: pd.DataFrame, seeds: List[int], recorded: dict, facts: dict) -> str:
  """The committed Markdown: the table and how it was made (`recorded`: a run's flags,
  `facts`: `data_facts` of the npz)."""
  fmt = lambda m, s: f"{m:.2f}" if np.isnan(s) else f"{m:.2f} ± {s:.2f}"
  body = markdown_table(
      ["method", "seeds", "test bACC", "test GM", "selected epoch per seed"],
      [[METHODS[r.method], r.seeds, fmt(r.test_bacc, r.test_bacc_std),
        fmt(r.test_gm, r.test_gm_std), r.best_epochs] for r in summary.itertuples()])
  recipe = (f"{recorded['arch'].upper()} {recorded['hidden_units']}, {recorded['epochs']} "
            f"epochs, batch {recorded['batch_size']}, DRS/M2m from epoch "
            f"{recorded['deferred_epoch']}, M2m step size {recorded['step_size']:.2f}")
  ratio, profile = recorded["imbalance_ratio"], recorded["imbalance_profile"] or "exp"
  return (f"# Your own data: scikit-learn digits made long-tailed (ratio {ratio})\n\n"
          f"Made by `python -m launch.digits_example` (seeds {','.join(map(str, seeds))}). "
          f"Do not edit by hand.\n\nscikit-learn digits ({facts['dim']} features, "
          f"{facts['classes']} classes), training split long-tailed at ratio {ratio} ({profile}), "
          f"balanced test split of {facts['n_test']}. Every method "
          f"runs the recipe suggested from the data ({recipe}); nothing tuned. Mean ± std over "
          "seeds. Each run reports the epoch (1-based) with the best validation bACC; where it "
          "comes before the deferral, DRS and M2m report their phase-1 model, which is ERM's."
          "\n\n" + body + "\n")


def main(argv):
  del argv
  seeds = [int(s) for s in FLAGS.seeds]
  npz = os.path.join(FLAGS.root, "digits.npz")
  if not os.path.exists(npz):
    write_digits_npz(npz)
  rows = []
  for method in METHODS:
    for seed in seeds:
      out_dir = os.path.join(FLAGS.root, f"{method}_s{seed}")
      res = read_json(os.path.join(out_dir, RESULTS_FILE))
      if res is None:  # not finished: run (or resume) it, then read what it wrote
        subprocess.run(command(npz, method, seed, out_dir), check=True)
        res = read_json(os.path.join(out_dir, RESULTS_FILE))
      rows.append({"method": method, "seed": seed, "test_bacc": res["test_bacc"],
                   "test_gm": res["test_gm"], "val_bacc": res["val_bacc"],
                   "best_epoch": res["best_epoch"]})
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  summary = table(rows)
  atomic_write_text(os.path.join(FLAGS.results_dir, "digits_lt10.csv"),
                    pd.DataFrame(rows).to_csv(index=False))
  recorded = flatten_record(read_json(os.path.join(FLAGS.root, f"m2m_s{seeds[0]}", FLAGS_FILE)))
  text = markdown(summary, seeds, recorded, data_facts(npz))
  atomic_write_text(os.path.join(FLAGS.results_dir, "digits_lt10.md"), text)
  print(text)


if __name__ == "__main__":
  run_absl(main)
