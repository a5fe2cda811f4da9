"""The CIFAR-10-LT table over seeds: each row's mean +- std over the seeds it finished, every
seed's value, the paper's mean, the PyTorch reference, and M2m's paired verdicts over seeds.

Pure functions over the per-run table of `launch.cifar.report` (one row per stage and seed).
"""

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from launch import over_seeds
from m2m_tf.markdown import markdown_table

# M2m's comparisons of the paper's Table 1, paired by seed (the issue's four; the per-sample
# ablation against the row it ablates).
SEED_VERDICTS = (("m2m", "erm"), ("m2m", "drs"), ("ldam_m2m", "ldam_drw"), ("ldam_m2m", "ldam"),
                 ("m2m", "m2m_per_sample"))


def mean_std(values: Sequence[float]) -> str:
  """"m +- s" over `values` (sample std, ddof 1); "m" for one value; "n/a" for none."""
  x = np.asarray([v for v in values if not math.isnan(v)], np.float64)
  if not x.size:
    return "n/a"
  return f"{x.mean():.1f}" if x.size == 1 else f"{x.mean():.1f} ± {x.std(ddof=1):.1f}"


def _seed_cell(r: pd.Series) -> str:
  seed = f"s{int(r['seed'])}"
  if r["status"] == "done":
    return f"{seed} {r['test_bacc']:.1f}"
  return f"{seed} –" if r["status"] == "not started" else f"{seed} {r['epochs']}"


def torch_reference(path: str) -> Dict[str, str]:
  """Row -> the PyTorch reference's test bACC (mean +- std of its finished seeds), or its
  progress; empty when the reference table is missing."""
  try:
    ref = pd.read_csv(path)
  except (OSError, pd.errors.EmptyDataError):
    return {}
  out = {}
  for method, sub in ref.groupby("method"):
    done = sub["test_bacc"].dropna()
    if len(done):
      out[method] = f"{mean_std(list(done))} ({len(done)} seeds)"
    else:
      out[method] = "unfinished (" + ", ".join(f"s{int(s)} {e}" for s, e in
                                               zip(sub["seed"], sub["epochs"])) + ")"
  return out


def summary(df: pd.DataFrame, reference: Optional[Dict[str, str]] = None) -> pd.DataFrame:
  """One row per table row (plan order): seeds finished of planned, test bACC and GM mean and
  std over finished seeds, each seed's value or progress, the paper, the PyTorch reference."""
  out = []
  for stage, sub in df.groupby("stage", sort=False):
    done = sub[sub["status"] == "done"]
    bacc, gm = list(done["test_bacc"]), list(done["test_gm"])
    out.append({
        "stage": stage, "method": sub["method"].iloc[0], "seeds_done": len(done),
        "seeds_planned": len(sub),
        "test_bacc_mean": float(np.mean(bacc)) if bacc else math.nan,
        "test_bacc_std": float(np.std(bacc, ddof=1)) if len(bacc) > 1 else math.nan,
        "test_gm_mean": float(np.mean(gm)) if gm else math.nan,
        "test_gm_std": float(np.std(gm, ddof=1)) if len(gm) > 1 else math.nan,
        "per_seed": ", ".join(_seed_cell(r) for _, r in sub.iterrows()),
        "paper_bacc": sub["paper_bacc"].iloc[0], "paper_gm": sub["paper_gm"].iloc[0],
        "torch_reference_bacc": (reference or {}).get(stage, "")})
  return pd.DataFrame(out)


def summary_markdown(s: pd.DataFrame, df: pd.DataFrame) -> List[str]:
  """The table over seeds as Markdown lines."""
  body = []
  for _, r in s.iterrows():
    done = df[(df["stage"] == r["stage"]) & (df["status"] == "done")]
    paper = "n/a" if math.isnan(r["paper_bacc"]) else f"{r['paper_bacc']:.1f} / {r['paper_gm']:.1f}"
    body.append([r["method"], f"{r['seeds_done']}/{r['seeds_planned']}",
                 mean_std(list(done["test_bacc"])), mean_std(list(done["test_gm"])),
                 r["per_seed"], paper, r["torch_reference_bacc"] or "–"])
  return [markdown_table(["method", "seeds done", "test bACC", "test GM",
                          "test bACC per seed (or epochs run)", "paper bACC / GM (mean of 3)",
                          "PyTorch reference bACC"], body)]


def recall_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
  """Per-class test recall of each row, averaged over its finished seeds (with their count)."""
  cols = [c for c in df.columns if c.startswith("recall_")]
  done = df[df["status"] == "done"]
  if done.empty:
    return pd.DataFrame(columns=["method", "seeds"] + cols)
  grouped = done.groupby("stage", sort=False)
  out = grouped[cols].mean()
  out.insert(0, "seeds", grouped.size())
  out.insert(0, "method", grouped["method"].first())
  return out.reset_index(drop=True)


def seed_verdicts(df: pd.DataFrame, pairs=SEED_VERDICTS) -> List[dict]:
  """Each pair (a, b) of `pairs` whose rows the table has: the mean of a - b's test bACC over the
  seeds both finished, its 95% t-interval over those seeds and the verdict word."""
  out = []
  done = df[df["status"] == "done"]
  for a, b in pairs:
    if not ((df["stage"] == a).any() and (df["stage"] == b).any()):
      continue
    va = done[done["stage"] == a].set_index("seed")["test_bacc"]
    vb = done[done["stage"] == b].set_index("seed")["test_bacc"]
    seeds = sorted(set(va.index) & set(vb.index))
    diff, low, high = over_seeds.t_interval([va[s] - vb[s] for s in seeds])
    out.append({"a": a, "b": b, "seeds": seeds, "diffs": [float(va[s] - vb[s]) for s in seeds],
                "diff": diff, "low": low, "high": high,
                "verdict": over_seeds.verdict_word(low, high) if len(seeds) > 1 else "unresolved"})
  return out


def seed_verdict_lines(found: Sequence[dict], labels: Dict[str, str]) -> List[str]:
  """The verdicts over seeds as Markdown lines (a pair without two shared seeds says so)."""
  lines = ["Paired over seeds (test bACC of a minus b on each seed both finished; 95% Student-t "
           "interval over those seeds; two seeds at least):", ""]
  for v in found:
    name = f"- {labels.get(v['a'], v['a'])} - {labels.get(v['b'], v['b'])}: "
    per_seed = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(v["seeds"], v["diffs"]))
    if len(v["seeds"]) < 2:
      lines.append(name + f"n/a ({len(v['seeds'])} shared finished seed"
                   f"{'' if len(v['seeds']) == 1 else 's'}{': ' + per_seed if per_seed else ''})")
    else:
      lines.append(name + f"{v['diff']:+.1f} [{v['low']:+.1f}, {v['high']:+.1f}] over "
                   f"{len(v['seeds'])} seeds ({per_seed}): {v['verdict']}")
  return lines
