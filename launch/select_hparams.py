r"""Select M2m's (beta, lam, gamma) on the VALIDATION split over the paper's grid (SPEC §1).

  python -m launch.select_hparams --dataset=reuters --losses=ce,ldam --seeds=0

Grid: beta in {0.9, 0.99, 0.999} x lam in {0.01, 0.1, 0.5} x gamma in {0.9, 0.99}
(18 settings) per loss. The choice maximises the mean validation bACC over
--seeds; test metrics play no part (they are not even read). Writes
results/hparams_<dataset>.json ({"selected": {loss: {beta, lam, gamma}}, "grid": [...]})
and results/hparams_<dataset>.md, which `launch.grid` then uses.
"""

import concurrent.futures
import itertools
import json
import os
import sys

from absl import app
from absl import flags
import pandas as pd

from launch import runner
from launch import tables
from m2m_tf.io_utils import atomic_write_json, atomic_write_text

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "reuters", "Dataset.")
flags.DEFINE_list("losses", ["ce", "ldam"], "Losses whose M2m row is tuned (ERM-M2m, LDAM-M2m).")
flags.DEFINE_list("seeds", ["0"], "Seeds averaged for the selection.")
flags.DEFINE_list("betas", ["0.9", "0.99", "0.999"], "beta grid.")
flags.DEFINE_list("lams", ["0.01", "0.1", "0.5"], "lam grid.")
flags.DEFINE_list("gammas", ["0.9", "0.99"], "gamma grid.")
flags.DEFINE_integer("jobs", 2, "Parallel processes.")
flags.DEFINE_string("root", None, "Run folder (default runs/hp/<dataset>).")
flags.DEFINE_string("grid_root", None, "Where the ERM g runs live (default runs/grid/<dataset>).")
flags.DEFINE_string("results_dir", "results", "Output folder.")
flags.DEFINE_list("extra", [], "Extra main.py flags for every run.")


def main(argv):
  del argv
  ds = FLAGS.dataset
  root = FLAGS.root or os.path.join("runs", "hp", ds)
  g_root = FLAGS.grid_root or os.path.join("runs", "grid", ds)
  seeds = [int(s) for s in FLAGS.seeds]
  # ERM g runs first (shared with the Table 2 grid).
  erm_jobs = runner.plan(ds, {"erm": tables.TABLE2_ROWS["erm"]}, seeds, g_root, {}, FLAGS.extra, None)
  with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
    list(pool.map(lambda j: runner.launch_run(j[2], j[1]), erm_jobs))
  base = [sys.executable, "-m", "m2m_tf.main", f"--dataset={ds}", "--verbose=0", "--method=m2m"]
  jobs, settings = [], []
  for loss, beta, lam, gamma in itertools.product(FLAGS.losses, FLAGS.betas, FLAGS.lams,
                                                  FLAGS.gammas):
    for s in seeds:
      out = os.path.join(root, f"{loss}_b{beta}_l{lam}_g{gamma}_s{s}")
      settings.append((loss, float(beta), float(lam), float(gamma), s, out))
      if os.path.exists(os.path.join(out, "results.json")):
        continue
      g = os.path.join(g_root, f"erm_s{s}", "best_f.weights.h5")
      jobs.append((out, base + [f"--loss={loss}", f"--beta={beta}", f"--lam={lam}",
                                f"--gamma={gamma}", f"--seed={s}", f"--g_checkpoint={g}",
                                f"--output_dir={out}"] + [f"--{e}" for e in FLAGS.extra]))
  print(f"{len(jobs)} of {len(settings)} runs to do")
  with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
    for out, secs in zip([j[0] for j in jobs],
                         pool.map(lambda j: runner.launch_run(j[1], j[0]), jobs)):
      print(f"  done {out} in {secs:.0f} s", flush=True)
  rows = []
  for loss, beta, lam, gamma, s, out in settings:
    with open(os.path.join(out, "results.json")) as fh:
      r = json.load(fh)
    rows.append({"loss": loss, "beta": beta, "lam": lam, "gamma": gamma, "seed": s,
                 "val_bacc": r["val_bacc"], "val_gm": r["val_gm"]})
  df = pd.DataFrame(rows)
  mean = df.groupby(["loss", "beta", "lam", "gamma"], as_index=False)["val_bacc"].mean()
  selected = {}
  for loss, sub in mean.groupby("loss"):
    best = sub.sort_values("val_bacc", ascending=False, kind="stable").iloc[0]
    selected[loss] = {"beta": float(best.beta), "lam": float(best.lam), "gamma": float(best.gamma)}
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  atomic_write_json(os.path.join(FLAGS.results_dir, f"hparams_{ds}.json"),
                    {"selected": selected, "seeds": seeds, "criterion": "mean val_bacc",
                     "grid": mean.to_dict(orient="records")})
  lines = [f"# {ds}: M2m hyper-parameters selected on validation bACC", "",
           f"Made by `python -m launch.select_hparams --dataset={ds}` (seeds {FLAGS.seeds}). "
           "Test metrics are not used.", ""]
  for loss, sub in mean.groupby("loss"):
    lines += [f"## loss = {loss}: selected {selected[loss]}", "", "| beta | lam | gamma | val bACC |",
              "|---|---|---|---|"]
    for _, r in sub.sort_values("val_bacc", ascending=False).iterrows():
      lines.append(f"| {r.beta} | {r.lam} | {r.gamma} | {r.val_bacc:.2f} |")
    lines.append("")
  atomic_write_text(os.path.join(FLAGS.results_dir, f"hparams_{ds}.md"), "\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
